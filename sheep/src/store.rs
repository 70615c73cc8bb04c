//! The local object store: one sparse file per object under `STORE_DIR/obj`.
//!
//! File names are the object id as 16 lowercase hex digits, as in Sheepdog.
//! Unwritten ranges are holes and read as zeros, including past the end of
//! the file, so an object never needs to be allocated to its full size.
//!
//! Durability (unless the daemon runs with `-n`):
//! - A created object is written to a temporary file in `obj/.tmp`, fsynced,
//!   renamed into place and the directory fsynced, so after a crash an object
//!   either exists whole or not at all.
//! - A partial write is `pwrite` then `fdatasync` when the client asked for a
//!   synchronous write. Writes that did not ask are remembered as dirty and
//!   synced by the next [`ObjectStore::flush`].
//!
//! File I/O is blocking, so every operation runs on tokio's blocking pool.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// The disk failed.
    #[error("object store I/O: {0}")]
    Io(#[from] io::Error),
}

/// What the next flush must sync.
#[derive(Default)]
struct Dirty {
    /// Objects written without sync.
    objects: HashSet<ObjectId>,
    /// A create without sync renamed a file into the directory.
    dir: bool,
}

/// How [`ObjectStore::create`] treats an object that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CreateMode {
    /// Replace it (a client's CREATE_AND_WRITE retried after a failure).
    Replace,
    /// Leave it and fail with [`StoreError::Exists`] (repair of a missing copy
    /// must never overwrite a copy that a newer write already created).
    Exclusive,
}

/// The objects of this node.
pub struct ObjectStore {
    inner: Arc<Inner>,
}

struct Inner {
    obj_dir: PathBuf,
    tmp_dir: PathBuf,
    nosync: bool,
    dirty: Mutex<Dirty>,
    tmp_seq: AtomicU64,
}

impl ObjectStore {
    /// Opens the store under `store_dir`, creating `obj/` if needed and
    /// discarding temporary files a crash left behind.
    pub fn open(store_dir: &Path, nosync: bool) -> io::Result<Self> {
        let obj_dir = store_dir.join("obj");
        let tmp_dir = obj_dir.join(".tmp");
        std::fs::create_dir_all(&tmp_dir)?;
        for e in std::fs::read_dir(&tmp_dir)? {
            let _ = std::fs::remove_file(e?.path());
        }
        Ok(ObjectStore {
            inner: Arc::new(Inner {
                obj_dir,
                tmp_dir,
                nosync,
                dirty: Mutex::new(Dirty::default()),
                tmp_seq: AtomicU64::new(0),
            }),
        })
    }

    /// Reads `len` bytes at `offset`; holes and bytes past the end are zeros.
    pub async fn read(
        &self,
        oid: ObjectId,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, StoreError> {
        self.blocking(move |s| s.read(oid, offset, len)).await
    }

    /// Reads the whole object as stored (up to its last written byte).
    pub async fn read_all(&self, oid: ObjectId) -> Result<Vec<u8>, StoreError> {
        self.blocking(move |s| {
            let len = s.open_existing(oid, false)?.metadata()?.len();
            s.read(oid, 0, len as usize)
        })
        .await
    }

    /// Writes into an existing object; `sync` makes it durable before return.
    pub async fn write(
        &self,
        oid: ObjectId,
        offset: u64,
        data: bytes::Bytes,
        sync: bool,
    ) -> Result<(), StoreError> {
        self.blocking(move |s| s.write(oid, offset, &data, sync))
            .await
    }

    /// Creates an object holding `data` at `offset` (zeros elsewhere).
    pub async fn create(
        &self,
        oid: ObjectId,
        offset: u64,
        data: bytes::Bytes,
        mode: CreateMode,
        sync: bool,
    ) -> Result<(), StoreError> {
        self.blocking(move |s| s.create(oid, offset, &data, mode, sync))
            .await
    }

    /// Removes an object; removing a missing object is not an error.
    pub async fn remove(&self, oid: ObjectId) -> Result<(), StoreError> {
        self.blocking(move |s| s.remove(oid)).await
    }

    /// Makes every write acknowledged without sync durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.blocking(|s| s.flush()).await
    }

    /// Every object id stored here.
    pub async fn list(&self) -> Result<Vec<ObjectId>, StoreError> {
        self.blocking(|s| s.list()).await
    }

    /// Removes every object (a new cluster format discards the old data).
    pub async fn purge(&self) -> Result<(), StoreError> {
        self.blocking(|s| {
            for oid in s.list()? {
                s.remove(oid)?;
            }
            s.sync_dir()?;
            Ok(())
        })
        .await
    }

    /// (bytes used by objects, bytes free on the file system).
    pub async fn usage(&self) -> Result<(u64, u64), StoreError> {
        self.blocking(|s| s.usage()).await
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

    fn open_existing(&self, oid: ObjectId, write: bool) -> Result<File, StoreError> {
        OpenOptions::new()
            .read(true)
            .write(write)
            .open(self.path(oid))
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => StoreError::NoObject(oid),
                _ => StoreError::Io(e),
            })
    }

    fn read(&self, oid: ObjectId, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        let file = self.open_existing(oid, false)?;
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break, // past the end: the rest stays zero
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(buf)
    }

    fn write(&self, oid: ObjectId, offset: u64, data: &[u8], sync: bool) -> Result<(), StoreError> {
        let file = self.open_existing(oid, true)?;
        file.write_all_at(data, offset)?;
        if sync {
            // The client waits for this write to be durable on every replica.
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
        mode: CreateMode,
        sync: bool,
    ) -> Result<(), StoreError> {
        let final_path = self.path(oid);
        if mode == CreateMode::Exclusive && final_path.exists() {
            return Err(StoreError::Exists(oid));
        }
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .tmp_dir
            .join(format!("{oid}.{}.{seq}", std::process::id()));
        let result = (|| -> Result<(), StoreError> {
            let file = File::create(&tmp)?;
            file.write_all_at(data, offset)?;
            if sync {
                // The content must be on disk before the name makes it
                // visible, or a crash could leave a whole-looking object of
                // zeros.
                self.sync_file(&file)?;
            }
            match mode {
                CreateMode::Replace => std::fs::rename(&tmp, &final_path)?,
                CreateMode::Exclusive => {
                    // link() refuses to replace, unlike rename().
                    std::fs::hard_link(&tmp, &final_path).map_err(|e| match e.kind() {
                        ErrorKind::AlreadyExists => StoreError::Exists(oid),
                        _ => StoreError::Io(e),
                    })?;
                    std::fs::remove_file(&tmp)?;
                }
            }
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

    fn remove(&self, oid: ObjectId) -> Result<(), StoreError> {
        self.dirty.lock().expect("dirty lock").objects.remove(&oid);
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
                match self.open_existing(*oid, false) {
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

    fn list(&self) -> Result<Vec<ObjectId>, StoreError> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.obj_dir)? {
            let e = e?;
            if let Some(oid) = e.file_name().to_str().and_then(|n| n.parse().ok()) {
                out.push(oid);
            }
        }
        out.sort();
        Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn store() -> (tempfile::TempDir, ObjectStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = ObjectStore::open(dir.path(), false).unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn create_read_write_remove() {
        let (_d, s) = store();
        let oid = ObjectId::data(7, 1);
        assert!(matches!(
            s.read(oid, 0, 4).await,
            Err(StoreError::NoObject(_))
        ));
        assert!(matches!(
            s.write(oid, 0, Bytes::from_static(b"x"), true).await,
            Err(StoreError::NoObject(_))
        ));
        s.create(
            oid,
            4096,
            Bytes::from_static(b"abcd"),
            CreateMode::Replace,
            true,
        )
        .await
        .unwrap();
        assert_eq!(s.read(oid, 4094, 8).await.unwrap(), b"\0\0abcd\0\0");
        s.write(oid, 4095, Bytes::from_static(b"Z"), false)
            .await
            .unwrap();
        s.flush().await.unwrap();
        assert_eq!(s.read(oid, 4094, 4).await.unwrap(), b"\0Zab");
        assert_eq!(s.list().await.unwrap(), vec![oid]);
        assert!(matches!(
            s.create(oid, 0, Bytes::new(), CreateMode::Exclusive, true)
                .await,
            Err(StoreError::Exists(_))
        ));
        s.remove(oid).await.unwrap();
        s.remove(oid).await.unwrap();
        assert!(s.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn usage_counts_object_bytes() {
        let (_d, s) = store();
        s.create(
            ObjectId::data(1, 0),
            0,
            Bytes::from(vec![1u8; 1 << 20]),
            CreateMode::Replace,
            false,
        )
        .await
        .unwrap();
        let (used, free) = s.usage().await.unwrap();
        assert!(used >= 1 << 20);
        assert!(free > 0);
    }
}
