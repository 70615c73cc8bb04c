//! Request header flag bits (`hdr.flags`, reference §1.8).
//!
//! Owns the `SD_FLAG_CMD_*` values as `u16` constants. Invariant: values match
//! sheep's headers; note `CMD_WILDCARD` and `CMD_CREAT` share bit 0x100 (they are
//! used by different opcodes).

/// The request carries `data_length` bytes of payload.
pub const CMD_WRITE: u16 = 0x1;
/// CREATE_AND_WRITE must copy `cow_oid` first.
pub const CMD_COW: u16 = 0x2;
/// Write-back cache hint (ignored since v1.0).
pub const CMD_CACHE: u16 = 0x4;
/// Do not use the object cache.
pub const CMD_DIRECT: u16 = 0x8;
/// Return data while sending data.
pub const CMD_PIGGYBACK: u16 = 0x10;
/// Request comes from tgt (iSCSI multipath).
pub const CMD_TGT: u16 = 0x20;
/// Internal forwarded request.
pub const CMD_FWD: u16 = 0x40;
/// Internal recovery read.
pub const CMD_RECOVERY: u16 = 0x80;
/// Internal wildcard recovery (same bit as [`CMD_CREAT`]).
pub const CMD_WILDCARD: u16 = 0x100;
/// GET_VDI_ATTR: create (same bit as [`CMD_WILDCARD`]).
pub const CMD_CREAT: u16 = 0x100;
/// GET_VDI_ATTR: exclusive create.
pub const CMD_EXCL: u16 = 0x200;
/// GET_VDI_ATTR: delete.
pub const CMD_DEL: u16 = 0x400;
