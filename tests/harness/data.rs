//! Test data and on-disk object inspection.
//!
//! Stores keep one file per object at `<store>/obj/<oid as %016x>`; data objects start with
//! `00`, inode objects with `80` (contract, "sheep command line").

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// Object size of the default block_size_shift 22.
pub const OBJECT_SIZE: u64 = 4 << 20;

/// `len` pseudo-random bytes, the same for the same `seed` on every run.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut buf);
    buf
}

/// True if `name` looks like an object file: exactly 16 lowercase hex digits.
pub fn is_oid_name(name: &str) -> bool {
    name.len() == 16
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// True for data-object file names (`00...`).
pub fn is_data_object(name: &str) -> bool {
    is_oid_name(name) && name.starts_with("00")
}

/// True for inode-object file names (`80...`).
pub fn is_inode_object(name: &str) -> bool {
    is_oid_name(name) && name.starts_with("80")
}

/// Names of the object files in `<store>/obj` (empty if the directory does not exist yet).
/// Anything that is not a 16-hex-digit name (temporary files, subdirectories) is ignored.
pub fn list_objects(store: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(store.join("obj")) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_oid_name(n))
        .collect()
}

/// Only the data objects of `objects`.
pub fn data_objects(objects: &BTreeSet<String>) -> BTreeSet<String> {
    objects
        .iter()
        .filter(|n| is_data_object(n))
        .cloned()
        .collect()
}

/// For each object name, how many of the given per-node sets contain it.
pub fn replica_counts<'a>(
    per_node: impl IntoIterator<Item = &'a BTreeSet<String>>,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for set in per_node {
        for name in set {
            *counts.entry(name.clone()).or_insert(0) += 1;
        }
    }
    counts
}

/// The file name of data object `idx` of VDI `vid`.
pub fn data_oid_name(vid: u32, idx: u32) -> String {
    format!("{:016x}", (u64::from(vid) << 32) | u64::from(idx))
}

/// Asserts `got == want` without dumping megabytes: reports lengths and the first difference.
pub fn assert_same_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first_diff = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: data differs: got {} bytes, want {} bytes, first difference at byte {first_diff} \
         (object {}, offset {} in it)",
        got.len(),
        want.len(),
        first_diff as u64 / OBJECT_SIZE,
        first_diff as u64 % OBJECT_SIZE
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_are_reproducible() {
        assert_eq!(random_bytes(7, 1000), random_bytes(7, 1000));
        assert_ne!(random_bytes(7, 1000), random_bytes(8, 1000));
    }

    #[test]
    fn object_name_filters() {
        assert!(is_data_object("007c2b2500000001"));
        assert!(!is_data_object("807c2b2500000000"));
        assert!(is_inode_object("807c2b2500000000"));
        assert!(!is_oid_name("007c2b2500000001.tmp"));
        assert!(!is_oid_name("007C2B2500000001"));
        assert_eq!(data_oid_name(0x7c2b25, 1), "007c2b2500000001");
    }
}
