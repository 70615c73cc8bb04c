//! Running the `dog` CLI against one sheep.
//!
//! Every invocation gets `-a 127.0.0.1 -p PORT` appended after the caller's arguments (the way
//! libvirt calls dog), `TZ=UTC` and `LC_ALL=C`/`LANG=C` in its environment, no
//! `SHEEPDOG_DOG_ADDR`/`SHEEPDOG_DOG_PORT` from ours, and a timeout.

use std::process::{Command, Output};
use std::time::Duration;

use crate::bins::binaries;
use crate::process::{describe_command, lossy_prefix, run_with_timeout};

/// Timeout for ordinary dog commands (list, info, create, format).
pub const DOG_TIMEOUT: Duration = Duration::from_secs(60);

/// Timeout for dog commands that move tens of MiB (`vdi read`, `vdi write`).
pub const DOG_IO_TIMEOUT: Duration = Duration::from_secs(300);

/// Builds (does not run) `dog ARGS -a 127.0.0.1 -p PORT` with the test environment.
pub fn dog_command(port: u16, args: &[&str]) -> Command {
    let mut cmd = Command::new(&binaries().dog);
    cmd.args(args)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .env("LANG", "C")
        .env_remove("SHEEPDOG_DOG_ADDR")
        .env_remove("SHEEPDOG_DOG_PORT");
    cmd
}

/// Runs `dog ARGS` against 127.0.0.1:`port` with [`DOG_TIMEOUT`] and returns its output,
/// whatever the exit status.
pub fn dog(port: u16, args: &[&str]) -> Output {
    run_with_timeout(dog_command(port, args), None, DOG_TIMEOUT)
}

/// Runs `dog ARGS` with `input` on stdin and the given timeout.
pub fn dog_with_input(port: u16, args: &[&str], input: &[u8], timeout: Duration) -> Output {
    run_with_timeout(dog_command(port, args), Some(input), timeout)
}

/// Runs `dog ARGS`, panics unless it exits 0, and returns stdout as text.
pub fn dog_ok(port: u16, args: &[&str]) -> String {
    let out = dog(port, args);
    assert_success(&out, &format!("dog {} (port {port})", args.join(" ")));
    String::from_utf8(out.stdout).expect("dog stdout is UTF-8")
}

/// Panics with [`describe_output`] unless `out` is a zero exit.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        describe_output(out)
    );
}

/// Status, stdout (truncated) and stderr of a finished command, for failure messages.
pub fn describe_output(out: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        lossy_prefix(&out.stdout, 4000),
        lossy_prefix(&out.stderr, 4000)
    )
}

/// stdout as lossy text.
pub fn stdout_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr as lossy text.
pub fn stderr_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The non-empty lines of stdout.
pub fn nonempty_lines(out: &Output) -> Vec<String> {
    stdout_text(out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// A command description for messages (re-exported for tests that build their own commands).
pub fn describe(cmd: &Command) -> String {
    describe_command(cmd)
}
