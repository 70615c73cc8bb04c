//! A node that was away comes back and never serves what was overwritten while it was gone.
//!
//! Issue 5, "Done when" 2: 4 nodes in distinct zones, 3 copies, the default recovery grace
//! (so the survivors do not rebalance while the node is down). 64 MiB are written, node 3
//! goes down (SIGTERM, or `kill -9` in the second test), and every object it holds is
//! overwritten, wholly or in parts, through node 0. Node 3 restarts; at once, and for as long
//! as it catches up, every object is read through node 3 over and over, alternating its NBD
//! export and `dog vdi read -p PORT`. No read may return a byte older than the last
//! acknowledged write. Recovery is throttled (`-R max=2,interval=500`) so the catch-up takes
//! a few seconds and the reads race it. Afterwards node 3's replicas agree with the others.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sheepfold_tests::data::{data_oid_name, OBJECT_SIZE};
use sheepfold_tests::recovery::{
    assert_replicas_agree, data_region, nbd_open, nbd_read, recovery_lines, vdi_objects,
    wait_copies, wait_recovery_done, BlockModel, FAST_GOSSIP,
};
use sheepfold_tests::Cluster;

const VDI: &str = "rejoin";
const VDI_SIZE: u64 = 64 << 20;
const NODE: usize = 3;
/// Bound for the whole read-while-catching-up phase.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(180);
/// Clean passes over every object required once node 3 has caught up.
const PASSES_AFTER_DONE: usize = 2;

#[derive(Debug, Clone, Copy)]
enum Down {
    Stop,
    Kill9,
}

/// Counts of what the reader saw, for the log and the final assertion.
#[derive(Debug, Default)]
struct Reads {
    nbd_ok: usize,
    dog_ok: usize,
    failed: Vec<String>,
}

/// One pass over every object through `node`: NBD (4 x 1 MiB per object) and then `dog vdi
/// read OFFSET 4M` per object. Returns whether the whole pass succeeded; panics on stale or
/// wrong bytes.
fn read_pass(cluster: &Cluster, node: usize, model: &BlockModel, reads: &mut Reads) -> bool {
    let timeout = Duration::from_secs(30);
    let mut clean = true;
    match nbd_open(cluster.nbd_port(node), VDI, timeout) {
        Err(e) => {
            reads.failed.push(format!("NBD open: {e}"));
            clean = false;
        }
        Ok(mut s) => {
            for offset in (0..VDI_SIZE).step_by(1 << 20) {
                match nbd_read(&mut s, offset, offset, 1 << 20, timeout) {
                    Ok(got) => {
                        if let Err(e) = model.check(&format!("NBD via node {node}"), offset, &got) {
                            panic!("{e}\n{}", cluster.all_log_tails());
                        }
                        reads.nbd_ok += 1;
                    }
                    Err(e) => {
                        reads.failed.push(format!("NBD read at {offset}: {e:?}"));
                        clean = false;
                        break;
                    }
                }
            }
        }
    }
    for offset in (0..VDI_SIZE).step_by(OBJECT_SIZE as usize) {
        let args = [
            "vdi",
            "read",
            VDI,
            &offset.to_string(),
            &OBJECT_SIZE.to_string(),
        ];
        let out = cluster.dog(node, &args);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            reads
                .failed
                .push(format!("dog vdi read at {offset}: {}", err.trim()));
            clean = false;
            continue;
        }
        if let Err(e) = model.check(&format!("dog via node {node}"), offset, &out.stdout) {
            panic!("{e}\n{}", cluster.all_log_tails());
        }
        reads.dog_ok += 1;
    }
    clean
}

/// `Ok` once node `node` has caught up: `dog node recovery` through it lists nobody in
/// recovery, and each of the objects `held` is in its store with the bytes of the last
/// acknowledged writes; otherwise what is still missing.
fn caught_up(
    cluster: &Cluster,
    node: usize,
    vid: u32,
    held: &BTreeSet<u32>,
    model: &BlockModel,
) -> Result<(), String> {
    let lines = recovery_lines(cluster, node)?;
    if lines.len() != 2 {
        return Err(format!("dog node recovery:\n{}", lines.join("\n")));
    }
    let behind: Vec<u32> = held
        .iter()
        .copied()
        .filter(|&idx| {
            data_region(cluster.store(node), &data_oid_name(vid, idx)).map_or(true, |got| {
                got != model.expected(u64::from(idx) * OBJECT_SIZE, OBJECT_SIZE)
            })
        })
        .collect();
    if behind.is_empty() {
        Ok(())
    } else {
        Err(format!("objects {behind:?} missing or stale in its store"))
    }
}

fn rejoin(down: Down) {
    let mut args = vec!["-R", "max=2,interval=500"];
    args.extend(FAST_GOSSIP);
    let cluster = Cluster::builder()
        .nodes(4)
        .distinct_zones()
        .sheep_args(&args)
        .start();
    cluster.format(3);
    cluster.dog_ok(0, &["vdi", "create", VDI, &VDI_SIZE.to_string()]);
    let vid = cluster.vdi_id(0, VDI);
    let mut model = BlockModel::new(VDI_SIZE);
    cluster.write_vdi(0, VDI, 0, &BlockModel::payload(1, 0, VDI_SIZE));
    model.record(1, 0, VDI_SIZE);

    let held: BTreeSet<u32> = cluster
        .data_objects(NODE)
        .iter()
        .filter_map(|n| u32::from_str_radix(&n[8..], 16).ok())
        .collect();
    assert!(
        held.len() >= 4,
        "node {NODE} should hold about 3/4 of 16 objects, holds {held:?}"
    );

    match down {
        Down::Stop => {
            cluster.stop(NODE);
        }
        Down::Kill9 => {
            cluster.kill9(NODE);
        }
    }
    cluster.wait_for_view(&[0, 1, 2], Duration::from_secs(20));

    // Overwrite what node 3 holds: every other object wholly, the rest in three 64 KiB
    // pieces (start, an unaligned-to-the-object middle, end).
    let mut seq = 1;
    for (k, &idx) in held.iter().enumerate() {
        let base = u64::from(idx) * OBJECT_SIZE;
        let ranges: Vec<(u64, u64)> = if k % 2 == 0 {
            vec![(base, OBJECT_SIZE)]
        } else {
            vec![
                (base, 64 << 10),
                (base + (1 << 20) + (12 << 10), 64 << 10),
                (base + OBJECT_SIZE - (64 << 10), 64 << 10),
            ]
        };
        for (offset, len) in ranges {
            seq += 1;
            cluster.write_vdi(0, VDI, offset, &BlockModel::payload(seq, offset, len));
            model.record(seq, offset, len);
        }
    }

    cluster.restart(NODE);
    let started = Instant::now();
    let mut reads = Reads::default();
    let mut passes = 0usize;
    let mut clean_after_done = 0usize;
    let mut behind = String::from("not checked yet");
    let mut reads_while_behind = 0usize;
    while clean_after_done < PASSES_AFTER_DONE {
        assert!(
            started.elapsed() < CATCH_UP_TIMEOUT,
            "node {NODE} did not catch up and serve {PASSES_AFTER_DONE} clean passes within \
             {CATCH_UP_TIMEOUT:?}; last seen: {behind}; failures: {:?}\n{}",
            &reads.failed[reads.failed.len().saturating_sub(10)..],
            cluster.all_log_tails()
        );
        cluster.assert_running(NODE);
        let done_before = match caught_up(&cluster, NODE, vid, &held, &model) {
            Ok(()) => true,
            Err(e) => {
                behind = e;
                false
            }
        };
        let ok_before = reads.nbd_ok + reads.dog_ok;
        let clean = read_pass(&cluster, NODE, &model, &mut reads);
        if !done_before {
            reads_while_behind += reads.nbd_ok + reads.dog_ok - ok_before;
        }
        passes += 1;
        if clean && done_before {
            clean_after_done += 1;
        }
        if !clean {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    eprintln!(
        "{down:?}: {passes} passes through node {NODE} in {:.1?}: {} NBD MiB and {} dog \
         objects read correct ({reads_while_behind} of those reads before it had caught up), \
         {} failed attempts (first: {:?})",
        started.elapsed(),
        reads.nbd_ok,
        reads.dog_ok,
        reads.failed.len(),
        reads.failed.first()
    );

    cluster.wait_for_view(&[0, 1, 2, 3], Duration::from_secs(30));
    wait_recovery_done(&cluster, &[0, 1, 2, 3], Duration::from_secs(60));
    let all: BTreeSet<u32> = (0..(VDI_SIZE / OBJECT_SIZE) as u32).collect();
    let objects = vdi_objects(vid, &all);
    wait_copies(
        &cluster,
        &[0, 1, 2, 3],
        &objects,
        3,
        Duration::from_secs(60),
    );
    assert_replicas_agree(&cluster, &[0, 1, 2, 3], &objects);
    for i in 0..4 {
        cluster.assert_no_panic(i);
    }
}

/// After a SIGTERM, overwrites of its objects and a restart, a node never returns a stale
/// byte, over NBD or the Sheepdog protocol, while it catches up or after.
#[test]
fn stopped_node_restarts_without_serving_stale_data() {
    rejoin(Down::Stop);
}

/// The same after `kill -9` (no clean shutdown).
#[test]
fn killed_node_restarts_without_serving_stale_data() {
    rejoin(Down::Kill9);
}
