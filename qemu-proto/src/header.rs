//! The 48-byte request and response headers (`struct sd_req` / `struct sd_rsp`,
//! reference §1.2-§1.4) and typed views of their opcode-specific unions.
//!
//! Owns [`SdRequest`], [`SdResponse`] and the view structs. Invariants:
//! * `from_bytes(&h.to_bytes()) == h` and `to_bytes(from_bytes(b)) == b`: the
//!   union is stored as raw bytes (`args`), so nothing is lost in a round trip.
//! * Every view offset in this file is an **absolute** header offset; a view
//!   getter (`req.obj()`) reads exactly those bytes and its setter
//!   (`req.set_obj(..)`) writes exactly those bytes, leaving the rest of the
//!   union (reserved/padding bytes) unchanged.

use crate::consts::{SD_REQ_SIZE, SD_RSP_SIZE};
use crate::error::ProtoError;
use crate::flags::CMD_WRITE;
use crate::opcode::Opcode;
use crate::result::SdResult;
use crate::wire::{get_u16, get_u32, get_u64, need, put_u16, put_u32, put_u64};

/// A request header (`struct sd_req`, 48 bytes). The union at 16..48 is `args`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SdRequest {
    /// Offset 0: protocol version (0x02 public, 0x0a internal; QEMU sends 0/1).
    pub proto_ver: u8,
    /// Offset 1: raw opcode byte (see [`SdRequest::opcode`]).
    pub opcode: u8,
    /// Offset 2: `SD_FLAG_CMD_*` bits.
    pub flags: u16,
    /// Offset 4: cluster epoch (0 from clients).
    pub epoch: u32,
    /// Offset 8: request id, echoed in the response.
    pub id: u32,
    /// Offset 12: payload length (sent if WRITE, else expected reply length).
    pub data_length: u32,
    /// Offsets 16..48: the opcode-specific union, raw.
    pub args: [u8; 32],
}

/// A response header (`struct sd_rsp`, 48 bytes). The union at 20..48 is `args`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SdResponse {
    /// Offset 0: protocol version (sheep leaves it as copied or zero).
    pub proto_ver: u8,
    /// Offset 1: opcode, echoed from the request.
    pub opcode: u8,
    /// Offset 2: flags.
    pub flags: u16,
    /// Offset 4: the responding sheep's current epoch.
    pub epoch: u32,
    /// Offset 8: request id, echoed from the request.
    pub id: u32,
    /// Offset 12: length of the payload that follows.
    pub data_length: u32,
    /// Offset 16: result code.
    pub result: SdResult,
    /// Offsets 20..48: the opcode-specific union, raw.
    pub args: [u8; 28],
}

/// `obj` request view: object I/O and the `*_PEER` opcodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjArgs {
    /// @16: object id.
    pub oid: u64,
    /// @24: copy-on-write source (with `CMD_COW`).
    pub cow_oid: u64,
    /// @32: copies to use; 0 = the VDI's copy count.
    pub copies: u8,
    /// @33: 0 = replication, else erasure-code policy.
    pub copy_policy: u8,
    /// @34: EC strip index (peer requests).
    pub ec_index: u8,
    /// @36: target epoch (recovery, GET_HASH, GET_EPOCH).
    pub tgt_epoch: u32,
    /// @40: byte offset inside the object, read/written as u64 (sheep's u32 +
    /// zero padding decodes identically on little-endian).
    pub offset: u64,
}

/// `vdi` request view: NEW_VDI, LOCK/RELEASE, GET_VDI_INFO, DEL_VDI, GET_VDI_ATTR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VdiArgs {
    /// @16: VDI size in bytes.
    pub vdi_size: u64,
    /// @24: parent vid (NEW_VDI) or the vid to unlock (RELEASE_VDI).
    pub base_vdi_id: u32,
    /// @28: copies; 0 = cluster default.
    pub copies: u8,
    /// @29: copy policy.
    pub copy_policy: u8,
    /// @30: 0 normal, 1 hyper volume.
    pub store_policy: u8,
    /// @31: object size shift; 0 = cluster default.
    pub block_size_shift: u8,
    /// @32: snapshot id (NEW_VDI: nonzero = make a snapshot).
    pub snapid: u32,
    /// @36: lock type (`LOCK_TYPE_NORMAL` / `LOCK_TYPE_SHARED`); C name `type`.
    pub lock_type: u32,
}

/// `cluster` request view: MAKE_FS, STAT_CLUSTER, ALTER_CLUSTER_COPY.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterArgs {
    /// @16: object id.
    pub oid: u64,
    /// @24: cluster creation time.
    pub ctime: u64,
    /// @32: copies.
    pub copies: u8,
    /// @33: copy policy.
    pub copy_policy: u8,
    /// @34: `CLUSTER_FLAG_*`.
    pub flags: u16,
    /// @36: tag.
    pub tag: u32,
    /// @40: node slots per epoch record (STAT_CLUSTER).
    pub nodes_nr: u32,
    /// @44: object size shift.
    pub block_size_shift: u8,
}

/// `vdi_state` request view: NOTIFY_VDI_ADD, ALTER_VDI_COPY.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VdiStateArgs {
    /// @16: previous working vid (snapshot source), 0 if none.
    pub old_vid: u32,
    /// @20: the new vid.
    pub new_vid: u32,
    /// @24: copies.
    pub copies: u8,
    /// @25: set the in-use bitmap bit.
    pub set_bitmap: u8,
    /// @26: copy policy.
    pub copy_policy: u8,
    /// @27: object size shift.
    pub block_size_shift: u8,
}

/// `ref` request view: DECREF_OBJ / DECREF_PEER.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefArgs {
    /// @16: the ledger oid.
    pub oid: u64,
    /// @24: generation.
    pub generation: u32,
    /// @28: count.
    pub count: u32,
}

/// `forw` request view: REPAIR_REPLICA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwArgs {
    /// @16: object id.
    pub oid: u64,
    /// @24: 16-byte node address (IPv4 = 12 zero bytes + 4 bytes).
    pub addr: [u8; 16],
    /// @40: port.
    pub port: u16,
}

/// `obj` response view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjRsp {
    /// @20: copies.
    pub copies: u8,
    /// @24: where returned data starts inside the object (always 0 now).
    pub offset: u64,
}

/// `vdi` response view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VdiRsp {
    /// @20: reserved.
    pub rsvd: u32,
    /// @24: the VDI id.
    pub vdi_id: u32,
    /// @28: attribute id (GET_VDI_ATTR).
    pub attr_id: u32,
    /// @32: copies.
    pub copies: u8,
    /// @33: object size shift.
    pub block_size_shift: u8,
}

/// `node` response view: GET_NODE_LIST, STAT_SHEEP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeRsp {
    /// @20: number of nodes.
    pub nr_nodes: u32,
    /// @32: store capacity in bytes.
    pub store_size: u64,
    /// @40: free store space in bytes.
    pub store_free: u64,
}

/// `cluster_default` response view: GET_CLUSTER_DEFAULT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterDefaultRsp {
    /// @20: default copies.
    pub nr_copies: u8,
    /// @21: default copy policy.
    pub copy_policy: u8,
    /// @22: default object size shift.
    pub block_size_shift: u8,
}

fn encode_common(b: &mut [u8; 48], pv: u8, op: u8, flags: u16, epoch: u32, id: u32, len: u32) {
    b[0] = pv;
    b[1] = op;
    put_u16(b, 2, flags);
    put_u32(b, 4, epoch);
    put_u32(b, 8, id);
    put_u32(b, 12, len);
}

impl SdRequest {
    /// A zeroed request for `opcode` with `proto_ver = opcode.proto_ver()`.
    pub fn new(opcode: Opcode) -> Self {
        SdRequest {
            proto_ver: opcode.proto_ver(),
            opcode: opcode.as_u8(),
            ..Default::default()
        }
    }

    /// Encodes the 48-byte wire image.
    pub fn to_bytes(&self) -> [u8; SD_REQ_SIZE] {
        let mut b = [0u8; SD_REQ_SIZE];
        let (pv, op, fl) = (self.proto_ver, self.opcode, self.flags);
        encode_common(&mut b, pv, op, fl, self.epoch, self.id, self.data_length);
        b[16..48].copy_from_slice(&self.args);
        b
    }

    /// Decodes a 48-byte wire image (infallible).
    pub fn from_bytes(b: &[u8; SD_REQ_SIZE]) -> Self {
        let mut args = [0u8; 32];
        args.copy_from_slice(&b[16..48]);
        SdRequest {
            proto_ver: b[0],
            opcode: b[1],
            flags: get_u16(b, 2),
            epoch: get_u32(b, 4),
            id: get_u32(b, 8),
            data_length: get_u32(b, 12),
            args,
        }
    }

    /// Decodes the first 48 bytes of `b`; `Truncated` if shorter.
    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        need(b, SD_REQ_SIZE)?;
        let mut a = [0u8; SD_REQ_SIZE];
        a.copy_from_slice(&b[..SD_REQ_SIZE]);
        Ok(Self::from_bytes(&a))
    }

    /// The opcode, if the byte is a defined one.
    pub fn opcode(&self) -> Option<Opcode> {
        Opcode::from_u8(self.opcode)
    }

    /// True if `CMD_WRITE` is set (a payload follows the header).
    pub fn has_write_flag(&self) -> bool {
        self.flags & CMD_WRITE != 0
    }

    fn edit(&mut self, f: impl FnOnce(&mut [u8; 48])) {
        let mut b = self.to_bytes();
        f(&mut b);
        self.args.copy_from_slice(&b[16..48]);
    }

    /// Reads the `obj` view.
    pub fn obj(&self) -> ObjArgs {
        let b = self.to_bytes();
        ObjArgs {
            oid: get_u64(&b, 16),
            cow_oid: get_u64(&b, 24),
            copies: b[32],
            copy_policy: b[33],
            ec_index: b[34],
            tgt_epoch: get_u32(&b, 36),
            offset: get_u64(&b, 40),
        }
    }

    /// Writes the `obj` view (byte 35 is left unchanged).
    pub fn set_obj(&mut self, a: &ObjArgs) {
        self.edit(|b| {
            put_u64(b, 16, a.oid);
            put_u64(b, 24, a.cow_oid);
            b[32] = a.copies;
            b[33] = a.copy_policy;
            b[34] = a.ec_index;
            put_u32(b, 36, a.tgt_epoch);
            put_u64(b, 40, a.offset);
        })
    }

    /// Reads the `vdi` view.
    pub fn vdi(&self) -> VdiArgs {
        let b = self.to_bytes();
        VdiArgs {
            vdi_size: get_u64(&b, 16),
            base_vdi_id: get_u32(&b, 24),
            copies: b[28],
            copy_policy: b[29],
            store_policy: b[30],
            block_size_shift: b[31],
            snapid: get_u32(&b, 32),
            lock_type: get_u32(&b, 36),
        }
    }

    /// Writes the `vdi` view (bytes 40..48 are left unchanged).
    pub fn set_vdi(&mut self, a: &VdiArgs) {
        self.edit(|b| {
            put_u64(b, 16, a.vdi_size);
            put_u32(b, 24, a.base_vdi_id);
            b[28] = a.copies;
            b[29] = a.copy_policy;
            b[30] = a.store_policy;
            b[31] = a.block_size_shift;
            put_u32(b, 32, a.snapid);
            put_u32(b, 36, a.lock_type);
        })
    }

    /// Reads the `cluster` view.
    pub fn cluster(&self) -> ClusterArgs {
        let b = self.to_bytes();
        ClusterArgs {
            oid: get_u64(&b, 16),
            ctime: get_u64(&b, 24),
            copies: b[32],
            copy_policy: b[33],
            flags: get_u16(&b, 34),
            tag: get_u32(&b, 36),
            nodes_nr: get_u32(&b, 40),
            block_size_shift: b[44],
        }
    }

    /// Writes the `cluster` view (bytes 45..48 are left unchanged).
    pub fn set_cluster(&mut self, a: &ClusterArgs) {
        self.edit(|b| {
            put_u64(b, 16, a.oid);
            put_u64(b, 24, a.ctime);
            b[32] = a.copies;
            b[33] = a.copy_policy;
            put_u16(b, 34, a.flags);
            put_u32(b, 36, a.tag);
            put_u32(b, 40, a.nodes_nr);
            b[44] = a.block_size_shift;
        })
    }

    /// Reads the `vdi_state` view.
    pub fn vdi_state(&self) -> VdiStateArgs {
        let b = self.to_bytes();
        VdiStateArgs {
            old_vid: get_u32(&b, 16),
            new_vid: get_u32(&b, 20),
            copies: b[24],
            set_bitmap: b[25],
            copy_policy: b[26],
            block_size_shift: b[27],
        }
    }

    /// Writes the `vdi_state` view (bytes 28..48 are left unchanged).
    pub fn set_vdi_state(&mut self, a: &VdiStateArgs) {
        self.edit(|b| {
            put_u32(b, 16, a.old_vid);
            put_u32(b, 20, a.new_vid);
            b[24] = a.copies;
            b[25] = a.set_bitmap;
            b[26] = a.copy_policy;
            b[27] = a.block_size_shift;
        })
    }

    /// Reads the `ref` view.
    pub fn ref_args(&self) -> RefArgs {
        let b = self.to_bytes();
        RefArgs {
            oid: get_u64(&b, 16),
            generation: get_u32(&b, 24),
            count: get_u32(&b, 28),
        }
    }

    /// Writes the `ref` view (bytes 32..48 are left unchanged).
    pub fn set_ref_args(&mut self, a: &RefArgs) {
        self.edit(|b| {
            put_u64(b, 16, a.oid);
            put_u32(b, 24, a.generation);
            put_u32(b, 28, a.count);
        })
    }

    /// Reads the `forw` view.
    pub fn forw(&self) -> ForwArgs {
        let b = self.to_bytes();
        let mut addr = [0u8; 16];
        addr.copy_from_slice(&b[24..40]);
        ForwArgs {
            oid: get_u64(&b, 16),
            addr,
            port: get_u16(&b, 40),
        }
    }

    /// Writes the `forw` view (bytes 42..48 are left unchanged).
    pub fn set_forw(&mut self, a: &ForwArgs) {
        self.edit(|b| {
            put_u64(b, 16, a.oid);
            b[24..40].copy_from_slice(&a.addr);
            put_u16(b, 40, a.port);
        })
    }
}

impl SdResponse {
    /// A zeroed response for `opcode` with `proto_ver = opcode.proto_ver()`.
    pub fn new(opcode: Opcode) -> Self {
        SdResponse {
            proto_ver: opcode.proto_ver(),
            opcode: opcode.as_u8(),
            ..Default::default()
        }
    }

    /// The response to `req`: echoes proto_ver, opcode and id; data_length 0.
    pub fn for_request(req: &SdRequest, result: SdResult) -> Self {
        SdResponse {
            proto_ver: req.proto_ver,
            opcode: req.opcode,
            id: req.id,
            result,
            ..Default::default()
        }
    }

    /// Encodes the 48-byte wire image.
    pub fn to_bytes(&self) -> [u8; SD_RSP_SIZE] {
        let mut b = [0u8; SD_RSP_SIZE];
        let (pv, op, fl) = (self.proto_ver, self.opcode, self.flags);
        encode_common(&mut b, pv, op, fl, self.epoch, self.id, self.data_length);
        put_u32(&mut b, 16, self.result.0);
        b[20..48].copy_from_slice(&self.args);
        b
    }

    /// Decodes a 48-byte wire image (infallible).
    pub fn from_bytes(b: &[u8; SD_RSP_SIZE]) -> Self {
        let mut args = [0u8; 28];
        args.copy_from_slice(&b[20..48]);
        SdResponse {
            proto_ver: b[0],
            opcode: b[1],
            flags: get_u16(b, 2),
            epoch: get_u32(b, 4),
            id: get_u32(b, 8),
            data_length: get_u32(b, 12),
            result: SdResult(get_u32(b, 16)),
            args,
        }
    }

    /// Decodes the first 48 bytes of `b`; `Truncated` if shorter.
    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        need(b, SD_RSP_SIZE)?;
        let mut a = [0u8; SD_RSP_SIZE];
        a.copy_from_slice(&b[..SD_RSP_SIZE]);
        Ok(Self::from_bytes(&a))
    }

    /// The echoed opcode, if the byte is a defined one.
    pub fn opcode(&self) -> Option<Opcode> {
        Opcode::from_u8(self.opcode)
    }

    /// True if `CMD_WRITE` is set in the response flags.
    pub fn has_write_flag(&self) -> bool {
        self.flags & CMD_WRITE != 0
    }

    fn edit(&mut self, f: impl FnOnce(&mut [u8; 48])) {
        let mut b = self.to_bytes();
        f(&mut b);
        self.args.copy_from_slice(&b[20..48]);
    }

    /// Reads the `obj` view.
    pub fn obj(&self) -> ObjRsp {
        let b = self.to_bytes();
        ObjRsp {
            copies: b[20],
            offset: get_u64(&b, 24),
        }
    }

    /// Writes the `obj` view (bytes 21..24 and 32..48 are left unchanged).
    pub fn set_obj(&mut self, a: &ObjRsp) {
        self.edit(|b| {
            b[20] = a.copies;
            put_u64(b, 24, a.offset);
        })
    }

    /// Reads the `vdi` view.
    pub fn vdi(&self) -> VdiRsp {
        let b = self.to_bytes();
        VdiRsp {
            rsvd: get_u32(&b, 20),
            vdi_id: get_u32(&b, 24),
            attr_id: get_u32(&b, 28),
            copies: b[32],
            block_size_shift: b[33],
        }
    }

    /// Writes the `vdi` view (bytes 34..48 are left unchanged).
    pub fn set_vdi(&mut self, a: &VdiRsp) {
        self.edit(|b| {
            put_u32(b, 20, a.rsvd);
            put_u32(b, 24, a.vdi_id);
            put_u32(b, 28, a.attr_id);
            b[32] = a.copies;
            b[33] = a.block_size_shift;
        })
    }

    /// Reads the `node` view.
    pub fn node(&self) -> NodeRsp {
        let b = self.to_bytes();
        NodeRsp {
            nr_nodes: get_u32(&b, 20),
            store_size: get_u64(&b, 32),
            store_free: get_u64(&b, 40),
        }
    }

    /// Writes the `node` view (bytes 24..32 are left unchanged).
    pub fn set_node(&mut self, a: &NodeRsp) {
        self.edit(|b| {
            put_u32(b, 20, a.nr_nodes);
            put_u64(b, 32, a.store_size);
            put_u64(b, 40, a.store_free);
        })
    }

    /// Reads the `cluster_default` view.
    pub fn cluster_default(&self) -> ClusterDefaultRsp {
        ClusterDefaultRsp {
            nr_copies: self.args[0],
            copy_policy: self.args[1],
            block_size_shift: self.args[2],
        }
    }

    /// Writes the `cluster_default` view (bytes 23..48 are left unchanged).
    pub fn set_cluster_default(&mut self, a: &ClusterDefaultRsp) {
        self.edit(|b| {
            b[20] = a.nr_copies;
            b[21] = a.copy_policy;
            b[22] = a.block_size_shift;
        })
    }

    /// Reads the `hash` view: the 20-byte SHA-1 digest at 24 (GET_HASH).
    pub fn hash_digest(&self) -> [u8; 20] {
        let mut d = [0u8; 20];
        d.copy_from_slice(&self.to_bytes()[24..44]);
        d
    }

    /// Writes the `hash` view (digest at 24..44).
    pub fn set_hash_digest(&mut self, d: &[u8; 20]) {
        self.edit(|b| b[24..44].copy_from_slice(d))
    }
}

#[cfg(test)]
#[path = "header_tests.rs"]
mod tests;
