//! The object files of one store: one sparse file per object under
//! `STORE_DIR/obj` (layout in [`super::layout`]), and the blocking
//! operations on them. Everything here may wait for the disk; the async
//! [`super::ObjectStore`] decides what runs on the blocking pool.
//!
//! Invariants:
//! - `metas` mirrors every object file's header; it changes only under the
//!   object's writer lock, after the file did.
//! - Writers of one object are serialized by a striped lock (checksums of
//!   partly written blocks are read-modify-write); readers are not.
//! - Creates write a file made ahead ([`super::pool`]) and rename it into
//!   place, so an object appears whole or not at all.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use qemu_proto::ObjectId;

use super::layout::{self, Backing, Meta, Version, MAX_OBJECT_LEN};
use super::overwrite::OverwriteSync;
use super::pool::FilePool;
use super::{CreateMode, ReadOut, StoreError, SyncedWrites};

/// How a new copy is made (see [`Files::create`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct NewCopy {
    pub(super) version: Version,
    pub(super) backing: Option<Backing>,
    pub(super) mode: CreateMode,
    pub(super) sync: bool,
    pub(super) paced: bool,
}

/// How much of a paced install is written between syncs. A flush waits for
/// everything written before it, so a client's flush waits behind what
/// background work left unsynced: bounding that to a few hundred KiB per
/// stream keeps a client's flush fast during recovery, at little cost to
/// recovery's own throughput (measured on this project's benchmark disk:
/// 4 MiB syncs made a concurrent 4 KiB write + flush 26 times slower,
/// 256 KiB syncs about twice, with 2/3 of the bulk throughput).
const PACE: usize = 256 << 10;

/// What the next flush must sync. Whoever takes something out of it to
/// sync holds the matching lock of [`Files`] (`flushing`, `dir_syncing`)
/// until the sync is done, so nobody finds it clean while a sync that
/// covers their writes is still in flight.
#[derive(Default)]
struct Dirty {
    objects: HashSet<ObjectId>,
    /// Objects a flush took and is still syncing: not durable yet.
    syncing: HashSet<ObjectId>,
    dir: bool,
}

/// Open files kept for reuse; opening a file per request costs more than
/// the 4 KiB write it serves.
const OPEN_FILES: usize = 1024;

/// Stripes of the writers' lock.
const WRITER_STRIPES: usize = 256;

/// The object files of a store, and the blocking operations on them.
pub(super) struct Files {
    obj_dir: PathBuf,
    nosync: bool,
    dirty: Mutex<Dirty>,
    /// Held by a flush from taking the dirty objects until they are synced.
    flushing: Mutex<()>,
    /// Held from taking the directory's dirty flag until it is synced.
    dir_syncing: Mutex<()>,
    pool: Arc<FilePool>,
    /// Version and extent of every object held (the source of truth is each
    /// file's header; this mirrors it).
    metas: Mutex<HashMap<ObjectId, Meta>>,
    files: Mutex<HashMap<ObjectId, Arc<File>>>,
    writers: Vec<Mutex<()>>,
    /// Syncs overwrites without their inode (`None` with `-n`, and off
    /// ext4).
    overwrite: Option<OverwriteSync>,
    /// Synchronous writes so far synced by `fdatasync`, and by `overwrite`.
    synced_by_fdatasync: AtomicU64,
    synced_as_overwrite: AtomicU64,
}

impl Files {
    /// Opens the object directory, creating it if needed and discarding
    /// what a crash left half-made (and files made ahead but unused).
    pub(super) fn open(obj_dir: PathBuf, nosync: bool) -> io::Result<Files> {
        std::fs::create_dir_all(&obj_dir)?;
        // The temporary directory of older versions went too.
        let _ = std::fs::remove_dir_all(obj_dir.join(".tmp"));
        for e in std::fs::read_dir(&obj_dir)? {
            let e = e?;
            if FilePool::owns(&e.file_name()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let overwrite = if nosync {
            None
        } else {
            OverwriteSync::open(&obj_dir)?
        };
        let pool = FilePool::new(obj_dir.clone());
        pool.start()?;
        Ok(Files {
            obj_dir,
            nosync,
            dirty: Mutex::new(Dirty::default()),
            flushing: Mutex::new(()),
            dir_syncing: Mutex::new(()),
            pool,
            metas: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            writers: (0..WRITER_STRIPES).map(|_| Mutex::new(())).collect(),
            overwrite,
            synced_by_fdatasync: AtomicU64::new(0),
            synced_as_overwrite: AtomicU64::new(0),
        })
    }

    /// How full the file system is, in percent.
    pub(super) fn fill_percent(&self) -> io::Result<u64> {
        let st = rustix::fs::statvfs(&self.obj_dir).map_err(io::Error::from)?;
        if st.f_blocks == 0 {
            return Ok(0);
        }
        Ok((st.f_blocks - st.f_bavail.min(st.f_blocks)) * 100 / st.f_blocks)
    }

    /// Takes the metadata [`Files::scan`] found as the objects held.
    pub(super) fn adopt(&self, metas: HashMap<ObjectId, Meta>) {
        *self.metas.lock().expect("metas lock") = metas;
    }

    /// Every object held, with its version, in id order.
    pub(super) fn list(&self) -> Vec<(ObjectId, Meta)> {
        let mut v: Vec<(ObjectId, Meta)> = self
            .metas
            .lock()
            .expect("metas lock")
            .iter()
            .map(|(o, m)| (*o, *m))
            .collect();
        v.sort_by_key(|(o, _)| *o);
        v
    }

    pub(super) fn path(&self, oid: ObjectId) -> PathBuf {
        self.obj_dir.join(oid.to_string())
    }

    pub(super) fn meta(&self, oid: ObjectId) -> Option<Meta> {
        self.metas.lock().expect("metas lock").get(&oid).copied()
    }

    /// Reads every object's header (at startup).
    pub(super) fn scan(&self) -> io::Result<HashMap<ObjectId, Meta>> {
        let mut out = HashMap::new();
        for e in std::fs::read_dir(&self.obj_dir)? {
            let e = e?;
            let Some(oid) = e.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let file = File::open(e.path())?;
            let meta = match layout::read_meta(&file)? {
                Some(m) => m,
                // Not written by this store: keep it, unversioned, so a
                // check can compare it and recovery can replace it.
                None => Meta {
                    version: Version::default(),
                    extent: file.metadata()?.len().min(MAX_OBJECT_LEN),
                    backing: None,
                },
            };
            out.insert(oid, meta);
        }
        Ok(out)
    }

    /// An open handle on an existing object.
    pub(super) fn file(&self, oid: ObjectId) -> Result<Arc<File>, StoreError> {
        if let Some(f) = self.files.lock().expect("files lock").get(&oid) {
            return Ok(f.clone());
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(oid))
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => StoreError::NoObject(oid),
                _ => StoreError::Io(e),
            })?;
        let file = Arc::new(file);
        let mut files = self.files.lock().expect("files lock");
        if files.len() >= OPEN_FILES {
            files.clear();
        }
        files.insert(oid, file.clone());
        Ok(file)
    }

    pub(super) fn forget_file(&self, oid: ObjectId) {
        self.files.lock().expect("files lock").remove(&oid);
    }

    pub(super) fn writer(&self, oid: ObjectId) -> std::sync::MutexGuard<'_, ()> {
        let i = (oid.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize % WRITER_STRIPES;
        self.writers[i].lock().expect("writer lock")
    }

    pub(super) fn check_range(oid: ObjectId, offset: u64, len: u64) -> Result<(), StoreError> {
        match offset.checked_add(len) {
            Some(end) if end <= MAX_OBJECT_LEN => Ok(()),
            _ => Err(StoreError::OutOfRange(oid, offset, len)),
        }
    }

    pub(super) fn read(
        &self,
        oid: ObjectId,
        offset: u64,
        len: usize,
    ) -> Result<ReadOut, StoreError> {
        self.read_with(oid, offset, len, layout::Wait::Yes)
    }

    pub(super) fn read_with(
        &self,
        oid: ObjectId,
        offset: u64,
        len: usize,
        wait: layout::Wait,
    ) -> Result<ReadOut, StoreError> {
        Self::check_range(oid, offset, len as u64)?;
        let file = self.file(oid)?;
        let read = match layout::read_checked_with(&file, offset, len, wait)? {
            Ok(read) => read,
            Err(c) if wait == layout::Wait::No => return Err(StoreError::Corrupt(oid, c.offset)),
            Err(_) => {
                // Maybe a writer was between its data and its checksums:
                // read again with writers held off before judging.
                let _w = self.writer(oid);
                layout::read_checked(&file, offset, len)?
                    .map_err(|c| StoreError::Corrupt(oid, c.offset))?
            }
        };
        // The backing is read after the blocks: a fill that ends between
        // the two leaves blocks reported unwritten that the backing still
        // supplies correctly (it never changes).
        let from_backing = match self.meta(oid).and_then(|m| m.backing) {
            Some(backing) if !read.unwritten.is_empty() => Some((backing, read.unwritten)),
            _ => None,
        };
        Ok(ReadOut {
            data: read.data,
            from_backing,
        })
    }

    pub(super) fn write(
        &self,
        oid: ObjectId,
        offset: u64,
        data: &[u8],
        sync: bool,
        write_id: u64,
        base: &[(u64, Vec<u8>)],
    ) -> Result<(), StoreError> {
        Self::check_range(oid, offset, data.len() as u64)?;
        let file = self.file(oid)?;
        let overwrite = {
            let _w = self.writer(oid);
            let mut meta = self.meta(oid).ok_or(StoreError::NoObject(oid))?;
            // Decided before the write changes the checksum table.
            let overwrite = if sync {
                self.overwrite_sync_for(oid, &file, offset, data.len())?
            } else {
                None
            };
            let written = (|| {
                if let Err(need) =
                    layout::write_checked(&file, offset, data, meta.backing.is_some(), base)?
                {
                    return Err(StoreError::NeedBase {
                        oid,
                        backing: meta.backing.expect("only a backed copy needs a base"),
                        blocks: need.blocks,
                    });
                }
                meta.version = meta.version.next(write_id);
                meta.extent = meta.extent.max(offset + data.len() as u64);
                layout::write_meta(&file, &meta)?;
                self.metas.lock().expect("metas lock").insert(oid, meta);
                Ok(())
            })();
            if !sync || written.is_err() {
                // Marked before the writers' lock is released, so a
                // synchronous write into this copy never finds it clean
                // while this write's blocks may await allocation on disk
                // (see `overwrite_sync_for`).
                self.dirty.lock().expect("dirty lock").objects.insert(oid);
            }
            written?;
            overwrite
        };
        if let Some(o) = overwrite {
            // As below, without the inode (see [`OverwriteSync`]).
            o.sync(&file, offset)?;
            self.synced_as_overwrite.fetch_add(1, Ordering::Relaxed);
        } else if sync {
            // The client waits for this write to be durable on every
            // replica; data, checksums and version share the file, so one
            // fdatasync covers them.
            self.sync_file(&file)?;
            // A copy created without sync since the last flush has its name
            // on disk only once the directory is synced: this write must
            // not outlive a crash in a file nobody can find.
            self.sync_dir_if_dirty()?;
            self.synced_by_fdatasync.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    pub(super) fn create(
        &self,
        oid: ObjectId,
        offset: u64,
        data: &[u8],
        new: NewCopy,
        base: &[(u64, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let NewCopy {
            version,
            backing,
            mode,
            sync,
            paced,
        } = new;
        Self::check_range(oid, offset, data.len() as u64)?;
        let final_path = self.path(oid);
        if mode == CreateMode::Exclusive && self.meta(oid).is_some() {
            return Err(StoreError::Exists(oid));
        }
        let meta = Meta {
            version,
            extent: offset + data.len() as u64,
            backing,
        };
        let (tmp, file) = self.pool.take()?;
        let result = (|| -> Result<(), StoreError> {
            if paced && sync && backing.is_none() && offset.is_multiple_of(PACE as u64) {
                for (i, chunk) in data.chunks(PACE).enumerate() {
                    let at = offset + (i * PACE) as u64;
                    layout::write_checked(&file, at, chunk, false, &[])?
                        .expect("a plain copy needs no base");
                    self.sync_file(&file)?;
                }
            } else if let Err(need) =
                layout::write_checked(&file, offset, data, backing.is_some(), base)?
            {
                return Err(StoreError::NeedBase {
                    oid,
                    backing: backing.expect("only a backed copy needs a base"),
                    blocks: need.blocks,
                });
            }
            layout::write_meta(&file, &meta)?;
            if sync {
                // The content must be on disk before the name makes it
                // visible, or a crash could leave a whole-looking object of
                // zeros.
                self.sync_file(&file)?;
            }
            let _w = self.writer(oid);
            match mode {
                CreateMode::Replace => std::fs::rename(&tmp, &final_path)?,
                CreateMode::Exclusive => {
                    rename_noreplace(&tmp, &final_path).map_err(|e| match e.kind() {
                        ErrorKind::AlreadyExists => StoreError::Exists(oid),
                        _ => StoreError::Io(e),
                    })?
                }
            }
            if !sync {
                // Marked after the rename, so a directory sync that clears
                // the mark covers it, and before the writers' lock is
                // released, so a synchronous write into this copy (it takes
                // that lock) finds the directory still to sync.
                let mut dirty = self.dirty.lock().expect("dirty lock");
                dirty.objects.insert(oid);
                dirty.dir = true;
            }
            // The old handle (if any) points at the replaced file.
            self.forget_file(oid);
            self.metas.lock().expect("metas lock").insert(oid, meta);
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        if sync {
            // The rename is durable only once the directory is.
            self.sync_dir()?;
        }
        Ok(())
    }

    pub(super) fn fill(
        &self,
        oid: ObjectId,
        backing: Backing,
        content: &[u8],
    ) -> Result<bool, StoreError> {
        Self::check_range(oid, 0, content.len() as u64)?;
        let file = match self.file(oid) {
            Ok(f) => f,
            Err(StoreError::NoObject(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        let _w = self.writer(oid);
        let Some(mut meta) = self.meta(oid).filter(|m| m.backing == Some(backing)) else {
            return Ok(false);
        };
        layout::fill_unwritten(&file, content)?;
        // The blocks must be on disk before the header stops naming the
        // backing object, which may be removed once this returns.
        self.sync_file(&file)?;
        meta.backing = None;
        meta.extent = meta.extent.max(content.len() as u64);
        layout::write_meta(&file, &meta)?;
        self.sync_file(&file)?;
        self.metas.lock().expect("metas lock").insert(oid, meta);
        Ok(true)
    }

    pub(super) fn remove(&self, oid: ObjectId) -> Result<(), StoreError> {
        let _w = self.writer(oid);
        self.dirty.lock().expect("dirty lock").objects.remove(&oid);
        self.forget_file(oid);
        self.metas.lock().expect("metas lock").remove(&oid);
        match std::fs::remove_file(self.path(oid)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn flush(&self) -> Result<(), StoreError> {
        // A flush that began while another syncs must not return before the
        // writes that one took are durable: it waits for it here.
        let _flushing = self.flushing.lock().expect("flushing lock");
        let objects = {
            let mut dirty = self.dirty.lock().expect("dirty lock");
            let objects = std::mem::take(&mut dirty.objects);
            dirty.syncing.clone_from(&objects);
            objects
        };
        let result = (|| {
            for oid in &objects {
                match self.file(*oid) {
                    Ok(f) => self.sync_file(&f)?,
                    Err(StoreError::NoObject(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            // Only a create changes the directory; plain writes need no
            // directory sync.
            Ok(self.sync_dir_if_dirty()?)
        })();
        // Only now are these objects durable, names included.
        let mut dirty = self.dirty.lock().expect("dirty lock");
        dirty.syncing.clear();
        if result.is_err() {
            // Keep them dirty: the next flush must try again.
            dirty.objects.extend(objects);
        }
        result
    }

    pub(super) fn usage(&self) -> Result<(u64, u64), StoreError> {
        let mut used = 0u64;
        for e in std::fs::read_dir(&self.obj_dir)? {
            let meta = e?.metadata()?;
            if meta.is_file() {
                used += meta.blocks() * 512;
            }
        }
        let st = rustix::fs::statvfs(&self.obj_dir).map_err(io::Error::from)?;
        Ok((used, st.f_bavail * st.f_frsize))
    }

    /// Synchronous writes so far, by how they were synced.
    pub(super) fn synced_writes(&self) -> SyncedWrites {
        SyncedWrites {
            fdatasync: self.synced_by_fdatasync.load(Ordering::Relaxed),
            overwrite: self.synced_as_overwrite.load(Ordering::Relaxed),
        }
    }

    /// The [`OverwriteSync`] for a synchronous write of `len` bytes at
    /// `offset` into `oid`, if it may be used: the write overwrites written
    /// blocks of a copy with no unsynced writes and no flush syncing it, so
    /// nothing about the file's allocation waits to be made durable. The
    /// caller holds the object's writer lock.
    fn overwrite_sync_for(
        &self,
        oid: ObjectId,
        file: &File,
        offset: u64,
        len: usize,
    ) -> io::Result<Option<&OverwriteSync>> {
        let Some(o) = &self.overwrite else {
            return Ok(None);
        };
        let clean = {
            let dirty = self.dirty.lock().expect("dirty lock");
            !dirty.objects.contains(&oid) && !dirty.syncing.contains(&oid)
        };
        Ok((clean && layout::blocks_written(file, offset, len as u64)?).then_some(o))
    }

    pub(super) fn sync_file(&self, file: &File) -> io::Result<()> {
        if self.nosync {
            return Ok(());
        }
        file.sync_data()
    }

    /// True while a create without sync has left the directory unsynced.
    #[cfg(test)]
    pub(super) fn dir_unsynced(&self) -> bool {
        self.dirty.lock().expect("dirty lock").dir
    }

    /// Syncs the directory if a create without sync changed it since the
    /// last directory sync; returns once any sync in flight is done.
    fn sync_dir_if_dirty(&self) -> io::Result<()> {
        let _syncing = self.dir_syncing.lock().expect("dir syncing lock");
        let dir = std::mem::take(&mut self.dirty.lock().expect("dirty lock").dir);
        if dir {
            if let Err(e) = self.sync_dir() {
                // Still unsynced: the next flush must try again.
                self.dirty.lock().expect("dirty lock").dir = true;
                return Err(e);
            }
        }
        Ok(())
    }

    pub(super) fn sync_dir(&self) -> io::Result<()> {
        if self.nosync {
            return Ok(());
        }
        File::open(&self.obj_dir)?.sync_all()
    }
}

/// Renames `from` to `to` unless `to` exists (`AlreadyExists` then), in one
/// step where the file system can; else link and unlink, which refuse to
/// replace too.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e.into()),
    }
}
