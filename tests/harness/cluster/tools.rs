//! What tests do to a running cluster through its clients: format it, run `dog` and other
//! tools with bounded waits, write and read VDIs, and list the object files in the stores.

use super::*;

impl Cluster {
    /// `dog cluster format --copies N` through the first running node, then waits until every
    /// running node reports a running cluster.
    pub fn format(&self, copies: u8) {
        let running = self.running_nodes();
        let first = *running.first().expect("no running node to format");
        self.dog_ok(
            first,
            &["cluster", "format", "--copies", &copies.to_string()],
        );
        for i in running {
            self.wait_running(i, RUNNING_TIMEOUT);
        }
    }

    /// Runs `dog ARGS` against node `i` and returns its output, whatever the exit status.
    pub fn dog(&self, i: usize, args: &[&str]) -> Output {
        dog::dog(self.port(i), args)
    }

    /// Runs `dog ARGS` against node `i`, panics (with node logs) unless it exits 0, and
    /// returns stdout.
    pub fn dog_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.dog(i, args);
        self.expect_success(i, &out, args);
        String::from_utf8(out.stdout).expect("dog stdout is UTF-8")
    }

    /// `dog vdi write NAME OFFSET LEN` through node `i` with `data` on stdin; panics on failure.
    pub fn write_vdi(&self, i: usize, name: &str, offset: u64, data: &[u8]) {
        let args = [
            "vdi",
            "write",
            name,
            &offset.to_string(),
            &data.len().to_string(),
        ];
        let out = dog::dog_with_input(self.port(i), &args, data, DOG_IO_TIMEOUT);
        self.expect_success(i, &out, &args);
    }

    /// `dog vdi read NAME` (the whole VDI) through node `i`; panics on failure.
    pub fn read_vdi(&self, i: usize, name: &str) -> Vec<u8> {
        let args = ["vdi", "read", name];
        let out = crate::process::run_with_timeout(
            dog::dog_command(self.port(i), &args),
            None,
            DOG_IO_TIMEOUT,
        );
        self.expect_success(i, &out, &args);
        out.stdout
    }

    fn expect_success(&self, i: usize, out: &Output, args: &[&str]) {
        if !out.status.success() {
            panic!(
                "dog {} against node {i} (port {}) failed: {}\n{}",
                args.join(" "),
                self.port(i),
                dog::describe_output(out),
                self.all_log_tails()
            );
        }
    }

    /// The vid of VDI `name` (the working VDI), from `dog vdi list -r NAME` on node `i`.
    pub fn vdi_id(&self, i: usize, name: &str) -> u32 {
        let raw = self.dog_ok(i, &["vdi", "list", "-r", name]);
        // "= NAME 0 SIZE USED SHARED CTIME VID COPIES TAG BSS"
        raw.lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .find(|f| f.len() > 7 && f[1] == name)
            .and_then(|f| u32::from_str_radix(f[7], 16).ok())
            .unwrap_or_else(|| panic!("no vid for {name} in dog vdi list -r:\n{raw}"))
    }

    /// Runs an external client (qemu-img, nbdcopy, ...) with a timeout; panics, with every
    /// node's log tail, unless it exits 0. Returns its output.
    pub fn tool_ok(&self, cmd: Command, timeout: Duration) -> Output {
        let desc = describe_command(&cmd);
        let out = crate::process::run_with_timeout(cmd, None, timeout);
        if !out.status.success() {
            panic!(
                "{desc} failed: {}\n{}",
                dog::describe_output(&out),
                self.all_log_tails()
            );
        }
        out
    }

    /// Names of the object files in node `i`'s `<store>/obj`.
    pub fn count_objects(&self, i: usize) -> BTreeSet<String> {
        data::list_objects(self.store(i))
    }

    /// Names of the data objects (`00...`) in node `i`'s store.
    pub fn data_objects(&self, i: usize) -> BTreeSet<String> {
        data::data_objects(&self.count_objects(i))
    }
}
