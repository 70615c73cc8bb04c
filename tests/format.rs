//! The cluster format outlives membership changes and full restarts.
//!
//! Acceptance criterion 2: a fourth sheep started after the format learns it by itself (its
//! `dog cluster info` says `Cluster status: running, auto-recovery enabled` and it can create
//! and read VDIs); stopping and restarting the whole cluster keeps the format and the VDIs
//! (`vdi list` and data identical).

use sheepfold_tests::cluster::RUNNING_TIMEOUT;
use sheepfold_tests::data::{assert_same_bytes, random_bytes};
use sheepfold_tests::text::STATUS_RUNNING;
use sheepfold_tests::Cluster;

const MIB: usize = 1 << 20;

/// Names (second field) of a raw `dog vdi list -r` listing.
fn vdi_names(raw_list: &str) -> Vec<String> {
    raw_list
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(str::to_owned)
        .collect()
}

#[test]
fn node_started_after_format_learns_it() {
    let mut cluster = Cluster::builder().nodes(3).distinct_zones().start();
    cluster.format(2);
    let early = random_bytes(0x5eed_0201, 8 * MIB);
    cluster.dog_ok(0, &["vdi", "create", "early", "8M"]);
    cluster.write_vdi(0, "early", 0, &early);

    let late_node = cluster.add_node();
    cluster.wait_running(late_node, RUNNING_TIMEOUT);
    let info = cluster.dog_ok(late_node, &["cluster", "info"]);
    assert_eq!(
        info.lines().next(),
        Some(STATUS_RUNNING),
        "cluster info on the late node:\n{info}"
    );

    // It serves the old VDI and creates a new one that everybody sees.
    assert_same_bytes(
        "early VDI read through the late node",
        &cluster.read_vdi(late_node, "early"),
        &early,
    );
    let late = random_bytes(0x5eed_0202, 8 * MIB);
    cluster.dog_ok(late_node, &["vdi", "create", "late", "8M"]);
    cluster.write_vdi(late_node, "late", 0, &late);
    for on in [late_node, 0, 1, 2] {
        assert_same_bytes(
            &format!("late VDI read through node {on}"),
            &cluster.read_vdi(on, "late"),
            &late,
        );
        let mut names = vdi_names(&cluster.dog_ok(on, &["vdi", "list", "-r"]));
        names.sort();
        assert_eq!(names, ["early", "late"], "vdi list -r on node {on}");
    }
}

#[test]
fn whole_cluster_restart_keeps_format_and_vdis() {
    let cluster = Cluster::builder().nodes(3).distinct_zones().start();
    cluster.format(2);

    let full = random_bytes(0x5eed_0203, 16 * MIB);
    cluster.dog_ok(0, &["vdi", "create", "full", "16M"]);
    cluster.write_vdi(0, "full", 0, &full);

    // A sparse VDI: 1 MiB of data at 3 MiB, zeros elsewhere.
    let chunk = random_bytes(0x5eed_0204, MIB);
    let mut sparse = vec![0u8; 8 * MIB];
    sparse[3 * MIB..4 * MIB].copy_from_slice(&chunk);
    cluster.dog_ok(1, &["vdi", "create", "sparse", "8M"]);
    cluster.write_vdi(1, "sparse", 3 * MIB as u64, &chunk);
    cluster.dog_ok(2, &["vdi", "create", "empty", "4M"]);

    let list_before = cluster.dog_ok(0, &["vdi", "list", "-r"]);
    let info_before = cluster.dog_ok(0, &["cluster", "info"]);
    let created_before = info_before
        .lines()
        .find(|l| l.starts_with("Cluster created at "))
        .unwrap_or_else(|| panic!("no 'Cluster created at' line in:\n{info_before}"))
        .to_owned();

    for (i, status) in cluster.stop_all() {
        assert!(status.success(), "node {i} exited with {status} on SIGTERM");
    }
    assert!(cluster.running_nodes().is_empty());

    cluster.restart_all();
    for on in 0..3 {
        cluster.wait_running(on, RUNNING_TIMEOUT);
    }

    for on in 0..3 {
        let info = cluster.dog_ok(on, &["cluster", "info"]);
        assert_eq!(
            info.lines().next(),
            Some(STATUS_RUNNING),
            "node {on}:\n{info}"
        );
        assert!(
            info.lines().any(|l| l == created_before),
            "node {on} lost the format time '{created_before}':\n{info}"
        );
        assert_eq!(
            cluster.dog_ok(on, &["vdi", "list", "-r"]),
            list_before,
            "vdi list -r on node {on} after the restart"
        );
        assert_same_bytes(
            &format!("'full' through node {on} after restart"),
            &cluster.read_vdi(on, "full"),
            &full,
        );
        assert_same_bytes(
            &format!("'sparse' through node {on} after restart"),
            &cluster.read_vdi(on, "sparse"),
            &sparse,
        );
        assert_same_bytes(
            &format!("'empty' through node {on} after restart"),
            &cluster.read_vdi(on, "empty"),
            &vec![0u8; 4 * MIB],
        );
    }
}
