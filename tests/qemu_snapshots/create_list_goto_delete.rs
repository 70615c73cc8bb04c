//! Snapshot create, list, goto and delete, as `qemu-img snapshot -c/-l/-a/-d` send them.

use std::collections::BTreeMap;

use sheepfold_tests::qemu_client::{self, Preallocation};
use sheepfold_tests::snapshots::{assert_vdi, read_header, vdi_list, Model, Write, MIB, OBJ};
use sheepfold_tests::text::{sd_hash_vdi, unix_now};

use crate::client::*;
use crate::support::*;
use crate::wire::*;

#[test]
fn snapshot_create_list_goto_delete() {
    let cluster = cluster();
    let work = tempfile::tempdir().expect("tempdir");
    let name = "qsnap";
    let t0 = unix_now();
    ok(
        &cluster,
        "create",
        qemu_client::create(addr(&cluster, 0), name, SIZE, Preallocation::Off)
            .map_err(|e| e.to_string()),
    );
    let mut q = ok(&cluster, "open", Qemu::open(addr(&cluster, 1), name, 0, ""));
    let v1 = q.vid();
    assert_eq!(v1, sd_hash_vdi(name));
    assert!(!q.is_snapshot);
    let copies = q.nr_copies();
    assert_eq!(copies, 2);
    let r = |off: u64, len: u64, seed: u64| Write::random(off, len, 0x9e_0000 + seed);

    // 200 small objects and a bigger write: 201 allocated entries.
    let mut model = Model::zeros(SIZE);
    for idx in 0..200 {
        put(
            &cluster,
            &mut q,
            &mut model,
            r(idx * OBJ + 4096 * (idx % 7), 512, idx),
        );
    }
    put(&cluster, &mut q, &mut model, r(OBJ / 2, 2 * MIB, 1000));

    // --- create ---
    let from = q.log.len();
    let v2 = ok(&cluster, "snapshot create", q.snapshot_create("snap1"));
    let w = since(&q, from);
    assert_eq!(w.len(), 3, "create is three requests:\n{}", transcript(&w));
    let (a, b, c) = (&w[0], &w[1], &w[2]);
    assert_obj(
        a,
        "create 1: header write",
        WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        HEADER as u32,
        inode_oid(v1),
        0,
        copies,
        0,
    );
    assert_eq!(a.payload_len, HEADER);
    assert_eq!(&a.payload[256..261], b"snap1", "the tag at offset 256");
    assert_eq!(
        &a.payload[261..512],
        &[0u8; 251][..],
        "the tag is NUL-padded"
    );
    assert_eq!(u32_at(&a.payload, 560), v1);
    assert_eq!(a.result(), SUCCESS);
    assert_eq!(
        (
            b.proto(),
            b.op(),
            b.flags(),
            b.len(),
            b.vdi_size(),
            b.base_vdi_id(),
            b.vdi_copies(),
            b.block_size_shift(),
            b.snapid()
        ),
        (0, NEW_VDI, FLAG_WRITE, 256, SIZE, v1, copies, 22, 1),
        "create 2: NEW_VDI: {}",
        b.describe()
    );
    assert_eq!(b.payload, fixed(name, 256));
    assert_eq!((b.result(), b.vdi_id()), (SUCCESS, v2));
    assert_ne!(v2, v1, "the working VDI gets a new vid");
    assert_obj(
        c,
        "create 3: new header read",
        READ_OBJ,
        FLAG_CACHE,
        HEADER as u32,
        inode_oid(v2),
        0,
        copies,
        0,
    );
    assert_eq!((c.result(), c.data_len), (SUCCESS, HEADER));
    assert!(
        a.conn >= 1 && a.conn == c.conn && b.conn != a.conn,
        "header write and read on one short connection, NEW_VDI on another:\n{}",
        transcript(&w)
    );
    // The snapshot kept the old vid, its tag and got snap_ctime; the new header is adopted but
    // the in-memory index still names v1.
    let old = read_header(cluster.port(2), v1);
    assert_ne!(u64_at(&old, 520), 0, "snap_ctime of the snapshot");
    assert_eq!(&old[256..261], b"snap1");
    assert_eq!(u32_at(&old, 556), 1, "snap_id of the snapshot");
    assert_eq!(
        (q.vid(), u32_at(&q.inode, 564), u32_at(&q.inode, 556)),
        (v2, v1, 2),
        "new working: vid, parent, snap_id"
    );
    assert_eq!(
        u64_at(&q.inode, 520),
        0,
        "the working VDI is not a snapshot"
    );
    assert_eq!(q.data_vdi_id(0), v1);
    let mut models = BTreeMap::from([(format!("{name}@snap1"), model.clone())]);

    // Writes after the snapshot: copy-on-write from v1 (partial, unaligned), and a new object.
    let from = q.log.len();
    put(&cluster, &mut q, &mut model, r(12_345, 1000, 2000));
    let w = since(&q, from);
    assert_eq!(w.len(), 2, "{}", transcript(&w));
    assert_obj(
        &w[0],
        "copy-on-write",
        CREATE_AND_WRITE_OBJ,
        FLAG_WRITE | FLAG_COW | FLAG_CACHE,
        1000,
        data_oid(v2, 0),
        data_oid(v1, 0),
        copies,
        12_345,
    );
    assert_obj(
        &w[1],
        "index update",
        WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        4,
        inode_oid(v2),
        0,
        copies,
        HEADER as u64,
    );
    assert_eq!(w[1].payload, v2.to_le_bytes());
    assert!(w.iter().all(|x| x.conn == 0 && x.result() == SUCCESS));
    let from = q.log.len();
    put(&cluster, &mut q, &mut model, r(250 * OBJ + 3, 100, 2001));
    let w = since(&q, from);
    assert_obj(
        &w[0],
        "create",
        CREATE_AND_WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        100,
        data_oid(v2, 250),
        0,
        copies,
        3,
    );
    models.insert(name.to_owned(), model.clone());
    verify(&cluster, &models, work.path(), "after snapshot 1");

    // A second snapshot, a copy-on-write from v1 into the new working VDI.
    let v3 = ok(&cluster, "snapshot create 2", q.snapshot_create("snap2"));
    models.insert(format!("{name}@snap2"), model.clone());
    let from = q.log.len();
    put(&cluster, &mut q, &mut model, r(OBJ + 77, 5000, 2002));
    let w = since(&q, from);
    assert_obj(
        &w[0],
        "copy-on-write from the first snapshot",
        CREATE_AND_WRITE_OBJ,
        FLAG_WRITE | FLAG_COW | FLAG_CACHE,
        5000,
        data_oid(v3, 1),
        data_oid(v1, 1),
        copies,
        77,
    );
    models.insert(name.to_owned(), model.clone());
    verify(&cluster, &models, work.path(), "after snapshot 2");

    // --- list ---
    let from = q.log.len();
    let list = ok(&cluster, "snapshot list", q.snapshot_list());
    let w = since(&q, from);
    assert_eq!(
        (
            w[0].proto(),
            w[0].op(),
            w[0].flags(),
            w[0].len(),
            w[0].data_len,
            w[0].result()
        ),
        (
            0,
            READ_VDIS,
            0,
            VDI_BITMAP_BYTES as u32,
            VDI_BITMAP_BYTES,
            SUCCESS
        ),
        "list 1: READ_VDIS of the whole bitmap"
    );
    let walked: Vec<u64> = w[1..].iter().map(Wire::oid).collect();
    assert_eq!(
        walked,
        [inode_oid(v1), inode_oid(v2), inode_oid(v3)],
        "list 2: headers from the name's hash up to the first clear bit:\n{}",
        transcript(&w)
    );
    for x in &w[1..] {
        assert_obj(
            x,
            "list header read",
            READ_OBJ,
            FLAG_CACHE,
            HEADER as u32,
            x.oid(),
            0,
            0,
            0,
        );
        assert!(
            x.conn == w[1].conn && x.conn != w[0].conn,
            "one connection for the walk"
        );
    }
    let now = unix_now();
    assert_eq!(
        list.iter()
            .map(|s| (s.id, s.name.as_str()))
            .collect::<Vec<_>>(),
        [(1, "snap1"), (2, "snap2")],
        "snapshots listed: {list:?}"
    );
    for s in &list {
        assert!(
            (t0..=now).contains(&i64::from(s.date_sec)),
            "date of {s:?} outside [{t0}, {now}]"
        );
        assert!(s.date_nsec < 1_000_000_000, "nanoseconds of {s:?}");
    }

    // --- goto snap1 by tag ---
    let from = q.log.len();
    ok(&cluster, "snapshot goto", q.snapshot_goto("snap1"));
    let w = since(&q, from);
    assert_eq!(w.len(), 5, "goto:\n{}", transcript(&w));
    let (info, hdr_read, del, new, full) = (&w[0], &w[1], &w[2], &w[3], &w[4]);
    assert_eq!(
        (
            info.proto(),
            info.op(),
            info.flags(),
            info.len(),
            info.snapid()
        ),
        (QEMU_PROTO_VER, GET_VDI_INFO, FLAG_WRITE, 512, 0),
        "goto 1: GET_VDI_INFO by tag: {}",
        info.describe()
    );
    let mut want = fixed(name, 256);
    want.extend_from_slice(&fixed("snap1", 256));
    assert_eq!(info.payload, want);
    assert_eq!((info.result(), info.vdi_id()), (SUCCESS, v1));
    assert_obj(
        hdr_read,
        "goto 2: header read",
        READ_OBJ,
        FLAG_CACHE,
        HEADER as u32,
        inode_oid(v1),
        0,
        copies,
        0,
    );
    assert!(
        hdr_read.conn < info.conn,
        "reload_inode opens its connection before find_vdi_name's"
    );
    assert_eq!(
        (
            del.proto(),
            del.op(),
            del.flags(),
            del.len(),
            del.base_vdi_id(),
            del.snapid(),
            del.result()
        ),
        (0, DEL_VDI, FLAG_WRITE, 256, v1, 0, SUCCESS),
        "goto 3: DEL_VDI of the working VDI, name only: {}",
        del.describe()
    );
    assert_eq!(del.payload, fixed(name, 256));
    assert_eq!(
        (
            new.op(),
            new.snapid(),
            new.base_vdi_id(),
            new.vdi_size(),
            new.vdi_copies(),
            new.result()
        ),
        (NEW_VDI, 0, v1, SIZE, copies, SUCCESS),
        "goto 4: NEW_VDI from the snapshot: {}",
        new.describe()
    );
    let v4 = new.vdi_id();
    assert!(
        ![v1, v2, v3].contains(&v4),
        "a new vid for the new working VDI"
    );
    assert_obj(
        full,
        "goto 5: full inode read",
        READ_OBJ,
        FLAG_CACHE,
        QEMU_INODE_SIZE as u32,
        inode_oid(v4),
        0,
        copies,
        0,
    );
    assert_eq!(full.data_len, QEMU_INODE_SIZE);
    assert_eq!(
        (q.vid(), u32_at(&q.inode, 564), q.is_snapshot),
        (v4, v1, false)
    );
    for (idx, owner) in [(0, v1), (1, v1), (199, v1), (250, 0)] {
        assert_eq!(
            q.data_vdi_id(idx),
            owner,
            "data_vdi_id[{idx}] after goto (snap1's index)"
        );
    }
    let mut model = models[&format!("{name}@snap1")].clone();
    models.insert(name.to_owned(), model.clone());
    // Our own reads agree, and the old working VDI (v3) is gone with its objects.
    let got = ok(&cluster, "read after goto", q.read(0, 2 * OBJ));
    assert!(
        got == model.range(0, 2 * OBJ),
        "the client reads snap1's data after goto"
    );
    verify(&cluster, &models, work.path(), "after goto snap1");
    let listed = vdi_list(&cluster, 0);
    assert!(
        listed.iter().all(|v| v.vid != v3),
        "the old working VDI is deleted: {listed:?}"
    );
    let working = listed
        .iter()
        .find(|v| v.flag != 's')
        .expect("a working VDI");
    assert_eq!(
        (working.vid, working.flag),
        (v4, '='),
        "the branch is the working VDI (not a clone): {listed:?}"
    );
    put(&cluster, &mut q, &mut model, r(OBJ - 10, 20, 3000));
    models.insert(name.to_owned(), model.clone());

    // --- delete snapshot 2, from an image opened on it (qemu-img snapshot -d 2 NAME:2) ---
    let mut d = ok(
        &cluster,
        "open snapshot 2",
        Qemu::open(addr(&cluster, 2), name, 2, ""),
    );
    assert!(d.is_snapshot);
    assert_eq!(d.vid(), v2);
    let from = d.log.len();
    ok(&cluster, "snapshot delete", d.snapshot_delete("2"));
    let w = since(&d, from);
    // v2's index: 0..=199 and 250 in use: 128 entries, then the rest up to the end.
    assert_eq!(w.len(), 4, "delete:\n{}", transcript(&w));
    assert_obj(
        &w[0],
        "delete 1: first batch",
        WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        128 * 4,
        inode_oid(v2),
        0,
        copies,
        HEADER as u64,
    );
    assert_obj(
        &w[1],
        "delete 2: second batch",
        WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        128 * 4,
        inode_oid(v2),
        0,
        copies,
        (HEADER + 128 * 4) as u64,
    );
    assert!(w[..2].iter().all(|x| x.payload.iter().all(|&b| b == 0)
        && x.result() == SUCCESS
        && x.conn == w[0].conn));
    assert_eq!(
        (
            w[2].proto(),
            w[2].op(),
            w[2].len(),
            w[2].snapid(),
            w[2].result(),
            w[2].vdi_id()
        ),
        (QEMU_PROTO_VER, LOCK_VDI, 512, 2, SUCCESS, v2),
        "delete 3: LOCK_VDI of the snapshot: {}",
        w[2].describe()
    );
    let mut want = fixed(name, 256);
    want.extend_from_slice(&[0u8; 256]);
    assert_eq!(w[2].payload, want);
    assert_eq!(
        (
            w[3].proto(),
            w[3].op(),
            w[3].flags(),
            w[3].len(),
            w[3].snapid(),
            w[3].base_vdi_id(),
            w[3].result()
        ),
        (0, DEL_VDI, FLAG_WRITE, 512, 2, 0, SUCCESS),
        "delete 4: DEL_VDI with name + tag and snapid: {}",
        w[3].describe()
    );
    assert_eq!(w[3].payload, want);
    models.remove(&format!("{name}@snap2"));
    for (k, (export, model)) in models.iter().enumerate() {
        assert_vdi(&cluster, k % 3, export, model, work.path());
    }
    let list = ok(&cluster, "snapshot list after delete", q.snapshot_list());
    assert_eq!(
        list.iter()
            .map(|s| (s.id, s.name.as_str()))
            .collect::<Vec<_>>(),
        [(1, "snap1")],
        "snapshots after the delete"
    );
    // The objects only snapshot 2 referenced (its copy of object 0, object 250) must go,
    // whether the zeroing WRITE_OBJs or DEL_VDI release them; nothing else may.
    verify(&cluster, &models, work.path(), "after deleting snapshot 2");
}
