//! The inode object layout (`struct sd_inode`, reference §2.3) and the VDI
//! attribute object (`struct sheepdog_vdi_attr`).
//!
//! Owns [`InodeHeader`] (the first 4664 bytes of an inode), the offsets of the
//! `data_vdi_id[]` and `gref[]` arrays, their codecs, and the sheep timestamp
//! encoding. Invariants: `InodeHeader::encode` always yields exactly
//! `SD_INODE_HEADER_SIZE` bytes with the unused area zero; decode never panics
//! and fails with `Truncated` on short input.

use crate::consts::{SD_INODE_HEADER_SIZE, SD_MAX_VDI_LEN, SD_MAX_VDI_TAG_LEN};
use crate::error::ProtoError;
use crate::name::{decode_fixed, write_fixed_truncating};
use crate::wire::{get_u32, get_u64, need, put_u32, put_u64};

/// Offset of `data_vdi_id[0]` inside the inode object.
pub const DATA_VDI_ID_OFFSET: u64 = 4664;
/// Offset of `gref[0]` inside the inode object.
pub const GREF_OFFSET: u64 = 4_198_968;
/// Size of one `gref` entry (`{int32 generation; int32 count}`).
pub const GREF_SIZE: u64 = 8;
/// Size of QEMU's v0.7-era inode (`SheepdogInode`), what QEMU reads on open.
pub const QEMU_INODE_SIZE: u64 = 4_198_968;
/// Size of the VDI attribute object (`struct sheepdog_vdi_attr`).
pub const SD_ATTR_OBJ_SIZE: usize = 66_320;
/// Maximum attribute value length.
pub const SD_MAX_VDI_ATTR_VALUE_LEN: usize = 65_536;
/// Size of the attribute key field.
pub const SD_MAX_VDI_ATTR_KEY_LEN: usize = 256;

/// The header of an inode object: everything before `data_vdi_id[]`.
/// Names longer than 255 bytes are truncated on encode (validate first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InodeHeader {
    /// @0, 256 B: VDI name; empty means deleted.
    pub name: String,
    /// @256, 256 B: snapshot tag.
    pub tag: String,
    /// @512: creation time, `sd_time` encoding.
    pub create_time: u64,
    /// @520: snapshot time; nonzero means this inode is a snapshot.
    pub snap_ctime: u64,
    /// @528: QEMU savevm clock.
    pub vm_clock_nsec: u64,
    /// @536: size in bytes.
    pub vdi_size: u64,
    /// @544: saved VM state size.
    pub vm_state_size: u64,
    /// @552: 0 = replication, else EC policy.
    pub copy_policy: u8,
    /// @553: 0 normal, 1 hyper volume.
    pub store_policy: u8,
    /// @554: number of copies.
    pub nr_copies: u8,
    /// @555: object size shift.
    pub block_size_shift: u8,
    /// @556: 1-based snapshot id; the working VDI has the highest.
    pub snap_id: u32,
    /// @560: own vid.
    pub vdi_id: u32,
    /// @564: parent vid (0 = none).
    pub parent_vdi_id: u32,
    /// @568: number of B-tree node objects (hyper volumes).
    pub btree_counter: u32,
}

impl InodeHeader {
    /// Encodes exactly `SD_INODE_HEADER_SIZE` (4664) bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; SD_INODE_HEADER_SIZE];
        write_fixed_truncating(&mut b[0..SD_MAX_VDI_LEN], &self.name);
        write_fixed_truncating(&mut b[256..256 + SD_MAX_VDI_TAG_LEN], &self.tag);
        put_u64(&mut b, 512, self.create_time);
        put_u64(&mut b, 520, self.snap_ctime);
        put_u64(&mut b, 528, self.vm_clock_nsec);
        put_u64(&mut b, 536, self.vdi_size);
        put_u64(&mut b, 544, self.vm_state_size);
        b[552] = self.copy_policy;
        b[553] = self.store_policy;
        b[554] = self.nr_copies;
        b[555] = self.block_size_shift;
        put_u32(&mut b, 556, self.snap_id);
        put_u32(&mut b, 560, self.vdi_id);
        put_u32(&mut b, 564, self.parent_vdi_id);
        put_u32(&mut b, 568, self.btree_counter);
        b
    }

    /// Decodes the header from the start of `b` (needs >= 4664 bytes; a whole
    /// inode object is fine, the rest is ignored).
    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        need(b, SD_INODE_HEADER_SIZE)?;
        Ok(InodeHeader {
            name: decode_fixed(&b[0..256]),
            tag: decode_fixed(&b[256..512]),
            create_time: get_u64(b, 512),
            snap_ctime: get_u64(b, 520),
            vm_clock_nsec: get_u64(b, 528),
            vdi_size: get_u64(b, 536),
            vm_state_size: get_u64(b, 544),
            copy_policy: b[552],
            store_policy: b[553],
            nr_copies: b[554],
            block_size_shift: b[555],
            snap_id: get_u32(b, 556),
            vdi_id: get_u32(b, 560),
            parent_vdi_id: get_u32(b, 564),
            btree_counter: get_u32(b, 568),
        })
    }

    /// True if this inode is a snapshot (`snap_ctime != 0`).
    pub fn is_snapshot(&self) -> bool {
        self.snap_ctime != 0
    }

    /// True if the VDI was deleted (name cleared).
    pub fn is_deleted(&self) -> bool {
        self.name.is_empty()
    }

    /// Object size, `1 << block_size_shift`. A shift of 0 (inodes written
    /// before the field existed) means the default 22; shifts above 63 clamp.
    pub fn object_size(&self) -> u64 {
        let s = if self.block_size_shift == 0 {
            crate::consts::SD_DEFAULT_BLOCK_SIZE_SHIFT
        } else {
            self.block_size_shift.min(63)
        };
        1u64 << s
    }

    /// Number of data objects covering the VDI, `ceil(vdi_size / object_size)`.
    pub fn nr_objects(&self) -> u64 {
        self.vdi_size.div_ceil(self.object_size())
    }

    /// True for a clone (`c` in dog): `snap_id == 1`, has a parent, not a snapshot.
    pub fn is_clone(&self) -> bool {
        self.snap_id == 1 && self.parent_vdi_id != 0 && !self.is_snapshot()
    }
}

/// Byte offset of `data_vdi_id[idx]` inside the inode object (4664 + 4·idx).
pub fn data_vid_offset(idx: u32) -> u64 {
    DATA_VDI_ID_OFFSET + 4 * idx as u64
}

/// Byte offset of `gref[idx]` inside the inode object (4,198,968 + 8·idx).
pub fn gref_offset(idx: u32) -> u64 {
    GREF_OFFSET + GREF_SIZE * idx as u64
}

/// Decodes a run of little-endian u32 vids; a trailing partial entry is ignored.
pub fn decode_data_vdi_ids(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Encodes vids as little-endian u32s (4 bytes each).
pub fn encode_data_vdi_ids(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// One generational reference count entry (`struct generation_reference`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gref {
    /// Generation.
    pub generation: i32,
    /// Count.
    pub count: i32,
}

/// Decodes a run of `gref` entries (8 bytes each); a trailing partial entry is ignored.
pub fn decode_grefs(b: &[u8]) -> Vec<Gref> {
    b.chunks_exact(8)
        .map(|c| Gref {
            generation: i32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            count: i32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect()
}

/// Encodes `gref` entries (8 bytes each).
pub fn encode_grefs(v: &[Gref]) -> Vec<u8> {
    v.iter()
        .flat_map(|g| {
            let mut e = [0u8; 8];
            e[..4].copy_from_slice(&g.generation.to_le_bytes());
            e[4..].copy_from_slice(&g.count.to_le_bytes());
            e
        })
        .collect()
}

/// Sheep timestamp: seconds in the high 32 bits, nanoseconds in the low 32.
pub fn sd_time(secs: u64, nanos: u32) -> u64 {
    (secs << 32) | nanos as u64
}

/// Seconds part of a sheep timestamp.
pub fn sd_time_secs(t: u64) -> u64 {
    t >> 32
}

/// Nanoseconds part of a sheep timestamp.
pub fn sd_time_nanos(t: u64) -> u32 {
    t as u32
}

/// Largest size of a normal VDI: object size × 2^20 (saturating).
pub fn max_vdi_size(block_size_shift: u8) -> u64 {
    1u64.checked_shl(block_size_shift as u32 + 20)
        .unwrap_or(u64::MAX)
}

/// A VDI attribute object (`struct sheepdog_vdi_attr`, 66,320 bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VdiAttr {
    /// @0, 256 B: VDI name.
    pub name: String,
    /// @256, 256 B: snapshot tag.
    pub tag: String,
    /// @512: creation time.
    pub ctime: u64,
    /// @520: snapshot id.
    pub snap_id: u32,
    /// @528, 256 B: key.
    pub key: String,
    /// @784, up to 65,536 B: value (`value_len` @524 is its length).
    pub value: Vec<u8>,
}

impl VdiAttr {
    /// Encodes exactly `SD_ATTR_OBJ_SIZE` bytes; strings and value are truncated to fit.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; SD_ATTR_OBJ_SIZE];
        write_fixed_truncating(&mut b[0..256], &self.name);
        write_fixed_truncating(&mut b[256..512], &self.tag);
        put_u64(&mut b, 512, self.ctime);
        put_u32(&mut b, 520, self.snap_id);
        let n = self.value.len().min(SD_MAX_VDI_ATTR_VALUE_LEN);
        put_u32(&mut b, 524, n as u32);
        write_fixed_truncating(&mut b[528..784], &self.key);
        b[784..784 + n].copy_from_slice(&self.value[..n]);
        b
    }

    /// Decodes an attribute object (needs >= `SD_ATTR_OBJ_SIZE` bytes).
    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        need(b, SD_ATTR_OBJ_SIZE)?;
        let n = (get_u32(b, 524) as usize).min(SD_MAX_VDI_ATTR_VALUE_LEN);
        Ok(VdiAttr {
            name: decode_fixed(&b[0..256]),
            tag: decode_fixed(&b[256..512]),
            ctime: get_u64(b, 512),
            snap_id: get_u32(b, 520),
            key: decode_fixed(&b[528..784]),
            value: b[784..784 + n].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> InodeHeader {
        InodeHeader {
            name: "test".into(),
            tag: "snap1".into(),
            create_time: sd_time(0x5b34_0000, 123_000),
            snap_ctime: 0x0102_0304_0506_0708,
            vm_clock_nsec: 0x1111_2222_3333_4444,
            vdi_size: 4 << 30,
            vm_state_size: 0x55,
            copy_policy: 0x42,
            store_policy: 1,
            nr_copies: 3,
            block_size_shift: 22,
            snap_id: 2,
            vdi_id: 0x7c2b25,
            parent_vdi_id: 0x7c2b24,
            btree_counter: 9,
        }
    }

    #[test]
    fn header_offsets() {
        let h = sample();
        let b = h.encode();
        assert_eq!(b.len(), 4664);
        assert_eq!(&b[0..5], b"test\0");
        assert_eq!(&b[256..262], b"snap1\0");
        let u64at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let u32at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        assert_eq!(u64at(512), h.create_time);
        assert_eq!(u64at(520), h.snap_ctime);
        assert_eq!(u64at(528), h.vm_clock_nsec);
        assert_eq!(u64at(536), 4 << 30);
        assert_eq!(u64at(544), 0x55);
        assert_eq!(&b[552..556], &[0x42, 1, 3, 22]);
        assert_eq!(u32at(556), 2);
        assert_eq!(u32at(560), 0x7c2b25);
        assert_eq!(u32at(564), 0x7c2b24);
        assert_eq!(u32at(568), 9);
        assert!(b[572..].iter().all(|&x| x == 0));
        assert_eq!(InodeHeader::decode(&b).unwrap(), h);
    }

    #[test]
    fn decode_short() {
        assert_eq!(
            InodeHeader::decode(&[0u8; 4663]),
            Err(ProtoError::Truncated {
                need: 4664,
                have: 4663
            })
        );
        assert!(VdiAttr::decode(&[0u8; 100]).is_err());
    }

    #[test]
    fn predicates() {
        let mut h = sample();
        assert!(h.is_snapshot() && !h.is_clone() && !h.is_deleted());
        assert_eq!(h.object_size(), 4 << 20);
        assert_eq!(h.nr_objects(), 1024);
        h.vdi_size += 1;
        assert_eq!(h.nr_objects(), 1025);
        h.snap_ctime = 0;
        h.snap_id = 1;
        assert!(h.is_clone());
        h.name.clear();
        assert!(h.is_deleted());
        h.block_size_shift = 0;
        assert_eq!(h.object_size(), 4 << 20);
        h.block_size_shift = 200;
        assert_eq!(h.object_size(), 1 << 63);
    }

    #[test]
    fn index_helpers() {
        assert_eq!(data_vid_offset(0), 4664);
        assert_eq!(data_vid_offset(1), 4668);
        assert_eq!(data_vid_offset((1 << 20) - 1) + 4, GREF_OFFSET);
        assert_eq!(gref_offset((1 << 20) - 1) + 8, crate::consts::SD_INODE_SIZE);
        let v = vec![0, 0x7c2b25, 0xffffff];
        let b = encode_data_vdi_ids(&v);
        assert_eq!(&b[4..8], &[0x25, 0x2b, 0x7c, 0]);
        assert_eq!(decode_data_vdi_ids(&b), v);
        assert_eq!(decode_data_vdi_ids(&b[..11]), vec![0, 0x7c2b25]);
        let g = vec![Gref {
            generation: 1,
            count: -2,
        }];
        assert_eq!(decode_grefs(&encode_grefs(&g)), g);
        assert_eq!(sd_time_secs(sd_time(1_530_000_000, 5)), 1_530_000_000);
        assert_eq!(sd_time_nanos(sd_time(1, 5)), 5);
        assert_eq!(max_vdi_size(22), 4 << 40);
        assert_eq!(max_vdi_size(20), 1 << 40);
        assert_eq!(max_vdi_size(255), u64::MAX);
    }

    #[test]
    fn attr_layout() {
        let a = VdiAttr {
            name: "test".into(),
            tag: String::new(),
            ctime: 7,
            snap_id: 3,
            key: "k".into(),
            value: b"hello".to_vec(),
        };
        let b = a.encode();
        assert_eq!(b.len(), SD_ATTR_OBJ_SIZE);
        assert_eq!(u32::from_le_bytes(b[520..524].try_into().unwrap()), 3);
        assert_eq!(u32::from_le_bytes(b[524..528].try_into().unwrap()), 5);
        assert_eq!(&b[528..530], b"k\0");
        assert_eq!(&b[784..789], b"hello");
        assert_eq!(VdiAttr::decode(&b).unwrap(), a);
    }

    proptest! {
        #[test]
        fn inode_round_trip(name in "[a-zA-Z0-9._-]{0,255}", tag in "[^\u{0}]{0,60}",
                            t in any::<[u64; 5]>(), p in any::<[u8; 4]>(), ids in any::<[u32; 4]>()) {
            let h = InodeHeader {
                name, tag, create_time: t[0], snap_ctime: t[1], vm_clock_nsec: t[2],
                vdi_size: t[3], vm_state_size: t[4], copy_policy: p[0], store_policy: p[1],
                nr_copies: p[2], block_size_shift: p[3], snap_id: ids[0], vdi_id: ids[1],
                parent_vdi_id: ids[2], btree_counter: ids[3],
            };
            let b = h.encode();
            prop_assert_eq!(b.len(), 4664);
            prop_assert_eq!(InodeHeader::decode(&b), Ok(h));
        }

        #[test]
        fn inode_decode_any(b in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let _ = InodeHeader::decode(&b);
        }
    }
}
