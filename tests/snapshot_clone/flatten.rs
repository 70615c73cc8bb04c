//! "Done when" 3, second half: flatten.

use std::collections::BTreeSet;

use sheepfold_tests::data::data_oid_name;
use sheepfold_tests::snapshots::{
    assert_no_objects_left, assert_stores_hold_referenced, assert_vdi, read_index, stored_objects,
    vdi_list, write_nbd, Model, Write, OBJ,
};

use crate::family::FSIZE;
use crate::{cluster, workdir, COPIES};

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
