//! Byte-offset and round-trip tests for `cluster` (reference §1.11).

use super::*;
use crate::node::tests::arb_node;
use proptest::prelude::*;

fn node(port: u16) -> SdNode {
    SdNode {
        nid: NodeId::new("127.0.0.1".parse().unwrap(), port),
        nr_vnodes: 128,
        zone: 16777343,
        space: 1 << 40,
    }
}

#[test]
fn cluster_info_offsets() {
    let ci = ClusterInfo {
        proto_ver: 0x0a,
        disable_recovery: true,
        nr_nodes: 2,
        epoch: 0x0102_0304,
        ctime: 0x1122_3344_5566_7788,
        flags: 0x0c,
        nr_copies: 3,
        copy_policy: 0x42,
        status: ClusterStatus::Ok as u8,
        block_size_shift: 22,
        default_store: "tree".into(),
        nodes: vec![node(7000), node(7001)],
    };
    let b = ci.encode();
    assert_eq!(b.len(), 491_568);
    assert_eq!((b[0], b[1]), (0x0a, 1));
    assert_eq!(&b[2..4], &[2, 0]);
    assert_eq!(&b[4..8], &0x0102_0304u32.to_le_bytes());
    assert_eq!(&b[8..16], &0x1122_3344_5566_7788u64.to_le_bytes());
    assert_eq!(&b[16..18], &[0x0c, 0]);
    assert_eq!(&b[18..22], &[3, 0x42, 1, 22]);
    assert_eq!(&b[22..25], &[0, 0, 0]);
    assert_eq!(&b[25..30], b"tree\0");
    assert_eq!(&b[41..48], &[0; 7]);
    assert_eq!(&b[48..128], &node(7000).encode());
    assert_eq!(&b[128..208], &node(7001).encode());
    assert!(b[208..].iter().all(|&x| x == 0));
    let d = ClusterInfo::decode(&b).unwrap();
    assert_eq!(d, ci);
    assert_eq!(d.cluster_status(), Some(ClusterStatus::Ok));
    // A trimmed reply (header + nr_nodes entries) also decodes.
    assert_eq!(ClusterInfo::decode(&b[..208]).unwrap(), ci);
    assert!(matches!(
        ClusterInfo::decode(&b[..207]),
        Err(ProtoError::Truncated {
            need: 208,
            have: 207
        })
    ));
}

#[test]
fn cluster_info_limits() {
    let mut ci = ClusterInfo {
        nodes: vec![node(1); 6145],
        nr_nodes: 6145,
        ..Default::default()
    };
    assert_eq!(ci.try_encode(), Err(ProtoError::TooManyNodes(6145)));
    let b = ci.encode();
    assert_eq!(b.len(), CLUSTER_INFO_SIZE);
    assert_eq!(ClusterInfo::decode(&b).unwrap().nodes.len(), 6144);
    ci.nodes.clear();
    ci.nr_nodes = 0xffff; // -1 as int16
    assert!(ClusterInfo::decode(&ci.encode()).unwrap().nodes.is_empty());
    assert!(ClusterInfo::decode(&[0u8; 47]).is_err());
    assert_eq!(ClusterStatus::from_u8(4), Some(ClusterStatus::Killed));
    assert_eq!(ClusterStatus::from_u8(0), None);
    assert_eq!(ClusterStatus::Wait.as_u8(), 2);
}

#[test]
fn epoch_log_offsets() {
    let e = EpochLog {
        ctime: 0x1122_3344_5566_7788,
        time: 1_530_000_000,
        epoch: 5,
        disable_recovery: true,
        nr_copies: 3,
        copy_policy: 0x21,
        flags: 0x0104,
        drv_name: "local".into(),
        nodes: vec![node(7000)],
    };
    let b = e.encode(3);
    assert_eq!(b.len(), 48 + 3 * 80);
    assert_eq!(&b[0..8], &0x1122_3344_5566_7788u64.to_le_bytes());
    assert_eq!(&b[8..16], &1_530_000_000u64.to_le_bytes());
    assert_eq!(&b[16..20], &5u32.to_le_bytes());
    assert_eq!(&b[20..24], &1u32.to_le_bytes());
    assert_eq!(&b[24..30], &[1, 3, 0x21, 0, 0, 0]);
    assert_eq!(&b[30..32], &[0x04, 0x01]);
    assert_eq!(&b[32..38], b"local\0");
    assert_eq!(&b[48..128], &node(7000).encode());
    assert!(b[128..].iter().all(|&x| x == 0));
    assert_eq!(EpochLog::decode(&b, 3).unwrap(), e);
    // nodes_nr = 0: header only, node count capped to 0.
    let h = e.encode(0);
    assert_eq!(h.len(), 48);
    assert_eq!(&h[20..24], &[0; 4]);
    assert!(EpochLog::decode(&b[..100], 3).is_err());
}

#[test]
fn epoch_logs_sequence() {
    let mut all = Vec::new();
    let logs: Vec<EpochLog> = (1..=3u32)
        .rev()
        .map(|ep| EpochLog {
            epoch: ep,
            nodes: (0..ep as u16).map(|p| node(7000 + p)).collect(),
            ..Default::default()
        })
        .collect();
    for l in &logs {
        all.extend_from_slice(&l.encode(4));
    }
    all.extend_from_slice(&[0u8; 10]); // trailing partial record ignored
    assert_eq!(decode_epoch_logs(&all, 4).unwrap(), logs);
    assert_eq!(decode_epoch_logs(&[], 4).unwrap(), vec![]);
}

#[test]
fn vdi_state_offsets() {
    let s = VdiState {
        vid: 0x7c2b25,
        nr_copies: 3,
        snapshot: true,
        deleted: false,
        copy_policy: 0x42,
        block_size_shift: 22,
        parent_vid: 0x7c2b24,
        lock_state: 2,
        lock_owner: node(7000).nid,
        participants: vec![(2, node(7001).nid), (3, node(7002).nid)],
    };
    let b = s.encode();
    assert_eq!(b.len(), 1428);
    assert_eq!(&b[0..4], &0x7c2b25u32.to_le_bytes());
    assert_eq!(&b[4..9], &[3, 1, 0, 0x42, 22]);
    assert_eq!(&b[12..16], &0x7c2b24u32.to_le_bytes());
    assert_eq!(&b[16..20], &2u32.to_le_bytes());
    assert_eq!(&b[32..36], &[127, 0, 0, 1]);
    assert_eq!(&b[60..64], &2u32.to_le_bytes());
    assert_eq!(&b[64..72], &[2, 0, 0, 0, 3, 0, 0, 0]);
    assert_eq!(&b[188..228], &node(7001).nid.encode());
    assert_eq!(&b[228..268], &node(7002).nid.encode());
    assert_eq!(VdiState::decode(&b).unwrap(), s);
    assert!(VdiState::decode(&b[..1427]).is_err());
}

proptest! {
    #[test]
    fn cluster_info_round_trip(nodes in proptest::collection::vec(arb_node(), 0..6),
                               pv: u8, dr: bool, epoch: u32, ctime: u64, flags: u16,
                               c: u8, p: u8, st: u8, bs: u8, store in "[a-z]{0,15}") {
        let ci = ClusterInfo {
            proto_ver: pv, disable_recovery: dr, nr_nodes: nodes.len() as u16, epoch, ctime,
            flags, nr_copies: c, copy_policy: p, status: st, block_size_shift: bs,
            default_store: store, nodes,
        };
        let b = ci.encode();
        prop_assert_eq!(b.len(), CLUSTER_INFO_SIZE);
        prop_assert_eq!(ClusterInfo::decode(&b), Ok(ci));
    }

    #[test]
    fn epoch_log_round_trip(nodes in proptest::collection::vec(arb_node(), 0..6), extra in 0usize..3,
                            ctime: u64, time: u64, epoch: u32, dr: bool, c: u8, p: u8, flags: u16,
                            drv in "[a-z]{0,15}") {
        let e = EpochLog { ctime, time, epoch, disable_recovery: dr, nr_copies: c, copy_policy: p,
                           flags, drv_name: drv, nodes };
        let slots = e.nodes.len() + extra;
        let b = e.encode(slots);
        prop_assert_eq!(b.len(), 48 + slots * 80);
        prop_assert_eq!(EpochLog::decode(&b, slots), Ok(e));
    }

    #[test]
    fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..1500), nr in 0usize..8) {
        let _ = ClusterInfo::decode(&b);
        let _ = EpochLog::decode(&b, nr);
        let _ = decode_epoch_logs(&b, nr);
        let _ = RecoveryState::decode(&b);
        let _ = VdiState::decode(&b);
    }
}
