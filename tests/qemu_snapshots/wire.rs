//! The wire format as QEMU 5.2's `block/sheepdog.c` sends it: opcodes, flags and result codes,
//! request headers, and [`Wire`], one recorded request with its reply.

pub(crate) const QEMU_PROTO_VER: u8 = 0x01;
pub(crate) const CREATE_AND_WRITE_OBJ: u8 = 0x01;
pub(crate) const READ_OBJ: u8 = 0x02;
pub(crate) const WRITE_OBJ: u8 = 0x03;
pub(crate) const NEW_VDI: u8 = 0x11;
pub(crate) const LOCK_VDI: u8 = 0x12;
pub(crate) const GET_VDI_INFO: u8 = 0x14;
pub(crate) const READ_VDIS: u8 = 0x15;
pub(crate) const DEL_VDI: u8 = 0x17;

pub(crate) const FLAG_WRITE: u16 = 0x01;
pub(crate) const FLAG_COW: u16 = 0x02;
pub(crate) const FLAG_CACHE: u16 = 0x04;

pub(crate) const SUCCESS: u32 = 0x00;
pub(crate) const NO_VDI: u32 = 0x08;
pub(crate) const READONLY: u32 = 0x1a;

/// QEMU's `SD_INODE_SIZE` (its v0.7 `SheepdogInode`).
pub(crate) const QEMU_INODE_SIZE: usize = 4_198_968;
/// `SD_INODE_HEADER_SIZE`.
pub(crate) const HEADER: usize = 4664;
/// `NR_BATCHED_DISCARD`.
pub(crate) const NR_BATCHED_DISCARD: usize = 128;
/// `SD_NR_VDIS`.
pub(crate) const NR_VDIS: u32 = 1 << 24;
/// READ_VDIS: `BITS_TO_LONGS(SD_NR_VDIS) * sizeof(long)`.
pub(crate) const VDI_BITMAP_BYTES: usize = (NR_VDIS / 8) as usize;

pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

pub(crate) fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

pub(crate) fn inode_oid(vid: u32) -> u64 {
    (1 << 63) | (u64::from(vid) << 32)
}

pub(crate) fn data_oid(vid: u32, idx: u64) -> u64 {
    (u64::from(vid) << 32) | idx
}

pub(crate) fn oid_vid(oid: u64) -> u32 {
    ((oid >> 32) & 0x00ff_ffff) as u32
}

/// `s` NUL-padded to `len` bytes (strncpy / pstrcpy of a short string).
pub(crate) fn fixed(s: &str, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    b[..s.len()].copy_from_slice(s.as_bytes());
    b
}

/// A header with the common part set.
pub(crate) fn header(proto: u8, op: u8, flags: u16, id: u32, data_length: u32) -> [u8; 48] {
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
pub(crate) fn obj_req(
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
pub(crate) struct Vdi {
    pub(crate) vdi_size: u64,
    pub(crate) base_vdi_id: u32,
    pub(crate) copies: u8,
    pub(crate) copy_policy: u8,
    pub(crate) block_size_shift: u8,
    pub(crate) snapid: u32,
    pub(crate) lock_type: u32,
}

pub(crate) fn vdi_req(proto: u8, op: u8, flags: u16, len: u32, v: Vdi) -> [u8; 48] {
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
pub(crate) struct Wire {
    /// 0: the I/O socket; k >= 1: the k-th short connection.
    pub(crate) conn: u32,
    pub(crate) hdr: [u8; 48],
    /// The payload (WRITE requests), cut at 8 KiB.
    pub(crate) payload: Vec<u8>,
    pub(crate) payload_len: usize,
    pub(crate) rsp: [u8; 48],
    pub(crate) data_len: usize,
}

impl Wire {
    pub(crate) fn proto(&self) -> u8 {
        self.hdr[0]
    }
    pub(crate) fn op(&self) -> u8 {
        self.hdr[1]
    }
    pub(crate) fn flags(&self) -> u16 {
        u16::from_le_bytes([self.hdr[2], self.hdr[3]])
    }
    pub(crate) fn len(&self) -> u32 {
        u32_at(&self.hdr, 12)
    }
    pub(crate) fn oid(&self) -> u64 {
        u64_at(&self.hdr, 16)
    }
    pub(crate) fn cow_oid(&self) -> u64 {
        u64_at(&self.hdr, 24)
    }
    pub(crate) fn copies(&self) -> u8 {
        self.hdr[32]
    }
    pub(crate) fn offset(&self) -> u64 {
        u64_at(&self.hdr, 40)
    }
    pub(crate) fn vdi_size(&self) -> u64 {
        u64_at(&self.hdr, 16)
    }
    pub(crate) fn base_vdi_id(&self) -> u32 {
        u32_at(&self.hdr, 24)
    }
    pub(crate) fn vdi_copies(&self) -> u8 {
        self.hdr[28]
    }
    pub(crate) fn block_size_shift(&self) -> u8 {
        self.hdr[31]
    }
    pub(crate) fn snapid(&self) -> u32 {
        u32_at(&self.hdr, 32)
    }
    pub(crate) fn result(&self) -> u32 {
        u32_at(&self.rsp, 16)
    }
    pub(crate) fn vdi_id(&self) -> u32 {
        u32_at(&self.rsp, 24)
    }
    pub(crate) fn describe(&self) -> String {
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

pub(crate) fn transcript(w: &[Wire]) -> String {
    w.iter().map(Wire::describe).collect::<Vec<_>>().join("\n")
}
