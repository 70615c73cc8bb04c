//! A private network namespace for one test, and network partitions inside it with nftables.
//!
//! [`enter_private_netns`] moves the calling thread into a new network namespace
//! (`unshare(CLONE_NEWNET)`) and brings its loopback up. Only that thread moves, and every
//! process or thread it starts afterwards (sheep, dog, NBD clients, writer threads) is born in
//! it, so a test that calls it first owns all of 127.0.0.0/8 and may add nftables rules
//! without touching the host or other tests. Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN),
//! `ip` (iproute2) and `nft` (nftables).
//!
//! # How a partition tells the nodes apart
//!
//! On loopback, matching source/destination address pairs is not enough: a socket that is
//! not bound before `connect` gets the route's preferred source, 127.0.0.1, whichever node
//! opened it (sheep's peer and memberlist TCP connections are such sockets), and the test's
//! own clients (dog, NBD) come from 127.0.0.1 too. So the nodes run with distinct group ids
//! ([`crate::ClusterBuilder::node_gids`]) and a [`Partition`] drops every TCP or UDP packet
//! that a process of one side sends to a *listening* port (data or gossip) of a node on the
//! other side, and the reverse. No connection or gossip message can then start across the
//! cut, in either direction, while the harness (gid 0) keeps reaching every node.
//!
//! The sender's gid is only known in the output hook (`meta skgid`), but a drop there fails
//! the sender's `sendmsg` with EPERM, which no real partition does (and memberlist does not
//! count a probe that could not be sent as a failed one). So the output chain only marks
//! each side's packets (`meta mark`, which survives the trip through `lo`), and the input
//! chain drops them silently on arrival, as a lost packet.

use std::collections::BTreeSet;
use std::process::Command;

use crate::process::run_with_timeout;
use crate::tools::on_path;
use crate::Cluster;

/// Name of the nftables table a [`Partition`] creates (family `inet`).
pub const TABLE: &str = "sheepfold_partition";

/// Packet marks of the two sides of a [`Partition`].
const MARK_A: u32 = 0x5f01;
const MARK_B: u32 = 0x5f02;

/// Panics with an install hint unless `ip` and `nft` are on `PATH`.
pub fn require_tools() {
    for (program, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        assert!(
            on_path(program),
            "`{program}` is not on PATH: install the Debian package {package} \
             (`.ci/run` installs what the tests need)"
        );
    }
}

/// Moves the calling thread into a new network namespace and sets its `lo` up.
///
/// Call it first thing in the test function, after [`crate::bins::binaries`] (which may run
/// cargo, better done with the host's network). Panics if the kernel refuses (not root).
pub fn enter_private_netns() {
    require_tools();
    // SAFETY: unshare only changes this thread's namespace membership; no memory is shared.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc != 0 {
        panic!(
            "unshare(CLONE_NEWNET) failed: {} (the partition test needs root)",
            std::io::Error::last_os_error()
        );
    }
    run_ok("ip", &["link", "set", "lo", "up"], None);
}

/// Runs `program ARGS` (with `input` on stdin), panicking with its output unless it exits 0.
fn run_ok(program: &str, args: &[&str], input: Option<&[u8]>) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args).env("LC_ALL", "C");
    let desc = crate::dog::describe(&cmd);
    let out = run_with_timeout(cmd, input, std::time::Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{desc} failed: {}",
        crate::dog::describe_output(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network partition between two sets of nodes, in force until [`Partition::heal`] or drop.
#[derive(Debug)]
pub struct Partition {
    in_force: bool,
}

impl Partition {
    /// Cuts `a` off from `b`: no packet from a process of one side reaches a data or gossip
    /// port of a node on the other side (see the module docs). Every node of both sides
    /// must have a gid. Only one partition may be in force at a time.
    pub fn new(cluster: &Cluster, a: &[usize], b: &[usize]) -> Partition {
        let gids = |side: &[usize]| -> String {
            let set: BTreeSet<u32> = side
                .iter()
                .map(|&i| {
                    cluster.node(i).gid.unwrap_or_else(|| {
                        panic!("node {i} has no gid: build the cluster with node_gids(...)")
                    })
                })
                .collect();
            join(set)
        };
        let ports = |side: &[usize]| -> String {
            let set: BTreeSet<u16> = side
                .iter()
                .flat_map(|&i| [cluster.port(i), cluster.node(i).gossip_port])
                .collect();
            join(set)
        };
        let script = format!(
            "table inet {TABLE} {{\n\
             \tchain out {{\n\
             \t\ttype filter hook output priority 0; policy accept;\n\
             \t\tmeta skgid {{ {ga} }} meta mark set {MARK_A}\n\
             \t\tmeta skgid {{ {gb} }} meta mark set {MARK_B}\n\
             \t}}\n\
             \tchain in {{\n\
             \t\ttype filter hook input priority 0; policy accept;\n\
             \t\tmeta mark {MARK_A} meta l4proto {{ tcp, udp }} th dport {{ {pb} }} counter drop\n\
             \t\tmeta mark {MARK_B} meta l4proto {{ tcp, udp }} th dport {{ {pa} }} counter drop\n\
             \t}}\n\
             }}\n",
            ga = gids(a),
            pb = ports(b),
            gb = gids(b),
            pa = ports(a),
        );
        run_ok("nft", &["-f", "-"], Some(script.as_bytes()));
        Partition { in_force: true }
    }

    /// The table with its packet counters (`nft list table`), for messages.
    pub fn describe(&self) -> String {
        run_ok("nft", &["list", "table", "inet", TABLE], None)
    }

    /// Removes the rules: the network is whole again.
    pub fn heal(mut self) {
        self.remove();
    }

    fn remove(&mut self) {
        if std::mem::take(&mut self.in_force) {
            run_ok("nft", &["delete", "table", "inet", TABLE], None);
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if self.in_force && !std::thread::panicking() {
            self.remove();
        }
    }
}

fn join<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
