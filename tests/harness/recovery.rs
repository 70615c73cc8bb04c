//! Helpers for the failure and recovery tests (issue 5): recovery progress and counters from
//! `dog`, replicas on disk, checks of what `dog vdi check` fixed; with [`model`] (what each
//! 4 KiB block must hold) and [`nbd`] (an NBD client that reports errors instead of
//! panicking), both re-exported here.
//!
//! Object files (`<store>/obj/<oid>`) are sparse: the object's data from offset 0, a trailer
//! (version and checksums) at 4 GiB. So a file's length says nothing; replicas are counted by
//! name, bytes by allocated blocks, and replicas compared by their first [`OBJECT_SIZE`] bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::cluster::raw_port;
use crate::data::{self, OBJECT_SIZE};
use crate::dog;
use crate::wait::{poll_until, POLL_INTERVAL};
use crate::Cluster;

pub mod model;
pub mod nbd;

pub use model::{block_bytes, BlockModel, BLOCK};
pub use nbd::{dog_verify_all, nbd_open, nbd_read, nbd_verify_all, nbd_write, NbdFailure};

/// Gossip timings that notice a dead node in well under a second, still loose enough for
/// debug builds on a busy 2-core machine.
pub const FAST_GOSSIP: [&str; 6] = [
    "--probe-interval-ms",
    "200",
    "--probe-timeout-ms",
    "150",
    "--suspicion-mult",
    "3",
];

/// The file name of VDI `vid`'s inode object.
pub fn inode_oid_name(vid: u32) -> String {
    format!("{:016x}", (1u64 << 63) | (u64::from(vid) << 32))
}

/// Object file names of VDI `vid`: its inode and the data objects `indices`.
pub fn vdi_objects(vid: u32, indices: &BTreeSet<u32>) -> BTreeSet<String> {
    indices
        .iter()
        .map(|&i| data::data_oid_name(vid, i))
        .chain([inode_oid_name(vid)])
        .collect()
}

/// Path of object `name` in `store`.
pub fn object_path(store: &Path, name: &str) -> PathBuf {
    store.join("obj").join(name)
}

/// Bytes allocated on disk to one object file (0 if it is gone).
pub fn allocated_bytes(store: &Path, name: &str) -> u64 {
    std::fs::metadata(object_path(store, name)).map_or(0, |m| m.blocks() * 512)
}

/// Bytes allocated to every object file of `store`.
pub fn held_bytes(store: &Path) -> u64 {
    data::list_objects(store)
        .iter()
        .map(|n| allocated_bytes(store, n))
        .sum()
}

/// The data region (first [`OBJECT_SIZE`] bytes, holes as zeros) of a data object's replica.
pub fn data_region(store: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(object_path(store, name))?;
    let mut buf = vec![0u8; OBJECT_SIZE as usize];
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    Ok(buf)
}

/// Overwrites `len` bytes at `offset` of a replica's data region with `byte`, leaving the
/// rest of the file (its trailer with the checksums) alone.
pub fn corrupt_replica(store: &Path, name: &str, offset: u64, len: usize, byte: u8) {
    assert!(
        offset + len as u64 <= OBJECT_SIZE,
        "stay in the data region"
    );
    let path = object_path(store, name);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {} for writing: {e}", path.display()));
    f.write_all_at(&vec![byte; len], offset)
        .unwrap_or_else(|e| panic!("corrupt {}: {e}", path.display()));
    f.sync_all().expect("sync the corrupted replica");
}

/// For every object stored on `nodes`, the nodes that hold a copy.
pub fn holders(cluster: &Cluster, nodes: &[usize]) -> BTreeMap<String, BTreeSet<usize>> {
    let mut map: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for &i in nodes {
        for name in cluster.count_objects(i) {
            map.entry(name).or_default().insert(i);
        }
    }
    map
}

/// Polls until each of `objects` has exactly `copies` replicas on `nodes`; returns the holders.
pub fn wait_copies(
    cluster: &Cluster,
    nodes: &[usize],
    objects: &BTreeSet<String>,
    copies: usize,
    timeout: Duration,
) -> BTreeMap<String, BTreeSet<usize>> {
    let what = format!(
        "each of {} objects to have exactly {copies} replicas on nodes {nodes:?}",
        objects.len()
    );
    poll_until(&what, timeout, || {
        let map = holders(cluster, nodes);
        let wrong: Vec<String> = objects
            .iter()
            .filter_map(|o| {
                let on = map.get(o).cloned().unwrap_or_default();
                (on.len() != copies).then(|| format!("{o} on {on:?}"))
            })
            .collect();
        if wrong.is_empty() {
            Ok(map)
        } else {
            Err(format!(
                "{} wrong, e.g. {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(8)]
            ))
        }
    })
}

/// Asserts that every replica on `nodes` of each data object in `objects` has the same data
/// region (objects found nowhere are skipped).
pub fn assert_replicas_agree(cluster: &Cluster, nodes: &[usize], objects: &BTreeSet<String>) {
    let map = holders(cluster, nodes);
    let mut problems = Vec::new();
    for name in objects.iter().filter(|n| data::is_data_object(n)) {
        let Some(on) = map.get(name) else { continue };
        let mut first: Option<(usize, Vec<u8>)> = None;
        for &i in on {
            let Ok(region) = data_region(cluster.store(i), name) else {
                continue; // removed since listed
            };
            match &first {
                None => first = Some((i, region)),
                Some((j, want)) if *want != region => {
                    let at = region.iter().zip(want).position(|(a, b)| a != b);
                    problems.push(format!(
                        "{name}: node {i}'s replica differs from node {j}'s at byte {at:?}"
                    ));
                }
                Some(_) => {}
            }
        }
    }
    assert!(
        problems.is_empty(),
        "replicas disagree:\n{}",
        problems.join("\n")
    );
}

/// `dog node recovery` on node `on`, non-empty lines; `Err` if dog failed.
pub fn recovery_lines(cluster: &Cluster, on: usize) -> Result<Vec<String>, String> {
    let out = cluster.dog(on, &["node", "recovery"]);
    if out.status.success() {
        Ok(dog::nonempty_lines(&out))
    } else {
        Err(dog::describe_output(&out))
    }
}

/// Polls until `dog node recovery` prints only its two heading lines on every node of `nodes`.
pub fn wait_recovery_done(cluster: &Cluster, nodes: &[usize], timeout: Duration) {
    poll_until(
        &format!("`dog node recovery` to show no node in recovery on nodes {nodes:?}"),
        timeout,
        || {
            for &i in nodes {
                cluster.assert_running(i);
                let lines = recovery_lines(cluster, i).map_err(|e| format!("node {i}: {e}"))?;
                if lines.len() != 2 || lines[0] != "Nodes In Recovery:" {
                    return Err(format!("node {i}:\n{}", lines.join("\n")));
                }
            }
            Ok(())
        },
    );
}

/// One row of `dog node recovery stat -r`: what recovery moved since that node started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryStat {
    pub objects_received: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

/// `dog node recovery stat -r` through node `on`, by data port. Panics on failure or a row
/// that does not parse.
pub fn recovery_stats(cluster: &Cluster, on: usize) -> BTreeMap<u16, RecoveryStat> {
    let text = cluster.dog_ok(on, &["node", "recovery", "stat", "-r"]);
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let num = |k: usize| f.get(k).and_then(|s| s.parse::<u64>().ok());
            match (raw_port(l), num(2), num(3), num(4)) {
                (Some(port), Some(o), Some(r), Some(s)) if f.len() == 5 => (
                    port,
                    RecoveryStat {
                        objects_received: o,
                        bytes_received: r,
                        bytes_sent: s,
                    },
                ),
                _ => panic!("bad `dog node recovery stat -r` row {l:?} in:\n{text}"),
            }
        })
        .collect()
}

/// Sums of the counter increases from `before` to `after` (a port missing from `before`
/// started at zero; one missing from `after` is left out).
pub fn stat_increase(
    before: &BTreeMap<u16, RecoveryStat>,
    after: &BTreeMap<u16, RecoveryStat>,
) -> RecoveryStat {
    let mut sum = RecoveryStat::default();
    for (port, a) in after {
        let b = before.get(port).copied().unwrap_or_default();
        sum.objects_received += a.objects_received.saturating_sub(b.objects_received);
        sum.bytes_received += a.bytes_received.saturating_sub(b.bytes_received);
        sum.bytes_sent += a.bytes_sent.saturating_sub(b.bytes_sent);
    }
    sum
}

/// Node `node`'s id in `dog node list -r` as seen by node `on`.
pub fn node_id(cluster: &Cluster, on: usize, node: usize) -> String {
    let text = cluster.dog_ok(on, &["node", "list", "-r"]);
    text.lines()
        .find(|l| raw_port(l) == Some(cluster.port(node)))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("node {node} not in `dog node list -r`:\n{text}"))
        .to_owned()
}

/// Asserts that `probe` keeps returning `Ok` for all of `duration` (polled): for things that
/// must *not* happen, such as counters moving after a planned leave.
pub fn hold_for(what: &str, duration: Duration, mut probe: impl FnMut() -> Result<(), String>) {
    let end = Instant::now() + duration;
    loop {
        if let Err(e) = probe() {
            panic!("{what} stopped holding: {e}");
        }
        if Instant::now() >= end {
            return;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// `|got - want| <= want * pct / 100`.
pub fn within_pct(got: u64, want: u64, pct: u64) -> bool {
    got.abs_diff(want) * 100 <= want * pct
}

/// The `oid`s of `fixed replica OID` (and Sheepdog's `fixed missing OID`) lines of `dog vdi
/// check` or `dog cluster check` output; the hex may or may not be zero-padded.
pub fn fixed_oids(output: &str) -> Vec<u64> {
    output
        .lines()
        .filter_map(|l| {
            let rest = l
                .trim()
                .strip_prefix("fixed replica ")
                .or_else(|| l.trim().strip_prefix("fixed missing "))?;
            u64::from_str_radix(rest.trim(), 16).ok()
        })
        .collect()
}

/// An object file name as a number.
pub fn oid_of(name: &str) -> u64 {
    u64::from_str_radix(name, 16).expect("16 hex digits")
}
