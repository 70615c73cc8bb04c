//! Synchronous writes on sheep running with fsync on, as in production (the other tests run
//! with `-n`).
//!
//! [`fua_writes_are_synced_on_every_replica_and_survive_kill9`]: 3 sheep, 3 copies. Over
//! NBD, a write and a flush fill two blocks of an object; then a FUA write over one of them is
//! synced on every replica as an overwrite, without the file's inode (on ext4; elsewhere with
//! `fdatasync`), and a FUA write into a never-written block with `fdatasync`, as each node's
//! `sheepfold_store_synced_writes_total{how=...}` shows. Everything reads back through another
//! node, and through a node killed with SIGKILL and restarted.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use sheepfold_tests::api::Api;
use sheepfold_tests::cluster::{Cluster, RUNNING_TIMEOUT};
use sheepfold_tests::data::random_bytes;
use sheepfold_tests::nbd_raw::{self, call, good_fua_write, good_read, good_write, CMD_FLUSH};

const MIB: usize = 1 << 20;

/// Synchronous writes node `i` made durable, by how: (fdatasync, overwrite).
fn synced_writes(c: &Cluster, i: usize) -> (f64, f64) {
    let m = Api::new(c.http_port(i)).get("/metrics");
    assert_eq!(m.status, 200, "{}", m.text);
    let sample = |how: &str| {
        let key = format!("sheepfold_store_synced_writes_total{{how=\"{how}\"}} ");
        m.text
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .map_or(0.0, |v| v.parse().expect("a number"))
    };
    (sample("fdatasync"), sample("overwrite"))
}

/// True if `dir` is on ext2/3/4 (where the store syncs overwrites without the inode).
fn on_ext4(dir: &std::path::Path) -> bool {
    let out = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .expect("run stat");
    assert!(out.status.success(), "stat -f {}", dir.display());
    String::from_utf8_lossy(&out.stdout).trim() == "ext2/ext3"
}

#[test]
fn fua_writes_are_synced_on_every_replica_and_survive_kill9() {
    let c = Cluster::builder().nodes(3).distinct_zones().fsync().start();
    c.format(3);
    let ext4 = on_ext4(c.root());
    Api::new(c.http_port(0)).expect(
        201,
        "POST",
        "/v1/vdis",
        Some(&json!({"name": "durable", "size": 16 * MIB})),
    );
    let (mut s, _) = nbd_raw::session(c.nbd_port(0), "durable");
    let mut want = vec![0u8; 2 * MIB];
    let first = random_bytes(1, 8192);
    good_write(&mut s, 0, &first);
    assert_eq!(call(&mut s, CMD_FLUSH, 7, 0, 0, &[]), 0, "flush");
    want[..8192].copy_from_slice(&first);

    let before: Vec<_> = (0..3).map(|i| synced_writes(&c, i)).collect();
    let over = random_bytes(2, 4096);
    good_fua_write(&mut s, 4096, &over);
    want[4096..8192].copy_from_slice(&over);
    let mid: Vec<_> = (0..3).map(|i| synced_writes(&c, i)).collect();
    for i in 0..3 {
        if ext4 {
            assert!(
                mid[i].1 > before[i].1,
                "node {i}: an overwrite: {before:?} {mid:?}"
            );
        } else {
            assert!(
                mid[i].0 > before[i].0,
                "node {i}: fdatasync: {before:?} {mid:?}"
            );
        }
    }

    let fresh = random_bytes(3, 4096);
    good_fua_write(&mut s, MIB as u64, &fresh);
    want[MIB..MIB + 4096].copy_from_slice(&fresh);
    let after: Vec<_> = (0..3).map(|i| synced_writes(&c, i)).collect();
    for i in 0..3 {
        assert!(
            after[i].0 > mid[i].0,
            "node {i}: a new block takes fdatasync: {mid:?} {after:?}"
        );
    }
    assert_eq!(good_read(&mut s, 0, (2 * MIB) as u32), want);
    drop(s);

    c.kill9(1);
    c.restart(1);
    c.wait_running(1, RUNNING_TIMEOUT);
    for i in [2, 1] {
        let (mut s, _) = nbd_raw::session(c.nbd_port(i), "durable");
        let got = good_read(&mut s, 0, (2 * MIB) as u32);
        assert!(got == want, "node {i} reads what was written");
    }
    c.wait_for_view(&[0, 1, 2], Duration::from_secs(20));
    for i in 0..3 {
        c.assert_no_panic(i);
    }
}
