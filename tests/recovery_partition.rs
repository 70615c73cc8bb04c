//! A network partition: the minority side refuses writes, the majority keeps them, and after
//! the heal the cluster converges with no acknowledged write lost and no conflicting copies.
//!
//! Issue 5, "Done when" 4. The test runs in its own network namespace (see
//! `harness/netns.rs`; needs root, `ip` and `nft`): 4 nodes, 3 copies, distinct zones, each
//! advertising its own address 127.0.0.1..127.0.0.4 and running with its own gid. Node 3 is
//! cut off from nodes 0-2 with nftables (every TCP and UDP packet between the sides dropped,
//! both ways). Both sides are written to, on the same objects; the heal is deleting the table.

use std::time::{Duration, Instant};

use sheepfold_tests::bins::binaries;
use sheepfold_tests::data::OBJECT_SIZE;
use sheepfold_tests::dog::{describe_output, dog_command, dog_with_input, stdout_text};
use sheepfold_tests::netns::{enter_private_netns, Partition};
use sheepfold_tests::process::run_with_timeout;
use sheepfold_tests::recovery::{
    assert_replicas_agree, dog_verify_all, fixed_oids, nbd_open, nbd_read, nbd_verify_all,
    nbd_write, vdi_objects, wait_copies, wait_recovery_done, BlockModel, NbdFailure, FAST_GOSSIP,
};
use sheepfold_tests::text::STATUS_RUNNING;
use sheepfold_tests::wait::poll_until;
use sheepfold_tests::Cluster;

const VDI: &str = "split";
const VDI_SIZE: u64 = 32 << 20;
const MINORITY: usize = 3;
const MAJORITY: [usize; 3] = [0, 1, 2];
/// How long a request to the minority side may take to be refused.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound for the cluster to converge after the heal.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);

/// What node `node` says in the first line of `dog cluster info`.
fn status(cluster: &Cluster, node: usize) -> String {
    let out = cluster.dog(node, &["cluster", "info"]);
    stdout_text(&out).lines().next().unwrap_or("").to_owned()
}

/// The ranges both sides write during the partition: 64 KiB in each of 6 objects, at offsets
/// that differ per object.
fn contested_ranges() -> Vec<(u64, u64)> {
    (0..6u64)
        .map(|k| (k * 5 % 8 * OBJECT_SIZE + k * (256 << 10), 64 << 10))
        .collect()
}

/// While node 3 is cut off it refuses writes (over a connection opened before the cut, and
/// with dog) and never serves data the majority overwrote; nodes 0-2 acknowledge writes to
/// the same ranges. After the heal every node reads exactly the acknowledged writes, each
/// object has 3 agreeing replicas, and `dog vdi check` finds nothing to fix.
#[test]
fn minority_refuses_majority_writes_and_heal_converges() {
    binaries();
    enter_private_netns();
    let cluster = Cluster::builder()
        .nodes(4)
        .distinct_zones()
        .node_addresses()
        .node_gids(61_000)
        .sheep_args(&FAST_GOSSIP)
        .start();
    cluster.format(3);
    cluster.dog_ok(0, &["vdi", "create", VDI, &VDI_SIZE.to_string()]);
    let vid = cluster.vdi_id(0, VDI);
    let mut model = BlockModel::new(VDI_SIZE);
    cluster.write_vdi(0, VDI, 0, &BlockModel::payload(1, 0, VDI_SIZE));
    model.record(1, 0, VDI_SIZE);

    // A VM on the minority node, connected before the cut.
    let mut vm = Some(
        nbd_open(cluster.nbd_port(MINORITY), VDI, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("NBD open on node {MINORITY}: {e}")),
    );

    let started = Instant::now();
    let partition = Partition::new(&cluster, &MAJORITY, &[MINORITY]);
    cluster.wait_for_view(&MAJORITY, Duration::from_secs(30));
    for i in MAJORITY {
        cluster.wait_running(i, Duration::from_secs(30));
    }
    poll_until(
        &format!("node {MINORITY} to halt on its own"),
        Duration::from_secs(90),
        || match status(&cluster, MINORITY) {
            s if s.contains("halted") => Ok(()),
            s => Err(s),
        },
    );

    eprintln!(
        "{:.1?}: nodes 0-2 run without node 3, which halted",
        started.elapsed()
    );

    // The majority acknowledges writes to the contested ranges, through two nodes.
    let ranges = contested_ranges();
    let mut seq = 1;
    for (k, &(offset, len)) in ranges.iter().enumerate() {
        seq += 1;
        let data = BlockModel::payload(seq, offset, len);
        if k % 2 == 0 {
            cluster.write_vdi(k % 3, VDI, offset, &data);
        } else {
            let mut s = nbd_open(cluster.nbd_port(1), VDI, Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("NBD open on node 1 during the partition: {e}"));
            if let Err(e) = nbd_write(&mut s, seq, offset, &data, Duration::from_secs(60)) {
                panic!(
                    "the majority did not acknowledge a write at {offset}: {e:?}\n{}\n{}",
                    partition.describe(),
                    cluster.all_log_tails()
                );
            }
        }
        model.record(seq, offset, len);
    }

    eprintln!(
        "{:.1?}: the majority acknowledged its writes",
        started.elapsed()
    );

    // The minority refuses the same ranges and never serves what the majority overwrote.
    let mut problems = Vec::new();
    for &(offset, len) in &ranges {
        seq += 1;
        let data = BlockModel::payload(seq, offset, len);
        if let Some(s) = vm.as_mut() {
            match nbd_write(s, seq, offset, &data, REFUSE_TIMEOUT) {
                Ok(()) => problems.push(format!(
                    "node {MINORITY} acknowledged an NBD write at {offset}"
                )),
                Err(NbdFailure::Error(_)) => {}
                Err(NbdFailure::Silent) => {
                    problems.push(format!(
                        "node {MINORITY} neither acknowledged nor refused an NBD write at \
                         {offset} within {REFUSE_TIMEOUT:?}"
                    ));
                    vm = None;
                }
                Err(NbdFailure::Closed(_)) => vm = None,
            }
        }
        if let Some(s) = vm.as_mut() {
            match nbd_read(s, seq, offset, len as u32, REFUSE_TIMEOUT) {
                Ok(got) => {
                    if let Err(e) = model.check(&format!("NBD via node {MINORITY}"), offset, &got) {
                        problems.push(e);
                    }
                }
                Err(NbdFailure::Error(_)) => {}
                Err(_) => vm = None,
            }
        }
        let args = ["vdi", "write", VDI, &offset.to_string(), &len.to_string()];
        let out = dog_with_input(cluster.port(MINORITY), &args, &data, REFUSE_TIMEOUT);
        if out.status.success() {
            problems.push(format!(
                "node {MINORITY} acknowledged dog vdi write at {offset}"
            ));
        }
        let args = ["vdi", "read", VDI, &offset.to_string(), &len.to_string()];
        let out = run_with_timeout(
            dog_command(cluster.port(MINORITY), &args),
            None,
            REFUSE_TIMEOUT,
        );
        if out.status.success() {
            if let Err(e) = model.check(&format!("dog via node {MINORITY}"), offset, &out.stdout) {
                problems.push(e);
            }
        }
    }
    drop(vm);
    assert!(
        problems.is_empty(),
        "the minority side during the partition:\n{}\n{}\n{}",
        problems.join("\n"),
        partition.describe(),
        cluster.all_log_tails()
    );

    eprintln!(
        "{:.1?}: the minority refused its writes; healing\n{}",
        started.elapsed(),
        partition.describe()
    );
    partition.heal();
    let all = [0, 1, 2, 3];
    cluster.wait_for_view(&all, CONVERGE_TIMEOUT);
    poll_until(
        "every node to run again after the heal",
        CONVERGE_TIMEOUT,
        || match all.iter().find(|&&i| status(&cluster, i) != STATUS_RUNNING) {
            None => Ok(()),
            Some(&i) => Err(format!("node {i}: {}", status(&cluster, i))),
        },
    );
    eprintln!("{:.1?}: every node runs again", started.elapsed());
    wait_recovery_done(&cluster, &all, CONVERGE_TIMEOUT);
    let objects = vdi_objects(vid, &model.written_objects());
    wait_copies(&cluster, &all, &objects, 3, CONVERGE_TIMEOUT);

    for i in all {
        dog_verify_all(&cluster, i, VDI, &model);
    }
    nbd_verify_all(&cluster, MINORITY, VDI, &model);
    assert_replicas_agree(&cluster, &all, &objects);
    let out = cluster.dog(0, &["vdi", "check", VDI]);
    assert!(
        out.status.success()
            && fixed_oids(&stdout_text(&out)).is_empty()
            && stdout_text(&out).contains(&format!("finish check&repair {VDI}")),
        "dog vdi check after the heal must find nothing to fix: {}",
        describe_output(&out)
    );
    for i in all {
        cluster.assert_no_panic(i);
    }
}
