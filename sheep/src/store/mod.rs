//! The local object store: one sparse file per object under `STORE_DIR/obj`.
//!
//! File names are the object id as 16 lowercase hex digits, as in Sheepdog.
//! Each file also carries, beyond the object's bytes, a version and a
//! checksum per 4 KiB block ([`layout`]). Reads check the blocks they
//! return and never hand out bytes that fail their checksum.
//!
//! A copy-on-write child may be stored *backed*: it holds only the blocks
//! written into it and names the (immutable) object its other blocks are
//! read from. The store reports which parts of a read the copy has never
//! written; the gateway reads them from the backing object. A backed copy
//! becomes a plain one when [`ObjectStore::fill`] copies the backing
//! object's blocks in.
//!
//! Durability (unless the daemon runs with `-n`):
//! - A created object is written to a temporary file in `obj/` (made ahead
//!   of need, see [`pool`]), fsynced, renamed into place and the directory
//!   fsynced, so after a crash an object either exists whole or not at
//!   all.
//! - A partial write is `pwrite` (data, checksums, version) then `fdatasync`
//!   when the client asked for a synchronous write. Writes that did not ask
//!   are remembered as dirty and synced by the next [`ObjectStore::flush`].
//!
//! Concurrency: writers of one object are serialized (checksums of partly
//! written blocks are read-modify-write); readers are not, and a reader that
//! sees a block mid-write re-reads it under the writers' lock before calling
//! it corrupt. The [`gate`] orders client I/O against recovery.
//!
//! File I/O is blocking, so every operation runs on tokio's blocking pool.

pub mod gate;
pub mod layout;
mod pool;

pub use gate::Gate;
pub use layout::{Backing, Meta, Version, MAX_OBJECT_LEN};

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use qemu_proto::ObjectId;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist here.
    #[error("no object {0}")]
    NoObject(ObjectId),
    /// An exclusive create found the object already there.
    #[error("object {0} exists already")]
    Exists(ObjectId),
    /// A block of the local copy failed its checksum.
    #[error("object {0} is corrupt at byte {1}")]
    Corrupt(ObjectId, u64),
    /// The object is being recovered and did not become available in time.
    #[error("object {0} is being recovered")]
    Busy(ObjectId),
    /// A range beyond the largest object the store holds.
    #[error("range {1}+{2} is beyond the largest object ({oid})", oid = .0)]
    OutOfRange(ObjectId, u64, u64),
    /// A write into a backed copy partly covers never-written blocks: the
    /// caller must fetch their backing content and write again.
    #[error("object {oid} needs {n} blocks of its backing object", n = .blocks.len())]
    NeedBase {
        /// The object written.
        oid: ObjectId,
        /// Its backing object.
        backing: Backing,
        /// Block numbers (of 4 KiB) whose backing content is needed.
        blocks: Vec<u64>,
    },
    /// The disk failed.
    #[error("object store I/O: {0}")]
    Io(#[from] io::Error),
}

/// Bytes read from a local copy.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadOut {
    /// The bytes. Parts the copy never wrote are zeros.
    pub data: Vec<u8>,
    /// For a backed copy with never-written parts in the read (and for
    /// every fetch of a backed copy): its backing object and those parts,
    /// as (object offset, length), which read as the backing object's
    /// bytes, not as zeros.
    pub from_backing: Option<(Backing, Vec<(u64, u64)>)>,
}

/// Backing content for blocks a write into a backed copy needs: (block
/// number, 4 KiB). Empty for every write but a retried one.
pub type BaseBlocks = Vec<(u64, Vec<u8>)>;

/// How [`ObjectStore::create`] treats an object that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CreateMode {
    /// Replace it (a client's CREATE_AND_WRITE retried after a failure, or a
    /// recovered copy installed under the exclusive lock).
    Replace,
    /// Leave it and fail with [`StoreError::Exists`] (a copy made for a
    /// replica that lacked the object must never overwrite a copy that a
    /// newer write already created).
    Exclusive,
}

/// How a new copy is made (see [`Inner::create`]).
#[derive(Debug, Clone, Copy)]
struct NewCopy {
    version: Version,
    backing: Option<Backing>,
    mode: CreateMode,
    sync: bool,
    paced: bool,
}

/// How much of a paced install is written between syncs. A flush waits for
/// everything written before it, so a client's flush waits behind what
/// background work left unsynced: bounding that to a few hundred KiB per
/// stream keeps a client's flush fast during recovery, at little cost to
/// recovery's own throughput (measured on this project's benchmark disk:
/// 4 MiB syncs made a concurrent 4 KiB write + flush 26 times slower,
/// 256 KiB syncs about twice, with 2/3 of the bulk throughput).
const PACE: usize = 256 << 10;

/// What the next flush must sync.
#[derive(Default)]
struct Dirty {
    objects: HashSet<ObjectId>,
    dir: bool,
}

/// Open files kept for reuse; opening a file per request costs more than
/// the 4 KiB write it serves.
const OPEN_FILES: usize = 1024;

/// Unsynced writes up to this size run on the calling task (see
/// [`ObjectStore::write`]).
const INLINE_WRITE: usize = 64 << 10;

/// Reads up to this size try the page cache on the calling task first
/// (see [`ObjectStore::read`]).
const INLINE_READ: usize = 64 << 10;

/// Stripes of the writers' lock.
const WRITER_STRIPES: usize = 256;

/// The objects of this node.
pub struct ObjectStore {
    inner: Arc<Inner>,
    gate: Gate,
    activity: ClientActivity,
}

/// When client I/O last reached this store, so background work (recovery)
/// can yield to it. One relaxed store of a millisecond count per request.
struct ClientActivity {
    opened: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl ClientActivity {
    fn new() -> Self {
        ClientActivity {
            opened: std::time::Instant::now(),
            // Never: "long ago" even right after opening.
            last_ms: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_ms
            .store(self.now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    fn within(&self, d: std::time::Duration) -> bool {
        let last = self.last_ms.load(std::sync::atomic::Ordering::Relaxed);
        last != u64::MAX && self.now_ms().saturating_sub(last) <= d.as_millis() as u64
    }
}

struct Inner {
    obj_dir: PathBuf,
    nosync: bool,
    dirty: Mutex<Dirty>,
    pool: Arc<pool::FilePool>,
    /// Version and extent of every object held (the source of truth is each
    /// file's header; this mirrors it).
    metas: Mutex<HashMap<ObjectId, Meta>>,
    files: Mutex<HashMap<ObjectId, Arc<File>>>,
    writers: Vec<Mutex<()>>,
}

impl ObjectStore {
    /// Opens the store under `store_dir`, creating `obj/` if needed and
    /// discarding temporary files a crash left behind. Every object found
    /// starts unverified: this node may have missed writes while it was
    /// down.
    pub fn open(store_dir: &Path, nosync: bool) -> io::Result<Self> {
        let obj_dir = store_dir.join("obj");
        std::fs::create_dir_all(&obj_dir)?;
        // Half-made objects and unused pooled files of an earlier run (and
        // the temporary directory of older versions).
        let _ = std::fs::remove_dir_all(obj_dir.join(".tmp"));
        for e in std::fs::read_dir(&obj_dir)? {
            let e = e?;
            if pool::FilePool::owns(&e.file_name()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let pool = pool::FilePool::new(obj_dir.clone());
        pool.start()?;
        let inner = Inner {
            obj_dir,
            nosync,
            dirty: Mutex::new(Dirty::default()),
            pool,
            metas: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            writers: (0..WRITER_STRIPES).map(|_| Mutex::new(())).collect(),
        };
        let metas = inner.scan()?;
        let gate = Gate::default();
        gate.suspect(metas.keys().copied());
        *inner.metas.lock().expect("metas lock") = metas;
        Ok(ObjectStore {
            inner: Arc::new(inner),
            gate,
            activity: ClientActivity::new(),
        })
    }

    /// The gate between client I/O and recovery.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// True if client I/O reached this store within `d`.
    pub fn clients_active_within(&self, d: std::time::Duration) -> bool {
        self.activity.within(d)
    }

    /// Version and extent of the local copy, if any.
    pub fn meta(&self, oid: ObjectId) -> Option<Meta> {
        self.inner.meta(oid)
    }

    /// Every object held, with its version.
    pub fn list(&self) -> Vec<(ObjectId, Meta)> {
        let mut v: Vec<(ObjectId, Meta)> = self
            .inner
            .metas
            .lock()
            .expect("metas lock")
            .iter()
            .map(|(o, m)| (*o, *m))
            .collect();
        v.sort_by_key(|(o, _)| *o);
        v
    }

    /// Client read of `len` bytes at `offset`; holes and bytes past the end
    /// are zeros. Waits while the copy is unverified or being recovered.
    pub async fn read(
        &self,
        oid: ObjectId,
        offset: u64,
        len: usize,
    ) -> Result<ReadOut, StoreError> {
        let guard = self.gate.client(oid).await?;
        self.activity.touch();
        if len <= INLINE_READ {
            // Served here if every byte is in the page cache; a read that
            // would wait for the disk goes to the blocking pool instead.
            match self.inner.read_with(oid, offset, len, layout::Wait::No) {
                // Would block (or the kernel cannot tell without trying):
                // the blocking pool reads it, and reports real errors.
                Err(StoreError::Io(_)) => {}
                // A bad block is judged again below, with writers held off.
                Err(StoreError::Corrupt(..)) => {}
                r => return r,
            }
        }
        let r = self.blocking(move |s| s.read(oid, offset, len)).await;
        drop(guard);
        self.on_corrupt(&r);
        r
    }

    /// Client write into an existing object; `sync` makes it durable before
    /// return. `write_id` identifies the write on every replica. `base` is
    /// empty unless this retries a write that got [`StoreError::NeedBase`].
    pub async fn write(
        &self,
        oid: ObjectId,
        offset: u64,
        data: bytes::Bytes,
        sync: bool,
        write_id: u64,
        base: BaseBlocks,
    ) -> Result<(), StoreError> {
        let _guard = self.gate.client(oid).await?;
        self.activity.touch();
        if !sync && data.len() <= INLINE_WRITE {
            // A small unsynced write only copies into the page cache: doing
            // it here costs less than the two thread switches of the
            // blocking pool, which dominate a 4 KiB write's latency.
            return self.inner.write(oid, offset, &data, false, write_id, &base);
        }
        self.blocking(move |s| s.write(oid, offset, &data, sync, write_id, &base))
            .await
    }

    /// Client create: the object holds `data` at `offset`, and elsewhere
    /// zeros, or the `backing` object's bytes (see [`ObjectStore::write`]
    /// for `base`).
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        oid: ObjectId,
        offset: u64,
        data: bytes::Bytes,
        mode: CreateMode,
        sync: bool,
        write_id: u64,
        backing: Option<Backing>,
        base: BaseBlocks,
    ) -> Result<(), StoreError> {
        let _guard = self.gate.client(oid).await?;
        self.activity.touch();
        let new = NewCopy {
            version: Version::created(write_id),
            backing,
            mode,
            sync,
            paced: false,
        };
        if !sync && data.len() <= INLINE_WRITE {
            // As for small writes: with a file made ahead (see [`pool`]),
            // an unsynced create is a few page-cache writes and a rename,
            // cheaper here than through the blocking pool.
            return self.inner.create(oid, offset, &data, new, &base);
        }
        self.blocking(move |s| s.create(oid, offset, &data, new, &base))
            .await
    }

    /// The whole object and its version, checked, for copying it to another
    /// node. Does not wait for verification: the caller chose this copy.
    /// A backed copy's never-written parts must be read from its backing.
    pub async fn fetch(&self, oid: ObjectId) -> Result<(Version, ReadOut), StoreError> {
        let guard = self.gate.internal(oid).await;
        let r = self
            .blocking(move |s| {
                let meta = s.meta(oid).ok_or(StoreError::NoObject(oid))?;
                let mut read = s.read(oid, 0, meta.extent as usize)?;
                if let Some(backing) = meta.backing {
                    // Past its extent a backed copy is its backing object:
                    // the caller must resolve even when every byte read
                    // is the copy's own.
                    read.from_backing.get_or_insert((backing, Vec::new()));
                }
                Ok((meta.version, read))
            })
            .await;
        drop(guard);
        self.on_corrupt(&r);
        r
    }

    /// Installs a copy fetched from another node, with its version. With
    /// [`CreateMode::Replace`] the caller must hold the object's exclusive
    /// gate lock, so no client write is lost between fetch and install.
    /// A `paced` install (background recovery) makes its bytes durable a
    /// few hundred KiB at a time (see [`PACE`]).
    pub async fn install(
        &self,
        oid: ObjectId,
        version: Version,
        data: bytes::Bytes,
        mode: CreateMode,
        paced: bool,
    ) -> Result<(), StoreError> {
        // A recovered copy is always made durable: the copy it may replace
        // was, and the node it came from may be about to drop its own.
        let new = NewCopy {
            version,
            backing: None,
            mode,
            sync: true,
            paced,
        };
        self.blocking(move |s| s.create(oid, 0, &data, new, &[]))
            .await?;
        self.gate.verified(oid);
        Ok(())
    }

    /// Makes a copy backed by `backing` a plain one: writes the backing
    /// object's `content` into every block the copy never wrote, durably,
    /// then forgets the backing. Returns false (doing nothing) if the copy
    /// is missing or not backed by `backing`.
    pub async fn fill(
        &self,
        oid: ObjectId,
        backing: Backing,
        content: bytes::Bytes,
    ) -> Result<bool, StoreError> {
        let _guard = self.gate.internal(oid).await;
        self.blocking(move |s| s.fill(oid, backing, &content)).await
    }

    /// Checks every block of the local copy: its version and a digest of
    /// its content, or the corruption found.
    pub async fn scrub(&self, oid: ObjectId) -> Result<(Version, u32), StoreError> {
        let _guard = self.gate.internal(oid).await;
        self.blocking(move |s| {
            let meta = s.meta(oid).ok_or(StoreError::NoObject(oid))?;
            let file = s.file(oid)?;
            match layout::scrub(&file, meta.extent)? {
                Ok(digest) => Ok((meta.version, digest)),
                Err(c) => Err(StoreError::Corrupt(oid, c.offset)),
            }
        })
        .await
    }

    /// Removes an object; removing a missing object is not an error.
    pub async fn remove(&self, oid: ObjectId) -> Result<(), StoreError> {
        self.blocking(move |s| s.remove(oid)).await?;
        self.gate.verified(oid);
        Ok(())
    }

    /// Makes every write acknowledged without sync durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.blocking(|s| s.flush()).await
    }

    /// Removes every object (a new cluster format discards the old data).
    pub async fn purge(&self) -> Result<(), StoreError> {
        let oids: Vec<ObjectId> = self.list().into_iter().map(|(o, _)| o).collect();
        self.blocking(move |s| {
            for oid in oids {
                s.remove(oid)?;
            }
            s.sync_dir()?;
            Ok(())
        })
        .await?;
        for oid in self.gate.unverified() {
            self.gate.verified(oid);
        }
        Ok(())
    }

    /// (bytes used by objects, bytes free on the file system).
    pub async fn usage(&self) -> Result<(u64, u64), StoreError> {
        self.blocking(|s| s.usage()).await
    }

    /// How full the store's file system is, in percent.
    pub fn fill_percent(&self) -> io::Result<u64> {
        let st = rustix::fs::statvfs(&self.inner.obj_dir).map_err(io::Error::from)?;
        if st.f_blocks == 0 {
            return Ok(0);
        }
        Ok((st.f_blocks - st.f_bavail.min(st.f_blocks)) * 100 / st.f_blocks)
    }

    /// A corrupt copy is suspect from now on: the recovery engine verifies
    /// it (and fetches a good copy) with priority.
    fn on_corrupt<T>(&self, r: &Result<T, StoreError>) {
        if let Err(StoreError::Corrupt(oid, at)) = r {
            tracing::warn!(%oid, at, "checksum mismatch: repairing the local copy");
            self.gate.corrupt(*oid);
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Io(io::Error::other(e)))?
    }
}

impl Inner {
    fn path(&self, oid: ObjectId) -> PathBuf {
        self.obj_dir.join(oid.to_string())
    }

    fn meta(&self, oid: ObjectId) -> Option<Meta> {
        self.metas.lock().expect("metas lock").get(&oid).copied()
    }

    /// Reads every object's header (at startup).
    fn scan(&self) -> io::Result<HashMap<ObjectId, Meta>> {
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
    fn file(&self, oid: ObjectId) -> Result<Arc<File>, StoreError> {
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

    fn forget_file(&self, oid: ObjectId) {
        self.files.lock().expect("files lock").remove(&oid);
    }

    fn writer(&self, oid: ObjectId) -> std::sync::MutexGuard<'_, ()> {
        let i = (oid.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize % WRITER_STRIPES;
        self.writers[i].lock().expect("writer lock")
    }

    fn check_range(oid: ObjectId, offset: u64, len: u64) -> Result<(), StoreError> {
        match offset.checked_add(len) {
            Some(end) if end <= MAX_OBJECT_LEN => Ok(()),
            _ => Err(StoreError::OutOfRange(oid, offset, len)),
        }
    }

    fn read(&self, oid: ObjectId, offset: u64, len: usize) -> Result<ReadOut, StoreError> {
        self.read_with(oid, offset, len, layout::Wait::Yes)
    }

    fn read_with(
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

    fn write(
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
        {
            let _w = self.writer(oid);
            let mut meta = self.meta(oid).ok_or(StoreError::NoObject(oid))?;
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
        }
        if sync {
            // The client waits for this write to be durable on every
            // replica; data, checksums and version share the file, so one
            // fdatasync covers them.
            self.sync_file(&file)?;
        } else {
            self.dirty.lock().expect("dirty lock").objects.insert(oid);
        }
        Ok(())
    }

    fn create(
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
        } else {
            let mut dirty = self.dirty.lock().expect("dirty lock");
            dirty.objects.insert(oid);
            dirty.dir = true;
        }
        Ok(())
    }

    fn fill(&self, oid: ObjectId, backing: Backing, content: &[u8]) -> Result<bool, StoreError> {
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

    fn remove(&self, oid: ObjectId) -> Result<(), StoreError> {
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

    fn flush(&self) -> Result<(), StoreError> {
        let dirty = std::mem::take(&mut *self.dirty.lock().expect("dirty lock"));
        let result = (|| {
            for oid in &dirty.objects {
                match self.file(*oid) {
                    Ok(f) => self.sync_file(&f)?,
                    Err(StoreError::NoObject(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            // Only a create changes the directory; plain writes need no
            // directory sync.
            if dirty.dir {
                self.sync_dir()?;
            }
            Ok(())
        })();
        if result.is_err() {
            // Keep them dirty: the next flush must try again.
            let mut d = self.dirty.lock().expect("dirty lock");
            d.objects.extend(dirty.objects);
            d.dir |= dirty.dir;
        }
        result
    }

    fn usage(&self) -> Result<(u64, u64), StoreError> {
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

    fn sync_file(&self, file: &File) -> io::Result<()> {
        if self.nosync {
            return Ok(());
        }
        file.sync_data()
    }

    fn sync_dir(&self) -> io::Result<()> {
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

#[cfg(test)]
mod tests;
