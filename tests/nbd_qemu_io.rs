//! qemu-io through the NBD server: byte-granular writes and pattern checks.
//!
//! Issue 3, "Done when" 2: `qemu-io -f raw nbd://...` writes patterns at unaligned offsets and
//! across 4 MiB object boundaries (`write -P 0xab 4194300 10`), many of them in flight at once
//! (`aio_write`), plus WRITE_ZEROES (`write -z`); `read -P` finds every pattern and zeros
//! everywhere else, through the writing node and through the two others; `dog vdi read`
//! returns exactly the bytes the test's own model predicts.

use sheepfold_tests::data::assert_same_bytes;
use sheepfold_tests::tools::{all_output, qemu_io, TOOL_TIMEOUT};
use sheepfold_tests::Cluster;

const MIB: u64 = 1 << 20;
const OBJ: u64 = 4 * MIB;
const SIZE: u64 = 16 * MIB;

/// A write the test makes: pattern byte (0 = `write -z`), offset, length.
#[derive(Clone, Copy)]
struct W {
    pattern: u8,
    offset: u64,
    len: u64,
}

const fn w(pattern: u8, offset: u64, len: u64) -> W {
    W {
        pattern,
        offset,
        len,
    }
}

/// Writes made one at a time (`write`), in order.
const SYNC_WRITES: [W; 7] = [
    w(0xab, 4_194_300, 10),  // across the 0/1 boundary
    w(0xcd, 1, 1),           // a single byte
    w(0xef, 2 * OBJ - 1, 2), // one byte on each side of the 1/2 boundary
    w(0x12, 5_000, 70_000),
    w(0x34, 3 * OBJ - 1, OBJ + 1), // 2/3 boundary to the very end of the disk
    w(0x56, 6_000_000, 3 * 1024 * 1024 + 3), // most of object 1 and into 2
    w(0, 6_000_100, 4_000),        // WRITE_ZEROES inside the previous write
];

/// Writes issued together with `aio_write` (non-overlapping, all in flight), then `aio_flush`.
fn aio_writes() -> Vec<W> {
    (0..16)
        .map(|k| w(0x70 + k as u8, 10 * MIB + k * 65_537 + 3, 60_000))
        .collect()
}

fn command(x: &W, verb: &str) -> String {
    if x.pattern == 0 && verb != "read" {
        format!("{verb} -z {} {}", x.offset, x.len)
    } else {
        format!("{verb} -P {:#x} {} {}", x.pattern, x.offset, x.len)
    }
}

/// The disk the writes should produce.
fn model(writes: &[W]) -> Vec<u8> {
    let mut disk = vec![0u8; SIZE as usize];
    for x in writes {
        disk[x.offset as usize..(x.offset + x.len) as usize].fill(x.pattern);
    }
    disk
}

/// `read -P` commands that check the whole disk against `disk`, one per run of equal bytes.
fn read_checks(disk: &[u8]) -> Vec<String> {
    let mut cmds = Vec::new();
    let mut start = 0;
    while start < disk.len() {
        let b = disk[start];
        let end = disk[start..]
            .iter()
            .position(|&x| x != b)
            .map_or(disk.len(), |n| start + n);
        cmds.push(format!("read -P {b:#x} {start} {}", end - start));
        start = end;
    }
    cmds
}

fn run_qemu_io(cluster: &Cluster, node: usize, cmds: &[String]) -> String {
    let out = cluster.tool_ok(qemu_io(&cluster.nbd_uri(node, "io"), cmds), TOOL_TIMEOUT);
    let text = all_output(&out);
    assert!(
        !text.contains("failed") && !text.contains("error"),
        "qemu-io through node {node} reported a failure:\n{text}"
    );
    text
}

#[test]
fn unaligned_writes_and_object_boundaries() {
    let cluster = Cluster::builder().nodes(3).distinct_zones().start();
    cluster.format(2);
    cluster.dog_ok(0, &["vdi", "create", "io", "16M"]);

    // Synchronous writes, each checked right away on the same connection.
    let mut cmds = Vec::new();
    for x in &SYNC_WRITES {
        cmds.push(command(x, "write"));
        cmds.push(command(x, "read"));
    }
    let text = run_qemu_io(&cluster, 0, &cmds);
    assert_eq!(
        text.matches("read ").count(),
        SYNC_WRITES.len(),
        "every read ran:\n{text}"
    );

    // Sixteen writes in flight together through another node, then a flush.
    let aio = aio_writes();
    let mut cmds: Vec<String> = aio.iter().map(|x| command(x, "aio_write")).collect();
    cmds.push("aio_flush".to_owned());
    run_qemu_io(&cluster, 1, &cmds);

    let all: Vec<W> = SYNC_WRITES.iter().copied().chain(aio).collect();
    let disk = model(&all);
    let checks = read_checks(&disk);
    assert!(checks.len() > 30, "the model has many runs");
    for node in 0..3 {
        let text = run_qemu_io(&cluster, node, &checks);
        let verified = text.matches("read ").count();
        assert_eq!(
            verified,
            checks.len(),
            "through node {node}, every read -P ran:\n{text}"
        );
    }
    assert_same_bytes(
        "dog vdi read through node 2",
        &cluster.read_vdi(2, "io"),
        &disk,
    );
    for i in 0..3 {
        cluster.assert_no_panic(i);
    }
}
