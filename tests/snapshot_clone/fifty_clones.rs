//! "Done when" 1 and 5: fifty clones of a 20 GiB base.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use sheepfold_tests::data::{data_oid_name, random_bytes};
use sheepfold_tests::snapshots::{
    assert_objects_match, nbd_raw_write, objects_of, read_ranges, stored_objects, vdi_list,
    write_nbd, Model, Write, MIB, NBD_FLAG_READ_ONLY, OBJ,
};
use sheepfold_tests::tools::{all_output, qemu_io, tool, TOOL_IO_TIMEOUT, TOOL_TIMEOUT};

use crate::{cluster, workdir, COPIES};

pub(crate) const BIG: u64 = 20 << 30;
pub(crate) const REGIONS: u64 = 128;
pub(crate) const REGION_STRIDE: u64 = 160 * MIB;
pub(crate) const REGION_LEN: u64 = 8 * MIB;
pub(crate) const CLONES: u64 = 50;

/// First byte of base region `k`; odd regions start at an unaligned offset.
pub(crate) fn region_start(k: u64) -> u64 {
    k * REGION_STRIDE + if k % 2 == 1 { 1_000_003 } else { 0 }
}

/// First object of region `k`.
pub(crate) fn region_obj(k: u64) -> u64 {
    region_start(k) / OBJ
}

/// The base's writes: 128 regions of 8 MiB, 1 GiB in all, each its own random bytes.
pub(crate) fn base_writes() -> Vec<(u64, u64)> {
    (0..REGIONS)
        .map(|k| (region_start(k), REGION_LEN))
        .collect()
}

/// Objects holding base data.
pub(crate) fn base_objects() -> BTreeSet<u64> {
    base_writes()
        .into_iter()
        .flat_map(|(off, len)| off / OBJ..=(off + len - 1) / OBJ)
        .collect()
}

/// The sparse local image the base is written from and compared with.
pub(crate) fn make_base_image(path: &Path) {
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
pub(crate) fn clone_writes(n: u64) -> (Vec<Write>, Vec<Write>) {
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
pub(crate) fn clone_sample(n: u64) -> BTreeSet<u64> {
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
