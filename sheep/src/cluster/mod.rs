//! Membership: who is in the cluster right now, as this node sees it.
//!
//! There is no coordinator. Each node learns the live members from a
//! [`Membership`] implementation (SWIM gossip in production, an in-memory
//! registry in tests) and publishes its current [`View`] through a
//! `tokio::sync::watch` channel. Everything above this layer (placement, peer
//! RPC, the gateway) works from a `View` snapshot.
//!
//! Invariants:
//! - A `View` is immutable; a change of membership publishes a new one.
//! - `View::members` is sorted by (address bytes, port), the order Sheepdog
//!   uses for node ids, so every node that sees the same members numbers them
//!   the same way.
//! - `View::id` is a stable hash of the placement-relevant facts of every
//!   member (address, port, zone, vnodes). Two nodes with the same `id` compute
//!   the same placement for every object. Every request between sheep carries
//!   the sender's view id, and a receiver whose view differs refuses it, so no
//!   node acknowledges a write that its own placement would not find.
//! - Only members formatted with the same cluster creation time (`ctime`) as
//!   this node are in its view: a node from another cluster, or one that
//!   missed a re-format, is never given data.

mod discovery;
mod gossip;
mod memory;

pub use discovery::LocalDirectory;
pub use gossip::{GossipMembership, GossipOptions, Seeds};
pub use memory::{MemoryMembership, MemoryNetwork};

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// A boxed future, used so that [`Membership`] stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a node tells the others about itself (carried in gossip metadata,
/// which memberlist caps at 512 bytes; this encodes to about 40).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Address that clients and peers use for the data port.
    pub addr: SocketAddr,
    /// Failure domain: no two copies of an object share a zone.
    pub zone: u32,
    /// Virtual nodes on the ring; 0 for a gateway that stores nothing.
    pub vnodes: u16,
    /// Creation time of the cluster format this node holds (0 = unformatted).
    pub ctime: u64,
    /// Bytes of capacity this node offers (informational).
    pub space: u64,
}

impl Member {
    /// The node id used by gossip and in logs: `ip:port` of the data address.
    pub fn id(&self) -> String {
        self.addr.to_string()
    }

    /// Sort key shared with Sheepdog: 16 address bytes (IPv4 as 12 zero
    /// bytes and the 4 address bytes), then the port.
    pub fn sort_key(&self) -> ([u8; 16], u16) {
        let addr = match self.addr.ip() {
            std::net::IpAddr::V4(v4) => {
                let mut b = [0u8; 16];
                b[12..].copy_from_slice(&v4.octets());
                b
            }
            std::net::IpAddr::V6(v6) => v6.octets(),
        };
        (addr, self.addr.port())
    }

    /// True for a node that stores objects (it has vnodes on the ring).
    pub fn stores_data(&self) -> bool {
        self.vnodes > 0
    }
}

/// An immutable snapshot of the membership as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Stable hash of the members' placement facts; see the module docs.
    pub id: u64,
    /// The live members with the same format as this node, sorted.
    pub members: Vec<Member>,
}

impl View {
    /// Builds a view from any set of members: sorts them and computes the id.
    pub fn new(mut members: Vec<Member>) -> Self {
        members.sort_by_key(|m| m.sort_key());
        members.dedup_by_key(|m| m.addr);
        let mut h: u64 = qemu_proto::hash::FNV1A_64_INIT;
        for m in &members {
            let (addr, port) = m.sort_key();
            h = qemu_proto::hash::fnv_64a_buf(&addr, h);
            h = qemu_proto::hash::fnv_64a_buf(&port.to_le_bytes(), h);
            h = qemu_proto::hash::fnv_64a_buf(&m.zone.to_le_bytes(), h);
            h = qemu_proto::hash::fnv_64a_buf(&m.vnodes.to_le_bytes(), h);
        }
        // 0 is reserved on the wire for "no view check".
        View {
            id: h.max(1),
            members,
        }
    }

    /// The member with this data address, if it is in the view.
    pub fn member(&self, addr: SocketAddr) -> Option<&Member> {
        self.members.iter().find(|m| m.addr == addr)
    }

    /// Members that store data (vnodes > 0).
    pub fn storage_members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.stores_data())
    }
}

/// The membership service behind which gossip (or a test double) hides.
pub trait Membership: Send + Sync + 'static {
    /// This node as it advertises itself.
    fn local(&self) -> Member;

    /// Receives every new view; the current one is available at once.
    fn subscribe(&self) -> watch::Receiver<Arc<View>>;

    /// Every live node of the gossip cluster, whatever its format. Used to
    /// deliver a cluster format, which must reach nodes not yet in the view.
    fn all_online(&self) -> BoxFuture<'_, Vec<Member>>;

    /// Announces a new cluster format ctime for this node. The view then
    /// contains the members with the same ctime.
    fn set_ctime(&self, ctime: u64) -> BoxFuture<'_, ()>;

    /// Announces a new number of virtual nodes for this node (0 drains it:
    /// the ring gives it nothing, but it stays a member and keeps serving).
    fn set_vnodes(&self, vnodes: u16) -> BoxFuture<'_, ()>;

    /// Leaves the cluster and stops every background task. Must be called:
    /// dropping a gossip handle does not stop it.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// Filters `online` down to the members formatted like `local` and builds the
/// view. Unformatted nodes are kept out until they adopt the format.
pub(crate) fn view_of(local: &Member, online: Vec<Member>) -> View {
    let mut members: Vec<Member> = online
        .into_iter()
        .filter(|m| m.addr != local.addr && m.ctime == local.ctime)
        .collect();
    members.push(local.clone());
    View::new(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(port: u16, zone: u32) -> Member {
        Member {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            zone,
            vnodes: 128,
            ctime: 7,
            space: 0,
        }
    }

    #[test]
    fn view_id_is_order_independent_and_sensitive_to_placement_facts() {
        let a = View::new(vec![member(7001, 1), member(7000, 0)]);
        let b = View::new(vec![member(7000, 0), member(7001, 1)]);
        assert_eq!(a, b);
        assert_eq!(a.members[0].addr.port(), 7000);
        let c = View::new(vec![member(7000, 0), member(7001, 2)]);
        assert_ne!(a.id, c.id);
    }

    #[test]
    fn view_excludes_members_of_another_format() {
        let local = member(7000, 0);
        let mut other = member(7001, 1);
        other.ctime = 9;
        let v = view_of(&local, vec![other, member(7002, 2)]);
        assert_eq!(v.members.len(), 2);
        assert!(v.member(SocketAddr::from(([127, 0, 0, 1], 7001))).is_none());
    }
}
