//! What a block-device front end (NBD, later HTTP) serves: a catalog of
//! named exports, each a byte-addressed disk. The VDI layer implements these
//! traits; front ends know only them, so they can be tested with an
//! in-memory disk.

use std::sync::Arc;

use bytes::Bytes;

use crate::cluster::BoxFuture;
use crate::error::SheepError;

/// A run of a disk with one allocation state (for NBD block status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Length in bytes.
    pub len: u64,
    /// True if nothing is stored there: it reads as zeros.
    pub hole: bool,
}

/// One disk served to clients.
pub trait BlockExport: Send + Sync + 'static {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// True for a snapshot (writes are refused).
    fn read_only(&self) -> bool;

    /// Preferred I/O granularity (the object size): requests inside one
    /// such block are cheapest.
    fn block_size(&self) -> u32;

    /// Reads `len` bytes at `offset`; the range is inside the disk.
    fn read(&self, offset: u64, len: u32) -> BoxFuture<'_, Result<Bytes, SheepError>>;

    /// Writes `data` at `offset`; with `fua` it is durable on every replica
    /// before this returns, otherwise after the next [`BlockExport::flush`].
    fn write(&self, offset: u64, data: Bytes, fua: bool) -> BoxFuture<'_, Result<(), SheepError>>;

    /// Makes every write acknowledged so far durable.
    fn flush(&self) -> BoxFuture<'_, Result<(), SheepError>>;

    /// Discards a range (advisory: whole objects inside it are freed).
    fn trim(&self, offset: u64, len: u64) -> BoxFuture<'_, Result<(), SheepError>>;

    /// Makes a range read as zeros; whole objects inside it are freed.
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        fua: bool,
    ) -> BoxFuture<'_, Result<(), SheepError>>;

    /// Allocation of `[offset, offset + len)` as consecutive extents that
    /// start at `offset` and cover at least one byte.
    fn block_status(&self, offset: u64, len: u64)
        -> BoxFuture<'_, Result<Vec<Extent>, SheepError>>;
}

/// The exports a node serves, by name.
pub trait ExportCatalog: Send + Sync + 'static {
    /// Opens `name` (a VDI name; `NAME@TAG` or `NAME@ID` for a snapshot).
    fn open(&self, name: &str) -> BoxFuture<'_, Result<Arc<dyn BlockExport>, SheepError>>;

    /// Names of every export (the working VDIs).
    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, SheepError>>;
}
