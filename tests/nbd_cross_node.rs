//! NBD and the Sheepdog protocol see one store, whichever node a client talks to.
//!
//! Issue 3, "Done when" 7: a VDI written through node A over NBD reads back identical through
//! node B over NBD and through `dog vdi read` on node C; and the reverse: a VDI written with
//! `dog vdi write` through one node reads back identical over NBD through the two others.
//! Also with connections that were opened before the other node wrote or trimmed and are held
//! open (a VM's, or a migration target's): they must read the new bytes, and their writes must
//! not destroy what the other node allocated.

use sheepfold_tests::data::{assert_same_bytes, random_bytes};
use sheepfold_tests::nbd_raw::{
    call, good_read, good_write, must_read, session, CMD_READ, CMD_WRITE,
};
use sheepfold_tests::tools::{qemu_io, tool, TOOL_IO_TIMEOUT, TOOL_TIMEOUT};
use sheepfold_tests::Cluster;

const MIB: usize = 1 << 20;

/// `nbdcopy nbd://NODE/NAME FILE` and the file's bytes.
fn nbd_read(cluster: &Cluster, node: usize, name: &str) -> Vec<u8> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let mut copy = tool("nbdcopy");
    copy.arg(cluster.nbd_uri(node, name)).arg(&out);
    cluster.tool_ok(copy, TOOL_IO_TIMEOUT);
    std::fs::read(&out).expect("read the copy")
}

#[test]
fn written_over_nbd_on_one_node_reads_the_same_everywhere() {
    let cluster = Cluster::builder().nodes(3).distinct_zones().start();
    cluster.format(2);
    let tmp = tempfile::tempdir().expect("tempdir");

    // A -> B and C: nbdcopy of 32 MiB of random data into "viaa" through node 0, then an
    // unaligned patch across an object boundary through node 0 with qemu-io.
    let mut want = random_bytes(0x5eed_3007, 32 * MIB);
    let src = tmp.path().join("src");
    std::fs::write(&src, &want).expect("write source");
    cluster.dog_ok(1, &["vdi", "create", "viaa", "32M"]);
    let mut copy = tool("nbdcopy");
    copy.arg(&src).arg(cluster.nbd_uri(0, "viaa"));
    cluster.tool_ok(copy, TOOL_IO_TIMEOUT);
    let (patch_at, patch_len) = (3 * 4 * MIB - 333, 1000);
    cluster.tool_ok(
        qemu_io(
            &cluster.nbd_uri(0, "viaa"),
            &[format!("write -P 0x5c {patch_at} {patch_len}")],
        ),
        TOOL_TIMEOUT,
    );
    want[patch_at..patch_at + patch_len].fill(0x5c);

    assert_same_bytes(
        "written via NBD on node 0, read via NBD on node 1",
        &nbd_read(&cluster, 1, "viaa"),
        &want,
    );
    assert_same_bytes(
        "written via NBD on node 0, read with dog on node 2",
        &cluster.read_vdi(2, "viaa"),
        &want,
    );

    // The reverse: dog vdi write of 9 MiB at an unaligned offset through node 2, then NBD
    // reads through nodes 0 and 1.
    let mut want = vec![0u8; 24 * MIB];
    let data = random_bytes(0x5eed_3008, 9 * MIB);
    let at = 1_234_567;
    want[at..at + data.len()].copy_from_slice(&data);
    cluster.dog_ok(0, &["vdi", "create", "viadog", "24M"]);
    cluster.write_vdi(2, "viadog", at as u64, &data);
    for node in [0, 1] {
        assert_same_bytes(
            &format!("written with dog on node 2, read via NBD on node {node}"),
            &nbd_read(&cluster, node, "viadog"),
            &want,
        );
    }
    for i in 0..3 {
        cluster.assert_no_panic(i);
    }
}

/// The VDI's bytes in `[offset, offset + len)`, read through node `node` with dog.
fn dog_range(cluster: &Cluster, node: usize, name: &str, offset: usize, len: usize) -> Vec<u8> {
    cluster.read_vdi(node, name)[offset..offset + len].to_vec()
}

/// `Err` describing the first difference, for checks that are gathered before failing.
fn same(what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    match got.iter().zip(want).position(|(a, b)| a != b) {
        None if got.len() == want.len() => Ok(()),
        at => {
            let at = at.unwrap_or(got.len().min(want.len()));
            let byte = |b: &[u8]| b.get(at).map_or("none".to_owned(), |x| format!("{x:#04x}"));
            Err(format!(
                "{what}: got {} bytes, want {}; first difference at byte {at}: got {}, want {}",
                got.len(),
                want.len(),
                byte(got),
                byte(want)
            ))
        }
    }
}

#[test]
fn connections_held_open_see_what_other_nodes_did() {
    let cluster = Cluster::builder().nodes(3).distinct_zones().start();
    cluster.format(2);
    cluster.dog_ok(0, &["vdi", "create", "shared", "32M"]);
    let obj = 4 * MIB;
    let at = 3 * obj;
    let mut problems = Vec::new();

    // Connections to nodes 1 and 2, opened (and reading) before anything is written, held
    // open throughout, as a VM's or a migration target's would be.
    let (mut s1, _) = session(cluster.nbd_port(1), "shared");
    let (mut s2, _) = session(cluster.nbd_port(2), "shared");
    assert_eq!(good_read(&mut s1, at as u64, 4096), vec![0; 4096]);
    assert_eq!(good_read(&mut s2, at as u64, 4096), vec![0; 4096]);

    // Node 0 allocates object 3.
    cluster.tool_ok(
        qemu_io(
            &cluster.nbd_uri(0, "shared"),
            &[format!("write -P 0xa1 {at} {MIB}")],
        ),
        TOOL_TIMEOUT,
    );
    problems.extend(
        same(
            "node 1's held connection reads object 3 after node 0 allocated it",
            &good_read(&mut s1, at as u64, 4096),
            &[0xa1; 4096],
        )
        .err(),
    );

    // Node 2's held connection writes elsewhere in object 3: node 0's data must survive.
    good_write(&mut s2, (at + 2 * MIB) as u64, &[0xb2; 4096]);
    let mut want = vec![0u8; obj];
    want[..MIB].fill(0xa1);
    want[2 * MIB..2 * MIB + 4096].fill(0xb2);
    problems.extend(
        same(
            "object 3 (dog vdi read) after node 0's write and a write through node 2's held \
             connection",
            &dog_range(&cluster, 1, "shared", at, obj),
            &want,
        )
        .err(),
    );

    // Node 0 frees object 3; the held connections read zeros and can write it again.
    cluster.tool_ok(
        qemu_io(
            &cluster.nbd_uri(0, "shared"),
            &[format!("discard {at} {obj}")],
        ),
        TOOL_TIMEOUT,
    );
    let err = call(&mut s1, CMD_READ, 0x77, at as u64, 4096, &[]);
    if err == 0 {
        let got = must_read(&mut s1, 4096, "read data");
        problems.extend(
            same(
                "node 1's held connection reads object 3 after node 0 trimmed it",
                &got,
                &[0; 4096],
            )
            .err(),
        );
    } else {
        problems.push(format!(
            "node 1's held connection: read of object 3 after node 0 trimmed it failed with \
             error {err}"
        ));
    }
    let err = call(&mut s2, CMD_WRITE, 0x78, at as u64, 4096, &[0xc3; 4096]);
    if err == 0 {
        let mut want = vec![0u8; obj];
        want[..4096].fill(0xc3);
        problems.extend(
            same(
                "object 3 (dog vdi read) rewritten through node 2's held connection after node \
                 0 trimmed it",
                &dog_range(&cluster, 0, "shared", at, obj),
                &want,
            )
            .err(),
        );
    } else {
        problems.push(format!(
            "node 2's held connection: write to object 3 after node 0 trimmed it failed with \
             error {err}"
        ));
    }
    for i in 0..3 {
        cluster.assert_no_panic(i);
    }
    assert!(
        problems.is_empty(),
        "connections held open across other nodes' changes:\n{}",
        problems.join("\n")
    );
}
