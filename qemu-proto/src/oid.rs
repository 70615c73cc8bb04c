//! Object ids (reference §2.1).
//!
//! Owns [`ObjectId`] and the bit layout of a 64-bit oid: bits 0-31 data index,
//! bits 32-55 vid, bit 59 ledger, 60 B-tree node, 61 attribute, 62 vmstate,
//! 63 inode. Invariant: constructors mask the vid to 24 bits so a vid can never
//! spill into the type bits.

use std::fmt;
use std::str::FromStr;

/// A Sheepdog object id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ObjectId(pub u64);

/// Bit 63: inode object.
pub const VDI_BIT: u64 = 1 << 63;
/// Bit 62: saved VM state object.
pub const VMSTATE_BIT: u64 = 1 << 62;
/// Bit 61: VDI attribute object.
pub const VDI_ATTR_BIT: u64 = 1 << 61;
/// Bit 60: B-tree index node of a hyper volume.
pub const VDI_BTREE_BIT: u64 = 1 << 60;
/// Bit 59: refcount ledger of a data object.
pub const LEDGER_BIT: u64 = 1 << 59;
/// Shift of the vid inside an oid.
pub const VDI_SPACE_SHIFT: u32 = 32;
/// Mask of the vid bits inside an oid (`SD_VDI_MASK`).
pub const VDI_MASK: u64 = 0x00FF_FFFF_0000_0000;
/// All five type bits together; an oid with none of them is a data object.
pub const TYPE_MASK: u64 = VDI_BIT | VMSTATE_BIT | VDI_ATTR_BIT | VDI_BTREE_BIT | LEDGER_BIT;

fn vid_bits(vid: u32) -> u64 {
    ((vid as u64) << VDI_SPACE_SHIFT) & VDI_MASK
}

impl ObjectId {
    /// Data object `idx` of VDI `vid` (`vid_to_data_oid`).
    pub fn data(vid: u32, idx: u32) -> Self {
        ObjectId(vid_bits(vid) | idx as u64)
    }

    /// Inode object of VDI `vid` (`vid_to_vdi_oid`).
    pub fn inode(vid: u32) -> Self {
        ObjectId(VDI_BIT | vid_bits(vid))
    }

    /// VM state object `idx` of VDI `vid` (`vid_to_vmstate_oid`).
    pub fn vmstate(vid: u32, idx: u32) -> Self {
        ObjectId(VMSTATE_BIT | vid_bits(vid) | idx as u64)
    }

    /// Attribute object `attr_id` of VDI `vid` (`vid_to_attr_oid`).
    pub fn attr(vid: u32, attr_id: u32) -> Self {
        ObjectId(VDI_ATTR_BIT | vid_bits(vid) | attr_id as u64)
    }

    /// B-tree node object `n` of hyper volume `vid` (`vid_to_btree_oid`).
    pub fn btree(vid: u32, n: u32) -> Self {
        ObjectId(VDI_BTREE_BIT | vid_bits(vid) | n as u64)
    }

    /// Ledger object of this data object (`oid | LEDGER_BIT`).
    pub fn ledger(self) -> Self {
        ObjectId(self.0 | LEDGER_BIT)
    }

    /// The 24-bit VDI id.
    pub fn vid(self) -> u32 {
        ((self.0 & VDI_MASK) >> VDI_SPACE_SHIFT) as u32
    }

    /// The low 32 bits (data index, vmstate index or attribute id).
    pub fn index(self) -> u32 {
        self.0 as u32
    }

    /// True for an inode object (bit 63).
    pub fn is_inode(self) -> bool {
        self.0 & VDI_BIT != 0
    }

    /// True for a data object (none of the five type bits set).
    pub fn is_data(self) -> bool {
        self.0 & TYPE_MASK == 0
    }

    /// True for a VM state object (bit 62).
    pub fn is_vmstate(self) -> bool {
        self.0 & VMSTATE_BIT != 0
    }

    /// True for an attribute object (bit 61).
    pub fn is_attr(self) -> bool {
        self.0 & VDI_ATTR_BIT != 0
    }

    /// True for a B-tree node object (bit 60).
    pub fn is_btree(self) -> bool {
        self.0 & VDI_BTREE_BIT != 0
    }

    /// True for a ledger object (bit 59).
    pub fn is_ledger(self) -> bool {
        self.0 & LEDGER_BIT != 0
    }
}

impl fmt::Display for ObjectId {
    /// 16 lowercase hex digits, no prefix (how sheep names object files).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl From<u64> for ObjectId {
    fn from(v: u64) -> Self {
        ObjectId(v)
    }
}

/// Error returned when a string is not a valid hexadecimal object id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseObjectIdError(pub String);

impl fmt::Display for ParseObjectIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid object id {:?}: expected up to 16 hex digits",
            self.0
        )
    }
}

impl std::error::Error for ParseObjectIdError {}

impl FromStr for ObjectId {
    type Err = ParseObjectIdError;

    /// Parses hex digits (16 as printed, fewer accepted), with or without `0x`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseObjectIdError(s.to_string());
        let h = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        if h.is_empty() || h.len() > 16 || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(err());
        }
        u64::from_str_radix(h, 16).map(ObjectId).map_err(|_| err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reference_examples() {
        let ino = ObjectId::inode(0x7c2b25);
        assert_eq!(ino.to_string(), "807c2b2500000000");
        assert!(ino.is_inode() && !ino.is_data());
        assert_eq!(ino.vid(), 0x7c2b25);
        let d = ObjectId::data(0x7c2b25, 1);
        assert_eq!(d.to_string(), "007c2b2500000001");
        assert!(d.is_data() && !d.is_inode());
        assert_eq!(d.index(), 1);
        assert_eq!(d.ledger().to_string(), "087c2b2500000001");
        assert!(d.ledger().is_ledger() && !d.ledger().is_data());
        assert!(ObjectId::vmstate(5, 2).is_vmstate());
        assert!(ObjectId::attr(5, 2).is_attr());
        assert!(ObjectId::btree(5, 2).is_btree());
        // vid is masked to 24 bits
        assert_eq!(ObjectId::data(0xff12_3456, 0).0, 0x0012_3456_0000_0000);
    }

    #[test]
    fn parse() {
        assert_eq!("807c2b2500000000".parse(), Ok(ObjectId(0x807c2b2500000000)));
        assert_eq!(
            "0x807c2b2500000000".parse(),
            Ok(ObjectId(0x807c2b2500000000))
        );
        assert_eq!("1".parse(), Ok(ObjectId(1)));
        assert!("".parse::<ObjectId>().is_err());
        assert!("0x".parse::<ObjectId>().is_err());
        assert!("+1".parse::<ObjectId>().is_err());
        assert!("807c2b25000000000".parse::<ObjectId>().is_err());
        assert!("zz".parse::<ObjectId>().is_err());
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(v in any::<u64>()) {
            let o = ObjectId(v);
            prop_assert_eq!(o.to_string().parse::<ObjectId>(), Ok(o));
            prop_assert_eq!(format!("0x{o}").parse::<ObjectId>(), Ok(o));
        }

        #[test]
        fn data_fields_round_trip(vid in 0u32..(1 << 24), idx in any::<u32>()) {
            let o = ObjectId::data(vid, idx);
            prop_assert_eq!(o.vid(), vid);
            prop_assert_eq!(o.index(), idx);
            prop_assert!(o.is_data());
            let i = ObjectId::inode(vid);
            prop_assert_eq!(i.vid(), vid);
            prop_assert!(i.is_inode());
        }
    }
}
