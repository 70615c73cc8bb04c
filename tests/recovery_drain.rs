//! Planned changes move data once: draining a node, then removing it, and adding a node.
//!
//! Issue 5, "Done when" 3. Bytes moved are read from `dog node recovery stat -r` (cumulative
//! per node: objects received, bytes received, bytes sent by recovery) before and after each
//! change, and compared with the bytes allocated to object files in the stores.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sheepfold_tests::recovery::{
    dog_verify_all, held_bytes, hold_for, holders, node_id, recovery_stats, stat_increase,
    wait_copies, wait_recovery_done, within_pct, BlockModel, FAST_GOSSIP,
};
use sheepfold_tests::wait::poll_until;
use sheepfold_tests::Cluster;

const VDI: &str = "moving";
/// Bound for one planned change to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);

/// A 4-node cluster (distinct zones, 2 copies, `--recovery-grace 0`) holding `size` bytes of
/// patterned data in one VDI, settled: nothing in recovery, every object on exactly 2 nodes.
/// Returns the model of the VDI and the set of every object.
fn settled_cluster(size: u64) -> (Cluster, BlockModel, BTreeSet<String>) {
    let mut args = vec!["--recovery-grace", "0"];
    args.extend(FAST_GOSSIP);
    let cluster = Cluster::builder()
        .nodes(4)
        .distinct_zones()
        .sheep_args(&args)
        .start();
    cluster.format(2);
    cluster.dog_ok(0, &["vdi", "create", VDI, &size.to_string()]);
    let mut model = BlockModel::new(size);
    cluster.write_vdi(0, VDI, 0, &BlockModel::payload(1, 0, size));
    model.record(1, 0, size);
    let all: Vec<usize> = (0..4).collect();
    wait_recovery_done(&cluster, &all, SETTLE_TIMEOUT);
    let objects: BTreeSet<String> = holders(&cluster, &all).into_keys().collect();
    wait_copies(&cluster, &all, &objects, 2, SETTLE_TIMEOUT);
    (cluster, model, objects)
}

fn object_sets(cluster: &Cluster, nodes: &[usize]) -> BTreeMap<usize, BTreeSet<String>> {
    nodes
        .iter()
        .map(|&i| (i, cluster.count_objects(i)))
        .collect()
}

/// Draining node 3 (`dog -p PORT node vnodes set 0`) moves each of its objects exactly once:
/// the bytes received cluster-wide are within 10% of the bytes it held, every other node only
/// gains objects node 3 held and loses none, and afterwards every object has 2 copies on the
/// other nodes and reads back. Then `dog node kill` of the drained node moves nothing: after
/// the view settles no counter moves and no store changes.
#[test]
fn drain_moves_each_object_once_and_the_leave_moves_nothing() {
    const D: usize = 3;
    let (cluster, model, objects) = settled_cluster(200 << 20);
    let others = [0, 1, 2];
    let before = object_sets(&cluster, &others);
    let drained = cluster.count_objects(D);
    let drained_bytes = held_bytes(cluster.store(D));
    assert!(
        drained.len() >= 10,
        "node {D} should hold about half of 50 objects: {drained:?}"
    );
    let stats_before = recovery_stats(&cluster, 0);

    cluster.dog_ok(D, &["node", "vnodes", "set", "0"]);
    poll_until(
        &format!("node {D}'s store to be empty after the drain"),
        SETTLE_TIMEOUT,
        || match cluster.count_objects(D) {
            left if left.is_empty() => Ok(()),
            left => Err(format!("{} objects left", left.len())),
        },
    );
    wait_recovery_done(&cluster, &[0, 1, 2, 3], SETTLE_TIMEOUT);
    wait_copies(&cluster, &others, &objects, 2, SETTLE_TIMEOUT);

    let stats_after = recovery_stats(&cluster, 0);
    let moved = stat_increase(&stats_before, &stats_after);
    eprintln!(
        "drain: node {D} held {} objects, {drained_bytes} bytes; recovery received {moved:?}",
        drained.len()
    );
    assert!(
        within_pct(moved.bytes_received, drained_bytes, 10),
        "bytes received by recovery during the drain: {}, node {D} held {drained_bytes} \
         (want within 10%)\nbefore: {stats_before:?}\nafter: {stats_after:?}",
        moved.bytes_received
    );
    assert!(
        within_pct(moved.objects_received, drained.len() as u64, 10),
        "objects received during the drain: {}, node {D} held {}",
        moved.objects_received,
        drained.len()
    );
    let after = object_sets(&cluster, &others);
    for &i in &others {
        let lost: Vec<_> = before[&i].difference(&after[&i]).collect();
        let foreign: Vec<_> = after[&i]
            .difference(&before[&i])
            .filter(|o| !drained.contains(*o))
            .collect();
        assert!(
            lost.is_empty() && foreign.is_empty(),
            "node {i} during the drain: dropped {lost:?}; gained objects node {D} never held: \
             {foreign:?}"
        );
    }
    dog_verify_all(&cluster, 1, VDI, &model);

    // The drained node leaves; nothing may move any more.
    let id = node_id(&cluster, 0, D);
    cluster.dog_ok(0, &["node", "kill", &id]);
    poll_until(
        &format!("node {D} to exit after dog node kill {id}"),
        Duration::from_secs(30),
        || {
            if cluster.is_running(D) {
                Err("still running".to_owned())
            } else {
                Ok(())
            }
        },
    );
    cluster.wait_for_view(&others, Duration::from_secs(30));
    wait_recovery_done(&cluster, &others, SETTLE_TIMEOUT);
    let settled_stats: BTreeMap<u16, _> = stats_after
        .into_iter()
        .filter(|(port, _)| *port != cluster.port(D))
        .collect();
    hold_for(
        "no data movement after the drained node left",
        Duration::from_secs(5),
        || {
            let now = recovery_stats(&cluster, 0);
            if now != settled_stats {
                return Err(format!("counters {settled_stats:?} became {now:?}"));
            }
            let sets = object_sets(&cluster, &others);
            if sets != after {
                return Err("the surviving nodes' object sets changed".to_owned());
            }
            Ok(())
        },
    );
    dog_verify_all(&cluster, 2, VDI, &model);
    for i in others {
        cluster.assert_no_panic(i);
    }
}

/// Adding a 5th node moves only what the ring now gives it: the bytes received cluster-wide
/// are within 10% of what the new node ends up holding, no old node receives anything, the
/// old nodes drop the copies that moved, and every object keeps exactly 2 copies.
#[test]
fn added_node_receives_only_its_share() {
    let (mut cluster, model, objects) = settled_cluster(120 << 20);
    let old = [0, 1, 2, 3];
    let before = object_sets(&cluster, &old);
    let stats_before = recovery_stats(&cluster, 0);

    let new = cluster.add_node();
    let all = [0, 1, 2, 3, new];
    wait_recovery_done(&cluster, &all, SETTLE_TIMEOUT);
    let holders = wait_copies(&cluster, &all, &objects, 2, SETTLE_TIMEOUT);
    wait_recovery_done(&cluster, &all, SETTLE_TIMEOUT);

    let stats_after = recovery_stats(&cluster, 0);
    let moved = stat_increase(&stats_before, &stats_after);
    let gained = cluster.count_objects(new);
    let gained_bytes = held_bytes(cluster.store(new));
    eprintln!(
        "add: node {new} now holds {} objects, {gained_bytes} bytes; recovery received {moved:?}",
        gained.len()
    );
    assert!(
        !gained.is_empty(),
        "the new node received nothing: {holders:?}"
    );
    assert!(
        within_pct(moved.bytes_received, gained_bytes, 10),
        "bytes received cluster-wide: {}, the new node holds {gained_bytes} (want within 10%)\n\
         before: {stats_before:?}\nafter: {stats_after:?}",
        moved.bytes_received
    );
    for &i in &old {
        let now = cluster.count_objects(i);
        let received: Vec<_> = now.difference(&before[&i]).collect();
        assert!(
            received.is_empty(),
            "old node {i} received {received:?} when node {new} joined"
        );
        let dropped: BTreeSet<_> = before[&i].difference(&now).cloned().collect();
        assert!(
            dropped.is_subset(&gained),
            "old node {i} dropped {dropped:?}, which node {new} does not hold"
        );
    }
    dog_verify_all(&cluster, new, VDI, &model);
    for i in all {
        cluster.assert_no_panic(i);
    }
}
