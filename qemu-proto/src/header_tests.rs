//! Byte-offset and round-trip tests for `header` (kept in their own file to
//! keep `header.rs` short). Every offset checked here is from reference §1.2-1.3.

use super::*;
use proptest::prelude::*;

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

#[test]
fn request_common_offsets() {
    let mut r = SdRequest::new(Opcode::ReadObj);
    r.flags = 0x1234;
    r.epoch = 0x0506_0708;
    r.id = 0x0a0b_0c0d;
    r.data_length = 0x1112_1314;
    let b = r.to_bytes();
    assert_eq!(b[0], 0x02);
    assert_eq!(b[1], 0x02);
    assert_eq!(&b[2..4], &[0x34, 0x12]);
    assert_eq!(le32(&b, 4), 0x0506_0708);
    assert_eq!(le32(&b, 8), 0x0a0b_0c0d);
    assert_eq!(le32(&b, 12), 0x1112_1314);
    assert!(b[16..].iter().all(|&x| x == 0));
    assert_eq!(SdRequest::new(Opcode::GetNodeList).to_bytes()[0], 0x0a);
}

#[test]
fn obj_args_offsets() {
    let mut r = SdRequest::new(Opcode::WriteObj);
    let a = ObjArgs {
        oid: 0x807c_2b25_0000_0000,
        cow_oid: 0x0011_2233_4455_6677,
        copies: 3,
        copy_policy: 0x42,
        ec_index: 7,
        tgt_epoch: 0xdead_beef,
        offset: 0x0040_0000,
    };
    r.set_obj(&a);
    let b = r.to_bytes();
    assert_eq!(le64(&b, 16), a.oid);
    assert_eq!(le64(&b, 24), a.cow_oid);
    assert_eq!((b[32], b[33], b[34], b[35]), (3, 0x42, 7, 0));
    assert_eq!(le32(&b, 36), 0xdead_beef);
    assert_eq!(le32(&b, 40), 0x0040_0000); // sheep's u32 view
    assert_eq!(le32(&b, 44), 0); // sheep's __pad
    assert_eq!(r.obj(), a);
}

#[test]
fn vdi_args_offsets() {
    let mut r = SdRequest::new(Opcode::NewVdi);
    let a = VdiArgs {
        vdi_size: 0x0000_0100_0000_0000,
        base_vdi_id: 0x7c2b25,
        copies: 2,
        copy_policy: 0x21,
        store_policy: 1,
        block_size_shift: 22,
        snapid: 9,
        lock_type: 1,
    };
    r.set_vdi(&a);
    let b = r.to_bytes();
    assert_eq!(le64(&b, 16), a.vdi_size);
    assert_eq!(le32(&b, 24), 0x7c2b25);
    assert_eq!(&b[28..32], &[2, 0x21, 1, 22]);
    assert_eq!(le32(&b, 32), 9);
    assert_eq!(le32(&b, 36), 1);
    assert!(b[40..].iter().all(|&x| x == 0));
    assert_eq!(r.vdi(), a);
}

#[test]
fn cluster_args_offsets() {
    let mut r = SdRequest::new(Opcode::MakeFs);
    let a = ClusterArgs {
        oid: 1,
        ctime: 0x5b00_0000_1234_5678,
        copies: 3,
        copy_policy: 0,
        flags: 0x0c,
        tag: 0x0102_0304,
        nodes_nr: 6144,
        block_size_shift: 22,
    };
    r.set_cluster(&a);
    let b = r.to_bytes();
    assert_eq!(le64(&b, 16), 1);
    assert_eq!(le64(&b, 24), a.ctime);
    assert_eq!((b[32], b[33]), (3, 0));
    assert_eq!(&b[34..36], &[0x0c, 0]);
    assert_eq!(le32(&b, 36), 0x0102_0304);
    assert_eq!(le32(&b, 40), 6144);
    assert_eq!(b[44], 22);
    assert_eq!(&b[45..48], &[0, 0, 0]);
    assert_eq!(r.cluster(), a);
}

#[test]
fn internal_request_views() {
    let mut r = SdRequest::new(Opcode::NotifyVdiAdd);
    let s = VdiStateArgs {
        old_vid: 0x11,
        new_vid: 0x22,
        copies: 3,
        set_bitmap: 1,
        copy_policy: 5,
        block_size_shift: 22,
    };
    r.set_vdi_state(&s);
    let b = r.to_bytes();
    assert_eq!((le32(&b, 16), le32(&b, 20)), (0x11, 0x22));
    assert_eq!(&b[24..28], &[3, 1, 5, 22]);
    assert_eq!(r.vdi_state(), s);

    let mut r = SdRequest::new(Opcode::DecrefObj);
    let a = RefArgs {
        oid: 0x087c_2b25_0000_0001,
        generation: 4,
        count: 6,
    };
    r.set_ref_args(&a);
    let b = r.to_bytes();
    assert_eq!((le64(&b, 16), le32(&b, 24), le32(&b, 28)), (a.oid, 4, 6));
    assert_eq!(r.ref_args(), a);

    let mut r = SdRequest::new(Opcode::RepairReplica);
    let mut addr = [0u8; 16];
    addr[12..].copy_from_slice(&[127, 0, 0, 1]);
    let f = ForwArgs {
        oid: 7,
        addr,
        port: 7001,
    };
    r.set_forw(&f);
    let b = r.to_bytes();
    assert_eq!(&b[36..40], &[127, 0, 0, 1]);
    assert_eq!(&b[40..42], &7001u16.to_le_bytes());
    assert_eq!(r.forw(), f);
}

#[test]
fn response_offsets() {
    let req = {
        let mut r = SdRequest::new(Opcode::GetVdiInfo);
        r.id = 77;
        r.data_length = 256;
        r
    };
    let mut rsp = SdResponse::for_request(&req, SdResult::NO_VDI);
    assert_eq!(
        (rsp.proto_ver, rsp.opcode, rsp.id, rsp.data_length),
        (2, 0x14, 77, 0)
    );
    rsp.epoch = 0x0102_0304;
    let v = VdiRsp {
        rsvd: 0xaaaa_aaaa,
        vdi_id: 0x7c2b25,
        attr_id: 0x33,
        copies: 3,
        block_size_shift: 22,
    };
    rsp.set_vdi(&v);
    let b = rsp.to_bytes();
    assert_eq!(le32(&b, 4), 0x0102_0304);
    assert_eq!(le32(&b, 8), 77);
    assert_eq!(le32(&b, 16), 0x08);
    assert_eq!(le32(&b, 20), 0xaaaa_aaaa);
    assert_eq!(le32(&b, 24), 0x7c2b25);
    assert_eq!(le32(&b, 28), 0x33);
    assert_eq!((b[32], b[33]), (3, 22));
    assert_eq!(rsp.vdi(), v);
    assert_eq!(rsp.opcode(), Some(Opcode::GetVdiInfo));

    let mut rsp = SdResponse::new(Opcode::StatSheep);
    let n = NodeRsp {
        nr_nodes: 3,
        store_size: 0x0000_0100_0000_0000,
        store_free: 0x0000_0080_0000_0000,
    };
    rsp.set_node(&n);
    let b = rsp.to_bytes();
    assert_eq!(le32(&b, 20), 3);
    assert_eq!(le64(&b, 24), 0);
    assert_eq!(le64(&b, 32), n.store_size);
    assert_eq!(le64(&b, 40), n.store_free);
    assert_eq!(rsp.node(), n);

    let mut rsp = SdResponse::new(Opcode::GetClusterDefault);
    let c = ClusterDefaultRsp {
        nr_copies: 3,
        copy_policy: 0x42,
        block_size_shift: 22,
    };
    rsp.set_cluster_default(&c);
    assert_eq!(&rsp.to_bytes()[20..23], &[3, 0x42, 22]);
    assert_eq!(rsp.cluster_default(), c);

    let mut rsp = SdResponse::new(Opcode::ReadPeer);
    let o = ObjRsp {
        copies: 2,
        offset: 0x1000,
    };
    rsp.set_obj(&o);
    let b = rsp.to_bytes();
    assert_eq!(b[20], 2);
    assert_eq!(le64(&b, 24), 0x1000);
    assert_eq!(rsp.obj(), o);

    let mut rsp = SdResponse::new(Opcode::GetHash);
    let d = [0x5au8; 20];
    rsp.set_hash_digest(&d);
    let b = rsp.to_bytes();
    assert_eq!(&b[24..44], &d);
    assert_eq!(le32(&b, 20), 0);
    assert_eq!(rsp.hash_digest(), d);
}

#[test]
fn qemu_style_header_decodes() {
    // QEMU sends proto_ver 0 and a u64 offset at 40.
    let mut b = [0u8; 48];
    b[0..2].copy_from_slice(&[0x00, 0x02]);
    b[40..48].copy_from_slice(&0x0020_0000u64.to_le_bytes());
    let r = SdRequest::from_bytes(&b);
    assert_eq!(r.opcode(), Some(Opcode::ReadObj));
    assert_eq!(r.obj().offset, 0x0020_0000);
}

#[test]
fn decode_short_buffers() {
    for n in 0..48 {
        let buf = vec![0u8; n];
        assert_eq!(
            SdRequest::decode(&buf),
            Err(ProtoError::Truncated { need: 48, have: n })
        );
        assert_eq!(
            SdResponse::decode(&buf),
            Err(ProtoError::Truncated { need: 48, have: n })
        );
    }
    let long = [9u8; 60];
    assert_eq!(SdRequest::decode(&long).unwrap().to_bytes(), [9u8; 48]);
}

#[test]
fn write_flag() {
    let mut r = SdRequest::new(Opcode::WriteObj);
    assert!(!r.has_write_flag());
    r.flags = crate::flags::CMD_WRITE | crate::flags::CMD_COW;
    assert!(r.has_write_flag());
}

proptest! {
    #[test]
    fn request_round_trip(bytes in proptest::array::uniform32(any::<u8>()),
                          pv: u8, op: u8, flags: u16, epoch: u32, id: u32, len: u32) {
        let r = SdRequest { proto_ver: pv, opcode: op, flags, epoch, id, data_length: len, args: bytes };
        let b = r.to_bytes();
        prop_assert_eq!(SdRequest::from_bytes(&b), r);
        prop_assert_eq!(SdRequest::decode(&b), Ok(r));
    }

    #[test]
    fn response_round_trip(raw in proptest::collection::vec(any::<u8>(), 48)) {
        let mut a = [0u8; 48];
        a.copy_from_slice(&raw);
        let r = SdResponse::from_bytes(&a);
        prop_assert_eq!(r.to_bytes(), a);
        prop_assert_eq!(SdResponse::decode(&raw), Ok(r));
    }

    #[test]
    fn obj_view_round_trip(oid: u64, cow: u64, c: u8, p: u8, e: u8, t: u32, off: u64) {
        let a = ObjArgs { oid, cow_oid: cow, copies: c, copy_policy: p, ec_index: e, tgt_epoch: t, offset: off };
        let mut r = SdRequest::default();
        r.set_obj(&a);
        prop_assert_eq!(r.obj(), a);
    }

    #[test]
    fn vdi_view_round_trip(sz: u64, base: u32, c: u8, p: u8, s: u8, bs: u8, snap: u32, lt: u32) {
        let a = VdiArgs { vdi_size: sz, base_vdi_id: base, copies: c, copy_policy: p,
                          store_policy: s, block_size_shift: bs, snapid: snap, lock_type: lt };
        let mut r = SdRequest::default();
        r.set_vdi(&a);
        prop_assert_eq!(r.vdi(), a);
    }
}
