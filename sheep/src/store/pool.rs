//! Empty files made ahead of need, from which new objects are created.
//!
//! Creating a file allocates an inode, which can cost far more than the
//! small write that creates an object: ext4 without a journal, for one,
//! scans its bitmaps for inodes not freed recently, hundreds of
//! microseconds once many objects have been deleted. So a create takes an
//! empty file made earlier by a background thread, writes the object into
//! it and renames it into place; a copy-on-write first write or a write
//! into an unallocated object then pays for a rename, not an inode.
//!
//! Pooled files live in the objects' own directory (a rename within one
//! directory takes no file-system-wide lock), under names that are not
//! object ids ([`FilePool::owns`]); the store removes them when it opens,
//! so a crash leaves none behind. The refiller works when creates pause,
//! so its inode allocations do not compete with a burst of creates; when
//! the pool runs dry, files are made on the spot.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Files the pool keeps ready.
const TARGET: usize = 1024;
/// The refiller wakes when fewer than this are left.
const LOW_WATER: usize = 3 * TARGET / 4;
/// Below this the refiller works even while files are being taken.
const CRITICAL: usize = TARGET / 16;
/// How long creates must pause before the refiller works (above
/// [`CRITICAL`]).
const QUIET: Duration = Duration::from_millis(200);
/// How often the refiller looks even unasked (files taken while it was
/// busy, or a failed refill).
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// Names of pooled files start with this (never an object id).
const PREFIX: &str = ".new.";

/// A pool of empty files in one directory.
pub struct FilePool {
    dir: PathBuf,
    ready: Mutex<Vec<PathBuf>>,
    last_take: Mutex<Instant>,
    seq: AtomicU64,
    wake: Mutex<Option<SyncSender<()>>>,
}

impl FilePool {
    /// True for the name of a file a pool made.
    pub fn owns(name: &std::ffi::OsStr) -> bool {
        name.to_str().is_some_and(|n| n.starts_with(PREFIX))
    }

    /// An empty pool making its files in `dir`; [`FilePool::start`] fills it.
    pub fn new(dir: PathBuf) -> Arc<FilePool> {
        Arc::new(FilePool {
            dir,
            ready: Mutex::new(Vec::new()),
            last_take: Mutex::new(Instant::now()),
            seq: AtomicU64::new(0),
            wake: Mutex::new(None),
        })
    }

    /// Starts the thread that keeps the pool full. It holds the pool weakly
    /// and ends when the pool is dropped.
    pub fn start(self: &Arc<Self>) -> io::Result<()> {
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        *self.wake.lock().expect("pool lock") = Some(tx);
        let pool = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("sheep-file-pool".into())
            .spawn(move || loop {
                match pool.upgrade() {
                    Some(p) => p.refill(),
                    None => return,
                }
                match rx.recv_timeout(IDLE_CHECK) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            })?;
        Ok(())
    }

    /// A new, empty file in the pool's directory and its path: a pooled
    /// one if any is left, else one made now.
    pub fn take(&self) -> io::Result<(PathBuf, File)> {
        *self.last_take.lock().expect("pool lock") = Instant::now();
        let (taken, left) = {
            let mut ready = self.ready.lock().expect("pool lock");
            let taken = ready.pop();
            (taken, ready.len())
        };
        if left < LOW_WATER {
            if let Some(wake) = self.wake.lock().expect("pool lock").as_ref() {
                // Full: a wake-up is already pending.
                let _ = wake.try_send(());
            }
        }
        if let Some(path) = taken {
            match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(file) => return Ok((path, file)),
                // Gone behind our back (the directory was cleaned): make one.
                Err(e) => tracing::debug!(path = %path.display(), "pooled file: {e}"),
            }
        }
        self.make()
    }

    fn make(&self) -> io::Result<(PathBuf, File)> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("{PREFIX}{}.{seq}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((path, file))
    }

    fn refill(&self) {
        loop {
            let ready = self.ready.lock().expect("pool lock").len();
            if ready >= TARGET {
                return;
            }
            let since = self.last_take.lock().expect("pool lock").elapsed();
            if ready >= CRITICAL && since < QUIET {
                std::thread::sleep(QUIET - since);
                continue;
            }
            match self.make() {
                Ok((path, file)) => {
                    drop(file);
                    self.ready.lock().expect("pool lock").push(path);
                }
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), "cannot make a file ahead: {e}");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_pooled_files_and_makes_more_when_dry() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::new(dir.path().to_path_buf());
        // Not started: every file is made on the spot.
        let (a, _) = pool.take().unwrap();
        let (b, _) = pool.take().unwrap();
        assert_ne!(a, b);
        pool.refill();
        assert_eq!(pool.ready.lock().unwrap().len(), TARGET);
        let (c, f) = pool.take().unwrap();
        assert!(c.exists() && f.metadata().unwrap().len() == 0);
        assert_eq!(pool.ready.lock().unwrap().len(), TARGET - 1);
        // A pooled file removed behind the pool's back is replaced.
        let next = pool.ready.lock().unwrap().last().cloned().unwrap();
        std::fs::remove_file(&next).unwrap();
        let (d, _) = pool.take().unwrap();
        assert!(d.exists() && d != next);
    }

    #[test]
    fn the_refiller_tops_the_pool_up_and_ends_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::new(dir.path().to_path_buf());
        pool.start().unwrap();
        let wait_full = |failure: &str| {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while pool.ready.lock().unwrap().len() != TARGET {
                assert!(std::time::Instant::now() < deadline, "{failure}");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait_full("the pool never filled");
        for _ in 0..TARGET / 2 {
            pool.take().unwrap();
        }
        wait_full("the pool was not refilled");
    }
}
