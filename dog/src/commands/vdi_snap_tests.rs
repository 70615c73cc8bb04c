use super::*;
use chrono::Utc;

#[test]
fn snapshot_texts() {
    assert_eq!(
        snapshot_verbose(0x7c2b26, 0x7c2b25, false),
        "new VID of original VDI: 7c2b26, VDI ID of newly created snapshot: 7c2b25\n"
    );
    assert_eq!(
        snapshot_verbose(0x7c2b26, 0x7c2b25, true),
        "7c2b26 7c2b25\n"
    );
    // What cinder matches: the line ends with "tag (<snap>) is existed".
    assert_eq!(
        snapshot_exists("vol", 0, "snap1"),
        "Failed to create snapshot for vol, maybe snapshot id (0) or tag (snap1) is existed"
    );
}

#[test]
fn tag_is_padded() {
    let t = tag_field("snap1");
    assert_eq!(t.len(), 256);
    assert_eq!(&t[..6], b"snap1\0");
    assert!(t[5..].iter().all(|&b| b == 0));
    assert_eq!(tag_field(&"x".repeat(300))[255], 0);
}

#[test]
fn resize_rules() {
    let inode = InodeHeader {
        vdi_size: 1 << 30,
        block_size_shift: 22,
        ..Default::default()
    };
    assert!(resize_check(&inode, 1 << 30).is_ok());
    assert!(resize_check(&inode, 4 << 40).is_ok());
    let e = resize_check(&inode, (4 << 40) + 1).unwrap_err();
    assert_eq!(
        e.to_string(),
        "New VDI size is too large. This volume's max size is 4398046511104"
    );
    assert_eq!(e.code(), 64);
    let e = resize_check(&inode, (1 << 30) - 1).unwrap_err();
    assert_eq!(e.to_string(), "Shrinking VDIs is not implemented");
    assert_eq!(e.code(), 64);
}

use qemu_proto::{SdRequest, SdResponse, VdiRsp};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;

/// What the fake sheep saw: header and payload of each request.
type Seen = Vec<(SdRequest, Vec<u8>)>;

/// A fake sheep serving one connection: `answer` gives each request's
/// result, payload and vid. Returns the context and the recorder.
fn fake_sheep(
    answer: impl Fn(&SdRequest, &[u8]) -> (SdResult, Vec<u8>, u32) + Send + 'static,
) -> (Ctx, thread::JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut seen = Vec::new();
        loop {
            let mut h = [0u8; 48];
            if s.read_exact(&mut h).is_err() {
                return seen;
            }
            let req = SdRequest::from_bytes(&h);
            let mut data = Vec::new();
            if req.flags & qemu_proto::flags::CMD_WRITE != 0 {
                data = vec![0u8; req.data_length as usize];
                s.read_exact(&mut data).unwrap();
            }
            let (result, payload, vid) = answer(&req, &data);
            let mut rsp = SdResponse::for_request(&req, result);
            rsp.data_length = payload.len() as u32;
            rsp.set_vdi(&VdiRsp {
                vdi_id: vid,
                ..Default::default()
            });
            s.write_all(&rsp.to_bytes()).unwrap();
            s.write_all(&payload).unwrap();
            seen.push((req, data));
        }
    });
    let ctx = Ctx {
        addr: "127.0.0.1".parse().unwrap(),
        port,
        raw: false,
        verbose: false,
    };
    (ctx, server)
}

fn header(vid: u32, snapshot: bool, size: u64) -> Vec<u8> {
    InodeHeader {
        name: "vol".into(),
        tag: if snapshot { "s1".into() } else { String::new() },
        snap_ctime: u64::from(snapshot),
        vdi_size: size,
        nr_copies: 2,
        block_size_shift: 22,
        snap_id: 1,
        vdi_id: vid,
        ..Default::default()
    }
    .encode()
}

fn ops(seen: &Seen) -> Vec<Opcode> {
    seen.iter()
        .map(|(r, _)| Opcode::from_u8(r.opcode).unwrap())
        .collect()
}

#[test]
fn snapshot_sequence() {
    let (ctx, server) = fake_sheep(|req, data| match Opcode::from_u8(req.opcode) {
        Some(Opcode::GetVdiInfo) if data[256] != 0 => (SdResult::NO_TAG, vec![], 0),
        Some(Opcode::GetVdiInfo) => (SdResult::SUCCESS, vec![], 0x25),
        Some(Opcode::ReadObj) => (SdResult::SUCCESS, header(0x25, false, 8 << 20), 0),
        Some(Opcode::NewVdi) => (SdResult::SUCCESS, vec![], 0x26),
        _ => (SdResult::SUCCESS, vec![], 0),
    });
    let snap = SnapshotSel {
        id: 0,
        tag: "s1".into(),
    };
    snapshot(&ctx, "vol", &snap, false).unwrap();
    let seen = server.join().unwrap();
    assert_eq!(
        ops(&seen),
        [
            Opcode::GetVdiInfo,
            Opcode::GetVdiInfo,
            Opcode::ReadObj,
            Opcode::WriteObj,
            Opcode::NewVdi
        ]
    );
    assert_eq!(&seen[0].1[256..259], b"s1\0");
    let (w, tag) = &seen[3];
    assert_eq!(w.obj().oid, ObjectId::inode(0x25).0);
    assert_eq!(w.obj().offset, 256);
    assert_eq!(tag, &tag_field("s1"));
    let (n, name) = &seen[4];
    let v = n.vdi();
    assert_eq!((v.snapid, v.base_vdi_id, v.vdi_size), (1, 0x25, 8 << 20));
    assert_eq!((v.copies, v.block_size_shift), (2, 22));
    assert_eq!(&name[..4], b"vol\0");
}

#[test]
fn snapshot_tag_exists() {
    let (ctx, server) = fake_sheep(|req, _| match Opcode::from_u8(req.opcode) {
        Some(Opcode::GetVdiInfo) => (SdResult::SUCCESS, vec![], 0x25),
        _ => (SdResult::SUCCESS, header(0x25, true, 8 << 20), 0),
    });
    let snap = SnapshotSel {
        id: 0,
        tag: "s1".into(),
    };
    let e = snapshot(&ctx, "vol", &snap, false).unwrap_err();
    assert_eq!(e.to_string(), snapshot_exists("vol", 0, "s1"));
    assert_eq!(e.code(), 1);
    assert_eq!(ops(&server.join().unwrap()).len(), 2);
}

#[test]
fn clone_prealloc_copies_every_object() {
    // A 3-object snapshot: object 0 its own, 1 unallocated, 2 inherited.
    let (ctx, server) = fake_sheep(|req, _| match Opcode::from_u8(req.opcode) {
        Some(Opcode::GetVdiInfo) => (SdResult::SUCCESS, vec![], 0x25),
        Some(Opcode::NewVdi) => (SdResult::SUCCESS, vec![], 0x90),
        Some(Opcode::ReadObj) if req.obj().oid == ObjectId::inode(0x25).0 => {
            if req.obj().offset == 0 {
                (SdResult::SUCCESS, header(0x25, true, 12 << 20), 0)
            } else {
                let ids = [0x25u32, 0, 0x20];
                (
                    SdResult::SUCCESS,
                    ids.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    0,
                )
            }
        }
        Some(Opcode::ReadObj) => (SdResult::SUCCESS, vec![7u8; 4 << 20], 0),
        _ => (SdResult::SUCCESS, vec![], 0),
    });
    let snap = SnapshotSel {
        id: 1,
        tag: String::new(),
    };
    let opts = CloneOpts {
        prealloc: true,
        no_share: false,
    };
    clone(&ctx, "vol", Some("c"), &snap, opts).unwrap();
    let seen = server.join().unwrap();
    let new = seen
        .iter()
        .find(|(r, _)| r.opcode == Opcode::NewVdi.as_u8());
    let v = new.unwrap().0.vdi();
    assert_eq!((v.snapid, v.base_vdi_id, v.vdi_size), (0, 0x25, 12 << 20));
    let mut creates: Vec<(u64, usize)> = seen
        .iter()
        .filter(|(r, _)| r.opcode == Opcode::CreateAndWriteObj.as_u8())
        .map(|(r, d)| (r.obj().oid, d.len()))
        .collect();
    creates.sort_unstable();
    assert_eq!(
        creates,
        [
            (ObjectId::data(0x90, 0).0, 4 << 20),
            (ObjectId::data(0x90, 1).0, 0),
            (ObjectId::data(0x90, 2).0, 4 << 20)
        ]
    );
    let mut index: Vec<(u64, Vec<u8>)> = seen
        .iter()
        .filter(|(r, _)| r.opcode == Opcode::WriteObj.as_u8())
        .map(|(r, d)| (r.obj().offset, d.clone()))
        .collect();
    index.sort_unstable();
    assert_eq!(index.len(), 3);
    assert_eq!(
        index[2],
        (data_vid_offset(2), 0x90u32.to_le_bytes().to_vec())
    );
}

#[test]
fn clone_of_a_working_vdi_is_refused() {
    let (ctx, server) = fake_sheep(|req, _| match Opcode::from_u8(req.opcode) {
        Some(Opcode::GetVdiInfo) => (SdResult::SUCCESS, vec![], 0x25),
        _ => (SdResult::SUCCESS, header(0x25, false, 4 << 20), 0),
    });
    let snap = SnapshotSel {
        id: 1,
        tag: String::new(),
    };
    let e = clone(&ctx, "vol", Some("c"), &snap, CloneOpts::default()).unwrap_err();
    assert_eq!(e.to_string(), "Only snapshot VDIs can be cloned");
    drop(server.join().unwrap());
}

#[test]
fn rollback_sequence() {
    let (ctx, server) = fake_sheep(|req, data| match Opcode::from_u8(req.opcode) {
        Some(Opcode::GetVdiInfo) if data[256] != 0 => (SdResult::SUCCESS, vec![], 0x25),
        Some(Opcode::GetVdiInfo) => (SdResult::SUCCESS, vec![], 0x27),
        Some(Opcode::ReadObj) => (SdResult::SUCCESS, header(0x25, true, 8 << 20), 0),
        Some(Opcode::NewVdi) => (SdResult::SUCCESS, vec![], 0x28),
        _ => (SdResult::SUCCESS, vec![], 0),
    });
    let snap = SnapshotSel {
        id: 0,
        tag: "s1".into(),
    };
    rollback(&ctx, "vol", &snap, true).unwrap();
    let seen = server.join().unwrap();
    assert_eq!(
        ops(&seen),
        [
            Opcode::GetVdiInfo,
            Opcode::ReadObj,
            Opcode::GetVdiInfo,
            Opcode::DelVdi,
            Opcode::NewVdi
        ]
    );
    let (d, payload) = &seen[3];
    assert_eq!((d.vdi().snapid, payload.len()), (0, 512));
    assert!(payload[256..].iter().all(|&b| b == 0));
    let v = seen[4].0.vdi();
    assert_eq!((v.snapid, v.base_vdi_id, v.vdi_size), (0, 0x25, 8 << 20));
}

#[test]
fn resize_writes_the_size() {
    let (ctx, server) = fake_sheep(|req, _| match Opcode::from_u8(req.opcode) {
        Some(Opcode::GetVdiInfo) => (SdResult::SUCCESS, vec![], 0x25),
        Some(Opcode::ReadObj) => (SdResult::SUCCESS, header(0x25, false, 8 << 20), 0),
        _ => (SdResult::SUCCESS, vec![], 0),
    });
    resize(&ctx, "vol", Some("1G")).unwrap();
    let seen = server.join().unwrap();
    let (w, data) = &seen[2];
    assert_eq!(w.opcode, Opcode::WriteObj.as_u8());
    assert_eq!(w.obj().offset, 536);
    assert_eq!(data, &(1u64 << 30).to_le_bytes());
}

#[test]
fn flatten_request() {
    let (ctx, server) = fake_sheep(|_, _| (SdResult::NO_VDI, vec![], 0));
    let e = flatten(&ctx, "vol").unwrap_err();
    assert_eq!(e.to_string(), "Failed to flatten VDI vol: No VDI found");
    assert_eq!(e.code(), 1);
    let seen = server.join().unwrap();
    let (r, data) = &seen[0];
    assert_eq!(r.opcode, 0xe0);
    assert_eq!(r.proto_ver, 0x0a);
    assert_eq!(r.flags, qemu_proto::flags::CMD_WRITE);
    assert_eq!(data.len(), 256);
}

#[test]
fn labels() {
    let mut inode = InodeHeader {
        create_time: 1_514_764_800 << 32,
        ..Default::default()
    };
    assert_eq!(tree_label(&Utc, &inode), "(you are here)");
    inode.snap_ctime = 1;
    assert_eq!(tree_label(&Utc, &inode), "[2018-01-01 00:00]");
}
