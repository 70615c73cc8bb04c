//! Issue 6, "Done when" 2 and 3: attach locks, the live-migration handoff
//! across two sheep gateways, the release rule for a dead holder, and QEMU's
//! tools driven by the libvirt XML exactly as the API gives it.
//!
//! [`migration_hands_over_with_fresh_copy_on_write_data`]: a clone of a
//! snapshot is attached read-write through node A; a second read-write attach
//! (API, NBD by name, NBD of A's export through another node, QEMU's
//! Sheepdog-protocol LOCK_VDI through another node) is refused with
//! a message naming the holder; a migration destination is attached through
//! node B and its NBD session is opened *before* A writes. A writer on A then
//! writes into every object of the clone (each write is a fresh copy-on-write
//! object), and after each write B reads the same range back through its
//! already-open session. When A's connection closes, B holds the lock, and
//! B's session, `qemu-img convert` and `qemu-io` (given B's XML unchanged)
//! read every byte A wrote. Then node B is killed with SIGKILL: after the
//! failure detector and the lock grace (1 s here) the lock is released and
//! another host attaches; an operator's `dog vdi lock unlock` fences that
//! host's open session.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use sheepfold_tests::api::{nbd_from_xml, qemu_nbd_json, Api};
use sheepfold_tests::cluster::Cluster;
use sheepfold_tests::data::{assert_same_bytes, random_bytes};
use sheepfold_tests::nbd_raw::{self, good_read, good_write, CMD_WRITE};
use sheepfold_tests::qemu_client::{SdError, SheepdogImage};
use sheepfold_tests::recovery::nbd::nbd_open;
use sheepfold_tests::tools::{all_output, run_tool, run_tool_ok};
use sheepfold_tests::wait::poll_until;

const MIB: usize = 1 << 20;
const SIZE: usize = 64 * MIB;
const OBJECT: usize = 4 * MIB;
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

fn attachments(api: &Api, name: &str) -> Vec<Value> {
    let a = api.get(&format!("/v1/vdis/{name}/attachments"));
    assert_eq!(a.status, 200, "{}", a.text);
    a.json["attachments"].as_array().unwrap().clone()
}

#[test]
fn migration_hands_over_with_fresh_copy_on_write_data() {
    let c = Cluster::builder()
        .nodes(3)
        .distinct_zones()
        .sheep_args(&["--lock-grace", "1"])
        .start();
    c.format(2);
    let (node_a, node_b, node_c) = (0, 1, 2);
    let api_a = Api::new(c.http_port(node_a));
    let api_b = Api::new(c.http_port(node_b));
    let api_c = Api::new(c.http_port(node_c));

    // A base image with data in every object, a snapshot, a clone.
    api_a.expect(
        201,
        "POST",
        "/v1/vdis",
        Some(&json!({"name": "base", "size": SIZE})),
    );
    let base = random_bytes(6, SIZE);
    {
        let (mut s, size) = nbd_raw::session(c.nbd_port(node_c), "base");
        assert_eq!(size as usize, SIZE);
        for off in (0..SIZE).step_by(MIB) {
            good_write(&mut s, off as u64, &base[off..off + MIB]);
        }
    }
    api_c.expect(
        201,
        "POST",
        "/v1/vdis/base/snapshots",
        Some(&json!({"tag": "gold"})),
    );
    api_b.expect(
        201,
        "POST",
        "/v1/vdis/base/snapshots/gold/clones",
        Some(&json!({"name": "vm1"})),
    );

    // Attach read-write on host A through node A.
    let att_a = api_a.expect(
        201,
        "POST",
        "/v1/vdis/vm1/attachments",
        Some(&json!({"host": "hv-a"})),
    );
    let id_a = att_a["id"].as_str().unwrap().to_string();
    let (host, port_a, export_a) = nbd_from_xml(att_a["disk"]["nbd"].as_str().unwrap());
    assert_eq!((host.as_str(), port_a), ("127.0.0.1", c.nbd_port(node_a)));
    assert_eq!(export_a, format!("vm1@{id_a}"));

    // A second read-write attach is refused, with a clear error, every way.
    let refused = api_b.post("/v1/vdis/vm1/attachments", &json!({"host": "hv-b"}));
    assert_eq!(
        (refused.status, refused.code()),
        (409, "locked"),
        "{}",
        refused.text
    );
    assert!(
        refused.text.contains("hv-a") && refused.text.contains(&id_a),
        "{}",
        refused.text
    );
    let by_name = run_tool(
        "qemu-io",
        &["-f", "raw", &c.nbd_uri(node_b, "vm1"), "-c", "read 0 512"],
        TOOL_TIMEOUT,
    );
    assert!(
        !by_name.status.success(),
        "open by name while attached must fail"
    );
    let msg = all_output(&by_name);
    assert!(msg.contains("attached read-write on host hv-a"), "{msg}");
    let elsewhere = nbd_open(c.nbd_port(node_b), &export_a, Duration::from_secs(10));
    assert!(
        elsewhere.is_err(),
        "A's export must be served by node A only"
    );
    // QEMU's Sheepdog driver locks on open: refused through another sheep,
    // allowed through the holder's (the address of its Sheepdog XML).
    let sheep_at = |i: usize| SocketAddr::from(([127, 0, 0, 1], c.port(i)));
    match SheepdogImage::open(sheep_at(node_b), "vm1") {
        Err(SdError::Result {
            op: "LOCK_VDI",
            result,
        }) => assert_eq!(result, 0x07),
        other => panic!(
            "LOCK_VDI through another sheep: {:?}",
            other.map(|i| i.vid())
        ),
    }
    let own =
        SheepdogImage::open(sheep_at(node_a), "vm1").expect("LOCK_VDI through the holder's sheep");
    own.close().expect("close (RELEASE_VDI) changes nothing");
    assert_eq!(attachments(&api_c, "vm1").len(), 1);
    let dog = c.dog(node_c, &["vdi", "lock", "list"]);
    assert!(String::from_utf8_lossy(&dog.stdout).contains(&format!("host=hv-a id={id_a} rw")));

    // Migration: the destination attaches through node B while A holds it.
    let att_b = api_b.expect(
        201,
        "POST",
        "/v1/vdis/vm1/attachments",
        Some(&json!({"host": "hv-b", "migrate_from": id_a})),
    );
    let id_b = att_b["id"].as_str().unwrap().to_string();
    assert_eq!(
        (att_b["state"].as_str(), att_b["migrate_from"].as_str()),
        (Some("pending"), Some(id_a.as_str()))
    );
    let xml_b = att_b["disk"]["nbd"].as_str().unwrap().to_string();
    let (_, port_b, export_b) = nbd_from_xml(&xml_b);
    assert_eq!(port_b, c.nbd_port(node_b));
    // A third host cannot join in.
    let third = api_c.post(
        "/v1/vdis/vm1/attachments",
        &json!({"host": "hv-c", "migrate_from": id_a}),
    );
    assert_eq!(third.code(), "locked", "{}", third.text);

    // The destination opens the disk first and reads all of it: its node
    // now has the clone's index cached, every entry naming the snapshot.
    let (mut sb, _) = nbd_raw::session(port_b, &export_b);
    for off in (0..SIZE).step_by(8 * MIB) {
        let got = good_read(&mut sb, off as u64, (8 * MIB) as u32);
        assert_same_bytes(
            "destination before the writes",
            &got,
            &base[off..off + 8 * MIB],
        );
    }

    // The source writes into every object (each write allocates a fresh
    // copy-on-write object) and keeps writing; after each write the
    // destination reads the range back through its open session.
    let mut model = base.clone();
    let (mut sa, _) = nbd_raw::session(port_a, &export_a);
    let mut seed = 100;
    for round in 0..3 {
        for obj in 0..SIZE / OBJECT {
            let len = 64 * 1024 + round * 4096;
            let off = obj * OBJECT + (obj * 7919 + round * 104_729) % (OBJECT - len);
            seed += 1;
            let data = random_bytes(seed, len);
            good_write(&mut sa, off as u64, &data);
            model[off..off + len].copy_from_slice(&data);
            let seen = good_read(&mut sb, off as u64, len as u32);
            assert_same_bytes(
                &format!("destination after write {round}/{obj} at {off}"),
                &seen,
                &data,
            );
        }
    }

    // The source closes (QEMU's source does once the migration is done):
    // the destination takes the lock.
    drop(sa);
    poll_until(
        "the destination to hold the lock",
        Duration::from_secs(20),
        || {
            let list = attachments(&api_c, "vm1");
            match list.as_slice() {
                [only] if only["id"] == id_b.as_str() && only["state"] == "active" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
    // Every byte the source wrote, through the destination's session.
    for off in (0..SIZE).step_by(8 * MIB) {
        let got = good_read(&mut sb, off as u64, (8 * MIB) as u32);
        assert_same_bytes(
            "destination after the handoff",
            &got,
            &model[off..off + 8 * MIB],
        );
    }
    drop(sb);
    // qemu-img and qemu-io, with the XML's NBD address unchanged.
    let (host_b, port_b, export_b) = nbd_from_xml(&xml_b);
    let image = qemu_nbd_json(&host_b, port_b, &export_b);
    let out = c.root().join("vm1.raw");
    run_tool_ok(
        "qemu-img",
        &["convert", "-O", "raw", &image, out.to_str().unwrap()],
        TOOL_TIMEOUT,
    );
    assert_same_bytes(
        "qemu-img convert through B's XML",
        &std::fs::read(&out).unwrap(),
        &model,
    );
    let pattern_at = 5 * OBJECT + 12_288;
    let wrote = run_tool_ok(
        "qemu-io",
        &[
            &image,
            "-c",
            &format!("write -P 0x5a {pattern_at} 65536"),
            "-c",
            &format!("read -P 0x5a {pattern_at} 65536"),
        ],
        TOOL_TIMEOUT,
    );
    assert!(
        !all_output(&wrote).contains("Pattern verification failed"),
        "{}",
        all_output(&wrote)
    );
    model[pattern_at..pattern_at + 65536].fill(0x5a);
    // The source's export is gone; opening the disk by name is still refused.
    let gone = nbd_open(port_a, &export_a, Duration::from_secs(10));
    assert!(
        gone.is_err(),
        "the detached source's export must be refused"
    );
    let by_name = run_tool(
        "qemu-io",
        &["-f", "raw", &c.nbd_uri(node_a, "vm1"), "-c", "read 0 512"],
        TOOL_TIMEOUT,
    );
    assert!(
        all_output(&by_name).contains("attached read-write on host hv-b"),
        "{}",
        all_output(&by_name)
    );

    // The holder's sheep dies: after the failure detector and the lock
    // grace, the name's owner releases its attachments.
    c.kill9(node_b);
    poll_until(
        "the dead holder's lock to be released",
        Duration::from_secs(30),
        || {
            let list = attachments(&api_a, "vm1");
            if list.is_empty() {
                Ok(())
            } else {
                Err(format!("{list:?}"))
            }
        },
    );
    let att_c = api_a.expect(
        201,
        "POST",
        "/v1/vdis/vm1/attachments",
        Some(&json!({"host": "hv-c"})),
    );
    let (_, port_c, export_c) = nbd_from_xml(att_c["disk"]["nbd"].as_str().unwrap());
    let (mut sc, _) = nbd_raw::session(port_c, &export_c);
    for off in (0..SIZE).step_by(8 * MIB) {
        let got = good_read(&mut sc, off as u64, (8 * MIB) as u32);
        assert_same_bytes(
            "new holder after the release",
            &got,
            &model[off..off + 8 * MIB],
        );
    }
    good_write(&mut sc, 0, &[7u8; 4096]);

    // An operator unlocks: the holder's open session is fenced.
    c.dog_ok(node_c, &["vdi", "lock", "unlock", "vm1"]);
    assert!(attachments(&api_c, "vm1").is_empty());
    let err = nbd_raw::call(&mut sc, CMD_WRITE, 9, 4096, 4096, &[8u8; 4096]);
    assert_ne!(err, 0, "a fenced session must not write");
    let listed = c.dog_ok(node_a, &["vdi", "lock", "list"]);
    assert_eq!(listed.lines().count(), 1, "only the header: {listed}");
    let again = c.dog(node_a, &["vdi", "lock", "unlock", "vm1"]);
    assert_eq!(again.status.code(), Some(1));
    for i in [node_a, node_c] {
        c.assert_no_panic(i);
    }
}
