//! Three real sheep: node list, replicated writes, object placement, and surviving `kill -9`.
//!
//! Acceptance criterion 1: 3 sheep with `-c local`, `dog cluster format --copies 2`;
//! `dog node list` shows the 3 nodes with 128 vnodes and their zones (exact lines); 64 MiB of
//! random data written with `dog vdi write` reads back identical through each node; every
//! data object exists on exactly 2 distinct nodes; after `kill -9` of one sheep the other two
//! list 2 nodes within 5 s and all 64 MiB still read back identical through both.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sheepfold_tests::data::{assert_same_bytes, data_oid_name, random_bytes, replica_counts};
use sheepfold_tests::text::{
    node_list_raw_row, node_list_row, sd_hash_vdi, DEFAULT_VNODES, NODE_LIST_HEADER,
};
use sheepfold_tests::Cluster;

const MIB: usize = 1 << 20;
const VDI_SIZE: usize = 64 * MIB;
const OBJECT_SIZE: usize = 4 * MIB;

/// `dog node list` (plain and raw) on node `on`, compared line by line with the expected
/// rows of `members` (ids are positions in port order; all addresses are 127.0.0.1).
fn assert_node_list(cluster: &Cluster, on: usize, members: &[usize]) {
    let mut by_port: Vec<usize> = members.to_vec();
    by_port.sort_by_key(|&i| cluster.port(i));
    let zone = |i: usize| cluster.node(i).zone.expect("test uses explicit zones");

    let mut want = vec![NODE_LIST_HEADER.to_owned()];
    want.extend(
        by_port
            .iter()
            .enumerate()
            .map(|(id, &i)| node_list_row(id, cluster.port(i), DEFAULT_VNODES, zone(i))),
    );
    let got = cluster.dog_ok(on, &["node", "list"]);
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        want,
        "dog node list on node {on}"
    );

    let want_raw: Vec<String> = by_port
        .iter()
        .enumerate()
        .map(|(id, &i)| node_list_raw_row(id, cluster.port(i), DEFAULT_VNODES, zone(i)))
        .collect();
    let got = cluster.dog_ok(on, &["node", "list", "-r"]);
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        want_raw,
        "dog node list -r on node {on}"
    );
}

#[test]
fn three_nodes_replicate_twice_and_survive_kill9() {
    let cluster = Cluster::builder().nodes(3).distinct_zones().start();
    cluster.format(2);

    for on in 0..3 {
        assert_node_list(&cluster, on, &[0, 1, 2]);
    }

    // 64 MiB of random data through node 0.
    let data = random_bytes(0x5eed_0001, VDI_SIZE);
    cluster.dog_ok(0, &["vdi", "create", "data", "64M"]);
    cluster.write_vdi(0, "data", 0, &data);

    for on in 0..3 {
        let got = cluster.read_vdi(on, "data");
        assert_same_bytes(&format!("vdi read through node {on}"), &got, &data);
    }

    // Every data object sits on exactly 2 distinct nodes, and they are exactly the 16 objects
    // of the VDI (the first VDI of a fresh cluster gets the vid of its name's hash).
    let vid = sd_hash_vdi("data");
    let want_oids: BTreeSet<String> = (0..(VDI_SIZE / OBJECT_SIZE) as u32)
        .map(|idx| data_oid_name(vid, idx))
        .collect();
    let per_node: Vec<BTreeSet<String>> = (0..3).map(|i| cluster.data_objects(i)).collect();
    let counts = replica_counts(&per_node);
    assert_eq!(
        counts.keys().cloned().collect::<BTreeSet<_>>(),
        want_oids,
        "data objects stored across the cluster (per node: {per_node:?})"
    );
    let wrong: Vec<_> = counts.iter().filter(|(_, &n)| n != 2).collect();
    assert!(
        wrong.is_empty(),
        "objects not on exactly 2 nodes: {wrong:?} (per node: {per_node:?})"
    );

    // kill -9 one sheep; the survivors must drop it from their view within 5 s.
    cluster.kill9(0);
    let killed_at = Instant::now();
    cluster.wait_for_view(&[1, 2], Duration::from_secs(5));
    eprintln!(
        "survivors list 2 nodes {:.2?} after kill -9",
        killed_at.elapsed()
    );
    for on in [1, 2] {
        assert_node_list(&cluster, on, &[1, 2]);
    }

    for on in [1, 2] {
        let got = cluster.read_vdi(on, "data");
        assert_same_bytes(
            &format!("vdi read through node {on} after kill -9 of node 0"),
            &got,
            &data,
        );
    }
}
