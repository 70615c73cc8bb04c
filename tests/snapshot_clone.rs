//! Copy-on-write snapshots and clones with real sheep processes (issue 4).
//!
//! "Done when" 1 and 5, [`fifty_clones_of_a_20g_base`]: a 20 GiB base holding 1 GiB of data in
//! 128 scattered 8 MiB regions (each its own seeded random bytes, half of them starting at an
//! unaligned offset) is written once with nbdcopy, snapshotted and cloned 50 times with `dog`
//! (spread over the 3 nodes). Right after each clone its first 4 KiB, read through NBD via
//! another node, equal the base's. Every clone then gets its own writes through NBD through
//! two nodes: partial unaligned copy-on-write inside shared objects, a write across a shared /
//! unallocated boundary, a whole-object overwrite of a shared object, a write into the zero
//! part of a partly filled shared object, and writes into unallocated objects (one of them in
//! the disk's last object, which every clone writes at a different place). Each clone is then
//! read back through the third node: every object it wrote plus a sample (its first object, an
//! untouched base object, an unallocated object, and the objects its neighbours wrote) must
//! equal the model. The base and `base@base-snap` are compared whole with `qemu-img compare`;
//! a write to the snapshot fails (qemu-io cannot open it for writing; an NBD_CMD_WRITE sent
//! anyway gets an error); `dog vdi list -r` shows each clone's own and shared sizes; and the
//! stores hold exactly the base's objects under the snapshot's vid plus each clone's written
//! objects under its own vid, two copies each.
//!
//! "Done when" 2: [`build_family`] makes a family through `dog` and NBD: base with snapshots
//! s1 and s2, a rollback of base to s1, clone c1 of base@s2, snapshot c1s of the clone, clone
//! cc1 of that snapshot (clone of a snapshot of a clone), a rollback of c1 to c1s, and writes
//! between every step; every VDI is checked against its model after every step, and the stores
//! must hold exactly the objects the live VDIs reference (two copies each). Three tests then
//! delete the family in different orders (base first, snapshots first, clones first), checking
//! every remaining VDI and the stores after each delete, and finally that no data object
//! (`00...`) and no inode object (`80...`) is left on any node.
//!
//! "Done when" 3 (second half), [`flatten_clone_survives_its_ancestry`]: `dog vdi flatten`
//! makes a clone own all its objects; it keeps its data while its base and both snapshots are
//! deleted, and then the stores hold only its own objects.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use sheepfold_tests::data::{data_oid_name, random_bytes};
use sheepfold_tests::snapshots::{
    assert_no_objects_left, assert_objects_match, assert_stores_hold_referenced, assert_vdi,
    lookup, nbd_raw_write, objects_of, read_index, read_ranges, stored_objects, vdi_list,
    write_nbd, Model, Write, MIB, NBD_FLAG_READ_ONLY, OBJ,
};
use sheepfold_tests::tools::{all_output, qemu_io, tool, TOOL_IO_TIMEOUT, TOOL_TIMEOUT};
use sheepfold_tests::Cluster;

const COPIES: usize = 2;

/// A 3-node cluster in distinct zones, formatted with copies 2.
fn cluster() -> Cluster {
    let cluster = Cluster::builder().nodes(3).distinct_zones().start();
    cluster.format(COPIES as u8);
    cluster
}

fn workdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sheepfold-snap-")
        .tempdir()
        .expect("temp dir")
}

// ---------------------------------------------------------------------------------------------
// "Done when" 1 and 5: fifty clones of a 20 GiB base.

const BIG: u64 = 20 << 30;
const REGIONS: u64 = 128;
const REGION_STRIDE: u64 = 160 * MIB;
const REGION_LEN: u64 = 8 * MIB;
const CLONES: u64 = 50;

/// First byte of base region `k`; odd regions start at an unaligned offset.
fn region_start(k: u64) -> u64 {
    k * REGION_STRIDE + if k % 2 == 1 { 1_000_003 } else { 0 }
}

/// First object of region `k`.
fn region_obj(k: u64) -> u64 {
    region_start(k) / OBJ
}

/// The base's writes: 128 regions of 8 MiB, 1 GiB in all, each its own random bytes.
fn base_writes() -> Vec<(u64, u64)> {
    (0..REGIONS)
        .map(|k| (region_start(k), REGION_LEN))
        .collect()
}

/// Objects holding base data.
fn base_objects() -> BTreeSet<u64> {
    base_writes()
        .into_iter()
        .flat_map(|(off, len)| off / OBJ..=(off + len - 1) / OBJ)
        .collect()
}

/// The sparse local image the base is written from and compared with.
fn make_base_image(path: &Path) {
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .expect("create base image");
    f.set_len(BIG).expect("size base image");
    for (k, (off, len)) in base_writes().into_iter().enumerate() {
        f.write_all_at(&random_bytes(0xba5e_0000 + k as u64, len as usize), off)
            .expect("write base image");
    }
    f.sync_all().expect("sync base image");
}

/// Clone `n`'s writes: (through its first node, through its second node).
fn clone_writes(n: u64) -> (Vec<Write>, Vec<Write>) {
    let seed = |k: u64| 0xc10e_0000 + n * 16 + k;
    let r = (37 * n) % REGIONS;
    let o = region_obj(r);
    let o2 = region_obj((37 * n + 64) % REGIONS);
    let o3 = region_obj((2 * n + 1) % REGIONS); // odd region: its first object starts with zeros
    let first = vec![
        // Copy-on-write, partial and unaligned, inside a shared object full of base data.
        Write::random(o * OBJ + 1_500_001 + 3 * n, 10_000 + 17 * n, seed(0)),
        // A whole shared object overwritten.
        Write::random((o2 + 1) * OBJ, OBJ, seed(1)),
        // An unallocated object, unaligned, 80 MiB past the region.
        Write::random(
            region_start(r) + 80 * MIB + 12_345 + 4099 * n,
            65_536 + n,
            seed(2),
        ),
    ];
    let second = vec![
        // Across the boundary of shared object o+1 and o+2 (unallocated after an even region,
        // shared and partly zero after an odd one).
        Write::random((o + 2) * OBJ - 3000 - n, 6000 + 2 * n, seed(3)),
        // Into the zero part of a partly filled shared object.
        Write::random(o3 * OBJ + 512 + 7 * n, 2048, seed(4)),
        // The disk's last object: every clone writes its own 8 KiB of it.
        Write::random(BIG - (n + 1) * 8192 + 3, 8189, seed(5)),
    ];
    (first, second)
}

/// Objects clone `n` reads back besides those it wrote: its first object, an untouched base
/// object, an unallocated one, and what its neighbours wrote.
fn clone_sample(n: u64) -> BTreeSet<u64> {
    let mut s = BTreeSet::from([
        0,
        region_obj((37 * n + 32) % REGIONS) + 1,
        region_obj((37 * n) % REGIONS) + 30,
    ]);
    for m in [n.wrapping_sub(1), n + 1] {
        if m < CLONES {
            let (a, b) = clone_writes(m);
            s.extend(objects_of(&a[..2]));
            s.extend(objects_of(&b[..1]));
        }
    }
    s
}

#[test]
fn fifty_clones_of_a_20g_base() {
    let started = Instant::now();
    let cluster = cluster();
    let work = workdir();
    let dir = work.path();

    // The base: 1 GiB of data written once, through node 0.
    let image = dir.join("base.img");
    make_base_image(&image);
    cluster.dog_ok(0, &["vdi", "create", "base", "20G"]);
    let t = Instant::now();
    let mut copy = tool("nbdcopy");
    copy.current_dir(dir)
        .arg("--destination-is-zero")
        .arg(&image)
        .arg(cluster.nbd_uri(0, "base"));
    cluster.tool_ok(copy, TOOL_IO_TIMEOUT);
    eprintln!("base: 1 GiB written in {:.1?}", t.elapsed());
    let base_vid = cluster.vdi_id(0, "base");
    let base_model = Model::from_file(&image, BIG);
    let first_4k = base_model.range(0, 4096);

    cluster.dog_ok(1, &["vdi", "snapshot", "-s", "base-snap", "base"]);

    // 50 clones, each through another node, each checked at once through yet another.
    let t = Instant::now();
    for n in 0..CLONES {
        let name = format!("clone{n}");
        cluster.dog_ok(
            n as usize % 3,
            &["vdi", "clone", "-s", "base-snap", "base", &name],
        );
        let got = read_ranges(&cluster, (n as usize + 1) % 3, &name, &[(0, 4096)], dir);
        assert!(
            got[0] == first_4k,
            "{name}: its first 4 KiB right after the clone differ from the base's"
        );
    }
    eprintln!(
        "50 clones made and their first 4 KiB read in {:.1?}",
        t.elapsed()
    );

    // Distinct writes into every clone, through two nodes.
    let t = Instant::now();
    let mut models = Vec::new();
    for n in 0..CLONES {
        let name = format!("clone{n}");
        let (first, second) = clone_writes(n);
        write_nbd(&cluster, n as usize % 3, &name, &first, dir);
        write_nbd(&cluster, (n as usize + 1) % 3, &name, &second, dir);
        let mut m = base_model.clone();
        m.apply(&first);
        m.apply(&second);
        models.push(m);
    }
    eprintln!("clone writes done in {:.1?}", t.elapsed());

    // The snapshot is read-only: qemu-io cannot open it for writing, and a write sent anyway
    // is refused by the server.
    let mut rw = qemu_io(
        &cluster.nbd_uri(2, "base@base-snap"),
        &["write -P 0x5a 0 4096".to_owned()],
    );
    rw.current_dir(dir);
    let out = sheepfold_tests::process::run_with_timeout(rw, None, TOOL_TIMEOUT);
    assert!(
        !out.status.success() && !all_output(&out).contains("wrote "),
        "qemu-io wrote to the snapshot base@base-snap: {}",
        all_output(&out)
    );
    for node in 0..3 {
        let reply = nbd_raw_write(
            cluster.nbd_port(node),
            "base@base-snap",
            4096,
            &[0xa5; 4096],
        )
        .unwrap_or_else(|e| panic!("raw NBD write to base@base-snap via node {node}: {e}"));
        assert_ne!(
            reply.transmission_flags & NBD_FLAG_READ_ONLY,
            0,
            "base@base-snap must be exported read-only (node {node})"
        );
        assert_eq!(
            reply.error, 1,
            "node {node}: an NBD write into the read-only snapshot base@base-snap must fail \
             with EPERM (the NBD spec's error for read-only exports)"
        );
    }

    // Every clone: what it wrote, plus a sample, through the node it did not write through.
    let t = Instant::now();
    for (n, model) in models.iter().enumerate() {
        let name = format!("clone{n}");
        let mut objects = model.written_objects();
        objects.extend(clone_sample(n as u64));
        assert_objects_match(&cluster, (n + 2) % 3, &name, model, &objects, dir);
    }
    eprintln!("clones verified in {:.1?}", t.elapsed());

    // The base and its snapshot are unchanged, whole.
    let t = Instant::now();
    for (node, export) in [(1, "base"), (2, "base@base-snap")] {
        let mut cmp = tool("qemu-img");
        cmp.current_dir(dir)
            .args(["compare", "-f", "raw", "-F", "raw"])
            .arg(&image)
            .arg(cluster.nbd_uri(node, export));
        let out = cluster.tool_ok(cmp, TOOL_IO_TIMEOUT);
        assert!(
            all_output(&out).contains("Images are identical"),
            "{export}: {}",
            all_output(&out)
        );
    }
    eprintln!("base and snapshot compared in {:.1?}", t.elapsed());

    // dog vdi list -r: the snapshot owns the base's objects, the working base shares them,
    // each clone owns what it wrote and shares the rest.
    let base_objs = base_objects();
    let list = vdi_list(&cluster, 2);
    let find = |flag: char, name: &str| {
        list.iter()
            .find(|v| v.flag == flag && v.name == name)
            .unwrap_or_else(|| panic!("no '{flag} {name}' in dog vdi list -r: {list:?}"))
    };
    let snap = find('s', "base");
    assert_eq!(
        (snap.vid, snap.id, snap.tag.as_str(), snap.used, snap.shared),
        (base_vid, 1, "base-snap", base_objs.len() as u64 * OBJ, 0),
        "the snapshot keeps the base's vid and owns its objects"
    );
    let work_base = find('=', "base");
    assert_ne!(work_base.vid, base_vid, "the working VDI has a new vid");
    assert_eq!(
        (work_base.used, work_base.shared),
        (0, base_objs.len() as u64 * OBJ),
        "the working base shares every object"
    );
    let mut want_objects: BTreeSet<String> = base_objs
        .iter()
        .map(|&i| data_oid_name(base_vid, i as u32))
        .collect();
    for (n, model) in models.iter().enumerate() {
        let c = find('c', &format!("clone{n}"));
        let own = model.written_objects();
        let shared = base_objs.difference(&own).count() as u64;
        assert_eq!(
            (c.size, c.used, c.shared),
            (BIG, own.len() as u64 * OBJ, shared * OBJ),
            "clone{n}: size, own and shared bytes"
        );
        want_objects.extend(own.iter().map(|&i| data_oid_name(c.vid, i as u32)));
    }

    // The stores: the base's objects once (under the snapshot's vid) and each clone's
    // written objects under its own vid, two copies of each; nothing else.
    let stored = stored_objects(&cluster);
    let data: BTreeMap<&String, &usize> =
        stored.iter().filter(|(n, _)| n.starts_with("00")).collect();
    let have: BTreeSet<String> = data.keys().map(|s| (*s).clone()).collect();
    let missing: Vec<&String> = want_objects.difference(&have).collect();
    let extra: Vec<&String> = have.difference(&want_objects).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "data objects in the stores: missing {missing:?}, unexpected {extra:?}"
    );
    let wrong: Vec<_> = data.iter().filter(|(_, &&c)| c != COPIES).collect();
    assert!(
        wrong.is_empty(),
        "objects without {COPIES} copies: {wrong:?}"
    );
    for i in 0..3 {
        cluster.assert_no_panic(i);
    }
    eprintln!("whole test: {:.1?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// "Done when" 2: rollback, snapshot of a clone, clone of a clone, deletes in every order.

const FSIZE: u64 = 32 * MIB; // 8 objects

/// A family of VDIs with their models, keyed by NBD export name.
struct Family {
    cluster: Cluster,
    work: tempfile::TempDir,
    models: BTreeMap<String, Model>,
}

impl Family {
    fn dir(&self) -> &Path {
        self.work.path()
    }

    fn write(&mut self, node: usize, export: &str, writes: &[Write]) {
        write_nbd(&self.cluster, node, export, writes, self.work.path());
        self.models
            .get_mut(export)
            .unwrap_or_else(|| panic!("no model for {export}"))
            .apply(writes);
    }

    fn copy_model(&mut self, from: &str, to: &str) {
        let m = self.models[from].clone();
        self.models.insert(to.to_owned(), m);
    }

    /// Every live VDI read whole, each through a different node, against its model; then the
    /// stores against the live VDIs' indexes.
    fn verify(&self, step: &str) {
        for (k, (export, model)) in self.models.iter().enumerate() {
            assert_vdi(&self.cluster, k % 3, export, model, self.dir());
        }
        assert_stores_hold_referenced(&self.cluster, COPIES, step);
        for i in 0..3 {
            self.cluster.assert_no_panic(i);
        }
    }

    /// `dog vdi delete NAME` or `dog vdi delete -s TAG NAME` for export `NAME` / `NAME@TAG`.
    fn delete(&mut self, node: usize, export: &str) {
        match export.split_once('@') {
            Some((name, tag)) => self
                .cluster
                .dog_ok(node, &["vdi", "delete", "-s", tag, name]),
            None => self.cluster.dog_ok(node, &["vdi", "delete", export]),
        };
        self.models.remove(export);
        let listed: BTreeSet<String> = vdi_list(&self.cluster, (node + 1) % 3)
            .into_iter()
            .map(|v| {
                if v.flag == 's' {
                    format!("{}@{}", v.name, v.tag)
                } else {
                    v.name
                }
            })
            .collect();
        let want: BTreeSet<String> = self.models.keys().cloned().collect();
        assert_eq!(listed, want, "dog vdi list after deleting {export}");
        self.verify(&format!("after deleting {export}"));
    }
}

/// Builds the family; see the module docs. Exports: base, base@s1, base@s2, c1, c1@c1s, cc1.
fn build_family() -> Family {
    let cluster = cluster();
    let mut f = Family {
        cluster,
        work: workdir(),
        models: BTreeMap::new(),
    };
    let r = |off: u64, len: u64, seed: u64| Write::random(off, len, 0xfa_0000 + seed);
    f.cluster.dog_ok(0, &["vdi", "create", "base", "32M"]);
    f.models.insert("base".into(), Model::zeros(FSIZE));
    f.write(
        0,
        "base",
        &[
            r(0, 5000, 1),
            r(OBJ - 100, 300, 2), // across 0/1
            r(5 * OBJ, OBJ, 3),   // all of 5
            r(7 * OBJ + 123, 777, 4),
        ],
    );
    f.cluster
        .dog_ok(1, &["vdi", "snapshot", "-s", "s1", "base"]);
    f.copy_model("base", "base@s1");
    f.write(
        1,
        "base",
        &[
            r(100, 1000, 5),               // copy-on-write inside 0
            r(3 * OBJ + 5, 10, 6),         // new object 3
            r(5 * OBJ + OBJ / 2, 4096, 7), // copy-on-write inside 5
        ],
    );
    f.cluster
        .dog_ok(2, &["vdi", "snapshot", "-s", "s2", "base"]);
    f.copy_model("base", "base@s2");
    f.write(2, "base", &[r(OBJ + 1, 2000, 8), r(6 * OBJ, 100, 9)]);
    f.verify("base with snapshots s1 and s2");

    // Rollback to s1: the working VDI is s1 again; what was written after s2 is freed.
    f.cluster
        .dog_ok(0, &["vdi", "rollback", "-f", "-s", "s1", "base"]);
    f.copy_model("base@s1", "base");
    f.verify("base rolled back to s1");
    f.write(0, "base", &[r(2 * OBJ, 1234, 10), r(10, 10, 11)]);

    // A clone of s2, written; a snapshot of the clone; a clone of that snapshot.
    f.cluster
        .dog_ok(1, &["vdi", "clone", "-s", "s2", "base", "c1"]);
    f.copy_model("base@s2", "c1");
    f.write(1, "c1", &[r(0, 512, 12), r(4 * OBJ + 1, 3 * OBJ, 13)]);
    f.cluster.dog_ok(2, &["vdi", "snapshot", "-s", "c1s", "c1"]);
    f.copy_model("c1", "c1@c1s");
    f.write(
        2,
        "c1",
        &[
            r(3 * OBJ, 4096, 14),
            r(FSIZE - 10, 10, 15),
            r(OBJ + 7, 70_000, 16),
        ],
    );
    f.cluster
        .dog_ok(0, &["vdi", "clone", "-s", "c1s", "c1", "cc1"]);
    f.copy_model("c1@c1s", "cc1");
    f.write(
        0,
        "cc1",
        &[
            r(2 * OBJ - 1, 2, 17),
            r(5 * OBJ + 99, 10_000, 18),
            r(6 * OBJ, OBJ, 19),
        ],
    );
    f.verify("clone c1, its snapshot c1s and the clone cc1 of c1s");

    // Roll the clone back to its own snapshot; cc1 must not notice.
    f.cluster
        .dog_ok(1, &["vdi", "rollback", "-f", "-s", "c1s", "c1"]);
    f.copy_model("c1@c1s", "c1");
    f.write(2, "c1", &[r(7 * OBJ, 4096, 20)]);
    f.verify("c1 rolled back to c1s");

    // The listing agrees: snapshots are 's', clones 'c', c1 after rollback is a working VDI
    // derived from its snapshot (snap_id 2, not a clone any more).
    let list = vdi_list(&f.cluster, 0);
    let flags: BTreeMap<String, (char, u32)> = list
        .iter()
        .map(|v| {
            let key = if v.flag == 's' {
                format!("{}@{}", v.name, v.tag)
            } else {
                v.name.clone()
            };
            (key, (v.flag, v.id))
        })
        .collect();
    let want: BTreeMap<String, (char, u32)> = [
        ("base", ('=', 0)),
        ("base@s1", ('s', 1)),
        ("base@s2", ('s', 2)),
        ("c1", ('=', 0)),
        ("c1@c1s", ('s', 1)),
        ("cc1", ('c', 0)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(flags, want, "dog vdi list -r flags and ids: {list:?}");
    f
}

#[test]
fn delete_base_first() {
    let mut f = build_family();
    f.delete(0, "base");
    // The bare name is gone, its snapshots stay.
    assert_eq!(lookup(f.cluster.port(1), "base", "", 0), Err(0x08));
    f.delete(1, "base@s1");
    f.delete(2, "base@s2");
    f.delete(0, "c1");
    f.delete(1, "c1@c1s");
    f.delete(2, "cc1");
    assert_eq!(f.cluster.dog_ok(0, &["vdi", "list", "-r"]), "");
    assert_no_objects_left(&f.cluster, "everything deleted, base first");
}

#[test]
fn delete_snapshots_first() {
    let mut f = build_family();
    f.delete(0, "base@s2"); // c1 was cloned from it
    f.delete(1, "c1@c1s"); // cc1 was cloned from it
    f.delete(2, "base@s1"); // the working base derives from it
    f.delete(0, "cc1");
    f.delete(1, "base");
    f.delete(2, "c1");
    assert_eq!(f.cluster.dog_ok(0, &["vdi", "list", "-r"]), "");
    assert_no_objects_left(&f.cluster, "everything deleted, snapshots first");
}

#[test]
fn delete_clones_first() {
    let mut f = build_family();
    f.delete(0, "cc1");
    f.delete(1, "c1");
    f.delete(2, "c1@c1s");
    f.delete(0, "base");
    f.delete(1, "base@s2");
    f.delete(2, "base@s1");
    assert_eq!(f.cluster.dog_ok(0, &["vdi", "list", "-r"]), "");
    assert_no_objects_left(&f.cluster, "everything deleted, clones first");
}

// ---------------------------------------------------------------------------------------------
// "Done when" 3, second half: flatten.

#[test]
fn flatten_clone_survives_its_ancestry() {
    let cluster = cluster();
    let work = workdir();
    let dir = work.path();
    let r = |off: u64, len: u64, seed: u64| Write::random(off, len, 0xf1a7_0000 + seed);

    cluster.dog_ok(0, &["vdi", "create", "base", "32M"]);
    let mut base = Model::zeros(FSIZE);
    let w1 = [r(0, 3000, 1), r(OBJ + 5, OBJ, 2), r(5 * OBJ + 1, 1000, 3)];
    write_nbd(&cluster, 0, "base", &w1, dir);
    base.apply(&w1);
    cluster.dog_ok(1, &["vdi", "snapshot", "-s", "s1", "base"]);
    let w2 = [r(OBJ + 100, 100, 4), r(3 * OBJ, 5000, 5)];
    write_nbd(&cluster, 1, "base", &w2, dir);
    base.apply(&w2);
    cluster.dog_ok(2, &["vdi", "snapshot", "-s", "s2", "base"]);

    cluster.dog_ok(0, &["vdi", "clone", "-s", "s2", "base", "c"]);
    let mut c = base.clone();
    let w3 = [r(10, 10, 6), r(6 * OBJ + 3, 3, 7)];
    write_nbd(&cluster, 1, "c", &w3, dir);
    c.apply(&w3);
    let allocated: BTreeSet<u64> = [0, 1, 2, 3, 5, 6].into();
    let own_before: BTreeSet<u64> = [0, 6].into();

    let entry = |name: &str| {
        vdi_list(&cluster, 2)
            .into_iter()
            .find(|v| v.name == name && v.flag != 's')
            .unwrap_or_else(|| panic!("{name} is not listed"))
    };
    let before = entry("c");
    assert_eq!(
        (before.flag, before.used, before.shared),
        (
            'c',
            own_before.len() as u64 * OBJ,
            (allocated.len() - own_before.len()) as u64 * OBJ
        ),
        "the clone before flatten"
    );

    cluster.dog_ok(2, &["vdi", "flatten", "c"]);
    let after = entry("c");
    assert_eq!(
        (after.flag, after.vid, after.used, after.shared),
        ('=', before.vid, allocated.len() as u64 * OBJ, 0),
        "after flatten the VDI owns every object and is no longer a clone"
    );
    let index = read_index(cluster.port(0), after.vid, FSIZE / OBJ);
    for (idx, owner) in index.iter().enumerate() {
        let want = if allocated.contains(&(idx as u64)) {
            after.vid
        } else {
            0
        };
        assert_eq!(*owner, want, "data_vdi_id[{idx}] of the flattened VDI");
    }
    let parent = sheepfold_tests::snapshots::read_header(cluster.port(1), after.vid);
    assert_eq!(
        u32::from_le_bytes(parent[564..568].try_into().unwrap()),
        0,
        "parent_vdi_id after flatten"
    );
    for node in 0..3 {
        assert_vdi(&cluster, node, "c", &c, dir);
    }

    // Delete the whole ancestry: the working base and both snapshots.
    for args in [
        &["vdi", "delete", "base"][..],
        &["vdi", "delete", "-s", "s2", "base"][..],
        &["vdi", "delete", "-s", "s1", "base"][..],
    ] {
        cluster.dog_ok(0, args);
        for node in 0..3 {
            assert_vdi(&cluster, node, "c", &c, dir);
        }
    }
    let list = vdi_list(&cluster, 1);
    assert_eq!(list.len(), 1, "only the flattened VDI is left: {list:?}");

    // Only its own objects remain: its inode and its allocated objects, two copies each.
    assert_stores_hold_referenced(&cluster, COPIES, "flattened clone without ancestry");
    let stored = stored_objects(&cluster);
    let mut want: BTreeSet<String> = allocated
        .iter()
        .map(|&i| data_oid_name(after.vid, i as u32))
        .collect();
    want.insert(format!(
        "{:016x}",
        (1u64 << 63) | (u64::from(after.vid) << 32)
    ));
    assert_eq!(
        stored.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "the stores hold only the flattened VDI's objects"
    );

    // It is an ordinary VDI now: writes, reads, delete.
    let w4 = [r(OBJ - 1, 2, 8), r(7 * OBJ, 100, 9)];
    write_nbd(&cluster, 2, "c", &w4, dir);
    c.apply(&w4);
    assert_vdi(&cluster, 0, "c", &c, dir);
    cluster.dog_ok(1, &["vdi", "delete", "c"]);
    assert_no_objects_left(&cluster, "flattened VDI deleted");
    for i in 0..3 {
        cluster.assert_no_panic(i);
    }
}
