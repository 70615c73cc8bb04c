//! A node dies under a writing VM: nothing acknowledged is lost and redundancy comes back.
//!
//! Issue 5, "Done when" 1: 4 nodes in distinct zones, 3 copies, `--recovery-grace 0` and
//! fast gossip. A verified writer (the harness's raw NBD client, one request at a time)
//! writes patterned 4 KiB..64 KiB blocks all over a 256 MiB VDI through node 0 and records
//! every acknowledged write; node 3 is `kill -9`ed mid-stream and the writer keeps going.
//! Then everything reads back through node 1 (NBD) and node 2 (`dog vdi read`), and within a
//! bounded time every object of the VDI has exactly 3 replicas in the 3 surviving stores,
//! the replicas agree, and `dog node recovery` reports nothing in recovery.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sheepfold_tests::data::OBJECT_SIZE;
use sheepfold_tests::recovery::{
    assert_replicas_agree, dog_verify_all, nbd_open, nbd_verify_all, nbd_write, vdi_objects,
    wait_copies, wait_recovery_done, BlockModel, NbdFailure, BLOCK, FAST_GOSSIP,
};
use sheepfold_tests::wait::poll_until;
use sheepfold_tests::Cluster;

const VDI: &str = "victim";
const VDI_SIZE: u64 = 256 << 20;
/// Writes acknowledged before the kill, and again after the survivors agree on the view.
const WRITES_BEFORE: u64 = 300;
const WRITES_AFTER: u64 = 300;
/// How long one write may take to be acknowledged, retries included (the stall while the
/// survivors notice the death and agree on a new view).
const WRITE_DEADLINE: Duration = Duration::from_secs(90);
/// Bound for restoring 3 copies of everything after the writer stops.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// What the writer did, for the checks and the log.
struct Writer {
    model: Mutex<BlockModel>,
    acked: AtomicU64,
    retries: AtomicU64,
    stop: AtomicBool,
}

/// Sets the writer's stop flag when dropped, so a panicking test does not wait for it forever.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Writes until told to stop, one request at a time through `ports[0]` (reconnecting to the
/// next port if the connection breaks). A write that fails is retried with the same bytes
/// until it is acknowledged, so the model always knows what each block must hold. The first
/// writes put 64 KiB at the start of every object, so the whole VDI is allocated.
fn run_writer(w: &Writer, ports: &[u16]) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(0x5eed_5001);
    let objects = VDI_SIZE / OBJECT_SIZE;
    let timeout = Duration::from_secs(30);
    let mut conn = None;
    let mut port_idx = 0;
    let mut seq = 0u64;
    while !w.stop.load(Ordering::SeqCst) {
        seq += 1;
        let (offset, len) = if seq <= objects {
            ((seq - 1) * OBJECT_SIZE, 16 * BLOCK)
        } else {
            let len = rng.random_range(1..=16u64) * BLOCK;
            (rng.random_range(0..=(VDI_SIZE - len) / BLOCK) * BLOCK, len)
        };
        let data = BlockModel::payload(seq, offset, len);
        let started = Instant::now();
        loop {
            if conn.is_none() {
                match nbd_open(ports[port_idx], VDI, timeout) {
                    Ok(s) => conn = Some(s),
                    Err(e) => eprintln!("writer: open via port {}: {e}", ports[port_idx]),
                }
            }
            if let Some(s) = conn.as_mut() {
                match nbd_write(s, seq, offset, &data, timeout) {
                    Ok(()) => break,
                    Err(e) => {
                        eprintln!("writer: write #{seq} {offset}+{len}: {e:?}; retrying");
                        w.retries.fetch_add(1, Ordering::SeqCst);
                        if !matches!(e, NbdFailure::Error(_)) {
                            conn = None;
                            port_idx = (port_idx + 1) % ports.len();
                        }
                    }
                }
            }
            if started.elapsed() > WRITE_DEADLINE {
                return Err(format!(
                    "write #{seq} {offset}+{len} not acknowledged within {WRITE_DEADLINE:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        w.model.lock().unwrap().record(seq, offset, len);
        w.acked.fetch_add(1, Ordering::SeqCst);
    }
    Ok(())
}

/// Polls until the writer has `n` writes acknowledged (or has given up: the join reports it).
fn wait_acked(w: &Writer, n: u64, what: &str, handle: &ScopedJoinHandle<'_, Result<(), String>>) {
    poll_until(what, Duration::from_secs(180), || {
        let acked = w.acked.load(Ordering::SeqCst);
        if acked >= n || handle.is_finished() {
            Ok(())
        } else {
            Err(format!("{acked} writes acknowledged"))
        }
    })
}

/// Every write acknowledged before, during and after a `kill -9` of one of 4 nodes reads back
/// through two other nodes, and the survivors restore 3 agreeing copies of every object
/// (counted in their store directories) within [`RECOVERY_TIMEOUT`].
#[test]
fn kill9_during_verified_writes_loses_nothing_and_restores_copies() {
    let mut args = vec!["--recovery-grace", "0"];
    args.extend(FAST_GOSSIP);
    let cluster = Cluster::builder()
        .nodes(4)
        .distinct_zones()
        .sheep_args(&args)
        .start();
    cluster.format(3);
    cluster.dog_ok(0, &["vdi", "create", VDI, &VDI_SIZE.to_string()]);
    let vid = cluster.vdi_id(0, VDI);

    let writer = Writer {
        model: Mutex::new(BlockModel::new(VDI_SIZE)),
        acked: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    };
    let ports = [cluster.nbd_port(0), cluster.nbd_port(1)];
    let result = std::thread::scope(|s| {
        let _stop = StopOnDrop(&writer.stop);
        let handle = s.spawn(|| run_writer(&writer, &ports));
        let objects = VDI_SIZE / OBJECT_SIZE;
        wait_acked(
            &writer,
            objects + WRITES_BEFORE,
            "the writer to fill every object and write some more",
            &handle,
        );

        cluster.kill9(3);
        let killed = Instant::now();
        let at_kill = writer.acked.load(Ordering::SeqCst);
        cluster.wait_for_view(&[0, 1, 2], Duration::from_secs(20));
        eprintln!(
            "survivors agree {:.2?} after kill -9 ({at_kill} writes acknowledged at the kill)",
            killed.elapsed()
        );
        let at_view = writer.acked.load(Ordering::SeqCst);
        wait_acked(
            &writer,
            at_view + WRITES_AFTER,
            "the writer to go on after the kill",
            &handle,
        );
        writer.stop.store(true, Ordering::SeqCst);
        handle.join().expect("writer thread")
    });
    if let Err(e) = result {
        panic!("writer: {e}\n{}", cluster.all_log_tails());
    }
    let model = writer.model.into_inner().unwrap();
    eprintln!(
        "writer: {} writes acknowledged, {} retried attempts",
        writer.acked.load(Ordering::SeqCst),
        writer.retries.load(Ordering::SeqCst)
    );

    nbd_verify_all(&cluster, 1, VDI, &model);
    dog_verify_all(&cluster, 2, VDI, &model);

    let objects = vdi_objects(vid, &model.written_objects());
    assert_eq!(
        objects.len() as u64,
        VDI_SIZE / OBJECT_SIZE + 1,
        "every object was written"
    );
    let started = Instant::now();
    wait_copies(&cluster, &[0, 1, 2], &objects, 3, RECOVERY_TIMEOUT);
    wait_recovery_done(&cluster, &[0, 1, 2], RECOVERY_TIMEOUT);
    eprintln!(
        "3 copies of everything on the survivors {:.2?} after the writer stopped",
        started.elapsed()
    );
    assert_replicas_agree(&cluster, &[0, 1, 2], &objects);
    dog_verify_all(&cluster, 0, VDI, &model);
    for i in 0..3 {
        cluster.assert_no_panic(i);
    }
}
