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

mod image;
pub use image::{FlushOutcome, Sent, SheepdogImage};

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
