//! The VDI in-use / deleted bitmaps (READ_VDIS, READ_DEL_VDIS; reference §1.6, §2.4).
//!
//! Owns [`VdiBitmap`]: 2^24 bits as a Linux `unsigned long` bitmap, i.e. bit
//! `n` is byte `n / 8`, bit `n % 8` (identical to 64-bit LE words). Invariants:
//! the buffer is always exactly `VDI_BITMAP_BYTES` long; vids >= 2^24 are out
//! of range and are ignored by `set`/`clear` and read as clear by `test`.

use crate::consts::{SD_NR_VDIS, VDI_BITMAP_BYTES};
use crate::error::ProtoError;

/// A 2^24-bit VDI bitmap (2 MiB).
#[derive(Clone, PartialEq, Eq)]
pub struct VdiBitmap {
    bits: Box<[u8]>,
}

impl std::fmt::Debug for VdiBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VdiBitmap {{ count: {} }}", self.count())
    }
}

impl Default for VdiBitmap {
    fn default() -> Self {
        Self::new()
    }
}

impl VdiBitmap {
    /// An all-clear bitmap.
    pub fn new() -> Self {
        VdiBitmap {
            bits: vec![0u8; VDI_BITMAP_BYTES].into_boxed_slice(),
        }
    }

    /// Builds from the 2 MiB wire image; `BadLength` for any other length.
    pub fn from_bytes(b: &[u8]) -> Result<Self, ProtoError> {
        if b.len() != VDI_BITMAP_BYTES {
            return Err(ProtoError::BadLength {
                what: "vdi bitmap",
                len: b.len(),
            });
        }
        Ok(VdiBitmap { bits: b.into() })
    }

    /// The 2 MiB wire image.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// Sets bit `vid` (no-op if out of range).
    pub fn set(&mut self, vid: u32) {
        if vid < SD_NR_VDIS {
            self.bits[(vid / 8) as usize] |= 1 << (vid % 8);
        }
    }

    /// Clears bit `vid` (no-op if out of range).
    pub fn clear(&mut self, vid: u32) {
        if vid < SD_NR_VDIS {
            self.bits[(vid / 8) as usize] &= !(1 << (vid % 8));
        }
    }

    /// True if bit `vid` is set (false if out of range).
    pub fn test(&self, vid: u32) -> bool {
        vid < SD_NR_VDIS && self.bits[(vid / 8) as usize] & (1 << (vid % 8)) != 0
    }

    /// ORs `other` into `self`.
    pub fn union_with(&mut self, other: &VdiBitmap) {
        for (a, b) in self.bits.iter_mut().zip(other.bits.iter()) {
            *a |= *b;
        }
    }

    /// All set vids in ascending order.
    pub fn iter_set(&self) -> impl Iterator<Item = u32> + '_ {
        self.bits
            .iter()
            .enumerate()
            .filter(|(_, &byte)| byte != 0)
            .flat_map(|(i, &byte)| {
                (0..8u32)
                    .filter(move |bit| byte & (1 << bit) != 0)
                    .map(move |bit| i as u32 * 8 + bit)
            })
    }

    fn first_zero_in(&self, lo: u32, hi: u32) -> Option<u32> {
        let mut v = lo;
        while v < hi {
            let byte = self.bits[(v / 8) as usize];
            if v & 7 == 0 && byte == 0xff {
                v += 8;
                continue;
            }
            if byte & (1 << (v % 8)) == 0 {
                return Some(v);
            }
            v += 1;
        }
        None
    }

    /// First clear bit >= `from`; past the end it wraps and searches from 1.
    /// Never returns 0; `None` if every bit 1..2^24 is set.
    pub fn find_next_zero(&self, from: u32) -> Option<u32> {
        let start = from.clamp(1, SD_NR_VDIS);
        self.first_zero_in(start, SD_NR_VDIS)
            .or_else(|| self.first_zero_in(1, start))
    }

    /// Number of set bits.
    pub fn count(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_linux_bitmap() {
        let mut b = VdiBitmap::new();
        b.set(0x7c2b25);
        assert_eq!(b.as_bytes()[0x7c2b25 / 8], 1 << (0x7c2b25 % 8));
        b.set(9);
        assert_eq!(b.as_bytes()[1], 0b10);
        assert!(b.test(9) && b.test(0x7c2b25) && !b.test(10));
        assert_eq!(b.count(), 2);
        b.clear(9);
        assert!(!b.test(9));
        b.set(1 << 24);
        assert!(!b.test(1 << 24));
        assert_eq!(b.count(), 1);
    }

    #[test]
    fn from_bytes_length() {
        assert!(VdiBitmap::from_bytes(&[0u8; 10]).is_err());
        let mut raw = vec![0u8; VDI_BITMAP_BYTES];
        raw[3] = 0x81;
        let b = VdiBitmap::from_bytes(&raw).unwrap();
        assert_eq!(b.iter_set().collect::<Vec<_>>(), vec![24, 31]);
        assert_eq!(b.as_bytes(), &raw[..]);
    }

    #[test]
    fn find_next_zero_probe() {
        let mut b = VdiBitmap::new();
        assert_eq!(b.find_next_zero(0), Some(1));
        assert_eq!(b.find_next_zero(0x7c2b25), Some(0x7c2b25));
        b.set(0x7c2b25);
        b.set(0x7c2b26);
        assert_eq!(b.find_next_zero(0x7c2b25), Some(0x7c2b27));
        // wrap-around near the top (test 105)
        b.set(0xfffffe);
        b.set(0xffffff);
        assert_eq!(b.find_next_zero(0xfffffe), Some(1));
        b.set(1);
        b.set(2);
        assert_eq!(b.find_next_zero(0xfffffe), Some(3));
        assert_eq!(b.find_next_zero(u32::MAX), Some(3));
    }

    #[test]
    fn full_bitmap() {
        let mut b = VdiBitmap::from_bytes(&vec![0xffu8; VDI_BITMAP_BYTES]).unwrap();
        assert_eq!(b.find_next_zero(5), None);
        b.clear(0);
        assert_eq!(b.find_next_zero(5), None);
        b.clear(4);
        assert_eq!(b.find_next_zero(5), Some(4));
        assert_eq!(b.count(), (1 << 24) - 2);
    }

    #[test]
    fn union() {
        let mut a = VdiBitmap::new();
        let mut b = VdiBitmap::new();
        a.set(1);
        b.set(2);
        a.union_with(&b);
        assert_eq!(a.iter_set().collect::<Vec<_>>(), vec![1, 2]);
    }

    proptest! {
        #[test]
        fn iter_matches_set(mut vids in proptest::collection::vec(0u32..(1 << 24), 0..50)) {
            let mut b = VdiBitmap::new();
            for &v in &vids {
                b.set(v);
            }
            vids.sort();
            vids.dedup();
            prop_assert_eq!(b.iter_set().collect::<Vec<_>>(), vids.clone());
            prop_assert_eq!(b.count(), vids.len());
            let start = vids.first().copied().unwrap_or(1).max(1);
            let z = b.find_next_zero(start).unwrap();
            prop_assert!(z != 0 && !b.test(z));
        }
    }
}
