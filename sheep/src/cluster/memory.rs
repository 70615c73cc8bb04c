//! In-process membership for tests: a [`MemoryNetwork`] that nodes join and
//! leave, with links that can be cut to simulate partitions.
//!
//! Each node's view is the set of nodes it can reach, filtered by format like
//! the gossip implementation, so code above this layer sees the same kinds of
//! views (including disagreeing ones) without sockets or timers.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{view_of, BoxFuture, Member, Membership, View};

#[derive(Default)]
struct NetworkState {
    nodes: BTreeMap<SocketAddr, (Member, watch::Sender<Arc<View>>)>,
    cut: HashSet<(SocketAddr, SocketAddr)>,
}

/// A shared, in-memory membership registry.
#[derive(Default, Clone)]
pub struct MemoryNetwork {
    state: Arc<Mutex<NetworkState>>,
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node and returns its membership handle.
    pub fn join(&self, member: Member) -> Arc<MemoryMembership> {
        let (tx, _) = watch::channel(Arc::new(View::new(vec![member.clone()])));
        self.state
            .lock()
            .expect("network lock")
            .nodes
            .insert(member.addr, (member.clone(), tx));
        self.publish();
        Arc::new(MemoryMembership {
            network: self.clone(),
            addr: member.addr,
        })
    }

    /// Removes a node, as a crash would.
    pub fn remove(&self, addr: SocketAddr) {
        self.state.lock().expect("network lock").nodes.remove(&addr);
        self.publish();
    }

    /// Cuts (or restores) the link between two nodes, both directions.
    pub fn set_link(&self, a: SocketAddr, b: SocketAddr, up: bool) {
        {
            let mut st = self.state.lock().expect("network lock");
            for pair in [(a, b), (b, a)] {
                if up {
                    st.cut.remove(&pair);
                } else {
                    st.cut.insert(pair);
                }
            }
        }
        self.publish();
    }

    fn publish(&self) {
        let st = self.state.lock().expect("network lock");
        for (addr, (member, tx)) in &st.nodes {
            let reachable = st
                .nodes
                .iter()
                .filter(|(other, _)| !st.cut.contains(&(*addr, **other)))
                .map(|(_, (m, _))| m.clone())
                .collect();
            let view = view_of(member, reachable);
            tx.send_if_modified(|cur| {
                let changed = **cur != view;
                if changed {
                    *cur = Arc::new(view);
                }
                changed
            });
        }
    }
}

/// One node's handle on a [`MemoryNetwork`].
pub struct MemoryMembership {
    network: MemoryNetwork,
    addr: SocketAddr,
}

impl Membership for MemoryMembership {
    fn local(&self) -> Member {
        let st = self.network.state.lock().expect("network lock");
        st.nodes[&self.addr].0.clone()
    }

    fn subscribe(&self) -> watch::Receiver<Arc<View>> {
        let st = self.network.state.lock().expect("network lock");
        st.nodes[&self.addr].1.subscribe()
    }

    fn all_online(&self) -> BoxFuture<'_, Vec<Member>> {
        let st = self.network.state.lock().expect("network lock");
        let all = st
            .nodes
            .iter()
            .filter(|(other, _)| !st.cut.contains(&(self.addr, **other)))
            .map(|(_, (m, _))| m.clone())
            .collect();
        Box::pin(std::future::ready(all))
    }

    fn set_ctime(&self, ctime: u64) -> BoxFuture<'_, ()> {
        if let Some(entry) = self
            .network
            .state
            .lock()
            .expect("network lock")
            .nodes
            .get_mut(&self.addr)
        {
            entry.0.ctime = ctime;
        }
        self.network.publish();
        Box::pin(std::future::ready(()))
    }

    fn set_vnodes(&self, vnodes: u16) -> BoxFuture<'_, ()> {
        if let Some(entry) = self
            .network
            .state
            .lock()
            .expect("network lock")
            .nodes
            .get_mut(&self.addr)
        {
            entry.0.vnodes = vnodes;
        }
        self.network.publish();
        Box::pin(std::future::ready(()))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.network.remove(self.addr);
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(port: u16) -> Member {
        Member {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            zone: port as u32,
            vnodes: 128,
            ctime: 1,
            space: 0,
        }
    }

    #[test]
    fn partition_splits_views() {
        let net = MemoryNetwork::new();
        let a = net.join(member(1));
        let _b = net.join(member(2));
        let _c = net.join(member(3));
        assert_eq!(a.subscribe().borrow().members.len(), 3);
        net.set_link(member(1).addr, member(2).addr, false);
        net.set_link(member(1).addr, member(3).addr, false);
        assert_eq!(a.subscribe().borrow().members.len(), 1);
        net.set_link(member(1).addr, member(2).addr, true);
        assert_eq!(a.subscribe().borrow().members.len(), 2);
    }
}
