//! Copy-on-write copies only what is written (issue 4, "Build" 2): the first write into an
//! object a clone shares with its snapshot creates the clone's object holding just the written
//! blocks, backed by the snapshot's object, on every replica. Reads through any node return
//! the snapshot's bytes overlaid with the clone's; `dog vdi check` finds backed and plain
//! replicas in agreement; deleting the snapshot and its base makes the clone's objects whole
//! before their backing objects go, so the clone reads the same afterwards.

use std::time::Duration;

use sheepfold_tests::data::{data_oid_name, random_bytes};
use sheepfold_tests::recovery::allocated_bytes;
use sheepfold_tests::tools::qemu_io;
use sheepfold_tests::Cluster;

const OBJ: u64 = 4 << 20;
const SIZE: u64 = 4 * OBJ;
/// Generous bound for a backed object holding one or two 4 KiB blocks: the blocks, the
/// header and checksum blocks at the trailer, and file-system slack.
const SMALL: u64 = 64 << 10;

/// Nodes holding a replica of object `name`.
fn holders(cluster: &Cluster, name: &str) -> Vec<usize> {
    (0..cluster.len())
        .filter(|i| cluster.data_objects(*i).contains(name))
        .collect()
}

/// The `fixed replica` lines of `dog vdi check NAME` through node `i`.
fn check_fixes(cluster: &Cluster, i: usize, name: &str) -> Vec<String> {
    cluster
        .dog_ok(i, &["vdi", "check", name])
        .lines()
        .filter(|l| l.contains("fixed"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn first_writes_into_shared_objects_copy_only_what_they_write() {
    let cluster = Cluster::builder().nodes(3).distinct_zones().start();
    cluster.format(2);
    cluster.dog_ok(0, &["vdi", "create", "base", &SIZE.to_string()]);
    let base_bytes = random_bytes(0xc0_ffee, 2 * OBJ as usize);
    cluster.write_vdi(0, "base", 0, &base_bytes);
    cluster.dog_ok(1, &["vdi", "snapshot", "-s", "gold", "base"]);
    cluster.dog_ok(2, &["vdi", "clone", "-s", "gold", "base", "c"]);
    let snap_vid = {
        let raw = cluster.dog_ok(0, &["vdi", "list", "-r", "base"]);
        let line = raw
            .lines()
            .find(|l| l.starts_with("s "))
            .unwrap_or_else(|| panic!("no snapshot of base listed:\n{raw}"));
        u32::from_str_radix(line.split(' ').nth(7).expect("vid column"), 16).expect("hex vid")
    };
    let clone_vid = cluster.vdi_id(0, "c");

    // One aligned 4 KiB write into object 0, one unaligned 100-byte write into object 1
    // (its block is merged with the snapshot's bytes on each replica), through node 1.
    let mut want = base_bytes.clone();
    want.resize(SIZE as usize, 0);
    want[8192..8192 + 4096].fill(0x5a);
    want[OBJ as usize + 10..OBJ as usize + 110].fill(0xa5);
    cluster.tool_ok(
        qemu_io(
            &cluster.nbd_uri(1, "c"),
            &[
                "write -P 0x5a 8192 4096".to_string(),
                format!("write -P 0xa5 {} 100", OBJ + 10),
            ],
        ),
        Duration::from_secs(60),
    );

    for idx in 0..2 {
        let name = data_oid_name(clone_vid, idx);
        let nodes = holders(&cluster, &name);
        assert_eq!(
            nodes.len(),
            2,
            "{name} should have 2 replicas, found on {nodes:?}"
        );
        for node in nodes {
            let held = allocated_bytes(cluster.store(node), &name);
            assert!(
                held <= SMALL,
                "node {node}'s copy of {name} holds {held} bytes: the first write copied the \
                 whole shared object"
            );
        }
    }
    for node in 0..3 {
        assert!(
            cluster.read_vdi(node, "c") == want,
            "clone c read through node {node} is not the snapshot overlaid with its writes"
        );
    }
    assert!(
        cluster.read_vdi(2, "base") == {
            let mut b = base_bytes.clone();
            b.resize(SIZE as usize, 0);
            b
        },
        "the base changed"
    );
    assert_eq!(check_fixes(&cluster, 0, "c"), Vec::<String>::new());

    // Deleting the snapshot and the base frees their objects, which the clone's copies read
    // through to: the clone's copies must be made whole first.
    cluster.dog_ok(0, &["vdi", "delete", "-s", "gold", "base"]);
    cluster.dog_ok(1, &["vdi", "delete", "base"]);
    for idx in 0..2 {
        let gone = data_oid_name(snap_vid, idx);
        assert!(holders(&cluster, &gone).is_empty(), "{gone} was not freed");
        let name = data_oid_name(clone_vid, idx);
        for node in holders(&cluster, &name) {
            let held = allocated_bytes(cluster.store(node), &name);
            assert!(
                held >= OBJ,
                "node {node}'s copy of {name} holds only {held} bytes after its backing went"
            );
        }
    }
    for node in 0..3 {
        assert!(
            cluster.read_vdi(node, "c") == want,
            "clone c read through node {node} changed when its snapshot was deleted"
        );
    }
    assert_eq!(check_fixes(&cluster, 2, "c"), Vec::<String>::new());
}
