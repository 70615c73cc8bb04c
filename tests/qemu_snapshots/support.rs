//! What the tests share: the cluster, checks of data and of recorded requests.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use sheepfold_tests::snapshots::{
    assert_stores_hold_referenced, assert_vdi, vdi_list, Model, Write,
};
use sheepfold_tests::Cluster;

use crate::client::*;
use crate::wire::*;

pub(crate) fn cluster() -> Cluster {
    let cluster = Cluster::builder().nodes(3).distinct_zones().start();
    cluster.format(2);
    cluster
}

pub(crate) fn addr(cluster: &Cluster, node: usize) -> SocketAddr {
    ([127, 0, 0, 1], cluster.port(node)).into()
}

pub(crate) fn ok<T>(cluster: &Cluster, what: &str, r: Res<T>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}\n{}", cluster.all_log_tails()))
}

/// Writes through the client and into the model.
pub(crate) fn put(cluster: &Cluster, q: &mut Qemu, model: &mut Model, w: Write) {
    ok(
        cluster,
        &format!("write {}+{}", w.offset, w.data.len()),
        q.write(w.offset, &w.data),
    );
    model.apply(&[w]);
}

/// Checks every export against its model through NBD (each through another node), then the
/// stores against the live VDIs' indexes.
pub(crate) fn verify(
    cluster: &Cluster,
    models: &BTreeMap<String, Model>,
    work: &std::path::Path,
    step: &str,
) {
    for (k, (export, model)) in models.iter().enumerate() {
        assert_vdi(cluster, k % 3, export, model, work);
    }
    assert_stores_hold_referenced(cluster, 2, step);
    for i in 0..3 {
        cluster.assert_no_panic(i);
    }
}

/// The vid of the working VDI `name` (`dog vdi list -r`).
pub(crate) fn working_vid(cluster: &Cluster, node: usize, name: &str) -> u32 {
    vdi_list(cluster, node)
        .into_iter()
        .find(|v| v.name == name && v.flag != 's')
        .unwrap_or_else(|| panic!("no working VDI {name}"))
        .vid
}

/// The requests logged since `from`.
pub(crate) fn since(q: &Qemu, from: usize) -> Vec<Wire> {
    q.log[from..].to_vec()
}

/// Asserts one object request.
#[allow(clippy::too_many_arguments)]
pub(crate) fn assert_obj(
    w: &Wire,
    what: &str,
    op: u8,
    flags: u16,
    len: u32,
    oid: u64,
    cow: u64,
    copies: u8,
    offset: u64,
) {
    assert_eq!(
        (
            w.proto(),
            w.op(),
            w.flags(),
            w.len(),
            w.oid(),
            w.cow_oid(),
            w.copies(),
            w.offset()
        ),
        (0, op, flags, len, oid, cow, copies, offset),
        "{what}: {}",
        w.describe()
    );
    assert_eq!(
        &w.hdr[33..40],
        &[0u8; 7],
        "{what}: copy_policy and reserved bytes"
    );
    assert_eq!(&w.hdr[4..8], &[0u8; 4], "{what}: epoch");
}

pub(crate) const SIZE: u64 = 1 << 30; // 256 objects: delete zeroes the index in two batches
