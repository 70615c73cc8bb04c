//! A cluster of real `sheep` processes on 127.0.0.1, in one temp dir.
//!
//! Layout (contract, "Test harness contract"): `<tmp>/local/` is the `-c local:DIR` runtime
//! directory shared by all nodes, `<tmp>/nK/` is node K's store, and `<tmp>/nK/sheep.log`
//! collects its stdout and stderr (appended across restarts, with a marker line per start).
//! Each node has its own free data, gossip and NBD ports, kept across restarts.
//!
//! Nodes start one at a time; each start waits until every running node lists the new one
//! (`dog node list -r`, bounded), so a fresh cluster has a deterministic membership history.
//! Every process is a [`KillOnDrop`]; dropping the [`Cluster`] kills them all, and when the
//! drop happens during a panic the tail of every node's log is printed to help the post-mortem.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tempfile::TempDir;

use crate::bins::binaries;
use crate::data;
use crate::dog::{self, DOG_IO_TIMEOUT};
use crate::ports::free_port;
use crate::process::{describe_command, KillOnDrop};
use crate::text::{unix_now, STATUS_RUNNING};
use crate::wait::poll_until;

mod tools;

/// Upper bound for a node to start and be listed by every running node.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound for a node to report `Cluster status: running, ...` after a format or restart.
pub const RUNNING_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound for a sheep to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How many log lines per node are printed when a test panics.
const LOG_TAIL_LINES: usize = 40;

/// Builder for a [`Cluster`]; obtain it with [`Cluster::builder`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    nodes: usize,
    distinct_zones: bool,
    sheep_args: Vec<String>,
    node_addresses: bool,
    node_gids: Option<u32>,
    fsync: bool,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        Self {
            nodes: 1,
            distinct_zones: false,
            sheep_args: Vec::new(),
            node_addresses: false,
            node_gids: None,
            fsync: false,
        }
    }
}

impl ClusterBuilder {
    /// Number of sheep to start (default 1).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// Give node K `-z K` (also for nodes added later), like Sheepdog's own test harness.
    /// Without it every node has the default zone of 127.0.0.1 (16777343), and a zone-aware
    /// placement then keeps a single copy of each object.
    pub fn distinct_zones(mut self) -> Self {
        self.distinct_zones = true;
        self
    }

    /// Extra arguments passed to every sheep before the store directory.
    pub fn sheep_args(mut self, args: &[&str]) -> Self {
        self.sheep_args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// Give node K its own loopback address 127.0.0.(K+1): it advertises it to peers
    /// (`-y`) and listens on every address (`-b 0.0.0.0`), so peers reach each other at
    /// distinct addresses while the harness's clients still reach every node at
    /// 127.0.0.1:PORT. Meant for a private network namespace ([`crate::netns`]), where no
    /// other process holds these ports on any address.
    pub fn node_addresses(mut self) -> Self {
        self.node_addresses = true;
        self
    }

    /// Run node K with group id `base + K` (the harness runs as root, which may take any
    /// gid; the uid stays root, so stores and logs remain accessible). Every socket a node
    /// opens then carries its own gid, which nftables matches with `meta skgid`: that is how
    /// [`crate::netns::Partition`] tells the nodes' traffic apart on loopback, where
    /// unbound outgoing connections all come from 127.0.0.1.
    pub fn node_gids(mut self, base: u32) -> Self {
        self.node_gids = Some(base);
        self
    }

    /// Run the sheep with fsync on, as in production (by default they run with `-n`:
    /// tests that do not crash the machine need no durability, and syncs would make them
    /// slow on a shared disk).
    pub fn fsync(mut self) -> Self {
        self.fsync = true;
        self
    }

    /// Creates the temp dir and starts the nodes one by one, each time waiting until every
    /// running node lists all of them. The cluster is not formatted.
    pub fn start(self) -> Cluster {
        let parent = std::env::var_os("SHEEPFOLD_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let tmp = tempfile::Builder::new()
            .prefix("sheepfold-")
            .tempdir_in(&parent)
            .unwrap_or_else(|e| panic!("create a temp dir in {}: {e}", parent.display()));
        let root = tmp.path().to_path_buf();
        let local_dir = root.join("local");
        std::fs::create_dir_all(&local_dir).expect("create local/");
        let mut cluster = Cluster {
            nodes: Vec::new(),
            root,
            local_dir,
            distinct_zones: self.distinct_zones,
            sheep_args: self.sheep_args,
            node_addresses: self.node_addresses,
            node_gids: self.node_gids,
            fsync: self.fsync,
            tmp: Some(tmp),
        };
        for _ in 0..self.nodes {
            cluster.add_node();
        }
        cluster
    }
}

/// One sheep of a [`Cluster`]: its ports, zone and store survive restarts.
#[derive(Debug)]
pub struct Node {
    /// Position in the cluster (0-based, in start order).
    pub index: usize,
    /// Data port (`-p`), where dog and peers connect.
    pub port: u16,
    /// Gossip port (`--gossip-port`).
    pub gossip_port: u16,
    /// NBD port (`--nbd-port`), where NBD clients connect.
    pub nbd_port: u16,
    /// HTTP port (`--http-port`): the storage API and `/metrics`.
    pub http_port: u16,
    /// Zone passed with `-z`, if any.
    pub zone: Option<u32>,
    /// Address advertised to peers (`-y`): 127.0.0.1, or 127.0.0.(K+1) with
    /// [`ClusterBuilder::node_addresses`].
    pub addr: Ipv4Addr,
    /// Group id the process runs with ([`ClusterBuilder::node_gids`]), if any.
    pub gid: Option<u32>,
    /// Store directory (the positional STORE_DIR argument).
    pub store: PathBuf,
    process: Mutex<Option<KillOnDrop>>,
}

impl Node {
    /// Path of this node's `sheep.log`.
    pub fn log_path(&self) -> PathBuf {
        self.store.join("sheep.log")
    }

    fn process(&self) -> MutexGuard<'_, Option<KillOnDrop>> {
        self.process.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// N sheep processes sharing one temp dir; see the module docs.
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<Node>,
    root: PathBuf,
    local_dir: PathBuf,
    distinct_zones: bool,
    sheep_args: Vec<String>,
    node_addresses: bool,
    node_gids: Option<u32>,
    fsync: bool,
    tmp: Option<TempDir>,
}

impl Cluster {
    /// A builder for a cluster of one unformatted node; see [`ClusterBuilder`].
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// Number of nodes ever started (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Data port of node `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// NBD port of node `i`.
    pub fn nbd_port(&self, i: usize) -> u16 {
        self.nodes[i].nbd_port
    }

    /// HTTP port of node `i` (the storage API and `/metrics`).
    pub fn http_port(&self, i: usize) -> u16 {
        self.nodes[i].http_port
    }

    /// `http://127.0.0.1:PORT` for node `i`.
    pub fn http_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.http_port(i))
    }

    /// `nbd://127.0.0.1:PORT/EXPORT` for node `i`; the export name is a VDI name.
    pub fn nbd_uri(&self, i: usize, export: &str) -> String {
        format!("nbd://127.0.0.1:{}/{export}", self.nbd_port(i))
    }

    /// Store directory of node `i`.
    pub fn store(&self, i: usize) -> &Path {
        &self.nodes[i].store
    }

    /// The cluster's temp dir.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True if node `i` has a process that has not exited.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i]
            .process()
            .as_mut()
            .is_some_and(KillOnDrop::is_running)
    }

    /// Indices of the nodes whose process is running.
    pub fn running_nodes(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.is_running(i)).collect()
    }

    /// Panics with the log tail if node `i`'s process is not running.
    pub fn assert_running(&self, i: usize) {
        let exited = match self.nodes[i].process().as_mut() {
            None => Some("was stopped by the test".to_owned()),
            Some(p) => p.try_wait().map(|s| format!("exited: {s}")),
        };
        if let Some(why) = exited {
            panic!(
                "sheep node {i} (port {}) is not running: it {why}\n{}",
                self.port(i),
                self.log_tail(i, LOG_TAIL_LINES)
            );
        }
    }

    /// Panics (with the log tail) if node `i` is not running or its log contains `panicked`.
    pub fn assert_no_panic(&self, i: usize) {
        self.assert_running(i);
        let log = self.log(i);
        if let Some(at) = log.find("panicked") {
            let start = log[..at].rfind('\n').map_or(0, |n| n + 1);
            let end = (at + 2000).min(log.len());
            panic!(
                "sheep node {i} (port {}) logged a panic:\n{}",
                self.port(i),
                String::from_utf8_lossy(&log.as_bytes()[start..end])
            );
        }
    }

    /// Allocates ports for a new node, starts it, and waits until every running node (the
    /// new one included) lists all running nodes. Returns the new node's index.
    pub fn add_node(&mut self) -> usize {
        let index = self.nodes.len();
        let store = self.root.join(format!("n{index}"));
        std::fs::create_dir_all(&store).expect("create store dir");
        self.nodes.push(Node {
            index,
            port: free_port(),
            gossip_port: free_port(),
            nbd_port: free_port(),
            http_port: free_port(),
            zone: self.distinct_zones.then_some(index as u32),
            addr: if self.node_addresses {
                let k = u8::try_from(index + 1).expect("at most 254 nodes with node_addresses");
                Ipv4Addr::new(127, 0, 0, k)
            } else {
                Ipv4Addr::LOCALHOST
            },
            gid: self.node_gids.map(|base| base + index as u32),
            store,
            process: Mutex::new(None),
        });
        self.spawn(index);
        self.wait_for_view(&self.running_nodes(), JOIN_TIMEOUT);
        index
    }

    /// The sheep command line for node `i` (contract: `sheep [OPTIONS] STORE_DIR`).
    pub fn sheep_command(&self, i: usize) -> Command {
        let node = &self.nodes[i];
        let mut cmd = Command::new(&binaries().sheep);
        let bind = if self.node_addresses {
            Ipv4Addr::UNSPECIFIED
        } else {
            node.addr
        };
        cmd.args(["-p", &node.port.to_string()])
            .args(["-b", &bind.to_string(), "-y", &node.addr.to_string()])
            .args(["--gossip-port", &node.gossip_port.to_string()])
            .args(["--nbd-port", &node.nbd_port.to_string()])
            .args(["--http-port", &node.http_port.to_string()])
            .arg("-c")
            .arg(format!("local:{}", self.local_dir.display()));
        if !self.fsync {
            cmd.arg("-n");
        }
        if let Some(zone) = node.zone {
            cmd.args(["-z", &zone.to_string()]);
        }
        if let Ok(level) = std::env::var("SHEEPFOLD_SHEEP_LOG_LEVEL") {
            cmd.args(["-l", &format!("level={level}")]);
        }
        cmd.args(&self.sheep_args).arg(&node.store);
        if let Some(gid) = node.gid {
            cmd.gid(gid);
        }
        cmd
    }

    /// Starts node `i`'s process with its existing store and ports. Does not wait for it;
    /// follow with [`Cluster::wait_for_view`] or [`Cluster::wait_for_nodes`].
    /// Panics if the node is still running.
    pub fn restart(&self, i: usize) {
        self.spawn(i);
    }

    fn spawn(&self, i: usize) {
        let node = &self.nodes[i];
        let mut slot = node.process();
        if let Some(p) = slot.as_mut() {
            assert!(!p.is_running(), "node {i} is already running");
        }
        let mut cmd = self.sheep_command(i);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())
            .expect("open sheep.log");
        writeln!(
            log,
            "==== harness: starting node {i} at unix time {}: {}",
            unix_now(),
            describe_command(&cmd)
        )
        .expect("write sheep.log");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", describe_command(&cmd)));
        *slot = Some(KillOnDrop::new(child));
    }

    /// SIGKILLs node `i` and reaps it. Its store is left as is.
    pub fn kill9(&self, i: usize) -> ExitStatus {
        let mut p = self.nodes[i]
            .process()
            .take()
            .unwrap_or_else(|| panic!("node {i} is not running"));
        p.kill9()
    }

    /// SIGTERMs node `i` and waits (bounded) for it to exit; returns its exit status.
    pub fn stop(&self, i: usize) -> ExitStatus {
        let mut p = self.nodes[i]
            .process()
            .take()
            .unwrap_or_else(|| panic!("node {i} is not running"));
        p.terminate(STOP_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "stopping node {i}: {e}\n{}",
                self.log_tail(i, LOG_TAIL_LINES)
            )
        })
    }

    /// SIGTERMs every running node at once, then waits (bounded) for each to exit.
    /// Returns `(index, exit status)` per stopped node.
    pub fn stop_all(&self) -> Vec<(usize, ExitStatus)> {
        let running = self.running_nodes();
        let mut procs: Vec<(usize, KillOnDrop)> = running
            .iter()
            .filter_map(|&i| self.nodes[i].process().take().map(|p| (i, p)))
            .collect();
        for (_, p) in &mut procs {
            p.signal("TERM");
        }
        procs
            .iter_mut()
            .map(|(i, p)| {
                let status = p.wait_timeout(STOP_TIMEOUT).unwrap_or_else(|| {
                    p.kill9();
                    panic!(
                        "node {i} ignored SIGTERM for {STOP_TIMEOUT:?}\n{}",
                        self.log_tail(*i, LOG_TAIL_LINES)
                    )
                });
                (*i, status)
            })
            .collect()
    }

    /// Starts every node that is not running, then waits until all nodes list all nodes.
    pub fn restart_all(&self) {
        for i in 0..self.len() {
            if !self.is_running(i) {
                self.spawn(i);
            }
        }
        let all: Vec<usize> = (0..self.len()).collect();
        self.wait_for_view(&all, JOIN_TIMEOUT);
    }

    /// Polls `dog node list -r` on node `i` until it prints exactly `n` lines (the contract's
    /// readiness rule). Panics at once if the node's process dies, or after `timeout`.
    pub fn wait_for_nodes(&self, i: usize, n: usize, timeout: Duration) {
        let what = format!("node {i} (port {}) to list {n} nodes", self.port(i));
        poll_until(&what, timeout, || {
            self.assert_running(i);
            let out = self.dog(i, &["node", "list", "-r"]);
            let lines = dog::nonempty_lines(&out);
            if out.status.success() && lines.len() == n {
                Ok(())
            } else {
                Err(dog::describe_output(&out))
            }
        })
    }

    /// Polls until every node in `members` lists exactly the data ports of `members` in
    /// `dog node list -r` (one overall deadline). Panics at once if one of them dies.
    pub fn wait_for_view(&self, members: &[usize], timeout: Duration) {
        let want: BTreeSet<u16> = members.iter().map(|&i| self.port(i)).collect();
        let what = format!("nodes {members:?} to list exactly ports {want:?}");
        poll_until(&what, timeout, || {
            for &i in members {
                self.assert_running(i);
                let out = self.dog(i, &["node", "list", "-r"]);
                let lines = dog::nonempty_lines(&out);
                let seen: BTreeSet<u16> = lines.iter().filter_map(|l| raw_port(l)).collect();
                if !out.status.success() || lines.len() != want.len() || seen != want {
                    return Err(format!("node {i}: {}", dog::describe_output(&out)));
                }
            }
            Ok(())
        })
    }

    /// Polls `dog cluster info` on node `i` until its first line is
    /// `Cluster status: running, auto-recovery enabled`.
    pub fn wait_running(&self, i: usize, timeout: Duration) {
        let what = format!(
            "node {i} (port {}) to report a running cluster",
            self.port(i)
        );
        poll_until(&what, timeout, || {
            self.assert_running(i);
            let out = self.dog(i, &["cluster", "info"]);
            if dog::stdout_text(&out).lines().next() == Some(STATUS_RUNNING) {
                Ok(())
            } else {
                Err(dog::describe_output(&out))
            }
        })
    }

    /// The whole `sheep.log` of node `i` (empty if unreadable).
    pub fn log(&self, i: usize) -> String {
        std::fs::read(self.nodes[i].log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of node `i`'s `sheep.log`, with a heading.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let path = self.nodes[i].log_path();
        let text = tail_of_file(&path, 64 * 1024);
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "---- last {} lines of {} ----\n{}",
            all.len() - start,
            path.display(),
            all[start..].join("\n")
        )
    }

    /// Log tails of every node.
    pub fn all_log_tails(&self) -> String {
        (0..self.len())
            .map(|i| self.log_tail(i, LOG_TAIL_LINES))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            if let Some(mut p) = node.process().take() {
                p.kill9();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.all_log_tails());
        }
        if std::env::var_os("SHEEPFOLD_KEEP_TMP").is_some_and(|v| v != "0") {
            if let Some(tmp) = self.tmp.take() {
                eprintln!("keeping cluster dir {}", tmp.keep().display());
            }
        }
    }
}

/// The port of a raw `dog node list -r` row (`ID ADDR:PORT VNODES ZONE`).
pub fn raw_port(line: &str) -> Option<u16> {
    line.split_whitespace()
        .nth(1)?
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

/// Up to the last `max` bytes of a file as lossy text, starting at a line boundary.
fn tail_of_file(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(cannot open {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        text.split_once('\n')
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or(text)
    } else {
        text
    }
}
