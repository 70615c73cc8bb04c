//! Fixed-size, NUL-padded name fields (VDI names, tags, store names).
//!
//! Owns the conversion between Rust strings and C `char name[N]` fields.
//! Invariant: an encoded field always has exactly `len` bytes and at least one
//! terminating NUL; decoding stops at the first NUL (or the field end) and
//! never fails.

use crate::consts::SD_MAX_VDI_LEN;
use crate::error::ProtoError;

/// Encodes `s` into a `len`-byte NUL-padded field. Fails with `NameTooLong`
/// unless `s.len() < len` (room for the terminating NUL is required).
pub fn encode_fixed(s: &str, len: usize) -> Result<Vec<u8>, ProtoError> {
    if s.len() >= len {
        return Err(ProtoError::NameTooLong {
            len: s.len(),
            max: len,
        });
    }
    let mut v = vec![0u8; len];
    v[..s.len()].copy_from_slice(s.as_bytes());
    Ok(v)
}

/// Like [`encode_fixed`] but writes into an existing field, truncating `s` so
/// that at least one NUL remains (used by infallible encoders). Truncation is
/// on a byte boundary, as C's `pstrcpy` does.
pub fn write_fixed_truncating(dst: &mut [u8], s: &str) {
    dst.fill(0);
    let n = s.len().min(dst.len().saturating_sub(1));
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// Decodes a NUL-padded field: bytes up to the first NUL, lossy UTF-8.
pub fn decode_fixed(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Checks a VDI name: non-empty, shorter than 256 bytes, no NUL.
pub fn validate_vdi_name(s: &str) -> Result<(), ProtoError> {
    if s.is_empty() {
        return Err(ProtoError::EmptyName);
    }
    if s.as_bytes().contains(&0) {
        return Err(ProtoError::NulInName);
    }
    if s.len() >= SD_MAX_VDI_LEN {
        return Err(ProtoError::NameTooLong {
            len: s.len(),
            max: SD_MAX_VDI_LEN,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encode_pads_and_limits() {
        let v = encode_fixed("test", 256).unwrap();
        assert_eq!(v.len(), 256);
        assert_eq!(&v[..5], b"test\0");
        assert!(v[4..].iter().all(|&b| b == 0));
        assert!(encode_fixed(&"a".repeat(255), 256).is_ok());
        assert_eq!(
            encode_fixed(&"a".repeat(256), 256),
            Err(ProtoError::NameTooLong { len: 256, max: 256 })
        );
    }

    #[test]
    fn decode_stops_at_nul() {
        assert_eq!(decode_fixed(b"abc\0def"), "abc");
        assert_eq!(decode_fixed(b"abc"), "abc");
        assert_eq!(decode_fixed(b""), "");
        assert_eq!(decode_fixed(&[0xff, b'a', 0]), "\u{fffd}a");
    }

    #[test]
    fn truncating_writer_keeps_nul() {
        let mut f = [0xaau8; 4];
        write_fixed_truncating(&mut f, "abcdef");
        assert_eq!(&f, b"abc\0");
        write_fixed_truncating(&mut f, "x");
        assert_eq!(&f, b"x\0\0\0");
    }

    #[test]
    fn validate() {
        assert_eq!(validate_vdi_name(""), Err(ProtoError::EmptyName));
        assert_eq!(validate_vdi_name("a\0b"), Err(ProtoError::NulInName));
        assert!(validate_vdi_name(&"x".repeat(255)).is_ok());
        assert_eq!(
            validate_vdi_name(&"x".repeat(256)),
            Err(ProtoError::NameTooLong { len: 256, max: 256 })
        );
    }

    proptest! {
        #[test]
        fn round_trip(s in "[^\u{0}]{0,80}") {
            let v = encode_fixed(&s, 256);
            if s.len() < 256 {
                prop_assert_eq!(decode_fixed(&v.unwrap()), s);
            }
        }
    }
}
