//! A Sheepdog-protocol client that behaves exactly like QEMU 5.2's `block/sheepdog.c`.
//!
//! QEMU dropped its Sheepdog driver in 6.0 and 5.2 is no longer packaged, so the tests speak
//! QEMU's side of the protocol themselves. Every request below is built by hand, byte for byte,
//! in the order QEMU sends it (reference `sheepdog.md` section 4; headers of sections 1.2-1.4).
//! Nothing here uses the `qemu-proto` crate: the point is to check the server against an
//! independent reading of the wire format.
//!
//! # Header layouts (48 bytes, little-endian)
//!
//! Common part: `proto_ver u8 @0, opcode u8 @1, flags u16 @2, epoch u32 @4 (always 0),
//! id u32 @8, data_length u32 @12`. The 32 bytes from 16 depend on the request:
//!
//! - `SheepdogObjReq` (READ_OBJ, WRITE_OBJ, CREATE_AND_WRITE_OBJ, FLUSH_VDI):
//!   `oid u64 @16, cow_oid u64 @24, copies u8 @32, copy_policy u8 @33, reserved[6] @34,
//!   offset u64 @40`. QEMU's offset is a u64 where sheep reads a u32 (plus padding): one of the
//!   quirks a server must accept.
//! - `SheepdogVdiReq` (NEW_VDI, LOCK_VDI, RELEASE_VDI, GET_CLUSTER_DEFAULT): `vdi_size u64 @16,
//!   base_vdi_id u32 @24, copies u8 @28, copy_policy u8 @29, store_policy u8 @30,
//!   block_size_shift u8 @31, snapid u32 @32, type u32 @36, pad[2] @40`.
//!
//! Replies: the same first 16 bytes, `result u32 @16`; `SheepdogVdiRsp.vdi_id u32 @24`;
//! `SheepdogClusterRsp`: `nr_copies u8 @20, copy_policy u8 @21, block_size_shift u8 @22`.
//!
//! QEMU's `SD_PROTO_VER` is 0x01 and it sets it only on LOCK_VDI / GET_VDI_INFO and
//! GET_CLUSTER_DEFAULT; every other request has proto_ver 0 (another quirk).
//!
//! # What each operation sends
//!
//! - [`create`] (`sd_co_create`): GET_CLUSTER_DEFAULT (proto_ver 1) on a short connection, then
//!   NEW_VDI (data = name in 256 bytes, copies 0 = cluster default, block_size_shift from the
//!   default) on another; with [`Preallocation::Full`] the image is then opened and every object
//!   read and written back in order (`sd_create_prealloc`), and closed.
//! - [`SheepdogImage::open`] (`sd_open`): opens the long-lived I/O socket (TCP_NODELAY), sends
//!   LOCK_VDI (proto_ver 1, type NORMAL, data = name[256] + tag[256]) on a short connection,
//!   then READ_OBJ of the inode, 4,198,968 bytes (QEMU's `SheepdogInode`) at offset 0 with the
//!   cache flag SD_FLAG_CMD_CACHE (0x04), on another short connection.
//! - reads and writes (`sd_co_rw_vector`): split at object boundaries; all pieces of a batch go
//!   out pipelined on the I/O socket with increasing ids before any reply is read, and replies
//!   are matched by id in whatever order they come. A read of an unallocated object is filled
//!   with zeros locally; a write to one is CREATE_AND_WRITE_OBJ, to an object of another vid
//!   CREATE_AND_WRITE_OBJ with COW, otherwise WRITE_OBJ. Each carries `copies = nr_copies` of
//!   the inode and the current cache flag. When every reply of a write batch is in, ONE
//!   WRITE_OBJ to the inode object carries the slice `data_vdi_id[min..=max]` of the newly
//!   created objects (`sd_write_done`), at offset 4664 + 4 * min.
//! - [`SheepdogImage::flush`] (`sd_co_flush_to_disk`): only while the cache flag is
//!   SD_FLAG_CMD_CACHE, FLUSH_VDI on the I/O socket; INVALID_PARMS (what sheep answers) switches
//!   the image to SD_FLAG_CMD_DIRECT (0x08) for good and counts as success.
//! - [`SheepdogImage::discard`] (`sd_co_pdiscard`): for every whole, allocated object in the
//!   range, the index entry is zeroed in memory and WRITE_OBJ of 4 zero bytes goes to the inode
//!   at 4664 + 4 * idx. Partial or unallocated objects are skipped.
//! - [`SheepdogImage::close`] (`bdrv_close` + `sd_close`): the block layer flushes first, then
//!   RELEASE_VDI (type NORMAL, base_vdi_id = vid, data = name + NUL) on a short connection;
//!   VDI_NOT_LOCKED is not an error. The I/O socket is closed last.
//!
//! QEMU makes a guest request that overlaps an in-flight one wait; a batch here must therefore
//! touch every object at most once (checked).

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// QEMU's `SD_PROTO_VER` (sheep's is 0x02).
pub const QEMU_PROTO_VER: u8 = 0x01;

/// Opcodes QEMU sends.
pub mod opcode {
    /// CREATE_AND_WRITE_OBJ.
    pub const CREATE_AND_WRITE_OBJ: u8 = 0x01;
    /// READ_OBJ.
    pub const READ_OBJ: u8 = 0x02;
    /// WRITE_OBJ.
    pub const WRITE_OBJ: u8 = 0x03;
    /// NEW_VDI.
    pub const NEW_VDI: u8 = 0x11;
    /// LOCK_VDI.
    pub const LOCK_VDI: u8 = 0x12;
    /// RELEASE_VDI.
    pub const RELEASE_VDI: u8 = 0x13;
    /// FLUSH_VDI.
    pub const FLUSH_VDI: u8 = 0x16;
    /// GET_CLUSTER_DEFAULT.
    pub const GET_CLUSTER_DEFAULT: u8 = 0x18;
}

/// Request flags.
pub mod flag {
    /// SD_FLAG_CMD_WRITE: a payload follows the header.
    pub const WRITE: u16 = 0x01;
    /// SD_FLAG_CMD_COW: create from `cow_oid`.
    pub const COW: u16 = 0x02;
    /// SD_FLAG_CMD_CACHE: QEMU's default (writeback) cache hint.
    pub const CACHE: u16 = 0x04;
    /// SD_FLAG_CMD_DIRECT: what QEMU switches to after FLUSH_VDI is refused.
    pub const DIRECT: u16 = 0x08;
}

/// Result codes the client looks at.
pub mod result {
    /// SUCCESS.
    pub const SUCCESS: u32 = 0x00;
    /// VDI_EXIST.
    pub const VDI_EXIST: u32 = 0x04;
    /// INVALID_PARMS.
    pub const INVALID_PARMS: u32 = 0x05;
    /// NO_VDI.
    pub const NO_VDI: u32 = 0x08;
    /// VDI_NOT_LOCKED.
    pub const VDI_NOT_LOCKED: u32 = 0x10;
}

/// Size of QEMU's `SheepdogInode` (the v0.7 layout), what it reads at open.
pub const QEMU_INODE_SIZE: usize = 4_198_968;

/// Offset of `data_vdi_id[]` in the inode (`SD_INODE_HEADER_SIZE`).
pub const INODE_HEADER_SIZE: usize = 4664;

/// Number of index entries in QEMU's inode.
pub const MAX_DATA_OBJS: u64 = 1 << 20;

/// `SD_MAX_VDI_LEN` and `SD_MAX_VDI_TAG_LEN`.
const NAME_LEN: usize = 256;

/// `LOCK_TYPE_NORMAL`.
const LOCK_TYPE_NORMAL: u32 = 0;

/// Default object size shift when GET_CLUSTER_DEFAULT fails.
const DEFAULT_BLOCK_SIZE_SHIFT: u8 = 22;

/// Upper bound for any single reply.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// The inode oid of `vid`.
pub fn inode_oid(vid: u32) -> u64 {
    (1 << 63) | (u64::from(vid) << 32)
}

/// The oid of data object `idx` of `vid`.
pub fn data_oid(vid: u32, idx: u64) -> u64 {
    (u64::from(vid) << 32) | idx
}

/// What went wrong in a client operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdError {
    /// The server answered with a result other than the one QEMU accepts here.
    Result {
        /// The operation, e.g. `"LOCK_VDI"`.
        op: &'static str,
        /// `rsp.result`.
        result: u32,
    },
    /// Connection, framing or protocol trouble (short reply, unknown id, timeout...).
    Protocol(String),
}

impl fmt::Display for SdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdError::Result { op, result } => write!(f, "{op}: result {result:#04x}"),
            SdError::Protocol(msg) => write!(f, "{msg}"),
        }
    }
}

impl From<io::Error> for SdError {
    fn from(e: io::Error) -> Self {
        SdError::Protocol(format!("I/O error: {e}"))
    }
}

/// A 48-byte request header with the common fields set (epoch 0, as clients send).
fn header(proto_ver: u8, opcode: u8, flags: u16, id: u32, data_length: u32) -> [u8; 48] {
    let mut h = [0u8; 48];
    h[0] = proto_ver;
    h[1] = opcode;
    h[2..4].copy_from_slice(&flags.to_le_bytes());
    h[8..12].copy_from_slice(&id.to_le_bytes());
    h[12..16].copy_from_slice(&data_length.to_le_bytes());
    h
}

/// Fields of QEMU's `SheepdogObjReq` after the common part.
#[derive(Debug, Clone, Copy, Default)]
struct ObjFields {
    oid: u64,
    cow_oid: u64,
    copies: u8,
    offset: u64,
}

/// A `SheepdogObjReq` (proto_ver 0; copy_policy 0; offset as u64 at 40).
fn obj_request(opcode: u8, flags: u16, id: u32, data_length: u32, f: ObjFields) -> [u8; 48] {
    let mut h = header(0, opcode, flags, id, data_length);
    h[16..24].copy_from_slice(&f.oid.to_le_bytes());
    h[24..32].copy_from_slice(&f.cow_oid.to_le_bytes());
    h[32] = f.copies;
    h[40..48].copy_from_slice(&f.offset.to_le_bytes());
    h
}

/// Fields of QEMU's `SheepdogVdiReq` after the common part.
#[derive(Debug, Clone, Copy, Default)]
struct VdiFields {
    vdi_size: u64,
    base_vdi_id: u32,
    copies: u8,
    block_size_shift: u8,
    snapid: u32,
    lock_type: u32,
}

/// A `SheepdogVdiReq` (copy_policy and store_policy 0).
fn vdi_request(proto_ver: u8, opcode: u8, flags: u16, data_length: u32, f: VdiFields) -> [u8; 48] {
    let mut h = header(proto_ver, opcode, flags, 0, data_length);
    h[16..24].copy_from_slice(&f.vdi_size.to_le_bytes());
    h[24..28].copy_from_slice(&f.base_vdi_id.to_le_bytes());
    h[28] = f.copies;
    h[31] = f.block_size_shift;
    h[32..36].copy_from_slice(&f.snapid.to_le_bytes());
    h[36..40].copy_from_slice(&f.lock_type.to_le_bytes());
    h
}

/// `name` NUL-padded into a fixed field of `len` bytes (QEMU's `strncpy`).
fn fixed_name(name: &str, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let n = name.len().min(len);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    buf
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// A 48-byte reply header.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    /// The raw bytes.
    pub raw: [u8; 48],
}

impl Reply {
    /// Echoed opcode.
    pub fn opcode(&self) -> u8 {
        self.raw[1]
    }
    /// Echoed id.
    pub fn id(&self) -> u32 {
        u32_at(&self.raw, 8)
    }
    /// Length of the payload that follows.
    pub fn data_length(&self) -> u32 {
        u32_at(&self.raw, 12)
    }
    /// `rsp.result`.
    pub fn result(&self) -> u32 {
        u32_at(&self.raw, 16)
    }
    /// `SheepdogVdiRsp.vdi_id`.
    pub fn vdi_id(&self) -> u32 {
        u32_at(&self.raw, 24)
    }
    /// `SheepdogClusterRsp.nr_copies`.
    pub fn nr_copies(&self) -> u8 {
        self.raw[20]
    }
    /// `SheepdogClusterRsp.block_size_shift`.
    pub fn block_size_shift(&self) -> u8 {
        self.raw[22]
    }
}

fn connect(addr: SocketAddr) -> Result<TcpStream, SdError> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| SdError::Protocol(format!("connect to {addr}: {e}")))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn read_reply(s: &mut TcpStream) -> Result<Reply, SdError> {
    let mut raw = [0u8; 48];
    s.read_exact(&mut raw)
        .map_err(|e| SdError::Protocol(format!("reading a reply header: {e}")))?;
    Ok(Reply { raw })
}

/// QEMU's `do_req` on a fresh connection (`connect_to_sdog` ... `closesocket`): sends the
/// header and `wdata`, reads the reply header and then `min(rlen, rsp.data_length)` bytes.
fn do_req(
    addr: SocketAddr,
    hdr: &[u8; 48],
    wdata: &[u8],
    rlen: usize,
) -> Result<(Reply, Vec<u8>), SdError> {
    let mut s = connect(addr)?;
    let mut msg = hdr.to_vec();
    msg.extend_from_slice(wdata);
    s.write_all(&msg)?;
    let rsp = read_reply(&mut s)?;
    let n = rlen.min(rsp.data_length() as usize);
    let mut data = vec![0u8; n];
    s.read_exact(&mut data)
        .map_err(|e| SdError::Protocol(format!("reading {n} reply bytes: {e}")))?;
    Ok((rsp, data))
}

/// `preallocation` of `qemu-img create`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preallocation {
    /// `preallocation=off` (the default).
    Off,
    /// `preallocation=full`: every object is read and written back after the create.
    Full,
}

/// `qemu-img create -f raw [-o preallocation=full] sheepdog://127.0.0.1:PORT/NAME SIZE`.
/// Returns the new vid.
pub fn create(
    addr: SocketAddr,
    name: &str,
    size: u64,
    prealloc: Preallocation,
) -> Result<u32, SdError> {
    // No object_size option: ask the cluster default on its own connection.
    let hdr = vdi_request(
        QEMU_PROTO_VER,
        opcode::GET_CLUSTER_DEFAULT,
        0,
        0,
        VdiFields::default(),
    );
    let (rsp, _) = do_req(addr, &hdr, &[], 0)?;
    let block_size_shift = if rsp.result() == result::SUCCESS {
        rsp.block_size_shift()
    } else {
        DEFAULT_BLOCK_SIZE_SHIFT
    };
    let max = (1u64 << block_size_shift) * MAX_DATA_OBJS;
    if size > max {
        return Err(SdError::Protocol(format!(
            "An image is too large. The maximum image size is {}GB",
            max / (1 << 30)
        )));
    }

    // do_sd_create: NEW_VDI, name in 256 bytes, copies 0 (cluster default), on another one.
    let hdr = vdi_request(
        0,
        opcode::NEW_VDI,
        flag::WRITE,
        NAME_LEN as u32,
        VdiFields {
            vdi_size: size,
            block_size_shift,
            ..VdiFields::default()
        },
    );
    let (rsp, _) = do_req(addr, &hdr, &fixed_name(name, NAME_LEN), 0)?;
    if rsp.result() != result::SUCCESS {
        return Err(SdError::Result {
            op: "NEW_VDI",
            result: rsp.result(),
        });
    }
    let vid = rsp.vdi_id();

    if prealloc == Preallocation::Full {
        // sd_create_prealloc: read then write back every chunk of min(object size, 4 MiB).
        let mut img = SheepdogImage::open(addr, name)?;
        let chunk = img.object_size().min(4 << 20);
        for idx in 0..size.div_ceil(chunk) {
            let buf = img.read(idx * chunk, chunk as usize)?;
            img.write(idx * chunk, &buf)?;
        }
        img.close()?;
    }
    Ok(vid)
}

/// What [`SheepdogImage::flush`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushOutcome {
    /// FLUSH_VDI was answered SUCCESS.
    Flushed,
    /// FLUSH_VDI was answered INVALID_PARMS: the image switched to SD_FLAG_CMD_DIRECT.
    CacheDisabled,
    /// Nothing was sent: the image already uses SD_FLAG_CMD_DIRECT.
    NotSent,
}

/// One request sent on the I/O socket, as recorded for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Request id.
    pub id: u32,
    /// Opcode.
    pub opcode: u8,
    /// Flags.
    pub flags: u16,
    /// Object id.
    pub oid: u64,
    /// Offset in the object.
    pub offset: u64,
    /// data_length.
    pub len: u32,
}

/// One request of a pipelined batch.
struct AioReq {
    hdr: [u8; 48],
    payload: Vec<u8>,
}

impl AioReq {
    fn id(&self) -> u32 {
        u32_at(&self.hdr, 8)
    }
    fn is_read(&self) -> bool {
        self.hdr[1] == opcode::READ_OBJ
    }
    fn data_length(&self) -> u32 {
        u32_at(&self.hdr, 12)
    }
}

/// An open image: QEMU's `BDRVSheepdogState`.
#[derive(Debug)]
pub struct SheepdogImage {
    addr: SocketAddr,
    name: String,
    vid: u32,
    inode: Vec<u8>,
    io: TcpStream,
    next_id: u32,
    cache_flags: u16,
    discard_supported: bool,
    sent: Vec<Sent>,
    max_in_flight: usize,
}

impl SheepdogImage {
    /// `sd_open` of `sheepdog://ADDR/NAME` with the default (writeback) cache mode.
    pub fn open(addr: SocketAddr, name: &str) -> Result<Self, SdError> {
        // The I/O socket first (get_sheep_fd), then the lock on a short connection.
        let io = connect(addr)?;
        let mut data = fixed_name(name, NAME_LEN);
        data.extend_from_slice(&fixed_name("", NAME_LEN)); // tag
        let hdr = vdi_request(
            QEMU_PROTO_VER,
            opcode::LOCK_VDI,
            flag::WRITE,
            (2 * NAME_LEN) as u32,
            VdiFields {
                snapid: 0,
                lock_type: LOCK_TYPE_NORMAL,
                ..VdiFields::default()
            },
        );
        let (rsp, _) = do_req(addr, &hdr, &data, 0)?;
        if rsp.result() != result::SUCCESS {
            return Err(SdError::Result {
                op: "LOCK_VDI",
                result: rsp.result(),
            });
        }
        let vid = rsp.vdi_id();

        // The inode, QEMU's size of it, with the cache flag, on another short connection.
        let cache_flags = flag::CACHE;
        let hdr = obj_request(
            opcode::READ_OBJ,
            cache_flags,
            0,
            QEMU_INODE_SIZE as u32,
            ObjFields {
                oid: inode_oid(vid),
                ..ObjFields::default()
            },
        );
        let (rsp, inode) = do_req(addr, &hdr, &[], QEMU_INODE_SIZE)?;
        if rsp.result() != result::SUCCESS {
            return Err(SdError::Result {
                op: "READ_OBJ (inode)",
                result: rsp.result(),
            });
        }
        if inode.len() != QEMU_INODE_SIZE {
            return Err(SdError::Protocol(format!(
                "inode read returned {} bytes, QEMU needs {QEMU_INODE_SIZE}",
                inode.len()
            )));
        }
        let img = Self {
            addr,
            name: name.to_owned(),
            vid,
            inode,
            io,
            next_id: 0,
            cache_flags,
            discard_supported: true,
            sent: Vec::new(),
            max_in_flight: 0,
        };
        if img.inode_vid() != vid {
            return Err(SdError::Protocol(format!(
                "inode of vid {vid:#x} says vdi_id {:#x}",
                img.inode_vid()
            )));
        }
        Ok(img)
    }

    /// The vid LOCK_VDI returned.
    pub fn vid(&self) -> u32 {
        self.vid
    }

    /// `inode.vdi_size`.
    pub fn size(&self) -> u64 {
        u64_at(&self.inode, 536)
    }

    /// `inode.nr_copies`.
    pub fn nr_copies(&self) -> u8 {
        self.inode[554]
    }

    /// `1 << inode.block_size_shift`.
    pub fn object_size(&self) -> u64 {
        1 << self.inode[555]
    }

    /// `inode.vdi_id`.
    fn inode_vid(&self) -> u32 {
        u32_at(&self.inode, 560)
    }

    /// `inode.data_vdi_id[idx]` as this client knows it.
    pub fn data_vdi_id(&self, idx: u64) -> u32 {
        u32_at(&self.inode, INODE_HEADER_SIZE + 4 * idx as usize)
    }

    fn set_data_vdi_id(&mut self, idx: u64, vid: u32) {
        let off = INODE_HEADER_SIZE + 4 * idx as usize;
        self.inode[off..off + 4].copy_from_slice(&vid.to_le_bytes());
    }

    /// The cache flag every I/O request carries now (CACHE, or DIRECT after a refused flush).
    pub fn cache_flags(&self) -> u16 {
        self.cache_flags
    }

    /// Every request sent on the I/O socket so far, in order.
    pub fn sent(&self) -> &[Sent] {
        &self.sent
    }

    /// The most requests that were on the wire without a reply at one time.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// `(idx, offset in object, length, offset in the caller's buffer)` per object touched.
    fn pieces(&self, offset: u64, len: u64) -> Result<Vec<(u64, u64, u64, usize)>, SdError> {
        if offset.checked_add(len).is_none_or(|end| end > self.size()) {
            return Err(SdError::Protocol(format!(
                "request {offset}+{len} beyond the image size {}",
                self.size()
            )));
        }
        let os = self.object_size();
        let mut out = Vec::new();
        let mut done = 0;
        while done < len {
            let pos = offset + done;
            let n = (os - pos % os).min(len - done);
            out.push((pos / os, pos % os, n, done as usize));
            done += n;
        }
        Ok(out)
    }

    fn next_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    fn obj_req(&mut self, op: u8, flags: u16, f: ObjFields, payload: Vec<u8>, len: u32) -> AioReq {
        let id = self.next_id();
        let hdr = obj_request(op, flags, id, len, f);
        self.sent.push(Sent {
            id,
            opcode: op,
            flags,
            oid: f.oid,
            offset: f.offset,
            len,
        });
        AioReq { hdr, payload }
    }

    /// Sends every request (from a writer thread) while reading replies on this thread,
    /// matched by id. Returns `(reply, data)` in request order.
    fn pipeline(&mut self, reqs: Vec<AioReq>) -> Result<Vec<(Reply, Vec<u8>)>, SdError> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        let index: HashMap<u32, usize> =
            reqs.iter().enumerate().map(|(i, r)| (r.id(), i)).collect();
        let mut writer = self.io.try_clone()?;
        let mut reader = self.io.try_clone()?;
        let sent = AtomicUsize::new(0);
        let mut results: Vec<Option<(Reply, Vec<u8>)>> = vec![None; reqs.len()];
        let mut max_in_flight = 0;
        let outcome = std::thread::scope(|s| {
            let sent = &sent;
            let reqs = &reqs;
            let w = s.spawn(move || -> io::Result<()> {
                for r in reqs {
                    let mut msg = r.hdr.to_vec();
                    msg.extend_from_slice(&r.payload);
                    writer.write_all(&msg)?;
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            });
            let mut read_all = || -> Result<(), SdError> {
                for received in 0..reqs.len() {
                    let rsp = read_reply(&mut reader)?;
                    max_in_flight = max_in_flight.max(sent.load(Ordering::SeqCst) - received);
                    let Some(&i) = index.get(&rsp.id()) else {
                        return Err(SdError::Protocol(format!(
                            "reply with unknown id {} (header {:02x?})",
                            rsp.id(),
                            rsp.raw
                        )));
                    };
                    if results[i].is_some() {
                        return Err(SdError::Protocol(format!(
                            "second reply for id {}",
                            rsp.id()
                        )));
                    }
                    let req = &reqs[i];
                    if rsp.opcode() != req.hdr[1] {
                        return Err(SdError::Protocol(format!(
                            "reply to id {} echoes opcode {:#04x}, request had {:#04x}",
                            rsp.id(),
                            rsp.opcode(),
                            req.hdr[1]
                        )));
                    }
                    // QEMU reads rsp.data_length bytes for a read and nothing otherwise.
                    let n = if req.is_read() {
                        rsp.data_length() as usize
                    } else {
                        0
                    };
                    if !req.is_read() && rsp.data_length() != 0 {
                        return Err(SdError::Protocol(format!(
                            "reply to write id {} announces {} data bytes; QEMU would desync",
                            rsp.id(),
                            rsp.data_length()
                        )));
                    }
                    if n > req.data_length() as usize {
                        return Err(SdError::Protocol(format!(
                            "reply to read id {} carries {n} bytes, {} were asked",
                            rsp.id(),
                            req.data_length()
                        )));
                    }
                    let mut data = vec![0u8; n];
                    reader.read_exact(&mut data).map_err(|e| {
                        SdError::Protocol(format!("reading {n} data bytes of id {}: {e}", rsp.id()))
                    })?;
                    results[i] = Some((rsp, data));
                }
                Ok(())
            };
            let read = read_all();
            if read.is_err() {
                // Unblock the writer if the server stopped reading.
                let _ = self.io.shutdown(std::net::Shutdown::Both);
            }
            let wrote = w.join().expect("writer thread");
            read.and(wrote.map_err(SdError::from))
        });
        self.max_in_flight = self.max_in_flight.max(max_in_flight);
        outcome?;
        Ok(results
            .into_iter()
            .map(|r| r.expect("every reply read"))
            .collect())
    }

    /// Reads `len` bytes at `offset`.
    pub fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, SdError> {
        Ok(self.read_batch(&[(offset, len)])?.remove(0))
    }

    /// Several reads in flight together; returns their data in order.
    pub fn read_batch(&mut self, reads: &[(u64, usize)]) -> Result<Vec<Vec<u8>>, SdError> {
        let mut bufs: Vec<Vec<u8>> = reads.iter().map(|&(_, len)| vec![0u8; len]).collect();
        let mut reqs = Vec::new();
        let mut targets = Vec::new(); // (read, position in its buffer, length)
        for (r, &(offset, len)) in reads.iter().enumerate() {
            for (idx, obj_off, n, pos) in self.pieces(offset, len as u64)? {
                let owner = self.data_vdi_id(idx);
                if owner == 0 {
                    continue; // unallocated: zeros, no request
                }
                let f = ObjFields {
                    oid: data_oid(owner, idx),
                    cow_oid: 0,
                    copies: self.nr_copies(),
                    offset: obj_off,
                };
                let flags = self.cache_flags;
                reqs.push(self.obj_req(opcode::READ_OBJ, flags, f, Vec::new(), n as u32));
                targets.push((r, pos, n as usize));
            }
        }
        let replies = self.pipeline(reqs)?;
        for ((rsp, data), (r, pos, n)) in replies.into_iter().zip(targets) {
            if rsp.result() != result::SUCCESS {
                return Err(SdError::Result {
                    op: "READ_OBJ",
                    result: rsp.result(),
                });
            }
            if data.len() != n {
                return Err(SdError::Protocol(format!(
                    "READ_OBJ id {} returned {} of {n} bytes",
                    rsp.id(),
                    data.len()
                )));
            }
            bufs[r][pos..pos + n].copy_from_slice(&data);
        }
        Ok(bufs)
    }

    /// Writes `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), SdError> {
        self.write_batch(&[(offset, data)])
    }

    /// Several writes in flight together, then one inode update for the objects they created.
    /// No two writes of a batch may touch the same object (QEMU serialises those).
    pub fn write_batch(&mut self, writes: &[(u64, &[u8])]) -> Result<(), SdError> {
        let mut reqs = Vec::new();
        let mut created = Vec::new(); // (idx) per request, Some if it creates
        let mut touched = std::collections::BTreeSet::new();
        for &(offset, data) in writes {
            for (idx, obj_off, n, pos) in self.pieces(offset, data.len() as u64)? {
                assert!(
                    touched.insert(idx),
                    "a write batch touches object {idx} twice; QEMU would serialise that"
                );
                let owner = self.data_vdi_id(idx);
                let (op, cow_flag, cow_oid) = if owner == 0 {
                    (opcode::CREATE_AND_WRITE_OBJ, 0, 0)
                } else if owner != self.vid {
                    (
                        opcode::CREATE_AND_WRITE_OBJ,
                        flag::COW,
                        data_oid(owner, idx),
                    )
                } else {
                    (opcode::WRITE_OBJ, 0, 0)
                };
                let f = ObjFields {
                    oid: data_oid(self.vid, idx),
                    cow_oid,
                    copies: self.nr_copies(),
                    offset: obj_off,
                };
                let flags = flag::WRITE | cow_flag | self.cache_flags;
                let payload = data[pos..pos + n as usize].to_vec();
                reqs.push(self.obj_req(op, flags, f, payload, n as u32));
                created.push((op == opcode::CREATE_AND_WRITE_OBJ).then_some(idx));
            }
        }
        let replies = self.pipeline(reqs)?;
        let (mut min, mut max) = (u64::MAX, 0);
        let mut failure = None;
        for ((rsp, _), idx) in replies.iter().zip(created) {
            if rsp.result() != result::SUCCESS {
                failure.get_or_insert(SdError::Result {
                    op: if idx.is_some() {
                        "CREATE_AND_WRITE_OBJ"
                    } else {
                        "WRITE_OBJ"
                    },
                    result: rsp.result(),
                });
                continue;
            }
            if let Some(idx) = idx {
                if self.data_vdi_id(idx) != self.vid {
                    self.set_data_vdi_id(idx, self.vid);
                    min = min.min(idx);
                    max = max.max(idx);
                }
            }
        }
        if min <= max {
            // sd_write_done: one WRITE_OBJ of data_vdi_id[min..=max] to the inode.
            let off = INODE_HEADER_SIZE + 4 * min as usize;
            let len = 4 * (max - min + 1) as usize;
            let f = ObjFields {
                oid: inode_oid(self.vid),
                cow_oid: 0,
                copies: self.nr_copies(),
                offset: off as u64,
            };
            let flags = flag::WRITE | self.cache_flags;
            let payload = self.inode[off..off + len].to_vec();
            let req = self.obj_req(opcode::WRITE_OBJ, flags, f, payload, len as u32);
            let (rsp, _) = self.pipeline(vec![req])?.remove(0);
            if rsp.result() != result::SUCCESS {
                failure.get_or_insert(SdError::Result {
                    op: "WRITE_OBJ (inode index)",
                    result: rsp.result(),
                });
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// `bdrv_flush`: FLUSH_VDI while in cache mode; see [`FlushOutcome`].
    pub fn flush(&mut self) -> Result<FlushOutcome, SdError> {
        if self.cache_flags != flag::CACHE {
            return Ok(FlushOutcome::NotSent);
        }
        let f = ObjFields {
            oid: inode_oid(self.vid),
            cow_oid: 0,
            copies: self.nr_copies(),
            offset: 0,
        };
        let flags = self.cache_flags;
        let req = self.obj_req(opcode::FLUSH_VDI, flags, f, Vec::new(), 0);
        let (rsp, _) = self.pipeline(vec![req])?.remove(0);
        match rsp.result() {
            result::SUCCESS => Ok(FlushOutcome::Flushed),
            result::INVALID_PARMS => {
                self.cache_flags = flag::DIRECT;
                Ok(FlushOutcome::CacheDisabled)
            }
            other => Err(SdError::Result {
                op: "FLUSH_VDI",
                result: other,
            }),
        }
    }

    /// `bdrv_pdiscard` (512-byte aligned). Returns how many objects were discarded.
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<usize, SdError> {
        assert!((offset | len) & 511 == 0, "QEMU asserts sector alignment");
        if !self.discard_supported {
            return Ok(0);
        }
        let os = self.object_size();
        let mut reqs = Vec::new();
        for (idx, _, n, _) in self.pieces(offset, len)? {
            if n != os || self.data_vdi_id(idx) == 0 {
                continue; // only whole, allocated objects
            }
            self.set_data_vdi_id(idx, 0);
            let f = ObjFields {
                oid: inode_oid(self.vid),
                cow_oid: 0,
                copies: self.nr_copies(),
                offset: (INODE_HEADER_SIZE + 4 * idx as usize) as u64,
            };
            let flags = flag::WRITE | self.cache_flags;
            reqs.push(self.obj_req(opcode::WRITE_OBJ, flags, f, vec![0u8; 4], 4));
        }
        let count = reqs.len();
        for (rsp, _) in self.pipeline(reqs)? {
            match rsp.result() {
                result::SUCCESS => {}
                result::INVALID_PARMS => self.discard_supported = false,
                other => {
                    return Err(SdError::Result {
                        op: "WRITE_OBJ (discard)",
                        result: other,
                    })
                }
            }
        }
        Ok(count)
    }

    /// `bdrv_close`: flush (as the block layer does), RELEASE_VDI, close the I/O socket.
    pub fn close(mut self) -> Result<(), SdError> {
        self.flush()?;
        let mut data = self.name.as_bytes().to_vec();
        data.push(0);
        let hdr = vdi_request(
            0,
            opcode::RELEASE_VDI,
            flag::WRITE,
            data.len() as u32,
            VdiFields {
                base_vdi_id: self.vid,
                lock_type: LOCK_TYPE_NORMAL,
                ..VdiFields::default()
            },
        );
        let (rsp, _) = do_req(self.addr, &hdr, &data, 0)?;
        match rsp.result() {
            result::SUCCESS | result::VDI_NOT_LOCKED => Ok(()),
            other => Err(SdError::Result {
                op: "RELEASE_VDI",
                result: other,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn obj_request_layout() {
        let f = ObjFields {
            oid: 0x007c_2b25_0000_0001,
            cow_oid: 0x11,
            copies: 2,
            offset: 0x1234,
        };
        let h = obj_request(opcode::WRITE_OBJ, flag::WRITE | flag::CACHE, 7, 512, f);
        assert_eq!(h[0], 0, "QEMU sends proto_ver 0 on object requests");
        assert_eq!(h[1], 0x03);
        assert_eq!(&h[2..4], &[0x05, 0x00]);
        assert_eq!(&h[4..8], &[0; 4], "epoch");
        assert_eq!(&h[8..12], &7u32.to_le_bytes());
        assert_eq!(&h[12..16], &512u32.to_le_bytes());
        assert_eq!(&h[16..24], &[0x01, 0, 0, 0, 0x25, 0x2b, 0x7c, 0]);
        assert_eq!(&h[24..32], &0x11u64.to_le_bytes());
        assert_eq!(h[32], 2);
        assert_eq!(&h[33..40], &[0; 7]);
        assert_eq!(&h[40..48], &0x1234u64.to_le_bytes());
    }

    #[test]
    fn vdi_request_layout() {
        let f = VdiFields {
            vdi_size: 1 << 30,
            base_vdi_id: 0xabcdef,
            copies: 3,
            block_size_shift: 22,
            snapid: 9,
            lock_type: 1,
        };
        let h = vdi_request(QEMU_PROTO_VER, opcode::LOCK_VDI, flag::WRITE, 512, f);
        assert_eq!(h[0], 1);
        assert_eq!(h[1], 0x12);
        assert_eq!(&h[16..24], &(1u64 << 30).to_le_bytes());
        assert_eq!(&h[24..28], &0xabcdefu32.to_le_bytes());
        assert_eq!(h[28], 3);
        assert_eq!((h[29], h[30], h[31]), (0, 0, 22));
        assert_eq!(&h[32..36], &9u32.to_le_bytes());
        assert_eq!(&h[36..40], &1u32.to_le_bytes());
        assert_eq!(&h[40..48], &[0; 8]);
    }

    #[test]
    fn oids() {
        assert_eq!(inode_oid(0x7c2b25), 0x807c_2b25_0000_0000);
        assert_eq!(data_oid(0x7c2b25, 1), 0x007c_2b25_0000_0001);
        assert_eq!(fixed_name("ab", 4), b"ab\0\0");
    }
}
