//! A model of what a disk must hold: for each 4 KiB block, the last acknowledged write, and
//! the bytes each write puts there (self-describing, so a mismatch says which write it saw).

use std::collections::BTreeSet;

use crate::data::OBJECT_SIZE;

/// The unit of the [`BlockModel`]: writes are aligned to it.
pub const BLOCK: u64 = 4096;

/// The bytes a write numbered `seq` puts into 4 KiB block `block` of the disk: the seq and
/// the block number (little-endian u64s), then a xorshift stream seeded by both. Seq 0 is a
/// never-written block: zeros.
pub fn block_bytes(seq: u64, block: u64) -> Vec<u8> {
    let mut out = vec![0u8; BLOCK as usize];
    if seq == 0 {
        return out;
    }
    out[..8].copy_from_slice(&seq.to_le_bytes());
    out[8..16].copy_from_slice(&block.to_le_bytes());
    let mut x =
        (seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ block.wrapping_mul(0xd1b5_4a32_d192_ed03)) | 1;
    for chunk in out[16..].chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    out
}

/// For each 4 KiB block of a disk, the number of the last acknowledged write that covered it.
#[derive(Debug, Clone)]
pub struct BlockModel {
    seqs: Vec<u64>,
}

impl BlockModel {
    /// A never-written disk of `size` bytes (a multiple of [`BLOCK`]).
    pub fn new(size: u64) -> Self {
        assert_eq!(
            size % BLOCK,
            0,
            "model size {size} not a multiple of {BLOCK}"
        );
        Self {
            seqs: vec![0; (size / BLOCK) as usize],
        }
    }

    /// The disk size in bytes.
    pub fn size(&self) -> u64 {
        self.seqs.len() as u64 * BLOCK
    }

    /// The payload of write `seq` at `offset` (both `offset` and `len` multiples of [`BLOCK`]).
    pub fn payload(seq: u64, offset: u64, len: u64) -> Vec<u8> {
        assert_eq!(
            (offset % BLOCK, len % BLOCK),
            (0, 0),
            "unaligned {offset}+{len}"
        );
        let first = offset / BLOCK;
        (first..first + len / BLOCK)
            .flat_map(|b| block_bytes(seq, b))
            .collect()
    }

    /// Records that write `seq` of `[offset, offset + len)` was acknowledged.
    pub fn record(&mut self, seq: u64, offset: u64, len: u64) {
        let first = (offset / BLOCK) as usize;
        self.seqs[first..first + (len / BLOCK) as usize].fill(seq);
    }

    /// What `[offset, offset + len)` must read as (aligned).
    pub fn expected(&self, offset: u64, len: u64) -> Vec<u8> {
        let first = offset / BLOCK;
        (first..first + len / BLOCK)
            .flat_map(|b| block_bytes(self.seqs[b as usize], b))
            .collect()
    }

    /// `Err` naming the first block of `got` (read at aligned `offset`) that is not what the
    /// last acknowledged write left there, and which write (older: stale) it holds instead.
    pub fn check(&self, what: &str, offset: u64, got: &[u8]) -> Result<(), String> {
        let want_len = got.len() as u64 - got.len() as u64 % BLOCK;
        let first = offset / BLOCK;
        for (k, chunk) in got[..want_len as usize]
            .chunks_exact(BLOCK as usize)
            .enumerate()
        {
            let b = first + k as u64;
            let want_seq = self.seqs[b as usize];
            if chunk == block_bytes(want_seq, b).as_slice() {
                continue;
            }
            let held = u64::from_le_bytes(chunk[..8].try_into().expect("8 bytes"));
            let verdict = if chunk.iter().all(|&x| x == 0) {
                "zeros".to_owned()
            } else if chunk == block_bytes(held, b).as_slice() {
                let age = if held < want_seq {
                    "older: STALE"
                } else {
                    "newer"
                };
                format!("write #{held} ({age})")
            } else {
                "bytes no write produced (corrupt)".to_owned()
            };
            return Err(format!(
                "{what}: block {b} (disk offset {}, object {}) holds {verdict}; want write #{want_seq}",
                b * BLOCK,
                b * BLOCK / OBJECT_SIZE
            ));
        }
        if got.len() as u64 != want_len {
            return Err(format!("{what}: read returned {} bytes", got.len()));
        }
        Ok(())
    }

    /// Indices of the data objects some acknowledged write touched.
    pub fn written_objects(&self) -> BTreeSet<u32> {
        let per_object = OBJECT_SIZE / BLOCK;
        self.seqs
            .iter()
            .enumerate()
            .filter(|(_, &s)| s != 0)
            .map(|(b, _)| (b as u64 / per_object) as u32)
            .collect()
    }
}
