//! Little-endian byte helpers shared by the codec modules (crate-private).
//!
//! Owns the bounds check ([`need`]) and fixed-offset readers/writers. Invariant:
//! the `get_*`/`put_*` helpers are only called after the caller has verified the
//! buffer length (via [`need`] or by construction), so they never go out of bounds.

use crate::error::ProtoError;

/// Fails with [`ProtoError::Truncated`] unless `b` holds at least `n` bytes.
pub(crate) fn need(b: &[u8], n: usize) -> Result<(), ProtoError> {
    if b.len() < n {
        Err(ProtoError::Truncated {
            need: n,
            have: b.len(),
        })
    } else {
        Ok(())
    }
}

/// Reads a little-endian u16 at `off`.
pub(crate) fn get_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// Reads a little-endian u32 at `off`.
pub(crate) fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Reads a little-endian u64 at `off`.
pub(crate) fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Writes a little-endian u16 at `off`.
pub(crate) fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

/// Writes a little-endian u32 at `off`.
pub(crate) fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes a little-endian u64 at `off`.
pub(crate) fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
