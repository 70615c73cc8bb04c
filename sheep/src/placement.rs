//! Placement: which nodes hold the copies of an object, computed from a view.
//!
//! A virtual-node ring (crate `consistent_hash`) holds `vnodes` points per
//! storing node. An object's copies go to the first distinct nodes clockwise
//! from the object's hash, skipping nodes whose zone already holds a copy.
//!
//! Invariants:
//! - Deterministic: nodes with the same [`View`] compute the same replicas for
//!   every object, on any platform and Rust version. `std::hash::Hash` is not
//!   stable, so the ring uses [`StableHash`], which feeds explicit
//!   little-endian bytes to FNV-1a and mixes the result with murmur3's
//!   finalizer (plain FNV-1a balances vnodes badly).
//! - Copies land in distinct zones; an object gets `min(copies, zones)` copies.
//! - Minimal movement: removing a node only removes it from replica lists, so
//!   surviving holders of an object stay in its new replica list.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use consistent_hash::{Node, RingHash, StaticHashRing};
use qemu_proto::hash::{FNV1A_64_INIT, FNV_64_PRIME};
use qemu_proto::ObjectId;

use crate::cluster::{Member, View};

/// FNV-1a over the exact bytes written, with integers as little-endian.
struct StableHasher(u64);

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(FNV_64_PRIME);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.write(&v.to_le_bytes());
    }
    fn write_usize(&mut self, v: usize) {
        self.write(&(v as u64).to_le_bytes());
    }
    fn finish(&self) -> u64 {
        fmix64(self.0)
    }
}

/// murmur3's 64-bit finalizer: spreads FNV's weak low-entropy output.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The ring's hash function; see the module docs for why it is ours.
#[derive(Debug, Clone, Copy, Default)]
pub struct StableHash;

impl RingHash for StableHash {
    fn hash_item<T: Hash>(&self, item: &T) -> u64 {
        let mut h = StableHasher(FNV1A_64_INIT);
        item.hash(&mut h);
        h.finish()
    }
}

/// A node's key on the ring: its address bytes and port, hashed explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct NodeKey([u8; 16], u16);

impl Hash for NodeKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0);
        state.write(&self.1.to_le_bytes());
    }
}

/// An object id hashed as its 8 little-endian bytes.
struct ObjectKey(u64);

impl Hash for ObjectKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0.to_le_bytes());
    }
}

/// The placement of every object under one view.
pub struct Placement {
    ring: StaticHashRing<'static, NodeKey, Member, StableHash>,
    zones: usize,
    view_id: u64,
}

impl Placement {
    /// Builds the ring for a view (gateways, with 0 vnodes, are left out).
    pub fn new(view: &View) -> Self {
        let nodes: Vec<Node<NodeKey, Member>> = view
            .storage_members()
            .map(|m| {
                let (addr, port) = m.sort_key();
                Node::new(NodeKey(addr, port))
                    .value(m.clone())
                    .quantity(usize::from(m.vnodes))
            })
            .collect();
        let mut zones: Vec<u32> = view.storage_members().map(|m| m.zone).collect();
        zones.sort_unstable();
        zones.dedup();
        Placement {
            ring: StaticHashRing::new(StableHash, nodes.into_iter()),
            zones: zones.len(),
            view_id: view.id,
        }
    }

    /// The id of the view this placement was computed from.
    pub fn view_id(&self) -> u64 {
        self.view_id
    }

    /// Number of distinct zones among storing nodes.
    pub fn zones(&self) -> usize {
        self.zones
    }

    /// The nodes that hold `oid` when it has `copies` copies, primary first:
    /// `min(copies, zones)` nodes in distinct zones. Empty if no node stores.
    pub fn replicas(&self, oid: ObjectId, copies: usize) -> Vec<SocketAddr> {
        let want = copies.min(self.zones);
        let mut used_zones = Vec::with_capacity(want);
        let mut out = Vec::with_capacity(want);
        for node in self.ring.calc_candidates(&ObjectKey(oid.0)) {
            if out.len() == want {
                break;
            }
            if used_zones.contains(&node.value.zone) {
                continue;
            }
            used_zones.push(node.value.zone);
            out.push(node.value.addr);
        }
        out
    }

    /// The node that orders operations on `oid`: its primary replica.
    pub fn primary(&self, oid: ObjectId) -> Option<SocketAddr> {
        self.replicas(oid, 1).first().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn view(ports: &[(u16, u32)]) -> View {
        View::new(
            ports
                .iter()
                .map(|&(p, z)| Member {
                    addr: SocketAddr::from(([127, 0, 0, 1], p)),
                    zone: z,
                    vnodes: 128,
                    ctime: 1,
                    space: 0,
                })
                .collect(),
        )
    }

    #[test]
    fn copies_are_distinct_nodes_in_distinct_zones() {
        let v = view(&[(7000, 0), (7001, 0), (7002, 1), (7003, 2)]);
        let p = Placement::new(&v);
        for i in 0..2000u32 {
            let r = p.replicas(ObjectId::data(0x7c2b25, i), 3);
            assert_eq!(r.len(), 3);
            let zones: Vec<u32> = r.iter().map(|a| v.member(*a).unwrap().zone).collect();
            let mut dedup = zones.clone();
            dedup.sort();
            dedup.dedup();
            assert_eq!(dedup.len(), 3, "zones {zones:?}");
        }
        // Only 3 zones: asking for 4 copies gives 3.
        assert_eq!(p.replicas(ObjectId::data(1, 1), 4).len(), 3);
    }

    #[test]
    fn hash_is_pinned() {
        // Changing the hash or the ring would move every object of every
        // existing cluster: these placements must never change.
        let v = view(&[(7000, 0), (7001, 1), (7002, 2), (7003, 3), (7004, 4)]);
        let p = Placement::new(&v);
        let ports = |oid| -> Vec<u16> { p.replicas(oid, 3).iter().map(|a| a.port()).collect() };
        assert_eq!(ports(ObjectId::inode(0x7c2b25)), [7003, 7001, 7000]);
        assert_eq!(ports(ObjectId::data(0x7c2b25, 1)), [7004, 7002, 7003]);
        assert_eq!(ports(ObjectId::data(0xfd32fc, 4096)), [7000, 7004, 7002]);
    }

    #[test]
    fn balance_and_minimal_movement() {
        let ports: Vec<(u16, u32)> = (0..5).map(|i| (7000 + i, u32::from(i))).collect();
        let before = Placement::new(&view(&ports));
        let after = Placement::new(&view(&ports[..4]));
        let n = 20_000u32;
        let mut load: HashMap<SocketAddr, usize> = HashMap::new();
        let mut moved = 0;
        for i in 0..n {
            let oid = ObjectId::data(42, i);
            let b = before.replicas(oid, 1)[0];
            *load.entry(b).or_default() += 1;
            let a = after.replicas(oid, 1)[0];
            if a != b {
                moved += 1;
                // Only objects whose primary was the removed node move.
                assert_eq!(b.port(), 7004);
            }
            // Survivors stay in the replica list.
            let b3 = before.replicas(oid, 3);
            let a3 = after.replicas(oid, 3);
            for node in b3.iter().filter(|a| a.port() != 7004) {
                assert!(a3.contains(node));
            }
        }
        let expected = n as f64 / 5.0;
        for l in load.values() {
            let ratio = *l as f64 / expected;
            assert!((0.8..1.2).contains(&ratio), "load ratio {ratio}");
        }
        let moved_share = moved as f64 / n as f64;
        assert!(moved_share < 0.3, "moved {moved_share}");
    }

    #[test]
    fn gateways_hold_nothing() {
        let mut v = view(&[(7000, 0), (7001, 1)]);
        v.members[1].vnodes = 0;
        let v = View::new(v.members);
        let p = Placement::new(&v);
        assert_eq!(p.zones(), 1);
        assert_eq!(p.replicas(ObjectId::data(1, 2), 2).len(), 1);
    }
}
