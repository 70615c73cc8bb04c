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
//!   when the client asked for a synchronous write, and the directory's too
//!   if a create without sync changed it since the last flush (else the
//!   durable write could sit in a file whose name a crash loses). Writes
//!   that did not ask are remembered as dirty and synced by the next
//!   [`ObjectStore::flush`]. On ext4, a synchronous overwrite of blocks a
//!   copy already holds, with nothing else of that copy unsynced, is synced
//!   without the file's inode instead ([`overwrite`]).
//!
//! Concurrency: writers of one object are serialized (checksums of partly
//! written blocks are read-modify-write); readers are not, and a reader that
//! sees a block mid-write re-reads it under the writers' lock before calling
//! it corrupt. The [`gate`] orders client I/O against recovery.
//!
//! File I/O is blocking ([`files`]), so operations run on tokio's blocking
//! pool, except those that only touch the page cache: small unsynced
//! writes and creates, and small reads whose bytes are cached (tried with
//! `RWF_NOWAIT`), which cost less than the pool's two thread switches.

mod files;
pub mod gate;
pub mod layout;
mod overwrite;
mod pool;

pub use gate::Gate;
pub use layout::{Backing, Meta, Version, MAX_OBJECT_LEN};

use files::{Files, NewCopy};

use std::io;
use std::path::Path;
use std::sync::Arc;

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

/// Synchronous writes into existing objects, by how they were made durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncedWrites {
    /// With `fdatasync` of the object file.
    pub fdatasync: u64,
    /// As overwrites, without the file's inode (see the `overwrite` module).
    pub overwrite: u64,
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

/// Unsynced writes up to this size run on the calling task (see
/// [`ObjectStore::write`]).
const INLINE_WRITE: usize = 64 << 10;

/// Reads up to this size try the page cache on the calling task first
/// (see [`ObjectStore::read`]).
const INLINE_READ: usize = 64 << 10;

/// The objects of this node.
pub struct ObjectStore {
    files: Arc<Files>,
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

impl ObjectStore {
    /// Opens the store under `store_dir`, creating `obj/` if needed and
    /// discarding temporary files a crash left behind. Every object found
    /// starts unverified: this node may have missed writes while it was
    /// down.
    pub fn open(store_dir: &Path, nosync: bool) -> io::Result<Self> {
        let files = Files::open(store_dir.join("obj"), nosync)?;
        let metas = files.scan()?;
        let gate = Gate::default();
        gate.suspect(metas.keys().copied());
        files.adopt(metas);
        Ok(ObjectStore {
            files: Arc::new(files),
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
        self.files.meta(oid)
    }

    /// Every object held, with its version.
    pub fn list(&self) -> Vec<(ObjectId, Meta)> {
        self.files.list()
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
            match self.files.read_with(oid, offset, len, layout::Wait::No) {
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
            return self.files.write(oid, offset, &data, false, write_id, &base);
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
            return self.files.create(oid, offset, &data, new, &base);
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
    /// few hundred KiB at a time (`PACE` in `files.rs`).
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

    /// Synchronous writes so far, by how they were made durable.
    pub fn synced_writes(&self) -> SyncedWrites {
        self.files.synced_writes()
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
        self.files.fill_percent()
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
        f: impl FnOnce(&Files) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.files.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Io(io::Error::other(e)))?
    }
}

#[cfg(test)]
mod tests;
