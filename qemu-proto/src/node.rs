//! Node identity and the 80-byte `struct sd_node` (reference §1.11).
//!
//! Owns [`NodeId`] (`struct node_id`, 40 B at offset 24 of a node) and
//! [`SdNode`], plus node-list codecs. Invariants:
//! * Addresses travel as 16 bytes; IPv4 is 12 zero bytes + 4 address bytes
//!   (not `::ffff:`-mapped). Decoding follows sheep's `addr_to_str` rule: the
//!   bytes are IPv4 iff the first 12 are zero and byte 12 is nonzero.
//! * An all-zero `io_addr` decodes as `None`.
//! * Equality, hashing and ordering use the wire bytes: (addr16, port) first, as
//!   sheep's `node_id_cmp` sorts, then (io_addr16, io_port) as a tie-break.
//! * The 24 leading rb-tree bytes and all padding are written as zero and
//!   ignored on decode.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::consts::SD_NODE_SIZE;
use crate::error::ProtoError;
use crate::hash::sd_hash;
use crate::wire::{get_u16, get_u32, get_u64, need, put_u16, put_u32, put_u64};

/// Size of `struct node_id`.
pub const NODE_ID_SIZE: usize = 40;
/// Offset of `nid` inside `struct sd_node`.
pub const NODE_NID_OFFSET: usize = 24;

/// A sheep's network identity (`struct node_id`).
#[derive(Debug, Clone, Copy)]
pub struct NodeId {
    /// Main address (the one placement hashes).
    pub addr: IpAddr,
    /// Main port.
    pub port: u16,
    /// Optional separate I/O address.
    pub io_addr: Option<IpAddr>,
    /// I/O port (0 if unused).
    pub io_port: u16,
}

/// Encodes an address as sheep's 16-byte field.
pub fn addr_to_bytes(a: &IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[12..].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Decodes sheep's 16-byte address field (IPv4 iff bytes 0..12 are zero and
/// byte 12 is nonzero, exactly as `addr_to_str` decides).
pub fn addr_from_bytes(b: &[u8; 16]) -> IpAddr {
    if b[12] != 0 && b[..12].iter().all(|&x| x == 0) {
        IpAddr::V4(Ipv4Addr::new(b[12], b[13], b[14], b[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*b))
    }
}

/// sheep's default zone for a node: the last 4 address bytes read as a LE u32
/// (127.0.0.1 -> 16777343).
pub fn default_zone(addr: &IpAddr) -> u32 {
    let b = addr_to_bytes(addr);
    u32::from_le_bytes([b[12], b[13], b[14], b[15]])
}

impl Default for NodeId {
    /// `0.0.0.0:0`, no I/O address.
    fn default() -> Self {
        NodeId::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
    }
}

impl NodeId {
    /// A node id with no separate I/O address.
    pub fn new(addr: IpAddr, port: u16) -> Self {
        NodeId {
            addr,
            port,
            io_addr: None,
            io_port: 0,
        }
    }

    /// dog's `addr_to_str`: `"a.b.c.d:port"`, IPv6 without brackets plus
    /// `":port"`; the port is omitted when it is 0, as in sheep.
    pub fn to_addr_string(&self) -> String {
        let a = addr_from_bytes(&addr_to_bytes(&self.addr));
        if self.port == 0 {
            a.to_string()
        } else {
            format!("{a}:{}", self.port)
        }
    }

    /// The 18 bytes sheep hashes for vnode placement: addr16 || port LE.
    pub fn hash_key(&self) -> [u8; 18] {
        let mut k = [0u8; 18];
        k[..16].copy_from_slice(&addr_to_bytes(&self.addr));
        k[16..].copy_from_slice(&self.port.to_le_bytes());
        k
    }

    /// `sd_hash(hash_key())`: the seed of this node's vnode chain.
    pub fn node_hash(&self) -> u64 {
        sd_hash(&self.hash_key())
    }

    /// Encodes `struct node_id` (40 bytes).
    pub fn encode(&self) -> [u8; NODE_ID_SIZE] {
        let mut b = [0u8; NODE_ID_SIZE];
        b[..16].copy_from_slice(&addr_to_bytes(&self.addr));
        put_u16(&mut b, 16, self.port);
        if let Some(io) = &self.io_addr {
            b[18..34].copy_from_slice(&addr_to_bytes(io));
        }
        put_u16(&mut b, 34, self.io_port);
        b
    }

    /// Decodes `struct node_id` from the start of `b` (needs 40 bytes).
    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        need(b, NODE_ID_SIZE)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[..16]);
        let mut io = [0u8; 16];
        io.copy_from_slice(&b[18..34]);
        Ok(NodeId {
            addr: addr_from_bytes(&a),
            port: get_u16(b, 16),
            io_addr: (io != [0u8; 16]).then(|| addr_from_bytes(&io)),
            io_port: get_u16(b, 34),
        })
    }

    fn sort_key(&self) -> ([u8; 16], u16, [u8; 16], u16) {
        let io = self.io_addr.as_ref().map(addr_to_bytes).unwrap_or([0; 16]);
        (addr_to_bytes(&self.addr), self.port, io, self.io_port)
    }
}

impl PartialEq for NodeId {
    fn eq(&self, other: &Self) -> bool {
        self.sort_key() == other.sort_key()
    }
}

impl Eq for NodeId {}

impl Hash for NodeId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.sort_key().hash(state)
    }
}

impl PartialOrd for NodeId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for NodeId {
    /// (addr bytes, port) as sheep's `node_id_cmp`, then the I/O address.
    fn cmp(&self, other: &Self) -> Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

/// A cluster member (`struct sd_node`, 80 bytes on the wire).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SdNode {
    /// @24: network identity.
    pub nid: NodeId,
    /// @64: number of virtual nodes (0 = gateway only).
    pub nr_vnodes: u16,
    /// @68: failure zone.
    pub zone: u32,
    /// @72: capacity in bytes.
    pub space: u64,
}

impl SdNode {
    /// Encodes the 80-byte wire form (rb bytes and padding zero).
    pub fn encode(&self) -> [u8; SD_NODE_SIZE] {
        let mut b = [0u8; SD_NODE_SIZE];
        b[NODE_NID_OFFSET..NODE_NID_OFFSET + NODE_ID_SIZE].copy_from_slice(&self.nid.encode());
        put_u16(&mut b, 64, self.nr_vnodes);
        put_u32(&mut b, 68, self.zone);
        put_u64(&mut b, 72, self.space);
        b
    }

    /// Decodes one node from the start of `b` (needs 80 bytes).
    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        need(b, SD_NODE_SIZE)?;
        Ok(SdNode {
            nid: NodeId::decode(&b[NODE_NID_OFFSET..])?,
            nr_vnodes: get_u16(b, 64),
            zone: get_u32(b, 68),
            space: get_u64(b, 72),
        })
    }
}

/// Encodes nodes back to back, 80 bytes each.
pub fn encode_node_list(nodes: &[SdNode]) -> Vec<u8> {
    let mut v = Vec::with_capacity(nodes.len() * SD_NODE_SIZE);
    for n in nodes {
        v.extend_from_slice(&n.encode());
    }
    v
}

/// Decodes the first `nr` nodes of `b` (needs `nr * 80` bytes).
pub fn decode_node_list(b: &[u8], nr: usize) -> Result<Vec<SdNode>, ProtoError> {
    let len = nr.checked_mul(SD_NODE_SIZE).ok_or(ProtoError::BadLength {
        what: "node list",
        len: nr,
    })?;
    need(b, len)?;
    b[..len]
        .chunks_exact(SD_NODE_SIZE)
        .map(SdNode::decode)
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn local(port: u16) -> NodeId {
        NodeId::new("127.0.0.1".parse().unwrap(), port)
    }

    #[test]
    fn node_offsets() {
        let n = SdNode {
            nid: NodeId {
                addr: "127.0.0.1".parse().unwrap(),
                port: 7000,
                io_addr: Some("10.0.0.2".parse().unwrap()),
                io_port: 7100,
            },
            nr_vnodes: 128,
            zone: 16777343,
            space: 0x0000_0123_4567_89ab,
        };
        let b = n.encode();
        assert!(b[..24].iter().all(|&x| x == 0));
        assert!(b[24..36].iter().all(|&x| x == 0));
        assert_eq!(&b[36..40], &[127, 0, 0, 1]);
        assert_eq!(&b[40..42], &7000u16.to_le_bytes());
        assert!(b[42..54].iter().all(|&x| x == 0));
        assert_eq!(&b[54..58], &[10, 0, 0, 2]);
        assert_eq!(&b[58..60], &7100u16.to_le_bytes());
        assert_eq!(&b[60..64], &[0; 4]);
        assert_eq!(&b[64..66], &128u16.to_le_bytes());
        assert_eq!(&b[66..68], &[0; 2]);
        assert_eq!(&b[68..72], &16777343u32.to_le_bytes());
        assert_eq!(&b[72..80], &0x0000_0123_4567_89abu64.to_le_bytes());
        assert_eq!(SdNode::decode(&b).unwrap(), n);
    }

    #[test]
    fn ipv6_and_io_none() {
        let n = SdNode {
            nid: NodeId::new("fe80::1".parse().unwrap(), 7001),
            ..Default::default()
        };
        let b = n.encode();
        assert_eq!(b[24], 0xfe);
        assert!(b[42..58].iter().all(|&x| x == 0));
        let d = SdNode::decode(&b).unwrap();
        assert_eq!(d.nid.io_addr, None);
        assert_eq!(d, n);
        assert_eq!(d.nid.to_addr_string(), "fe80::1:7001");
        // ::1 has byte 12 == 0, so it stays IPv6.
        let lo6 = NodeId::new("::1".parse().unwrap(), 7000);
        let d = NodeId::decode(&lo6.encode()).unwrap();
        assert_eq!(d.addr, "::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn strings_zone_hash() {
        assert_eq!(local(7000).to_addr_string(), "127.0.0.1:7000");
        assert_eq!(local(0).to_addr_string(), "127.0.0.1");
        assert_eq!(default_zone(&"127.0.0.1".parse().unwrap()), 16777343);
        let k = local(7000).hash_key();
        assert_eq!(&k[12..16], &[127, 0, 0, 1]);
        assert_eq!(&k[16..], &[0x58, 0x1b]);
        assert_eq!(local(7000).node_hash(), 0x9cb3d6dd0a4c0f9f);
    }

    #[test]
    fn ordering_matches_sheep() {
        let mut v = [
            local(7002),
            local(7000),
            NodeId::new("10.0.0.9".parse().unwrap(), 1),
            local(7001),
        ];
        v.sort();
        let ports: Vec<u16> = v.iter().map(|n| n.port).collect();
        assert_eq!(ports, [1, 7000, 7001, 7002]);
        // IPv4 sorts by its 16-byte form: below any IPv6 with a nonzero first byte.
        assert!(local(7000) < NodeId::new("fe80::1".parse().unwrap(), 1));
        // port compared numerically, not by LE bytes
        assert!(local(255) < local(256));
    }

    #[test]
    fn short_inputs() {
        assert_eq!(
            SdNode::decode(&[0u8; 79]),
            Err(ProtoError::Truncated { need: 80, have: 79 })
        );
        assert!(decode_node_list(&[0u8; 159], 2).is_err());
        assert_eq!(decode_node_list(&[], 0), Ok(vec![]));
        assert!(decode_node_list(&[], usize::MAX).is_err());
    }

    fn arb_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (1u8..=255, any::<[u8; 3]>())
                .prop_map(|(a, r)| IpAddr::V4(Ipv4Addr::new(a, r[0], r[1], r[2]))),
            (1u16..=0xffff, any::<[u16; 7]>()).prop_map(|(a, r)| IpAddr::V6(Ipv6Addr::new(
                a, r[0], r[1], r[2], r[3], r[4], r[5], r[6]
            ))),
        ]
    }

    pub(crate) fn arb_node() -> impl Strategy<Value = SdNode> {
        (
            arb_ip(),
            any::<u16>(),
            proptest::option::of(arb_ip()),
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            any::<u64>(),
        )
            .prop_map(
                |(addr, port, io_addr, io_port, nr_vnodes, zone, space)| SdNode {
                    nid: NodeId {
                        addr,
                        port,
                        io_addr,
                        io_port,
                    },
                    nr_vnodes,
                    zone,
                    space,
                },
            )
    }

    proptest! {
        #[test]
        fn node_round_trip(n in arb_node()) {
            let b = n.encode();
            let d = SdNode::decode(&b).unwrap();
            prop_assert_eq!(d, n);
            prop_assert_eq!(d.nid.addr, n.nid.addr);
            prop_assert_eq!(d.nid.io_addr, n.nid.io_addr);
        }

        #[test]
        fn list_round_trip(v in proptest::collection::vec(arb_node(), 0..8)) {
            let b = encode_node_list(&v);
            prop_assert_eq!(b.len(), v.len() * 80);
            prop_assert_eq!(decode_node_list(&b, v.len()), Ok(v));
        }

        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = SdNode::decode(&b);
            let _ = decode_node_list(&b, 2);
        }
    }
}
