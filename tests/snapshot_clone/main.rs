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

use sheepfold_tests::Cluster;

mod family;
mod fifty_clones;
mod flatten;

pub(crate) const COPIES: usize = 2;

/// A 3-node cluster in distinct zones, formatted with copies 2.
pub(crate) fn cluster() -> Cluster {
    let cluster = Cluster::builder().nodes(3).distinct_zones().start();
    cluster.format(COPIES as u8);
    cluster
}

pub(crate) fn workdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sheepfold-snap-")
        .tempdir()
        .expect("temp dir")
}
