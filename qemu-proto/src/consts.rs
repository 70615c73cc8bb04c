//! Protocol-wide constants: versions, sizes and limits (reference §1, §2.2, §1.10).
//!
//! Owns every numeric constant other modules share. Invariant: each value is the
//! one sheep's C headers define on x86-64; the size constants are checked against
//! each other by the unit tests below.

/// Protocol version for public opcodes (< 0x80).
pub const SD_PROTO_VER: u8 = 0x02;
/// Protocol version for internal opcodes (>= 0x80); also `cluster_info.proto_ver`.
pub const SD_SHEEP_PROTO_VER: u8 = 0x0a;
/// Default TCP port of sheep.
pub const SD_LISTEN_PORT: u16 = 7000;
/// Default object size shift (4 MiB objects).
pub const SD_DEFAULT_BLOCK_SIZE_SHIFT: u8 = 22;
/// Default data object size, 4 MiB.
pub const SD_DATA_OBJ_SIZE: u64 = 1 << 22;
/// Size of a full inode object (`sizeof(struct sd_inode)`).
pub const SD_INODE_SIZE: u64 = 12_587_576;
/// Size of the inode header, i.e. `offsetof(struct sd_inode, data_vdi_id)`.
pub const SD_INODE_HEADER_SIZE: usize = 4664;
/// Max data objects of a normal (non-hyper) VDI (`OLD_MAX_DATA_OBJS`).
pub const SD_INODE_DATA_INDEX: u64 = 1 << 20;
/// Number of VDI ids (24-bit vid space); vid 0 is never used.
pub const SD_NR_VDIS: u32 = 1 << 24;
/// Size of the fixed VDI name field, including the terminating NUL.
pub const SD_MAX_VDI_LEN: usize = 256;
/// Size of the fixed snapshot tag field, including the terminating NUL.
pub const SD_MAX_VDI_TAG_LEN: usize = 256;
/// Default number of copies.
pub const SD_DEFAULT_COPIES: u8 = 3;
/// Maximum number of copies (EC data + parity).
pub const SD_MAX_COPIES: u8 = 31;
/// Default virtual nodes per sheep.
pub const SD_DEFAULT_VNODES: u16 = 128;
/// Maximum nodes in a cluster (`SD_MAX_NODES`).
pub const SD_MAX_NODES: usize = 6144;
/// Wire size of `struct sd_node`.
pub const SD_NODE_SIZE: usize = 80;
/// Size of the VDI in-use / deleted bitmaps (2^24 bits).
pub const VDI_BITMAP_BYTES: usize = 2_097_152;
/// Size of `struct sd_req`.
pub const SD_REQ_SIZE: usize = 48;
/// Size of `struct sd_rsp`.
pub const SD_RSP_SIZE: usize = 48;
/// Size of `struct cluster_info` (48-byte header + 6144 nodes).
pub const CLUSTER_INFO_SIZE: usize = 491_568;
/// Size of the `struct epoch_log` header (nodes follow).
pub const EPOCH_LOG_HEADER_SIZE: usize = 48;
/// Smallest block_size_shift accepted by dog/QEMU (1 MiB objects).
pub const MIN_BLOCK_SIZE_SHIFT: u8 = 20;
/// Largest block_size_shift accepted by dog/QEMU (2 GiB objects).
pub const MAX_BLOCK_SIZE_SHIFT: u8 = 31;
/// `vdi.type` for an exclusive lock.
pub const LOCK_TYPE_NORMAL: u32 = 0;
/// `vdi.type` for a shared lock.
pub const LOCK_TYPE_SHARED: u32 = 1;
/// Size of the store/driver name fields (`STORE_LEN`).
pub const STORE_LEN: usize = 16;

/// Cluster flag: refuse writes if fewer zones than copies.
pub const CLUSTER_FLAG_STRICT: u16 = 0x1;
/// Cluster flag: vnodes per disk instead of per node.
pub const CLUSTER_FLAG_DISKMODE: u16 = 0x2;
/// Cluster flag: vnode count derived automatically from capacity.
pub const CLUSTER_FLAG_AUTO_VNODES: u16 = 0x4;
/// Cluster flag: LOCK_VDI really locks.
pub const CLUSTER_FLAG_USE_LOCK: u16 = 0x8;
/// Cluster flag: recycle vids of deleted VDI families.
pub const CLUSTER_FLAG_RECYCLE_VID: u16 = 0x10;
/// Cluster flag: recovery avoids filling disks.
pub const CLUSTER_FLAG_AVOID_DISKFULL: u16 = 0x20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_consistent() {
        assert_eq!(CLUSTER_INFO_SIZE, 48 + SD_MAX_NODES * SD_NODE_SIZE);
        assert_eq!(VDI_BITMAP_BYTES as u64 * 8, SD_NR_VDIS as u64);
        assert_eq!(
            SD_INODE_SIZE,
            SD_INODE_HEADER_SIZE as u64 + SD_INODE_DATA_INDEX * 4 + SD_INODE_DATA_INDEX * 8
        );
        assert_eq!(SD_DATA_OBJ_SIZE, 1u64 << SD_DEFAULT_BLOCK_SIZE_SHIFT);
    }
}
