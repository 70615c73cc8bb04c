//! Checksums catch a corrupted replica on disk; `dog vdi check` and `dog cluster check` repair
//! corrupted and missing replicas and say what they fixed.
//!
//! Issue 5, "Done when" 5: 3 nodes in distinct zones, 3 copies, a VDI of patterned data.
//! Bytes inside the data region of one replica file are overwritten on disk (its trailer with
//! the checksums is left alone).

use std::time::Duration;

use sheepfold_tests::data::data_oid_name;
use sheepfold_tests::recovery::{
    corrupt_replica, data_region, dog_verify_all, fixed_oids, nbd_verify_all, object_path, oid_of,
    BlockModel,
};
use sheepfold_tests::wait::poll_until;
use sheepfold_tests::Cluster;

const VDI: &str = "checked";
const VDI_SIZE: u64 = 32 << 20;

/// 3 nodes, 3 copies, VDI [`VDI`] written with write #1 everywhere. Returns its vid too.
fn written_cluster() -> (Cluster, BlockModel, u32) {
    let cluster = Cluster::builder().nodes(3).distinct_zones().start();
    cluster.format(3);
    cluster.dog_ok(0, &["vdi", "create", VDI, &VDI_SIZE.to_string()]);
    let mut model = BlockModel::new(VDI_SIZE);
    cluster.write_vdi(0, VDI, 0, &BlockModel::payload(1, 0, VDI_SIZE));
    model.record(1, 0, VDI_SIZE);
    let vid = cluster.vdi_id(0, VDI);
    (cluster, model, vid)
}

/// Damages replica `name` on node `node`: a whole 4 KiB block at offset 0 and 300 unaligned
/// bytes in the middle; asserts that the data region now differs from node `good`'s.
fn corrupt(cluster: &Cluster, node: usize, good: usize, name: &str) {
    corrupt_replica(cluster.store(node), name, 0, 4096, 0xaa);
    corrupt_replica(cluster.store(node), name, (2 << 20) + 100, 300, 0x55);
    assert_ne!(
        data_region(cluster.store(node), name).expect("read the corrupted replica"),
        data_region(cluster.store(good), name).expect("read a good replica"),
        "the corruption did not change node {node}'s replica of {name}"
    );
}

/// `dog vdi check VDI` (or `dog cluster check`) through node 0: asserts the closing
/// `finish check&repair VDI` line and returns the oids it says it fixed.
fn run_check(cluster: &Cluster, args: &[&str]) -> Vec<u64> {
    let out = cluster.dog_ok(0, args);
    let finish = format!("finish check&repair {VDI}");
    assert!(
        out.lines().any(|l| l.trim() == finish),
        "dog {} printed no `{finish}` line:\n{out}",
        args.join(" ")
    );
    fixed_oids(&out)
}

fn assert_region_matches(cluster: &Cluster, node: usize, good: usize, name: &str) {
    let got = data_region(cluster.store(node), name)
        .unwrap_or_else(|e| panic!("node {node}'s replica of {name}: {e}"));
    let want = data_region(cluster.store(good), name).expect("a good replica");
    assert!(
        got == want,
        "node {node}'s replica of {name} still differs from node {good}'s after the repair"
    );
}

/// Reads through the node holding a corrupted replica (NBD and `dog vdi read`) return the
/// right bytes. `dog vdi check` then leaves that replica equal to the others (reporting
/// `fixed replica OID` unless the reads already repaired it); a replica corrupted with no
/// read in between is reported and repaired; a second check fixes nothing.
#[test]
fn corrupt_replica_is_never_read_and_vdi_check_repairs_it() {
    let (cluster, model, vid) = written_cluster();
    let first = data_oid_name(vid, 2);
    corrupt(&cluster, 1, 0, &first);

    for _ in 0..2 {
        nbd_verify_all(&cluster, 1, VDI, &model);
        dog_verify_all(&cluster, 1, VDI, &model);
    }
    let repaired_by_reads =
        data_region(cluster.store(1), &first).ok() == data_region(cluster.store(0), &first).ok();
    let fixed = run_check(&cluster, &["vdi", "check", VDI]);
    if repaired_by_reads {
        assert!(
            fixed.is_empty() || fixed == [oid_of(&first)],
            "vdi check after a read repair fixed {fixed:x?}"
        );
    } else {
        assert_eq!(
            fixed,
            [oid_of(&first)],
            "vdi check must report exactly the corrupted object {first}"
        );
    }
    assert_region_matches(&cluster, 1, 0, &first);

    // Corrupt another object and check at once, with no read in between.
    let second = data_oid_name(vid, 5);
    corrupt(&cluster, 2, 0, &second);
    let fixed = run_check(&cluster, &["vdi", "check", VDI]);
    assert_eq!(
        fixed,
        [oid_of(&second)],
        "vdi check must report exactly the corrupted object {second}"
    );
    assert_region_matches(&cluster, 2, 0, &second);

    let fixed = run_check(&cluster, &["vdi", "check", VDI]);
    assert!(fixed.is_empty(), "a second check fixed {fixed:x?}");
    for node in 0..3 {
        dog_verify_all(&cluster, node, VDI, &model);
        cluster.assert_no_panic(node);
    }
}

/// A replica file deleted from a store is restored by `dog cluster check` (which reports it)
/// with the same data region as the others, and the VDI reads back through that node.
#[test]
fn cluster_check_restores_a_deleted_replica() {
    let (cluster, model, vid) = written_cluster();
    let name = data_oid_name(vid, 3);
    let path = object_path(cluster.store(2), &name);
    std::fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));

    let fixed = run_check(&cluster, &["cluster", "check"]);
    assert_eq!(
        fixed,
        [oid_of(&name)],
        "cluster check must report exactly the object whose replica was deleted"
    );
    poll_until(
        &format!("{} to exist again", path.display()),
        Duration::from_secs(10),
        || {
            if path.is_file() {
                Ok(())
            } else {
                Err("missing".to_owned())
            }
        },
    );
    assert_region_matches(&cluster, 2, 0, &name);
    let fixed = run_check(&cluster, &["cluster", "check"]);
    assert!(fixed.is_empty(), "a second cluster check fixed {fixed:x?}");
    nbd_verify_all(&cluster, 2, VDI, &model);
    for node in 0..3 {
        cluster.assert_no_panic(node);
    }
}
