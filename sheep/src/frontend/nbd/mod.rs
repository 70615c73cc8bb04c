//! The NBD (Network Block Device) front end: serves the disks of an
//! [`ExportCatalog`] to QEMU, libnbd tools (`nbdinfo`, `nbdcopy`,
//! `nbdfuse`), fio and other NBD clients.
//!
//! The protocol is NBD's as specified in `doc/proto.md` of
//! NetworkBlockDevice/nbd, fixed newstyle only, without TLS:
//! - `handshake`: options `EXPORT_NAME`, `GO`, `INFO`, `LIST`, `ABORT`,
//!   `STRUCTURED_REPLY`, `LIST_META_CONTEXT` and `SET_META_CONTEXT` (the one
//!   context is `base:allocation`); anything else gets `ERR_UNSUP`. The
//!   export name is the VDI name (`NAME@TAG` for a snapshot); the empty
//!   "default export" is refused.
//! - `transmission`: `READ`, `WRITE` (FUA), `FLUSH`, `TRIM`,
//!   `WRITE_ZEROES` (FUA, `NO_HOLE`), `BLOCK_STATUS`, `CACHE` (a no-op) and
//!   `DISC`; simple replies, or structured ones when negotiated. Requests
//!   run concurrently and are answered as they complete; `command` says
//!   what each one does.
//!
//! Every connection runs on its own task and touches no state another
//! connection sees except the export itself, so a misbehaving client can
//! only end its own connection. Parsing never panics on any input, and a
//! connection's memory is bounded (see [`consts::MAX_BUFFERED`]).
//!
//! `CAN_MULTI_CONN` is offered: a flush (or FUA) through one connection
//! makes every acknowledged write durable whatever connection it came
//! through, because every connection to a VDI on one node shares one export
//! (a volume), whose flush covers every write acknowledged through it.

mod command;
pub mod consts;
mod handshake;
mod transmission;

#[cfg(test)]
mod tests;

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::frontend::export::ExportCatalog;

/// Conventional NBD port (IANA).
pub const NBD_PORT: u16 = 10809;

/// Read buffer per connection: request headers are 28 bytes, so buffering
/// saves a system call per request; large payloads bypass it.
const READ_BUFFER: usize = 256 << 10;

/// Accepts NBD connections on `listener` and serves each on its own task,
/// until this future is dropped (connections already accepted go on).
pub async fn serve(catalog: Arc<dyn ExportCatalog>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep going.
                tracing::warn!("nbd accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // proto.md asks both sides to disable Nagle: replies are small
        // and latency-bound.
        let _ = stream.set_nodelay(true);
        let catalog = catalog.clone();
        tokio::spawn(async move {
            let (read, write) = stream.into_split();
            match serve_split(catalog, read, write).await {
                Ok(()) => tracing::debug!(%peer, "nbd connection closed"),
                Err(e) => tracing::debug!(%peer, "nbd connection ended: {e}"),
            }
        });
    }
}

/// Serves one NBD connection over any byte stream (a TCP or Unix socket,
/// or an in-memory duplex in tests), from the handshake to the end.
///
/// Returns when the client disconnects (`Ok`, whether cleanly or not) or
/// breaks the protocol badly enough that the connection must be dropped
/// (`Err`, e.g. a bad magic number). Either way the stream is closed.
pub async fn serve_connection<S>(catalog: Arc<dyn ExportCatalog>, stream: S) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (read, write) = tokio::io::split(stream);
    serve_split(catalog, read, write).await
}

async fn serve_split<R, W>(catalog: Arc<dyn ExportCatalog>, read: R, mut write: W) -> io::Result<()>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut reader = BufReader::with_capacity(READ_BUFFER, read);
    let session = match handshake::negotiate(catalog.as_ref(), &mut reader, &mut write).await {
        Ok(Some(session)) => session,
        Ok(None) => {
            let _ = write.shutdown().await;
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
        Err(e) => {
            let _ = write.shutdown().await;
            return Err(e);
        }
    };
    tracing::debug!(
        export = %session.name,
        structured = session.structured,
        block_status = session.block_status,
        flags = format_args!("{:#x}", session.flags),
        "nbd: entering transmission"
    );
    transmission::run(session, reader, write).await
}
