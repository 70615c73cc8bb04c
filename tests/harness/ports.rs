//! Free ports on 127.0.0.1 for sheep data and gossip listeners.
//!
//! Every port handed out is bindable for both TCP and UDP at the time of the check (the gossip
//! layer uses both on one port) and is remembered for the life of the test process, so two nodes,
//! two clusters or a data and a gossip port never get the same number.
//!
//! Candidates are drawn at random *below* the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`). Binding `127.0.0.1:0` would return a port from
//! inside that range, and such a port can be taken by any outgoing connection (a `dog` client,
//! a peer link) in the window between our check and the sheep's bind, or while a node is down
//! for a restart. Ports below the range are never auto-assigned by the kernel, which closes that
//! window. If no such port is found, the helper falls back to binding port 0.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::sync::Mutex;

use rand::Rng;

/// Lowest port the random search uses.
const SEARCH_FLOOR: u16 = 15_000;

/// Ports already handed out by this process.
static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Returns a port on 127.0.0.1 that is currently free for TCP and UDP and was never returned
/// before in this process.
pub fn free_port() -> u16 {
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let ceiling = ephemeral_range_start();
    if ceiling > SEARCH_FLOOR + 1_000 {
        let mut rng = rand::rng();
        for _ in 0..2_000 {
            let port = rng.random_range(SEARCH_FLOOR..ceiling);
            if !taken.contains(&port) && bindable(port) {
                taken.insert(port);
                return port;
            }
        }
    }
    for _ in 0..1_000 {
        let listener =
            TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        if !taken.contains(&port) && bindable(port) {
            taken.insert(port);
            return port;
        }
    }
    panic!("no free port found on 127.0.0.1");
}

/// True if both a TCP listener and a UDP socket can bind 127.0.0.1:`port` right now.
pub fn bindable(port: u16) -> bool {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let Ok(tcp) = TcpListener::bind(addr) else {
        return false;
    };
    let ok = UdpSocket::bind(addr).is_ok();
    drop(tcp);
    ok
}

/// First port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let set: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(set.len(), ports.len());
        assert!(ports.iter().all(|&p| p != 0));
    }
}
