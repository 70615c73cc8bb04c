//! "Done when" 2: rollback, snapshot of a clone, clone of a clone, deletes in every order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use sheepfold_tests::snapshots::{
    assert_no_objects_left, assert_stores_hold_referenced, assert_vdi, lookup, vdi_list, write_nbd,
    Model, Write, MIB, OBJ,
};
use sheepfold_tests::Cluster;

use crate::{cluster, workdir, COPIES};

pub(crate) const FSIZE: u64 = 32 * MIB; // 8 objects

/// A family of VDIs with their models, keyed by NBD export name.
pub(crate) struct Family {
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
pub(crate) fn build_family() -> Family {
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
