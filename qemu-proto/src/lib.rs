//! `qemu-proto`: the Sheepdog wire format, byte for byte, with no I/O.
//!
//! This crate encodes and decodes everything that travels between QEMU, dog and
//! sheep: the 48-byte request/response headers, opcodes, result codes and
//! their texts, object ids, the FNV-1a hashes used for VDI ids and placement,
//! the inode object layout, node records, cluster/epoch records and the VDI
//! bitmap. All multi-byte fields are little-endian (sheep sends raw x86-64
//! memory images). Decoders never panic: short or malformed input yields a
//! [`ProtoError`].
//!
//! # Layout
//!
//! * [`consts`] — versions, sizes, limits, cluster flags.
//! * [`flags`] — `SD_FLAG_CMD_*` header flags.
//! * [`opcode`] — [`Opcode`], every `SD_OP_*`.
//! * [`result`] — [`SdResult`], every `SD_RES_*` with sheep's text.
//! * [`oid`] — [`ObjectId`] and the oid bit layout.
//! * [`hash`] — FNV-1a, `sd_hash*`, `sd_hash_vdi`.
//! * [`header`] — [`SdRequest`], [`SdResponse`] and typed union views.
//! * [`name`] — fixed-size NUL-padded names.
//! * [`inode`] — [`InodeHeader`], data index / gref offsets, attribute object.
//! * [`node`] — [`NodeId`], [`SdNode`], node lists.
//! * [`cluster`] — [`ClusterInfo`], [`EpochLog`], vdi_state records.
//! * [`recovery`] — STAT_RECOVERY, GET/SET_RECOVERY and CHECK_VDI records.
//! * [`bitmap`] — [`VdiBitmap`].
//! * [`error`] — [`ProtoError`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bitmap;
pub mod cluster;
pub mod consts;
pub mod error;
pub mod flags;
pub mod hash;
pub mod header;
pub mod inode;
pub mod locks;
pub mod name;
pub mod node;
pub mod oid;
pub mod opcode;
pub mod recovery;
pub mod result;
mod wire;

pub use bitmap::VdiBitmap;
pub use cluster::{ClusterInfo, ClusterStatus, EpochLog};
pub use error::ProtoError;
pub use header::{
    ClusterArgs, ClusterDefaultRsp, NodeRsp, ObjArgs, ObjRsp, SdRequest, SdResponse, VdiArgs,
    VdiRsp,
};
pub use inode::InodeHeader;
pub use node::{NodeId, SdNode};
pub use oid::ObjectId;
pub use opcode::Opcode;
pub use result::SdResult;
