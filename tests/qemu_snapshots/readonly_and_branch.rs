//! Writes after a snapshot (SD_RES_READONLY, reload, copy-on-write) and the first write to an
//! image opened on a snapshot (a new branch).

use std::collections::BTreeMap;

use sheepfold_tests::qemu_client::{self, Preallocation};
use sheepfold_tests::snapshots::{vdi_list, Model, Write, MIB, OBJ};

use crate::client::*;
use crate::support::*;
use crate::wire::*;

#[test]
fn write_after_snapshot_gets_readonly_and_cows() {
    let cluster = cluster();
    let work = tempfile::tempdir().expect("tempdir");
    let name = "qro";
    let size = 64 * MIB;
    ok(
        &cluster,
        "create",
        qemu_client::create(addr(&cluster, 0), name, size, Preallocation::Off)
            .map_err(|e| e.to_string()),
    );
    let mut q = ok(&cluster, "open", Qemu::open(addr(&cluster, 0), name, 0, ""));
    let v1 = q.vid();
    let copies = q.nr_copies();
    let r = |off: u64, len: u64, seed: u64| Write::random(off, len, 0x70_0000 + seed);
    let mut model = Model::zeros(size);
    put(&cluster, &mut q, &mut model, r(0, 3 * MIB, 1));
    put(&cluster, &mut q, &mut model, r(2 * OBJ + 5, 1000, 2));
    let mut models = BTreeMap::from([(format!("{name}@under"), model.clone())]);

    // Someone else snapshots the VDI under the open image.
    cluster.dog_ok(1, &["vdi", "snapshot", "-s", "under", name]);
    let v2 = working_vid(&cluster, 2, name);
    assert_ne!(v2, v1);

    // The next write to an object the client thinks it owns.
    let from = q.log.len();
    put(&cluster, &mut q, &mut model, r(OBJ / 2 + 3, 3000, 3));
    let w = since(&q, from);
    assert_eq!(
        w.len(),
        5,
        "write, reload (2), resend, index update:\n{}",
        transcript(&w)
    );
    assert_obj(
        &w[0],
        "write to an owned object",
        WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        3000,
        data_oid(v1, 0),
        0,
        copies,
        OBJ / 2 + 3,
    );
    assert_eq!(
        w[0].result(),
        READONLY,
        "a write to a snapshot's object gets SD_RES_READONLY: {}",
        w[0].describe()
    );
    assert_eq!(
        (
            w[1].proto(),
            w[1].op(),
            w[1].len(),
            w[1].snapid(),
            w[1].result(),
            w[1].vdi_id()
        ),
        (QEMU_PROTO_VER, GET_VDI_INFO, 512, 0, SUCCESS, v2),
        "reload 1: GET_VDI_INFO of the name: {}",
        w[1].describe()
    );
    assert_eq!(w[1].payload, [fixed(name, 256), vec![0u8; 256]].concat());
    assert_obj(
        &w[2],
        "reload 2: header",
        READ_OBJ,
        FLAG_CACHE,
        HEADER as u32,
        inode_oid(v2),
        0,
        copies,
        0,
    );
    assert_obj(
        &w[3],
        "resend as copy-on-write",
        CREATE_AND_WRITE_OBJ,
        FLAG_WRITE | FLAG_COW | FLAG_CACHE,
        3000,
        data_oid(v2, 0),
        data_oid(v1, 0),
        copies,
        OBJ / 2 + 3,
    );
    assert_eq!(w[3].result(), SUCCESS);
    assert_obj(
        &w[4],
        "index update of the new vid",
        WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        4,
        inode_oid(v2),
        0,
        copies,
        HEADER as u64,
    );
    assert_eq!(q.vid(), v2);
    models.insert(name.to_owned(), model.clone());
    verify(
        &cluster,
        &models,
        work.path(),
        "after the copy-on-write retry",
    );

    // Another snapshot under it; now a create into an unallocated object under the old vid.
    cluster.dog_ok(2, &["vdi", "snapshot", "-s", "under2", name]);
    models.insert(format!("{name}@under2"), model.clone());
    let v3 = working_vid(&cluster, 0, name);
    let from = q.log.len();
    put(&cluster, &mut q, &mut model, r(7 * OBJ + 1, 10, 4));
    let w = since(&q, from);
    assert_eq!(
        w.len(),
        5,
        "create, reload (2), resend, index update:\n{}",
        transcript(&w)
    );
    assert_obj(
        &w[0],
        "create under a snapshot's vid",
        CREATE_AND_WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        10,
        data_oid(v2, 7),
        0,
        copies,
        1,
    );
    assert_eq!(
        w[0].result(),
        READONLY,
        "creating an object of a snapshot gets SD_RES_READONLY: {}",
        w[0].describe()
    );
    assert_eq!(w[1].vdi_id(), v3);
    assert_obj(
        &w[3],
        "resend as a plain create",
        CREATE_AND_WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        10,
        data_oid(v3, 7),
        0,
        copies,
        1,
    );
    assert_obj(
        &w[4],
        "index update",
        WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        4,
        inode_oid(v3),
        0,
        copies,
        (HEADER + 4 * 7) as u64,
    );
    // And a write to object 2, owned by the first snapshot: straight copy-on-write, no retry.
    let from = q.log.len();
    put(&cluster, &mut q, &mut model, r(2 * OBJ + 1, 2, 5));
    let w = since(&q, from);
    assert_obj(
        &w[0],
        "copy-on-write from the first snapshot",
        CREATE_AND_WRITE_OBJ,
        FLAG_WRITE | FLAG_COW | FLAG_CACHE,
        2,
        data_oid(v3, 2),
        data_oid(v1, 2),
        copies,
        1,
    );
    assert_eq!(w.len(), 2);
    models.insert(name.to_owned(), model.clone());
    verify(&cluster, &models, work.path(), "after the create retry");

    // A write straight to a snapshot's object is refused however it is sent.
    let mut raw = ok(&cluster, "open", Qemu::open(addr(&cluster, 2), name, 0, ""));
    let hdr = obj_req(WRITE_OBJ, FLAG_WRITE, 0, 4, data_oid(v1, 2), 0, copies, 0);
    let (w, _) = ok(&cluster, "raw write", raw.on_io(hdr, &[1, 2, 3, 4], 0));
    assert_eq!(w.result(), READONLY, "{}", w.describe());
    verify(
        &cluster,
        &models,
        work.path(),
        "after the refused raw write",
    );
}

#[test]
fn first_write_to_a_snapshot_branches() {
    let cluster = cluster();
    let work = tempfile::tempdir().expect("tempdir");
    let name = "qbranch";
    let size = 32 * MIB;
    ok(
        &cluster,
        "create",
        qemu_client::create(addr(&cluster, 1), name, size, Preallocation::Off)
            .map_err(|e| e.to_string()),
    );
    let mut q = ok(&cluster, "open", Qemu::open(addr(&cluster, 1), name, 0, ""));
    let r = |off: u64, len: u64, seed: u64| Write::random(off, len, 0xb4_0000 + seed);
    let mut model = Model::zeros(size);
    put(&cluster, &mut q, &mut model, r(100, 10_000, 1));
    let v1 = q.vid();
    let v2 = ok(&cluster, "snapshot", q.snapshot_create("base"));
    let snap = model.clone();
    put(&cluster, &mut q, &mut model, r(0, 50, 2));

    // sheepdog://.../qbranch#base, then a write.
    let mut b = ok(
        &cluster,
        "open by tag",
        Qemu::open(addr(&cluster, 2), name, 0, "base"),
    );
    assert!(b.is_snapshot);
    assert_eq!(b.vid(), v1);
    let lock = &b.log[0];
    assert_eq!(
        (lock.op(), lock.proto(), lock.snapid()),
        (LOCK_VDI, QEMU_PROTO_VER, 0)
    );
    assert_eq!(&lock.payload[256..260], b"base");
    let mut branch = snap.clone();
    let from = b.log.len();
    put(&cluster, &mut b, &mut branch, r(OBJ + 1, 1, 3));
    let w = since(&b, from);
    assert_eq!(
        w.len(),
        5,
        "branch (3) + create + index:\n{}",
        transcript(&w)
    );
    assert_eq!(
        (w[0].op(), w[0].len(), w[0].base_vdi_id(), w[0].result()),
        (DEL_VDI, 256, v1, SUCCESS),
        "{}",
        w[0].describe()
    );
    assert_eq!(
        (w[1].op(), w[1].snapid(), w[1].base_vdi_id(), w[1].result()),
        (NEW_VDI, 0, v1, SUCCESS),
        "{}",
        w[1].describe()
    );
    let v3 = w[1].vdi_id();
    assert!(v3 != v1 && v3 != v2);
    assert_eq!(
        (w[2].op(), w[2].len(), w[2].oid()),
        (READ_OBJ, QEMU_INODE_SIZE as u32, inode_oid(v3))
    );
    assert_eq!(
        (w[3].op(), w[3].flags() & FLAG_COW, w[3].oid()),
        (CREATE_AND_WRITE_OBJ, 0, data_oid(v3, 1))
    );
    assert_eq!(
        (w[4].oid(), w[4].offset()),
        (inode_oid(v3), (HEADER + 4) as u64)
    );
    // The old working VDI v2 is gone with its own object; the branch and the snapshot remain.
    let models = BTreeMap::from([(name.to_owned(), branch), (format!("{name}@base"), snap)]);
    verify(&cluster, &models, work.path(), "after the branch");
    let listed = vdi_list(&cluster, 0);
    assert!(listed.iter().all(|v| v.vid != v2), "{listed:?}");
}
