//! QEMU 5.2's Sheepdog snapshot sequences, byte for byte (issue 4, "Done when" 4).
//!
//! The harness's `qemu_client` has no snapshot operations and keeps its state private, so this
//! file carries its own small QEMU (`block/sheepdog.c` of QEMU 5.2; reference section 4.5):
//! [`Qemu`] opens an image by name, snapshot id or tag (LOCK_VDI + READ_OBJ of the 4,198,968-byte
//! inode), reads and writes objects one request at a time on its I/O socket (CREATE_AND_WRITE,
//! CREATE_AND_WRITE + COW, WRITE_OBJ, then one inode index update per write), and implements
//! `sd_snapshot_create`, `sd_snapshot_list`, `sd_snapshot_goto` (`reload_inode` +
//! `sd_create_branch`), `sd_snapshot_delete` (`remove_objects` + LOCK_VDI + DEL_VDI) and the
//! SD_RES_READONLY path of `aio_read_response` (`reload_inode(0, "")`, then the request is
//! re-sent to the new vid, as copy-on-write when the object belongs to another vid). Every
//! request is recorded with the connection it used (0 = the I/O socket, then one number per
//! short connection, in the order QEMU opens them), and the tests compare the recorded headers
//! and payloads with what QEMU sends.
//!
//! Tests:
//! - [`snapshot_create_list_goto_delete`]: create (WRITE_OBJ of the 4664-byte header carrying
//!   the tag, NEW_VDI snapid=1 base=current vid, READ_OBJ of the new header on the first short
//!   connection), copy-on-write writes afterwards, list (READ_VDIS of 2 MiB, then headers read
//!   upward from the name's hash until a clear bit), goto by tag (GET_VDI_INFO with the tag,
//!   header read, DEL_VDI of the working VDI by name only with base_vdi_id = the snapshot's vid,
//!   NEW_VDI snapid=0 base=snapshot, full inode read) and delete by id from an image opened on
//!   that snapshot (`qemu-img snapshot -d 2 sheepdog:NAME:2`: the index zeroed with WRITE_OBJs
//!   of at most 128 non-zero entries, LOCK_VDI, DEL_VDI with name + empty tag and snapid).
//!   Data is checked through NBD after every step, and the stores must hold exactly the objects
//!   the remaining VDIs reference.
//! - [`write_after_snapshot_gets_readonly_and_cows`]: `dog vdi snapshot` under an open image;
//!   the next write to an owned object gets SD_RES_READONLY (0x1a), the client reloads
//!   (GET_VDI_INFO, 4664-byte header) and re-sends CREATE_AND_WRITE_OBJ with SD_FLAG_CMD_COW
//!   and cow_oid; a create into an unallocated object under the old vid gets READONLY too.
//! - [`first_write_to_a_snapshot_branches`]: an image opened by snapshot tag branches on its
//!   first write (`sd_create_branch`), leaving the snapshot untouched.

use std::collections::BTreeMap;
use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sheepfold_tests::qemu_client::{self, Preallocation};
use sheepfold_tests::snapshots::{
    assert_stores_hold_referenced, assert_vdi, read_header, vdi_list, Model, Write, MIB, OBJ,
};
use sheepfold_tests::text::{sd_hash_vdi, unix_now};
use sheepfold_tests::Cluster;

// ---------------------------------------------------------------------------------------------
// The wire format as QEMU 5.2 sends it.

const QEMU_PROTO_VER: u8 = 0x01;
const CREATE_AND_WRITE_OBJ: u8 = 0x01;
const READ_OBJ: u8 = 0x02;
const WRITE_OBJ: u8 = 0x03;
const NEW_VDI: u8 = 0x11;
const LOCK_VDI: u8 = 0x12;
const GET_VDI_INFO: u8 = 0x14;
const READ_VDIS: u8 = 0x15;
const DEL_VDI: u8 = 0x17;

const FLAG_WRITE: u16 = 0x01;
const FLAG_COW: u16 = 0x02;
const FLAG_CACHE: u16 = 0x04;

const SUCCESS: u32 = 0x00;
const NO_VDI: u32 = 0x08;
const READONLY: u32 = 0x1a;

/// QEMU's `SD_INODE_SIZE` (its v0.7 `SheepdogInode`).
const QEMU_INODE_SIZE: usize = 4_198_968;
/// `SD_INODE_HEADER_SIZE`.
const HEADER: usize = 4664;
/// `NR_BATCHED_DISCARD`.
const NR_BATCHED_DISCARD: usize = 128;
/// `SD_NR_VDIS`.
const NR_VDIS: u32 = 1 << 24;
/// READ_VDIS: `BITS_TO_LONGS(SD_NR_VDIS) * sizeof(long)`.
const VDI_BITMAP_BYTES: usize = (NR_VDIS / 8) as usize;

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn inode_oid(vid: u32) -> u64 {
    (1 << 63) | (u64::from(vid) << 32)
}

fn data_oid(vid: u32, idx: u64) -> u64 {
    (u64::from(vid) << 32) | idx
}

fn oid_vid(oid: u64) -> u32 {
    ((oid >> 32) & 0x00ff_ffff) as u32
}

/// `s` NUL-padded to `len` bytes (strncpy / pstrcpy of a short string).
fn fixed(s: &str, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    b[..s.len()].copy_from_slice(s.as_bytes());
    b
}

/// A header with the common part set.
fn header(proto: u8, op: u8, flags: u16, id: u32, data_length: u32) -> [u8; 48] {
    let mut h = [0u8; 48];
    h[0] = proto;
    h[1] = op;
    h[2..4].copy_from_slice(&flags.to_le_bytes());
    h[8..12].copy_from_slice(&id.to_le_bytes());
    h[12..16].copy_from_slice(&data_length.to_le_bytes());
    h
}

/// `SheepdogObjReq`: oid@16, cow_oid@24, copies@32, offset (u64)@40; proto_ver 0.
#[allow(clippy::too_many_arguments)]
fn obj_req(
    op: u8,
    flags: u16,
    id: u32,
    len: u32,
    oid: u64,
    cow: u64,
    copies: u8,
    off: u64,
) -> [u8; 48] {
    let mut h = header(0, op, flags, id, len);
    h[16..24].copy_from_slice(&oid.to_le_bytes());
    h[24..32].copy_from_slice(&cow.to_le_bytes());
    h[32] = copies;
    h[40..48].copy_from_slice(&off.to_le_bytes());
    h
}

/// `SheepdogVdiReq` fields after the common part.
#[derive(Default, Clone, Copy)]
struct Vdi {
    vdi_size: u64,
    base_vdi_id: u32,
    copies: u8,
    copy_policy: u8,
    block_size_shift: u8,
    snapid: u32,
    lock_type: u32,
}

fn vdi_req(proto: u8, op: u8, flags: u16, len: u32, v: Vdi) -> [u8; 48] {
    let mut h = header(proto, op, flags, 0, len);
    h[16..24].copy_from_slice(&v.vdi_size.to_le_bytes());
    h[24..28].copy_from_slice(&v.base_vdi_id.to_le_bytes());
    h[28] = v.copies;
    h[29] = v.copy_policy;
    h[31] = v.block_size_shift;
    h[32..36].copy_from_slice(&v.snapid.to_le_bytes());
    h[36..40].copy_from_slice(&v.lock_type.to_le_bytes());
    h
}

/// One request as sent, with its reply.
#[derive(Clone)]
struct Wire {
    /// 0: the I/O socket; k >= 1: the k-th short connection.
    conn: u32,
    hdr: [u8; 48],
    /// The payload (WRITE requests), cut at 8 KiB.
    payload: Vec<u8>,
    payload_len: usize,
    rsp: [u8; 48],
    data_len: usize,
}

impl Wire {
    fn proto(&self) -> u8 {
        self.hdr[0]
    }
    fn op(&self) -> u8 {
        self.hdr[1]
    }
    fn flags(&self) -> u16 {
        u16::from_le_bytes([self.hdr[2], self.hdr[3]])
    }
    fn len(&self) -> u32 {
        u32_at(&self.hdr, 12)
    }
    fn oid(&self) -> u64 {
        u64_at(&self.hdr, 16)
    }
    fn cow_oid(&self) -> u64 {
        u64_at(&self.hdr, 24)
    }
    fn copies(&self) -> u8 {
        self.hdr[32]
    }
    fn offset(&self) -> u64 {
        u64_at(&self.hdr, 40)
    }
    fn vdi_size(&self) -> u64 {
        u64_at(&self.hdr, 16)
    }
    fn base_vdi_id(&self) -> u32 {
        u32_at(&self.hdr, 24)
    }
    fn vdi_copies(&self) -> u8 {
        self.hdr[28]
    }
    fn block_size_shift(&self) -> u8 {
        self.hdr[31]
    }
    fn snapid(&self) -> u32 {
        u32_at(&self.hdr, 32)
    }
    fn result(&self) -> u32 {
        u32_at(&self.rsp, 16)
    }
    fn vdi_id(&self) -> u32 {
        u32_at(&self.rsp, 24)
    }
    fn describe(&self) -> String {
        format!(
            "conn {} op {:#04x} proto {} flags {:#06x} len {} | {:02x?} | result {:#04x}",
            self.conn,
            self.op(),
            self.proto(),
            self.flags(),
            self.len(),
            &self.hdr[16..48],
            self.result()
        )
    }
}

fn transcript(w: &[Wire]) -> String {
    w.iter().map(Wire::describe).collect::<Vec<_>>().join("\n")
}

/// A short connection (`connect_to_sdog`).
struct Conn {
    id: u32,
    s: TcpStream,
}

/// What [`Qemu::snapshot_list`] reports per snapshot (`QEMUSnapshotInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SnapInfo {
    id: u32,
    name: String,
    date_sec: u32,
    date_nsec: u32,
}

/// QEMU 5.2's `BDRVSheepdogState`, reduced to what the snapshot paths use.
struct Qemu {
    addr: SocketAddr,
    name: String,
    inode: Vec<u8>,
    is_snapshot: bool,
    io: TcpStream,
    next_id: u32,
    conns: u32,
    cache_flags: u16,
    log: Vec<Wire>,
}

type Res<T> = Result<T, String>;

impl Qemu {
    fn connect(addr: SocketAddr) -> Res<TcpStream> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        Ok(s)
    }

    /// `connect_to_sdog`.
    fn short(&mut self) -> Res<Conn> {
        self.conns += 1;
        Ok(Conn {
            id: self.conns,
            s: Self::connect(self.addr)?,
        })
    }

    /// Sends a header and payload on `s`, reads the reply header and `min(rlen, rsp len)`
    /// bytes, records it all.
    fn exchange(
        log: &mut Vec<Wire>,
        conn: u32,
        s: &mut TcpStream,
        hdr: [u8; 48],
        payload: &[u8],
        rlen: usize,
    ) -> Res<(Wire, Vec<u8>)> {
        let mut msg = hdr.to_vec();
        msg.extend_from_slice(payload);
        s.write_all(&msg).map_err(|e| format!("send: {e}"))?;
        let mut rsp = [0u8; 48];
        s.read_exact(&mut rsp)
            .map_err(|e| format!("reply to op {:#04x}: {e}", hdr[1]))?;
        let n = (u32_at(&rsp, 12) as usize).min(rlen);
        let mut data = vec![0u8; n];
        s.read_exact(&mut data)
            .map_err(|e| format!("reply data of op {:#04x}: {e}", hdr[1]))?;
        let w = Wire {
            conn,
            hdr,
            payload: payload[..payload.len().min(8192)].to_vec(),
            payload_len: payload.len(),
            rsp,
            data_len: n,
        };
        log.push(w.clone());
        Ok((w, data))
    }

    fn on(
        &mut self,
        c: &mut Conn,
        hdr: [u8; 48],
        payload: &[u8],
        rlen: usize,
    ) -> Res<(Wire, Vec<u8>)> {
        Self::exchange(&mut self.log, c.id, &mut c.s, hdr, payload, rlen)
    }

    fn on_io(&mut self, mut hdr: [u8; 48], payload: &[u8], rlen: usize) -> Res<(Wire, Vec<u8>)> {
        let id = self.next_id;
        self.next_id += 1;
        hdr[8..12].copy_from_slice(&id.to_le_bytes());
        Self::exchange(&mut self.log, 0, &mut self.io, hdr, payload, rlen)
    }

    // -- inode fields --
    fn vid(&self) -> u32 {
        u32_at(&self.inode, 560)
    }
    fn vdi_size(&self) -> u64 {
        u64_at(&self.inode, 536)
    }
    fn nr_copies(&self) -> u8 {
        self.inode[554]
    }
    fn copy_policy(&self) -> u8 {
        self.inode[552]
    }
    fn block_size_shift(&self) -> u8 {
        self.inode[555]
    }
    fn object_size(&self) -> u64 {
        1 << self.block_size_shift()
    }
    fn data_vdi_id(&self, idx: u64) -> u32 {
        u32_at(&self.inode, HEADER + 4 * idx as usize)
    }
    fn set_data_vdi_id(&mut self, idx: u64, vid: u32) {
        let o = HEADER + 4 * idx as usize;
        self.inode[o..o + 4].copy_from_slice(&vid.to_le_bytes());
    }

    /// `find_vdi_name`: LOCK_VDI (lock) or GET_VDI_INFO, proto 1, name[256] + tag[256].
    fn find_vdi_name(&mut self, snapid: u32, tag: &str, lock: bool) -> Res<u32> {
        let mut c = self.short()?;
        let mut data = fixed(&self.name, 256);
        data.extend_from_slice(&fixed(tag, 256));
        let (op, lock_type) = if lock {
            (LOCK_VDI, 0)
        } else {
            (GET_VDI_INFO, 0)
        };
        let hdr = vdi_req(
            QEMU_PROTO_VER,
            op,
            FLAG_WRITE,
            512,
            Vdi {
                snapid,
                lock_type,
                ..Vdi::default()
            },
        );
        let (w, _) = self.on(&mut c, hdr, &data, 0)?;
        match w.result() {
            SUCCESS => Ok(w.vdi_id()),
            r => Err(format!(
                "cannot get vdi info, result {r:#04x}, {} {snapid} {tag}",
                self.name
            )),
        }
    }

    /// `sd_open` of `sheepdog://ADDR/NAME[#snapid|#tag]`.
    fn open(addr: SocketAddr, name: &str, snapid: u32, tag: &str) -> Res<Self> {
        let io = Self::connect(addr)?;
        let mut q = Qemu {
            addr,
            name: name.to_owned(),
            inode: Vec::new(),
            is_snapshot: snapid != 0 || !tag.is_empty(),
            io,
            next_id: 0,
            conns: 0,
            cache_flags: FLAG_CACHE,
            log: Vec::new(),
        };
        let vid = q.find_vdi_name(snapid, tag, true)?;
        let mut c = q.short()?;
        let hdr = obj_req(
            READ_OBJ,
            q.cache_flags,
            0,
            QEMU_INODE_SIZE as u32,
            inode_oid(vid),
            0,
            0,
            0,
        );
        let (w, data) = q.on(&mut c, hdr, &[], QEMU_INODE_SIZE)?;
        if w.result() != SUCCESS || data.len() != QEMU_INODE_SIZE {
            return Err(format!("Can't read snapshot inode: {}", w.describe()));
        }
        q.inode = data;
        Ok(q)
    }

    /// `reload_inode(snapid, tag)`: its own connection first, then find_vdi_name (no lock) on
    /// another, then the 4664-byte header on the first; the header replaces ours if the vid
    /// changed, the index stays.
    fn reload_inode(&mut self, snapid: u32, tag: &str) -> Res<()> {
        let mut c = self.short()?;
        let vid = self.find_vdi_name(snapid, tag, false)?;
        let copies = self.nr_copies();
        let flags = self.cache_flags;
        let hdr = obj_req(
            READ_OBJ,
            flags,
            0,
            HEADER as u32,
            inode_oid(vid),
            0,
            copies,
            0,
        );
        let (w, data) = self.on(&mut c, hdr, &[], HEADER)?;
        if w.result() != SUCCESS {
            return Err(format!("reload_inode: {}", w.describe()));
        }
        if u32_at(&data, 560) != self.vid() {
            self.inode[..HEADER].copy_from_slice(&data);
        }
        Ok(())
    }

    /// `sd_delete`: DEL_VDI of the working VDI, name only, base_vdi_id = our vid.
    fn sd_delete(&mut self) -> Res<bool> {
        let mut c = self.short()?;
        let hdr = vdi_req(
            0,
            DEL_VDI,
            FLAG_WRITE,
            256,
            Vdi {
                base_vdi_id: self.vid(),
                ..Vdi::default()
            },
        );
        let name = fixed(&self.name, 256);
        let (w, _) = self.on(&mut c, hdr, &name, 0)?;
        Ok(matches!(w.result(), SUCCESS | NO_VDI))
    }

    /// `do_sd_create`: NEW_VDI, base = our vid, our size/copies/policy/shift.
    fn do_sd_create(&mut self, snapshot: u32) -> Res<u32> {
        let mut c = self.short()?;
        let hdr = vdi_req(
            0,
            NEW_VDI,
            FLAG_WRITE,
            256,
            Vdi {
                vdi_size: self.vdi_size(),
                base_vdi_id: self.vid(),
                copies: self.nr_copies(),
                copy_policy: self.copy_policy(),
                block_size_shift: self.block_size_shift(),
                snapid: snapshot,
                lock_type: 0,
            },
        );
        let name = fixed(&self.name, 256);
        let (w, _) = self.on(&mut c, hdr, &name, 0)?;
        match w.result() {
            SUCCESS => Ok(w.vdi_id()),
            r => Err(format!("NEW_VDI: result {r:#04x}, {}", self.name)),
        }
    }

    /// `sd_create_branch`.
    fn create_branch(&mut self) -> Res<()> {
        let deleted = self.sd_delete()?;
        let vid = self.do_sd_create(u32::from(!deleted))?;
        let mut c = self.short()?;
        let (copies, flags) = (self.nr_copies(), self.cache_flags);
        let hdr = obj_req(
            READ_OBJ,
            flags,
            0,
            QEMU_INODE_SIZE as u32,
            inode_oid(vid),
            0,
            copies,
            0,
        );
        let (w, data) = self.on(&mut c, hdr, &[], QEMU_INODE_SIZE)?;
        if w.result() != SUCCESS || data.len() != QEMU_INODE_SIZE {
            return Err(format!("create_branch: {}", w.describe()));
        }
        self.inode = data;
        self.is_snapshot = false;
        Ok(())
    }

    /// Reads `len` bytes at `offset` (unallocated objects are zeros, no request).
    fn read(&mut self, offset: u64, len: u64) -> Res<Vec<u8>> {
        let mut out = vec![0u8; len as usize];
        let os = self.object_size();
        let mut done = 0;
        while done < len {
            let pos = offset + done;
            let (idx, off) = (pos / os, pos % os);
            let n = (os - off).min(len - done);
            let owner = self.data_vdi_id(idx);
            if owner != 0 {
                let (copies, flags) = (self.nr_copies(), self.cache_flags);
                let hdr = obj_req(
                    READ_OBJ,
                    flags,
                    0,
                    n as u32,
                    data_oid(owner, idx),
                    0,
                    copies,
                    off,
                );
                let (w, data) = self.on_io(hdr, &[], n as usize)?;
                if w.result() != SUCCESS || data.len() != n as usize {
                    return Err(format!("read: {}", w.describe()));
                }
                out[done as usize..(done + n) as usize].copy_from_slice(&data);
            }
            done += n;
        }
        Ok(out)
    }

    /// `sd_co_writev`: branches first if opened on a snapshot; one request per object, re-sent
    /// after SD_RES_READONLY; then one index update for the objects created.
    fn write(&mut self, offset: u64, data: &[u8]) -> Res<()> {
        if self.is_snapshot {
            self.create_branch()?;
        }
        let os = self.object_size();
        let (mut min, mut max) = (u64::MAX, 0u64);
        let mut done = 0u64;
        let len = data.len() as u64;
        while done < len {
            let pos = offset + done;
            let (idx, off) = (pos / os, pos % os);
            let n = (os - off).min(len - done);
            let piece = &data[done as usize..(done + n) as usize];
            // sd_co_rw_vector: create / copy-on-write / plain write.
            let owner = self.data_vdi_id(idx);
            let (mut create, mut flags, mut cow) = (false, 0u16, 0u64);
            let mut oid = data_oid(owner, idx);
            if owner == 0 {
                create = true;
            } else if owner != self.vid() {
                create = true;
                cow = oid;
                flags = FLAG_COW;
            }
            if create {
                oid = data_oid(self.vid(), idx);
            }
            loop {
                let op = if create {
                    CREATE_AND_WRITE_OBJ
                } else {
                    WRITE_OBJ
                };
                let copies = self.nr_copies();
                let hdr = obj_req(
                    op,
                    FLAG_WRITE | flags | self.cache_flags,
                    0,
                    n as u32,
                    oid,
                    cow,
                    copies,
                    off,
                );
                let (w, _) = self.on_io(hdr, piece, 0)?;
                match w.result() {
                    SUCCESS => break,
                    READONLY => {
                        // aio_read_response: reload if the object is ours, retarget, resend.
                        if self.vid() == oid_vid(oid) {
                            self.reload_inode(0, "")?;
                        }
                        oid = data_oid(self.vid(), idx);
                        // resend_aioreq: the request may become copy-on-write.
                        create = false;
                        if self.data_vdi_id(idx) != self.vid() {
                            if self.data_vdi_id(idx) != 0 {
                                cow = data_oid(self.data_vdi_id(idx), idx);
                                flags |= FLAG_COW;
                            }
                            create = true;
                        }
                    }
                    r => return Err(format!("write: result {r:#04x}: {}", w.describe())),
                }
            }
            if create {
                self.set_data_vdi_id(idx, self.vid());
                min = min.min(idx);
                max = max.max(idx);
            }
            done += n;
        }
        if min <= max {
            // sd_write_done.
            let off = HEADER + 4 * min as usize;
            let len = 4 * (max - min + 1) as usize;
            let (copies, flags) = (self.nr_copies(), self.cache_flags);
            let hdr = obj_req(
                WRITE_OBJ,
                FLAG_WRITE | flags,
                0,
                len as u32,
                inode_oid(self.vid()),
                0,
                copies,
                off as u64,
            );
            let payload = self.inode[off..off + len].to_vec();
            let (w, _) = self.on_io(hdr, &payload, 0)?;
            if w.result() != SUCCESS {
                return Err(format!("index update: {}", w.describe()));
            }
        }
        Ok(())
    }

    /// `sd_snapshot_create`.
    fn snapshot_create(&mut self, tag: &str) -> Res<u32> {
        if self.is_snapshot {
            return Err("You can't create a snapshot of a snapshot VDI".into());
        }
        self.inode[544..552].fill(0); // vm_state_size
        self.inode[528..536].fill(0); // vm_clock_nsec
        self.inode[256..512].copy_from_slice(&fixed(tag, 256));
        let mut c = self.short()?;
        let (vid, copies, flags) = (self.vid(), self.nr_copies(), self.cache_flags);
        let hdr = obj_req(
            WRITE_OBJ,
            FLAG_WRITE | flags,
            0,
            HEADER as u32,
            inode_oid(vid),
            0,
            copies,
            0,
        );
        let header = self.inode[..HEADER].to_vec();
        let (w, _) = self.on(&mut c, hdr, &header, 0)?;
        if w.result() != SUCCESS {
            return Err(format!(
                "failed to write snapshot's inode: {}",
                w.describe()
            ));
        }
        let new_vid = self.do_sd_create(1)?;
        let hdr = obj_req(
            READ_OBJ,
            flags,
            0,
            HEADER as u32,
            inode_oid(new_vid),
            0,
            copies,
            0,
        );
        let (w, data) = self.on(&mut c, hdr, &[], HEADER)?;
        if w.result() != SUCCESS {
            return Err(format!("failed to read new inode info: {}", w.describe()));
        }
        self.inode[..HEADER].copy_from_slice(&data);
        Ok(new_vid)
    }

    /// `sd_snapshot_list`.
    fn snapshot_list(&mut self) -> Res<Vec<SnapInfo>> {
        let mut c = self.short()?;
        let hdr = header(0, READ_VDIS, 0, 0, VDI_BITMAP_BYTES as u32);
        let (w, bitmap) = self.on(&mut c, hdr, &[], VDI_BITMAP_BYTES)?;
        if w.result() != SUCCESS || bitmap.len() != VDI_BITMAP_BYTES {
            return Err(format!(
                "READ_VDIS: {} ({} bytes)",
                w.describe(),
                bitmap.len()
            ));
        }
        drop(c);
        let mut c = self.short()?;
        let mut found = Vec::new();
        let mut vid = sd_hash_vdi(&self.name);
        while found.len() < 1024 {
            if bitmap[(vid / 8) as usize] & (1 << (vid % 8)) == 0 {
                break;
            }
            let flags = self.cache_flags;
            let hdr = obj_req(READ_OBJ, flags, 0, HEADER as u32, inode_oid(vid), 0, 0, 0);
            let (w, h) = self.on(&mut c, hdr, &[], HEADER)?;
            if w.result() == SUCCESS && h.len() == HEADER {
                let name_end = h[..256].iter().position(|&b| b == 0).unwrap_or(256);
                let snap_ctime = u64_at(&h, 520);
                if h[..name_end] == *self.name.as_bytes() && snap_ctime != 0 {
                    let tag_end = 256 + h[256..512].iter().position(|&b| b == 0).unwrap_or(256);
                    found.push(SnapInfo {
                        id: u32_at(&h, 556),
                        name: String::from_utf8_lossy(&h[256..tag_end]).into_owned(),
                        date_sec: (snap_ctime >> 32) as u32,
                        date_nsec: snap_ctime as u32,
                    });
                }
            }
            vid = (vid + 1) % NR_VDIS;
        }
        Ok(found)
    }

    /// `sd_snapshot_goto` with a tag (or an id if `id_or_tag` is all digits).
    fn snapshot_goto(&mut self, id_or_tag: &str) -> Res<()> {
        let (snapid, tag) = match id_or_tag.parse::<u32>() {
            Ok(id) => (id, ""),
            Err(_) => (0, id_or_tag),
        };
        let saved = (self.inode.clone(), self.is_snapshot);
        let r = self
            .reload_inode(snapid, tag)
            .and_then(|_| self.create_branch());
        if r.is_err() {
            (self.inode, self.is_snapshot) = saved;
        }
        r
    }

    /// `sd_snapshot_delete` by numeric id: `remove_objects` on the open inode, LOCK_VDI,
    /// DEL_VDI with name + empty tag and snapid.
    fn snapshot_delete(&mut self, snapshot_id: &str) -> Res<()> {
        let mut c = self.short()?;
        let nr_objs = self.vdi_size().div_ceil(self.object_size()) as usize;
        let mut i = 0;
        while i < nr_objs {
            while i < nr_objs && self.data_vdi_id(i as u64) == 0 {
                i += 1;
            }
            let start = i;
            let mut filled = 0;
            while i < nr_objs && filled < NR_BATCHED_DISCARD {
                if self.data_vdi_id(i as u64) != 0 {
                    self.set_data_vdi_id(i as u64, 0);
                    filled += 1;
                }
                i += 1;
            }
            let (vid, copies, flags) = (self.vid(), self.nr_copies(), self.cache_flags);
            let len = (i - start) * 4;
            let off = HEADER + 4 * start;
            let hdr = obj_req(
                WRITE_OBJ,
                FLAG_WRITE | flags,
                0,
                len as u32,
                inode_oid(vid),
                0,
                copies,
                off as u64,
            );
            let payload = self.inode[off..off + len].to_vec();
            let (w, _) = self.on(&mut c, hdr, &payload, 0)?;
            if w.result() != SUCCESS {
                return Err(format!(
                    "Failed to discard snapshot inode: {}",
                    w.describe()
                ));
            }
        }
        drop(c);
        let snap_id: u32 = snapshot_id
            .parse()
            .map_err(|_| format!("Invalid snapshot ID: {snapshot_id}"))?;
        let mut buf = fixed(&self.name, 256);
        buf.extend_from_slice(&[0u8; 256]);
        self.find_vdi_name(snap_id, "", true)?;
        let mut c = self.short()?;
        let hdr = vdi_req(
            0,
            DEL_VDI,
            FLAG_WRITE,
            512,
            Vdi {
                snapid: snap_id,
                ..Vdi::default()
            },
        );
        let (w, _) = self.on(&mut c, hdr, &buf, 0)?;
        match w.result() {
            SUCCESS => Ok(()),
            NO_VDI => Err("Can't find the snapshot".into()),
            r => Err(format!("DEL_VDI: result {r:#04x}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn cluster() -> Cluster {
    let cluster = Cluster::builder().nodes(3).distinct_zones().start();
    cluster.format(2);
    cluster
}

fn addr(cluster: &Cluster, node: usize) -> SocketAddr {
    ([127, 0, 0, 1], cluster.port(node)).into()
}

fn ok<T>(cluster: &Cluster, what: &str, r: Res<T>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}\n{}", cluster.all_log_tails()))
}

/// Writes through the client and into the model.
fn put(cluster: &Cluster, q: &mut Qemu, model: &mut Model, w: Write) {
    ok(
        cluster,
        &format!("write {}+{}", w.offset, w.data.len()),
        q.write(w.offset, &w.data),
    );
    model.apply(&[w]);
}

/// Checks every export against its model through NBD (each through another node), then the
/// stores against the live VDIs' indexes.
fn verify(cluster: &Cluster, models: &BTreeMap<String, Model>, work: &std::path::Path, step: &str) {
    for (k, (export, model)) in models.iter().enumerate() {
        assert_vdi(cluster, k % 3, export, model, work);
    }
    assert_stores_hold_referenced(cluster, 2, step);
    for i in 0..3 {
        cluster.assert_no_panic(i);
    }
}

/// The vid of the working VDI `name` (`dog vdi list -r`).
fn working_vid(cluster: &Cluster, node: usize, name: &str) -> u32 {
    vdi_list(cluster, node)
        .into_iter()
        .find(|v| v.name == name && v.flag != 's')
        .unwrap_or_else(|| panic!("no working VDI {name}"))
        .vid
}

/// The requests logged since `from`.
fn since(q: &Qemu, from: usize) -> Vec<Wire> {
    q.log[from..].to_vec()
}

/// Asserts one object request.
#[allow(clippy::too_many_arguments)]
fn assert_obj(
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

// ---------------------------------------------------------------------------------------------
// Tests.

const SIZE: u64 = 1 << 30; // 256 objects: delete zeroes the index in two batches

#[test]
fn snapshot_create_list_goto_delete() {
    let cluster = cluster();
    let work = tempfile::tempdir().expect("tempdir");
    let name = "qsnap";
    let t0 = unix_now();
    ok(
        &cluster,
        "create",
        qemu_client::create(addr(&cluster, 0), name, SIZE, Preallocation::Off)
            .map_err(|e| e.to_string()),
    );
    let mut q = ok(&cluster, "open", Qemu::open(addr(&cluster, 1), name, 0, ""));
    let v1 = q.vid();
    assert_eq!(v1, sd_hash_vdi(name));
    assert!(!q.is_snapshot);
    let copies = q.nr_copies();
    assert_eq!(copies, 2);
    let r = |off: u64, len: u64, seed: u64| Write::random(off, len, 0x9e_0000 + seed);

    // 200 small objects and a bigger write: 201 allocated entries.
    let mut model = Model::zeros(SIZE);
    for idx in 0..200 {
        put(
            &cluster,
            &mut q,
            &mut model,
            r(idx * OBJ + 4096 * (idx % 7), 512, idx),
        );
    }
    put(&cluster, &mut q, &mut model, r(OBJ / 2, 2 * MIB, 1000));

    // --- create ---
    let from = q.log.len();
    let v2 = ok(&cluster, "snapshot create", q.snapshot_create("snap1"));
    let w = since(&q, from);
    assert_eq!(w.len(), 3, "create is three requests:\n{}", transcript(&w));
    let (a, b, c) = (&w[0], &w[1], &w[2]);
    assert_obj(
        a,
        "create 1: header write",
        WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        HEADER as u32,
        inode_oid(v1),
        0,
        copies,
        0,
    );
    assert_eq!(a.payload_len, HEADER);
    assert_eq!(&a.payload[256..261], b"snap1", "the tag at offset 256");
    assert_eq!(
        &a.payload[261..512],
        &[0u8; 251][..],
        "the tag is NUL-padded"
    );
    assert_eq!(u32_at(&a.payload, 560), v1);
    assert_eq!(a.result(), SUCCESS);
    assert_eq!(
        (
            b.proto(),
            b.op(),
            b.flags(),
            b.len(),
            b.vdi_size(),
            b.base_vdi_id(),
            b.vdi_copies(),
            b.block_size_shift(),
            b.snapid()
        ),
        (0, NEW_VDI, FLAG_WRITE, 256, SIZE, v1, copies, 22, 1),
        "create 2: NEW_VDI: {}",
        b.describe()
    );
    assert_eq!(b.payload, fixed(name, 256));
    assert_eq!((b.result(), b.vdi_id()), (SUCCESS, v2));
    assert_ne!(v2, v1, "the working VDI gets a new vid");
    assert_obj(
        c,
        "create 3: new header read",
        READ_OBJ,
        FLAG_CACHE,
        HEADER as u32,
        inode_oid(v2),
        0,
        copies,
        0,
    );
    assert_eq!((c.result(), c.data_len), (SUCCESS, HEADER));
    assert!(
        a.conn >= 1 && a.conn == c.conn && b.conn != a.conn,
        "header write and read on one short connection, NEW_VDI on another:\n{}",
        transcript(&w)
    );
    // The snapshot kept the old vid, its tag and got snap_ctime; the new header is adopted but
    // the in-memory index still names v1.
    let old = read_header(cluster.port(2), v1);
    assert_ne!(u64_at(&old, 520), 0, "snap_ctime of the snapshot");
    assert_eq!(&old[256..261], b"snap1");
    assert_eq!(u32_at(&old, 556), 1, "snap_id of the snapshot");
    assert_eq!(
        (q.vid(), u32_at(&q.inode, 564), u32_at(&q.inode, 556)),
        (v2, v1, 2),
        "new working: vid, parent, snap_id"
    );
    assert_eq!(
        u64_at(&q.inode, 520),
        0,
        "the working VDI is not a snapshot"
    );
    assert_eq!(q.data_vdi_id(0), v1);
    let mut models = BTreeMap::from([(format!("{name}@snap1"), model.clone())]);

    // Writes after the snapshot: copy-on-write from v1 (partial, unaligned), and a new object.
    let from = q.log.len();
    put(&cluster, &mut q, &mut model, r(12_345, 1000, 2000));
    let w = since(&q, from);
    assert_eq!(w.len(), 2, "{}", transcript(&w));
    assert_obj(
        &w[0],
        "copy-on-write",
        CREATE_AND_WRITE_OBJ,
        FLAG_WRITE | FLAG_COW | FLAG_CACHE,
        1000,
        data_oid(v2, 0),
        data_oid(v1, 0),
        copies,
        12_345,
    );
    assert_obj(
        &w[1],
        "index update",
        WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        4,
        inode_oid(v2),
        0,
        copies,
        HEADER as u64,
    );
    assert_eq!(w[1].payload, v2.to_le_bytes());
    assert!(w.iter().all(|x| x.conn == 0 && x.result() == SUCCESS));
    let from = q.log.len();
    put(&cluster, &mut q, &mut model, r(250 * OBJ + 3, 100, 2001));
    let w = since(&q, from);
    assert_obj(
        &w[0],
        "create",
        CREATE_AND_WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        100,
        data_oid(v2, 250),
        0,
        copies,
        3,
    );
    models.insert(name.to_owned(), model.clone());
    verify(&cluster, &models, work.path(), "after snapshot 1");

    // A second snapshot, a copy-on-write from v1 into the new working VDI.
    let v3 = ok(&cluster, "snapshot create 2", q.snapshot_create("snap2"));
    models.insert(format!("{name}@snap2"), model.clone());
    let from = q.log.len();
    put(&cluster, &mut q, &mut model, r(OBJ + 77, 5000, 2002));
    let w = since(&q, from);
    assert_obj(
        &w[0],
        "copy-on-write from the first snapshot",
        CREATE_AND_WRITE_OBJ,
        FLAG_WRITE | FLAG_COW | FLAG_CACHE,
        5000,
        data_oid(v3, 1),
        data_oid(v1, 1),
        copies,
        77,
    );
    models.insert(name.to_owned(), model.clone());
    verify(&cluster, &models, work.path(), "after snapshot 2");

    // --- list ---
    let from = q.log.len();
    let list = ok(&cluster, "snapshot list", q.snapshot_list());
    let w = since(&q, from);
    assert_eq!(
        (
            w[0].proto(),
            w[0].op(),
            w[0].flags(),
            w[0].len(),
            w[0].data_len,
            w[0].result()
        ),
        (
            0,
            READ_VDIS,
            0,
            VDI_BITMAP_BYTES as u32,
            VDI_BITMAP_BYTES,
            SUCCESS
        ),
        "list 1: READ_VDIS of the whole bitmap"
    );
    let walked: Vec<u64> = w[1..].iter().map(Wire::oid).collect();
    assert_eq!(
        walked,
        [inode_oid(v1), inode_oid(v2), inode_oid(v3)],
        "list 2: headers from the name's hash up to the first clear bit:\n{}",
        transcript(&w)
    );
    for x in &w[1..] {
        assert_obj(
            x,
            "list header read",
            READ_OBJ,
            FLAG_CACHE,
            HEADER as u32,
            x.oid(),
            0,
            0,
            0,
        );
        assert!(
            x.conn == w[1].conn && x.conn != w[0].conn,
            "one connection for the walk"
        );
    }
    let now = unix_now();
    assert_eq!(
        list.iter()
            .map(|s| (s.id, s.name.as_str()))
            .collect::<Vec<_>>(),
        [(1, "snap1"), (2, "snap2")],
        "snapshots listed: {list:?}"
    );
    for s in &list {
        assert!(
            (t0..=now).contains(&i64::from(s.date_sec)),
            "date of {s:?} outside [{t0}, {now}]"
        );
        assert!(s.date_nsec < 1_000_000_000, "nanoseconds of {s:?}");
    }

    // --- goto snap1 by tag ---
    let from = q.log.len();
    ok(&cluster, "snapshot goto", q.snapshot_goto("snap1"));
    let w = since(&q, from);
    assert_eq!(w.len(), 5, "goto:\n{}", transcript(&w));
    let (info, hdr_read, del, new, full) = (&w[0], &w[1], &w[2], &w[3], &w[4]);
    assert_eq!(
        (
            info.proto(),
            info.op(),
            info.flags(),
            info.len(),
            info.snapid()
        ),
        (QEMU_PROTO_VER, GET_VDI_INFO, FLAG_WRITE, 512, 0),
        "goto 1: GET_VDI_INFO by tag: {}",
        info.describe()
    );
    let mut want = fixed(name, 256);
    want.extend_from_slice(&fixed("snap1", 256));
    assert_eq!(info.payload, want);
    assert_eq!((info.result(), info.vdi_id()), (SUCCESS, v1));
    assert_obj(
        hdr_read,
        "goto 2: header read",
        READ_OBJ,
        FLAG_CACHE,
        HEADER as u32,
        inode_oid(v1),
        0,
        copies,
        0,
    );
    assert!(
        hdr_read.conn < info.conn,
        "reload_inode opens its connection before find_vdi_name's"
    );
    assert_eq!(
        (
            del.proto(),
            del.op(),
            del.flags(),
            del.len(),
            del.base_vdi_id(),
            del.snapid(),
            del.result()
        ),
        (0, DEL_VDI, FLAG_WRITE, 256, v1, 0, SUCCESS),
        "goto 3: DEL_VDI of the working VDI, name only: {}",
        del.describe()
    );
    assert_eq!(del.payload, fixed(name, 256));
    assert_eq!(
        (
            new.op(),
            new.snapid(),
            new.base_vdi_id(),
            new.vdi_size(),
            new.vdi_copies(),
            new.result()
        ),
        (NEW_VDI, 0, v1, SIZE, copies, SUCCESS),
        "goto 4: NEW_VDI from the snapshot: {}",
        new.describe()
    );
    let v4 = new.vdi_id();
    assert!(
        ![v1, v2, v3].contains(&v4),
        "a new vid for the new working VDI"
    );
    assert_obj(
        full,
        "goto 5: full inode read",
        READ_OBJ,
        FLAG_CACHE,
        QEMU_INODE_SIZE as u32,
        inode_oid(v4),
        0,
        copies,
        0,
    );
    assert_eq!(full.data_len, QEMU_INODE_SIZE);
    assert_eq!(
        (q.vid(), u32_at(&q.inode, 564), q.is_snapshot),
        (v4, v1, false)
    );
    for (idx, owner) in [(0, v1), (1, v1), (199, v1), (250, 0)] {
        assert_eq!(
            q.data_vdi_id(idx),
            owner,
            "data_vdi_id[{idx}] after goto (snap1's index)"
        );
    }
    let mut model = models[&format!("{name}@snap1")].clone();
    models.insert(name.to_owned(), model.clone());
    // Our own reads agree, and the old working VDI (v3) is gone with its objects.
    let got = ok(&cluster, "read after goto", q.read(0, 2 * OBJ));
    assert!(
        got == model.range(0, 2 * OBJ),
        "the client reads snap1's data after goto"
    );
    verify(&cluster, &models, work.path(), "after goto snap1");
    let listed = vdi_list(&cluster, 0);
    assert!(
        listed.iter().all(|v| v.vid != v3),
        "the old working VDI is deleted: {listed:?}"
    );
    let working = listed
        .iter()
        .find(|v| v.flag != 's')
        .expect("a working VDI");
    assert_eq!(
        (working.vid, working.flag),
        (v4, '='),
        "the branch is the working VDI (not a clone): {listed:?}"
    );
    put(&cluster, &mut q, &mut model, r(OBJ - 10, 20, 3000));
    models.insert(name.to_owned(), model.clone());

    // --- delete snapshot 2, from an image opened on it (qemu-img snapshot -d 2 NAME:2) ---
    let mut d = ok(
        &cluster,
        "open snapshot 2",
        Qemu::open(addr(&cluster, 2), name, 2, ""),
    );
    assert!(d.is_snapshot);
    assert_eq!(d.vid(), v2);
    let from = d.log.len();
    ok(&cluster, "snapshot delete", d.snapshot_delete("2"));
    let w = since(&d, from);
    // v2's index: 0..=199 and 250 in use: 128 entries, then the rest up to the end.
    assert_eq!(w.len(), 4, "delete:\n{}", transcript(&w));
    assert_obj(
        &w[0],
        "delete 1: first batch",
        WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        128 * 4,
        inode_oid(v2),
        0,
        copies,
        HEADER as u64,
    );
    assert_obj(
        &w[1],
        "delete 2: second batch",
        WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        128 * 4,
        inode_oid(v2),
        0,
        copies,
        (HEADER + 128 * 4) as u64,
    );
    assert!(w[..2].iter().all(|x| x.payload.iter().all(|&b| b == 0)
        && x.result() == SUCCESS
        && x.conn == w[0].conn));
    assert_eq!(
        (
            w[2].proto(),
            w[2].op(),
            w[2].len(),
            w[2].snapid(),
            w[2].result(),
            w[2].vdi_id()
        ),
        (QEMU_PROTO_VER, LOCK_VDI, 512, 2, SUCCESS, v2),
        "delete 3: LOCK_VDI of the snapshot: {}",
        w[2].describe()
    );
    let mut want = fixed(name, 256);
    want.extend_from_slice(&[0u8; 256]);
    assert_eq!(w[2].payload, want);
    assert_eq!(
        (
            w[3].proto(),
            w[3].op(),
            w[3].flags(),
            w[3].len(),
            w[3].snapid(),
            w[3].base_vdi_id(),
            w[3].result()
        ),
        (0, DEL_VDI, FLAG_WRITE, 512, 2, 0, SUCCESS),
        "delete 4: DEL_VDI with name + tag and snapid: {}",
        w[3].describe()
    );
    assert_eq!(w[3].payload, want);
    models.remove(&format!("{name}@snap2"));
    for (k, (export, model)) in models.iter().enumerate() {
        assert_vdi(&cluster, k % 3, export, model, work.path());
    }
    let list = ok(&cluster, "snapshot list after delete", q.snapshot_list());
    assert_eq!(
        list.iter()
            .map(|s| (s.id, s.name.as_str()))
            .collect::<Vec<_>>(),
        [(1, "snap1")],
        "snapshots after the delete"
    );
    // The objects only snapshot 2 referenced (its copy of object 0, object 250) must go,
    // whether the zeroing WRITE_OBJs or DEL_VDI release them; nothing else may.
    verify(&cluster, &models, work.path(), "after deleting snapshot 2");
}

#[test]
fn write_after_snapshot_gets_readonly_and_cows() {
    let cluster = cluster();
    let work = tempfile::tempdir().expect("tempdir");
    let name = "qro";
    let size = 64 * MIB;
    ok(
        &cluster,
        "create",
        qemu_client::create(addr(&cluster, 0), name, size, Preallocation::Off)
            .map_err(|e| e.to_string()),
    );
    let mut q = ok(&cluster, "open", Qemu::open(addr(&cluster, 0), name, 0, ""));
    let v1 = q.vid();
    let copies = q.nr_copies();
    let r = |off: u64, len: u64, seed: u64| Write::random(off, len, 0x70_0000 + seed);
    let mut model = Model::zeros(size);
    put(&cluster, &mut q, &mut model, r(0, 3 * MIB, 1));
    put(&cluster, &mut q, &mut model, r(2 * OBJ + 5, 1000, 2));
    let mut models = BTreeMap::from([(format!("{name}@under"), model.clone())]);

    // Someone else snapshots the VDI under the open image.
    cluster.dog_ok(1, &["vdi", "snapshot", "-s", "under", name]);
    let v2 = working_vid(&cluster, 2, name);
    assert_ne!(v2, v1);

    // The next write to an object the client thinks it owns.
    let from = q.log.len();
    put(&cluster, &mut q, &mut model, r(OBJ / 2 + 3, 3000, 3));
    let w = since(&q, from);
    assert_eq!(
        w.len(),
        5,
        "write, reload (2), resend, index update:\n{}",
        transcript(&w)
    );
    assert_obj(
        &w[0],
        "write to an owned object",
        WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        3000,
        data_oid(v1, 0),
        0,
        copies,
        OBJ / 2 + 3,
    );
    assert_eq!(
        w[0].result(),
        READONLY,
        "a write to a snapshot's object gets SD_RES_READONLY: {}",
        w[0].describe()
    );
    assert_eq!(
        (
            w[1].proto(),
            w[1].op(),
            w[1].len(),
            w[1].snapid(),
            w[1].result(),
            w[1].vdi_id()
        ),
        (QEMU_PROTO_VER, GET_VDI_INFO, 512, 0, SUCCESS, v2),
        "reload 1: GET_VDI_INFO of the name: {}",
        w[1].describe()
    );
    assert_eq!(w[1].payload, [fixed(name, 256), vec![0u8; 256]].concat());
    assert_obj(
        &w[2],
        "reload 2: header",
        READ_OBJ,
        FLAG_CACHE,
        HEADER as u32,
        inode_oid(v2),
        0,
        copies,
        0,
    );
    assert_obj(
        &w[3],
        "resend as copy-on-write",
        CREATE_AND_WRITE_OBJ,
        FLAG_WRITE | FLAG_COW | FLAG_CACHE,
        3000,
        data_oid(v2, 0),
        data_oid(v1, 0),
        copies,
        OBJ / 2 + 3,
    );
    assert_eq!(w[3].result(), SUCCESS);
    assert_obj(
        &w[4],
        "index update of the new vid",
        WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        4,
        inode_oid(v2),
        0,
        copies,
        HEADER as u64,
    );
    assert_eq!(q.vid(), v2);
    models.insert(name.to_owned(), model.clone());
    verify(
        &cluster,
        &models,
        work.path(),
        "after the copy-on-write retry",
    );

    // Another snapshot under it; now a create into an unallocated object under the old vid.
    cluster.dog_ok(2, &["vdi", "snapshot", "-s", "under2", name]);
    models.insert(format!("{name}@under2"), model.clone());
    let v3 = working_vid(&cluster, 0, name);
    let from = q.log.len();
    put(&cluster, &mut q, &mut model, r(7 * OBJ + 1, 10, 4));
    let w = since(&q, from);
    assert_eq!(
        w.len(),
        5,
        "create, reload (2), resend, index update:\n{}",
        transcript(&w)
    );
    assert_obj(
        &w[0],
        "create under a snapshot's vid",
        CREATE_AND_WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        10,
        data_oid(v2, 7),
        0,
        copies,
        1,
    );
    assert_eq!(
        w[0].result(),
        READONLY,
        "creating an object of a snapshot gets SD_RES_READONLY: {}",
        w[0].describe()
    );
    assert_eq!(w[1].vdi_id(), v3);
    assert_obj(
        &w[3],
        "resend as a plain create",
        CREATE_AND_WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        10,
        data_oid(v3, 7),
        0,
        copies,
        1,
    );
    assert_obj(
        &w[4],
        "index update",
        WRITE_OBJ,
        FLAG_WRITE | FLAG_CACHE,
        4,
        inode_oid(v3),
        0,
        copies,
        (HEADER + 4 * 7) as u64,
    );
    // And a write to object 2, owned by the first snapshot: straight copy-on-write, no retry.
    let from = q.log.len();
    put(&cluster, &mut q, &mut model, r(2 * OBJ + 1, 2, 5));
    let w = since(&q, from);
    assert_obj(
        &w[0],
        "copy-on-write from the first snapshot",
        CREATE_AND_WRITE_OBJ,
        FLAG_WRITE | FLAG_COW | FLAG_CACHE,
        2,
        data_oid(v3, 2),
        data_oid(v1, 2),
        copies,
        1,
    );
    assert_eq!(w.len(), 2);
    models.insert(name.to_owned(), model.clone());
    verify(&cluster, &models, work.path(), "after the create retry");

    // A write straight to a snapshot's object is refused however it is sent.
    let mut raw = ok(&cluster, "open", Qemu::open(addr(&cluster, 2), name, 0, ""));
    let hdr = obj_req(WRITE_OBJ, FLAG_WRITE, 0, 4, data_oid(v1, 2), 0, copies, 0);
    let (w, _) = ok(&cluster, "raw write", raw.on_io(hdr, &[1, 2, 3, 4], 0));
    assert_eq!(w.result(), READONLY, "{}", w.describe());
    verify(
        &cluster,
        &models,
        work.path(),
        "after the refused raw write",
    );
}

#[test]
fn first_write_to_a_snapshot_branches() {
    let cluster = cluster();
    let work = tempfile::tempdir().expect("tempdir");
    let name = "qbranch";
    let size = 32 * MIB;
    ok(
        &cluster,
        "create",
        qemu_client::create(addr(&cluster, 1), name, size, Preallocation::Off)
            .map_err(|e| e.to_string()),
    );
    let mut q = ok(&cluster, "open", Qemu::open(addr(&cluster, 1), name, 0, ""));
    let r = |off: u64, len: u64, seed: u64| Write::random(off, len, 0xb4_0000 + seed);
    let mut model = Model::zeros(size);
    put(&cluster, &mut q, &mut model, r(100, 10_000, 1));
    let v1 = q.vid();
    let v2 = ok(&cluster, "snapshot", q.snapshot_create("base"));
    let snap = model.clone();
    put(&cluster, &mut q, &mut model, r(0, 50, 2));

    // sheepdog://.../qbranch#base, then a write.
    let mut b = ok(
        &cluster,
        "open by tag",
        Qemu::open(addr(&cluster, 2), name, 0, "base"),
    );
    assert!(b.is_snapshot);
    assert_eq!(b.vid(), v1);
    let lock = &b.log[0];
    assert_eq!(
        (lock.op(), lock.proto(), lock.snapid()),
        (LOCK_VDI, QEMU_PROTO_VER, 0)
    );
    assert_eq!(&lock.payload[256..260], b"base");
    let mut branch = snap.clone();
    let from = b.log.len();
    put(&cluster, &mut b, &mut branch, r(OBJ + 1, 1, 3));
    let w = since(&b, from);
    assert_eq!(
        w.len(),
        5,
        "branch (3) + create + index:\n{}",
        transcript(&w)
    );
    assert_eq!(
        (w[0].op(), w[0].len(), w[0].base_vdi_id(), w[0].result()),
        (DEL_VDI, 256, v1, SUCCESS),
        "{}",
        w[0].describe()
    );
    assert_eq!(
        (w[1].op(), w[1].snapid(), w[1].base_vdi_id(), w[1].result()),
        (NEW_VDI, 0, v1, SUCCESS),
        "{}",
        w[1].describe()
    );
    let v3 = w[1].vdi_id();
    assert!(v3 != v1 && v3 != v2);
    assert_eq!(
        (w[2].op(), w[2].len(), w[2].oid()),
        (READ_OBJ, QEMU_INODE_SIZE as u32, inode_oid(v3))
    );
    assert_eq!(
        (w[3].op(), w[3].flags() & FLAG_COW, w[3].oid()),
        (CREATE_AND_WRITE_OBJ, 0, data_oid(v3, 1))
    );
    assert_eq!(
        (w[4].oid(), w[4].offset()),
        (inode_oid(v3), (HEADER + 4) as u64)
    );
    // The old working VDI v2 is gone with its own object; the branch and the snapshot remain.
    let models = BTreeMap::from([(name.to_owned(), branch), (format!("{name}@base"), snap)]);
    verify(&cluster, &models, work.path(), "after the branch");
    let listed = vdi_list(&cluster, 0);
    assert!(listed.iter().all(|v| v.vid != v2), "{listed:?}");
}
