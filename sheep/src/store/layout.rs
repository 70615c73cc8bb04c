//! The on-disk layout of one object file, and the blocking I/O on it.
//!
//! ```text
//! offset 0 ..             the object's bytes (sparse; holes read as zeros)
//! TRAILER ..+HEADER_LEN   header: magic, version (count, history), extent,
//!                         backing object (id, copies)
//! TRAILER+HEADER_LEN ..   one u32 checksum per 4 KiB block of the object
//! ```
//!
//! The trailer sits far beyond any object's end (objects are at most
//! [`MAX_OBJECT_LEN`]), in the same file, so one `fdatasync` makes data,
//! checksums and version durable together and a copy is still one file.
//!
//! Checksums are crc32c over whole 4 KiB blocks (zero-filled past the data).
//! A stored 0 means "never written" and is not checked, so a hole costs
//! nothing; a real crc of 0 is stored as 1 (see [`stored_crc`]).
//!
//! A *backed* copy (a copy-on-write child that holds only the blocks written
//! into it) names its backing object in the header: its never-written
//! blocks read as the backing object's, not as zeros. Never-written blocks
//! are exactly those with a stored checksum of 0, so the table doubles as
//! the map of what the copy holds.
//!
//! Page cache: object bytes are written at most [`WRITE_PIECE`] (64 KiB)
//! per system call. The kernel sizes a page-cache folio by the write that
//! creates it, up to 1 MiB for a 1 MiB write, and every later small write
//! into a folio pays in proportion to the folio's size (ext4 walks all its
//! buffers, and dirty accounting counts the whole folio). Written whole,
//! an object filled by 1 MiB writes made each 4 KiB synchronous write into
//! it cost ~30 µs more CPU on every replica; 64 KiB pieces cost 16 system
//! calls per MiB instead.
//!
//! Invariant: whenever a write returns, every block it touched has the
//! checksum of its new content. A crash between the data and the checksum
//! writes can leave a block that fails its check; such a copy is repaired
//! from another replica like any corrupt copy, and the write it belonged to
//! was never acknowledged.

use std::fs::File;
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

/// Checksum granularity.
pub const BLOCK: u64 = 4096;

/// Where the trailer starts; also the largest object the store accepts.
pub const TRAILER: u64 = 1 << 32;

/// The largest object: everything below the trailer.
pub const MAX_OBJECT_LEN: u64 = TRAILER;

/// Bytes reserved for the header (one block, so the table stays aligned).
const HEADER_LEN: u64 = BLOCK;

/// Bytes the header actually uses.
const HEADER_USED: usize = 48;

const MAGIC: u32 = 0x5346_4f42; // "SFOB"
const LAYOUT_VERSION: u32 = 1;

/// Which writes a copy has seen. Two copies with the same version have
/// applied the same set of writes (in any order: `history` is an XOR of one
/// mixed id per write). Ordered by `count`, then `history`, so every node
/// picks the same winner among diverged copies.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version {
    /// Writes applied (a create counts as one).
    pub count: u64,
    /// XOR of [`mix`]ed write ids.
    pub history: u64,
}

impl Version {
    /// The version after one more write with id `write_id`.
    pub fn next(self, write_id: u64) -> Version {
        Version {
            count: self.count + 1,
            history: self.history ^ mix(write_id),
        }
    }

    /// The version of a fresh object created by write `write_id`.
    pub fn created(write_id: u64) -> Version {
        Version::default().next(write_id)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{:016x}", self.count, self.history)
    }
}

/// splitmix64's finalizer: spreads write ids so XORs of them do not cancel
/// by accident.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The object a backed copy reads its never-written blocks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Backing {
    /// The backing object (an object of a snapshot, so it never changes).
    pub oid: u64,
    /// Its number of copies, to find its replicas.
    pub copies: u8,
}

/// What the header records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    /// Which writes this copy holds.
    pub version: Version,
    /// One past the last byte ever written: the object's stored length.
    pub extent: u64,
    /// Where never-written blocks come from (`None`: they are zeros).
    pub backing: Option<Backing>,
}

/// The checksum stored for a block: 0 is reserved for "not written".
pub fn stored_crc(block: &[u8]) -> u32 {
    crc32c::crc32c(block).max(1)
}

/// A block failed its checksum.
#[derive(Debug)]
pub struct Corrupt {
    /// Byte offset of the first bad block.
    pub offset: u64,
}

/// Reads the header; `None` for a file without one (never true for files
/// this store wrote, but a foreign file must not crash the node).
pub fn read_meta(file: &File) -> io::Result<Option<Meta>> {
    let mut b = [0u8; HEADER_USED];
    match file.read_exact_at(&mut b, TRAILER) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    if u32_at(0) != MAGIC || u32_at(4) != LAYOUT_VERSION {
        return Ok(None);
    }
    // Headers written before backed copies existed hold zeros here.
    let backing = Some(u64_at(32))
        .filter(|oid| *oid != 0)
        .map(|oid| Backing { oid, copies: b[40] });
    Ok(Some(Meta {
        version: Version {
            count: u64_at(8),
            history: u64_at(16),
        },
        extent: u64_at(24),
        backing,
    }))
}

/// Writes the header.
pub fn write_meta(file: &File, meta: &Meta) -> io::Result<()> {
    let mut b = [0u8; HEADER_USED];
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
    b[8..16].copy_from_slice(&meta.version.count.to_le_bytes());
    b[16..24].copy_from_slice(&meta.version.history.to_le_bytes());
    b[24..32].copy_from_slice(&meta.extent.to_le_bytes());
    if let Some(backing) = meta.backing {
        b[32..40].copy_from_slice(&backing.oid.to_le_bytes());
        b[40] = backing.copies;
    }
    file.write_all_at(&b, TRAILER)
}

fn table_offset(block: u64) -> u64 {
    TRAILER + HEADER_LEN + block * 4
}

/// Whether a read may wait for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// It may (the caller runs on a thread allowed to block).
    Yes,
    /// It may not: it fails with [`ErrorKind::WouldBlock`] unless every
    /// byte is in the page cache (`RWF_NOWAIT`).
    No,
}

/// Reads `len` bytes at `offset` (zeros past the end).
fn read_raw(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    read_raw_with(file, buf, offset, Wait::Yes)
}

fn read_raw_with(file: &File, buf: &mut [u8], offset: u64, wait: Wait) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let at = offset + done as u64;
        let r = match wait {
            Wait::Yes => file.read_at(&mut buf[done..], at),
            Wait::No => rustix::io::preadv2(
                file,
                &mut [io::IoSliceMut::new(&mut buf[done..])],
                at,
                rustix::io::ReadWriteFlags::NOWAIT,
            )
            .map_err(io::Error::from),
        };
        match r {
            Ok(0) => {
                buf[done..].fill(0);
                break;
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_table(file: &File, first: u64, count: usize) -> io::Result<Vec<u32>> {
    read_table_with(file, first, count, Wait::Yes)
}

fn read_table_with(file: &File, first: u64, count: usize, wait: Wait) -> io::Result<Vec<u32>> {
    let mut raw = vec![0u8; count * 4];
    read_raw_with(file, &mut raw, table_offset(first), wait)?;
    Ok(raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect())
}

/// True if every block of `[offset, offset + len)` has been written (has
/// a checksum): a write there overwrites blocks the file already holds and
/// allocates nothing.
pub fn blocks_written(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    let first = offset / BLOCK;
    let last = (offset + len - 1) / BLOCK;
    Ok(read_table(file, first, (last - first + 1) as usize)?
        .iter()
        .all(|&crc| crc != 0))
}

/// What [`read_checked`] read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Read {
    /// The bytes; never-written ones are zeros.
    pub data: Vec<u8>,
    /// The never-written parts of the read, as (object offset, length),
    /// in order and merged. Zeros in a plain copy; a backed copy reads them
    /// from its backing object.
    pub unwritten: Vec<(u64, u64)>,
}

/// Reads `len` bytes at `offset`, checking every block it touches.
pub fn read_checked(file: &File, offset: u64, len: usize) -> io::Result<Result<Read, Corrupt>> {
    read_checked_with(file, offset, len, Wait::Yes)
}

/// [`read_checked`], waiting for the disk or not.
pub fn read_checked_with(
    file: &File,
    offset: u64,
    len: usize,
    wait: Wait,
) -> io::Result<Result<Read, Corrupt>> {
    if len == 0 {
        return Ok(Ok(Read::default()));
    }
    let first = offset / BLOCK;
    let end = offset + len as u64;
    let last = (end - 1) / BLOCK;
    let nblocks = (last - first + 1) as usize;
    let start = first * BLOCK;
    let mut buf = vec![0u8; nblocks * BLOCK as usize];
    read_raw_with(file, &mut buf, start, wait)?;
    let table = read_table_with(file, first, nblocks, wait)?;
    let mut unwritten: Vec<(u64, u64)> = Vec::new();
    for (i, (block, want)) in buf.chunks_exact(BLOCK as usize).zip(&table).enumerate() {
        let bs = start + i as u64 * BLOCK;
        if *want == 0 {
            let (from, to) = (bs.max(offset), (bs + BLOCK).min(end));
            match unwritten.last_mut() {
                Some((at, n)) if *at + *n == from => *n += to - from,
                _ => unwritten.push((from, to - from)),
            }
        } else if stored_crc(block) != *want {
            return Ok(Err(Corrupt { offset: bs }));
        }
    }
    let skip = (offset - start) as usize;
    buf.drain(..skip);
    buf.truncate(len);
    Ok(Ok(Read {
        data: buf,
        unwritten,
    }))
}

/// A write into a backed copy partly covers blocks the copy has never
/// written: their other bytes are the backing object's, which the caller
/// must fetch and pass in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedBase {
    /// The block numbers whose backing content is needed.
    pub blocks: Vec<u64>,
}

/// Writes `data` at `offset` and the checksums of every block it touches.
/// The caller serializes writers of one object (edge blocks are read,
/// merged and checksummed). In a `backed` copy, a partly covered block that
/// was never written is merged into its backing content, looked up in
/// `base` (block number, 4 KiB); if `base` lacks one, nothing is written.
pub fn write_checked(
    file: &File,
    offset: u64,
    data: &[u8],
    backed: bool,
    base: &[(u64, Vec<u8>)],
) -> io::Result<Result<(), NeedBase>> {
    if data.is_empty() {
        return Ok(Ok(()));
    }
    let first = offset / BLOCK;
    let end = offset + data.len() as u64;
    let last = (end - 1) / BLOCK;
    let mut crcs = Vec::with_capacity((last - first + 1) as usize * 4);
    // Partly covered blocks, merged: (block, content).
    let mut edges: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut missing = Vec::new();
    let mut from_base = false;
    for b in first..=last {
        let (bs, be) = (b * BLOCK, (b + 1) * BLOCK);
        let crc = if bs >= offset && be <= end {
            stored_crc(&data[(bs - offset) as usize..(be - offset) as usize])
        } else {
            // A partly covered block: merge the new bytes into the old.
            let mut edge = vec![0u8; BLOCK as usize];
            if backed && read_table(file, b, 1)?[0] == 0 {
                match base.iter().find(|(n, _)| *n == b) {
                    Some((_, content)) => {
                        edge[..content.len().min(BLOCK as usize)]
                            .copy_from_slice(&content[..content.len().min(BLOCK as usize)]);
                        from_base = true;
                    }
                    None => {
                        missing.push(b);
                        continue;
                    }
                }
            } else {
                read_raw(file, &mut edge, bs)?;
            }
            let from = offset.max(bs);
            let to = end.min(be);
            edge[(from - bs) as usize..(to - bs) as usize]
                .copy_from_slice(&data[(from - offset) as usize..(to - offset) as usize]);
            let crc = stored_crc(&edge);
            edges.push((b, edge));
            crc
        };
        crcs.extend_from_slice(&crc.to_le_bytes());
    }
    if !missing.is_empty() {
        return Ok(Err(NeedBase { blocks: missing }));
    }
    if from_base {
        // The merged edge blocks hold bytes the file does not have yet:
        // write whole blocks.
        for (b, edge) in &edges {
            file.write_all_at(edge, b * BLOCK)?;
        }
        let inner_from = if edges.first().is_some_and(|(b, _)| *b == first) {
            (first + 1) * BLOCK
        } else {
            offset
        };
        let inner_to = if edges.last().is_some_and(|(b, _)| *b == last) {
            last * BLOCK
        } else {
            end
        };
        if inner_from < inner_to {
            write_data(
                file,
                &data[(inner_from - offset) as usize..(inner_to - offset) as usize],
                inner_from,
            )?;
        }
    } else {
        write_data(file, data, offset)?;
    }
    file.write_all_at(&crcs, table_offset(first))?;
    Ok(Ok(()))
}

/// Largest piece of an object written with one system call (see the
/// module comment).
pub const WRITE_PIECE: usize = 64 << 10;

/// Writes an object's bytes in [`pieces`], so the page cache holds them in
/// folios no larger than [`WRITE_PIECE`].
fn write_data(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    for (at, len) in pieces(offset, data.len()) {
        file.write_all_at(&data[at..at + len], offset + at as u64)?;
    }
    Ok(())
}

/// Splits `len` bytes written at `offset` into (start in the data, length)
/// pieces that cross no multiple of [`WRITE_PIECE`] in the file.
fn pieces(offset: u64, len: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at == len {
            return None;
        }
        let room = WRITE_PIECE - ((offset + at as u64) % WRITE_PIECE as u64) as usize;
        let piece = (at, room.min(len - at));
        at += piece.1;
        Some(piece)
    })
}

/// Writes every never-written block of `[0, content.len())` from `content`
/// (the backing object's bytes), except blocks of zeros, which read as
/// zeros unwritten. The caller serializes writers. Returns the bytes
/// written.
pub fn fill_unwritten(file: &File, content: &[u8]) -> io::Result<u64> {
    let nblocks = content.len().div_ceil(BLOCK as usize);
    if nblocks == 0 {
        return Ok(0);
    }
    let mut table = read_table(file, 0, nblocks)?;
    let mut written = 0u64;
    let mut block = vec![0u8; BLOCK as usize];
    for (b, crc) in table.iter_mut().enumerate() {
        let at = b * BLOCK as usize;
        let part = &content[at..(at + BLOCK as usize).min(content.len())];
        if *crc != 0 || part.iter().all(|x| *x == 0) {
            continue;
        }
        block[..part.len()].copy_from_slice(part);
        block[part.len()..].fill(0);
        file.write_all_at(part, at as u64)?;
        *crc = stored_crc(&block);
        written += part.len() as u64;
    }
    if written > 0 {
        let raw: Vec<u8> = table.iter().flat_map(|c| c.to_le_bytes()).collect();
        file.write_all_at(&raw, table_offset(0))?;
    }
    Ok(written)
}

/// Checks every block below `extent`; returns the crc32c of the whole
/// content (a digest to compare replicas by) or the first bad block.
pub fn scrub(file: &File, extent: u64) -> io::Result<Result<u32, Corrupt>> {
    let mut digest = 0u32;
    let step = 256 * BLOCK;
    let mut at = 0;
    while at < extent {
        let len = step.min(extent - at) as usize;
        match read_checked(file, at, len)? {
            Ok(read) => digest = crc32c::crc32c_append(digest, &read.data),
            Err(c) => return Ok(Err(c)),
        }
        at += len as u64;
    }
    Ok(Ok(digest))
}

#[cfg(test)]
mod tests;
