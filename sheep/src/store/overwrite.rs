//! Making an overwrite durable without writing its file's inode.
//!
//! Why: on ext4 without a journal, `fdatasync` also writes the block of the
//! inode table holding the file's inode whenever the inode is dirty, and a
//! write dirties it by moving the file's modification time (at most once
//! per clock tick and file). A store spreads its writes over hundreds of
//! object files, each written rarely, so nearly every synchronous 4 KiB
//! write paid a third disk write, for a timestamp nobody reads: tracing
//! `block:block_rq_issue` during flushed 4 KiB writes showed, per
//! `fdatasync`, the data block, the trailer (header and checksum pages) and
//! a 4 KiB metadata write. With three replicas on one disk that is three
//! disk writes of nine per client write.
//!
//! An overwrite of blocks the file already holds, in a file whose earlier
//! writes are all durable, changes no metadata that matters to its data:
//! the dirty pages from the written offset to the end of the file (the
//! data, then the trailer) are written with `sync_file_range`, and the
//! disk's cache is flushed by `fdatasync` of an empty file that is never
//! written, which on ext4 is exactly a cache flush. Only on ext4, where
//! that is known to hold (a file system may skip the flush for a clean
//! file, as btrfs can), and not with `data=journal`, where written pages
//! are durable only once the journal commits.
//!
//! Invariant (kept by the caller, [`super::files`]): used only for a write
//! whose blocks were all written before (the checksum table says so) into
//! an object with no unsynced writes and no flush syncing it, so no block
//! allocation or size change of that file waits to be made durable.
//! Everything else takes `fdatasync`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// ext2/3/4's `statfs` magic.
const EXT4_SUPER_MAGIC: i64 = 0xEF53;

/// Name of the empty file whose `fdatasync` flushes the disk's cache; not
/// an object id, so the store's scan skips it.
const FLUSH_FILE: &str = ".flush";

/// Syncs overwrites without their inode (see the module comment).
pub(super) struct OverwriteSync {
    flush_file: File,
}

impl OverwriteSync {
    /// `None` where a cache flush by a clean file's `fdatasync` is not known
    /// to hold (anything but ext4).
    pub(super) fn open(obj_dir: &Path) -> io::Result<Option<OverwriteSync>> {
        let fs = rustix::fs::statfs(obj_dir).map_err(io::Error::from)?;
        #[allow(clippy::unnecessary_cast)] // f_type's width differs by target
        // Options that cannot be read count as data=journal: off.
        if fs.f_type as i64 != EXT4_SUPER_MAGIC || journals_data(obj_dir).unwrap_or(true) {
            return Ok(None);
        }
        let path = obj_dir.join(FLUSH_FILE);
        let flush_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        // Empty and synced once: its own fdatasync never has anything to
        // write but the cache flush.
        flush_file.sync_all()?;
        Ok(Some(OverwriteSync { flush_file }))
    }

    /// Makes durable what was written into `file` at or after `from` (an
    /// overwrite, see the invariant): writes those pages, waits for them,
    /// then flushes the disk's cache.
    pub(super) fn sync(&self, file: &File, from: u64) -> io::Result<()> {
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        let from = (from & !4095) as libc::off64_t;
        // SAFETY: the descriptor is borrowed from a live `File` for the
        // call; no memory is passed. Length 0 means "to the end of file".
        let r = unsafe { libc::sync_file_range(file.as_raw_fd(), from, 0, flags) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // The pages are in the disk's cache; this makes them durable.
        self.flush_file.sync_data()
    }
}

/// True if the file system holding `dir` is mounted `data=journal`. The
/// options are those of the mount whose device is `dir`'s in
/// `/proc/self/mountinfo` (a bind mount shares its file system's options).
fn journals_data(dir: &Path) -> io::Result<bool> {
    let dev = rustix::fs::stat(dir).map_err(io::Error::from)?.st_dev;
    let id = format!("{}:{}", rustix::fs::major(dev), rustix::fs::minor(dev));
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mountinfo
        .lines()
        .find(|line| line.split(' ').nth(2) == Some(id.as_str()))
        // After the " - " separator: type, source, file-system options.
        .and_then(|line| line.split(" - ").nth(1))
        .and_then(|tail| tail.split(' ').nth(2))
        .is_some_and(|opts| opts.split(',').any(|o| o == "data=journal")))
}
