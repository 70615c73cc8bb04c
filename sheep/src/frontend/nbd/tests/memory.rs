//! An in-memory [`ExportCatalog`] for the NBD tests: each disk is a
//! `Vec<u8>` behind a mutex with one "allocated" bit per 4 MiB block, and
//! can be told to delay or panic on reads at chosen offsets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use qemu_proto::SdResult;

use crate::cluster::BoxFuture;
use crate::error::SheepError;
use crate::frontend::export::{BlockExport, ExportCatalog, Extent};

/// Allocation granularity (the object size).
pub const BLOCK: u64 = 4 << 20;

struct Disk {
    data: Vec<u8>,
    allocated: Vec<bool>,
}

/// One in-memory disk.
pub struct MemExport {
    disk: Mutex<Disk>,
    read_only: bool,
    /// Reads starting at one of these offsets sleep first.
    slow_reads: Vec<(u64, Duration)>,
    /// A read starting here panics.
    panic_at: Option<u64>,
    /// Flushes seen.
    pub flushes: AtomicUsize,
    /// Writes (including zero writes) with FUA seen.
    pub fua_writes: AtomicUsize,
    /// Calls that broke the trait's contract (a range outside the disk or
    /// empty). Counted rather than asserted: the server turns panics into
    /// EIO replies, which would hide them.
    pub violations: AtomicUsize,
}

impl MemExport {
    pub fn new(size: u64) -> MemExport {
        let blocks = size.div_ceil(BLOCK) as usize;
        MemExport {
            disk: Mutex::new(Disk {
                data: vec![0; size as usize],
                allocated: vec![false; blocks],
            }),
            read_only: false,
            slow_reads: Vec::new(),
            panic_at: None,
            flushes: AtomicUsize::new(0),
            fua_writes: AtomicUsize::new(0),
            violations: AtomicUsize::new(0),
        }
    }

    pub fn read_only(mut self) -> MemExport {
        self.read_only = true;
        self
    }

    pub fn slow_read(mut self, offset: u64, delay: Duration) -> MemExport {
        self.slow_reads.push((offset, delay));
        self
    }

    pub fn panic_at(mut self, offset: u64) -> MemExport {
        self.panic_at = Some(offset);
        self
    }

    /// A copy of `[offset, offset + len)`.
    pub fn bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let disk = self.disk.lock().unwrap();
        disk.data[offset as usize..offset as usize + len].to_vec()
    }

    pub fn is_allocated(&self, block: usize) -> bool {
        self.disk.lock().unwrap().allocated[block]
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), SheepError> {
        // The server must never call us outside the disk or with len 0.
        match offset.checked_add(len) {
            Some(end) if len > 0 && end <= self.size() => Ok(()),
            _ => {
                self.violations.fetch_add(1, Ordering::SeqCst);
                Err(SdResult::INVALID_PARMS.into())
            }
        }
    }

    /// Zeroes a range; whole blocks inside it become unallocated.
    fn zero(&self, offset: u64, len: u64, free_whole_blocks: bool) {
        let mut disk = self.disk.lock().unwrap();
        disk.data[offset as usize..(offset + len) as usize].fill(0);
        if free_whole_blocks {
            let first = offset.div_ceil(BLOCK);
            let end = (offset + len) / BLOCK;
            for b in first..end {
                disk.allocated[b as usize] = false;
            }
        }
    }
}

impl BlockExport for MemExport {
    fn size(&self) -> u64 {
        self.disk.lock().unwrap().data.len() as u64
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn block_size(&self) -> u32 {
        BLOCK as u32
    }

    fn read(&self, offset: u64, len: u32) -> BoxFuture<'_, Result<Bytes, SheepError>> {
        Box::pin(async move {
            self.check(offset, len.into())?;
            if self.panic_at == Some(offset) {
                panic!("test export told to panic at {offset}");
            }
            if let Some((_, delay)) = self.slow_reads.iter().find(|(o, _)| *o == offset) {
                tokio::time::sleep(*delay).await;
            }
            Ok(Bytes::from(self.bytes(offset, len as usize)))
        })
    }

    fn write(&self, offset: u64, data: Bytes, fua: bool) -> BoxFuture<'_, Result<(), SheepError>> {
        Box::pin(async move {
            if self.read_only {
                return Err(SdResult::READONLY.into());
            }
            self.check(offset, data.len() as u64)?;
            if fua {
                self.fua_writes.fetch_add(1, Ordering::SeqCst);
            }
            let mut disk = self.disk.lock().unwrap();
            disk.data[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
            let end = offset + data.len() as u64;
            for b in offset / BLOCK..end.div_ceil(BLOCK) {
                disk.allocated[b as usize] = true;
            }
            Ok(())
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), SheepError>> {
        Box::pin(async move {
            self.flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }

    fn trim(&self, offset: u64, len: u64) -> BoxFuture<'_, Result<(), SheepError>> {
        Box::pin(async move {
            self.check(offset, len)?;
            // Advisory: only whole blocks are dropped (and read as zeros).
            let first = offset.div_ceil(BLOCK);
            let end = (offset + len) / BLOCK;
            if first < end {
                self.zero(first * BLOCK, (end - first) * BLOCK, true);
            }
            Ok(())
        })
    }

    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        fua: bool,
    ) -> BoxFuture<'_, Result<(), SheepError>> {
        Box::pin(async move {
            self.check(offset, len)?;
            if fua {
                self.fua_writes.fetch_add(1, Ordering::SeqCst);
            }
            self.zero(offset, len, true);
            Ok(())
        })
    }

    fn block_status(
        &self,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'_, Result<Vec<Extent>, SheepError>> {
        Box::pin(async move {
            self.check(offset, len)?;
            let disk = self.disk.lock().unwrap();
            let size = disk.data.len() as u64;
            let mut extents: Vec<Extent> = Vec::new();
            let mut pos = offset;
            // Report whole blocks, so the last extent may run past the
            // request (as proto.md allows and the server must trim).
            while pos < offset + len {
                let next = ((pos / BLOCK + 1) * BLOCK).min(size);
                let hole = !disk.allocated[(pos / BLOCK) as usize];
                match extents.last_mut() {
                    Some(last) if last.hole == hole => last.len += next - pos,
                    _ => extents.push(Extent {
                        len: next - pos,
                        hole,
                    }),
                }
                pos = next;
            }
            Ok(extents)
        })
    }
}

/// Named in-memory disks.
#[derive(Default)]
pub struct MemCatalog {
    exports: HashMap<String, Arc<MemExport>>,
}

impl MemCatalog {
    pub fn with(mut self, name: &str, export: MemExport) -> MemCatalog {
        self.exports.insert(name.to_owned(), Arc::new(export));
        self
    }

    pub fn get(&self, name: &str) -> Arc<MemExport> {
        self.exports[name].clone()
    }
}

impl ExportCatalog for MemCatalog {
    fn open(&self, name: &str) -> BoxFuture<'_, Result<Arc<dyn BlockExport>, SheepError>> {
        let found = self.exports.get(name).cloned();
        Box::pin(async move {
            match found {
                Some(e) => Ok(e as Arc<dyn BlockExport>),
                None => Err(SdResult::NO_VDI.into()),
            }
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, SheepError>> {
        Box::pin(async move {
            let mut names: Vec<String> = self.exports.keys().cloned().collect();
            names.sort();
            Ok(names)
        })
    }
}
