//! The transmission phase: the request loop, the reply writer and the wire
//! encoding of requests and replies.
//!
//! One reader (this loop) parses requests and spawns a task per request;
//! one writer task owns the socket's write half and sends replies in the
//! order they complete, so replies go out of order and a slow request never
//! holds up the others. Invariants:
//! - Every request except `DISC` gets exactly one reply (a simple reply or
//!   a structured reply whose last chunk has `DONE`), even if the export
//!   panics.
//! - A `WRITE` payload is always consumed, even when the request is
//!   refused, so the stream stays in step; only a bad request magic (or
//!   the client going away) ends the connection.
//! - A connection holds at most [`MAX_IN_FLIGHT`] requests and
//!   [`MAX_BUFFERED`] payload bytes, counting replies not yet written:
//!   reading pauses until the writer has caught up.
//! - On `DISC` or end of input every request already read is still
//!   answered before the socket is closed.

use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::command::{self, Context};
use super::consts::*;
use super::handshake::{skip, truncate, Session};

/// One parsed request header.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    /// Command flags (`NBD_CMD_FLAG_*`).
    pub flags: u16,
    /// Command type (`NBD_CMD_*`).
    pub kind: u16,
    /// Opaque value echoed in the reply.
    pub cookie: u64,
    /// Byte offset into the export.
    pub offset: u64,
    /// Length in bytes (of the payload for `WRITE`).
    pub len: u32,
}

impl Request {
    /// Parses a header; `None` if the magic is wrong.
    pub fn parse(h: &[u8; REQUEST_SIZE]) -> Option<Request> {
        let u16_at = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
        (u32_at(0) == NBD_REQUEST_MAGIC).then(|| Request {
            flags: u16_at(4),
            kind: u16_at(6),
            cookie: u64_at(8),
            offset: u64_at(16),
            len: u32_at(24),
        })
    }
}

/// One encoded reply: a header and an optional data part, kept apart so
/// read data is never copied.
#[derive(Debug)]
pub struct Reply {
    head: Vec<u8>,
    data: Bytes,
}

impl Reply {
    /// A simple reply with no data (`error` 0 is success). Allowed for
    /// every command but `READ` even when structured replies are on.
    pub fn simple(cookie: u64, error: u32) -> Reply {
        let mut head = Vec::with_capacity(SIMPLE_REPLY_SIZE);
        head.put_u32(NBD_SIMPLE_REPLY_MAGIC);
        head.put_u32(error);
        head.put_u64(cookie);
        Reply {
            head,
            data: Bytes::new(),
        }
    }

    /// A successful read of `data` at `offset`: one `OFFSET_DATA` chunk
    /// marked `DONE` (the data is all in hand, so no error can follow), or
    /// a simple reply followed by the data.
    pub fn read(cookie: u64, offset: u64, data: Bytes, structured: bool) -> Reply {
        if !structured {
            let mut reply = Reply::simple(cookie, 0);
            reply.data = data;
            return reply;
        }
        if data.is_empty() {
            // A data chunk must carry at least one byte.
            return Reply::chunk(cookie, NBD_REPLY_TYPE_NONE, &[]);
        }
        let mut head = chunk_header(cookie, NBD_REPLY_TYPE_OFFSET_DATA, 8 + data.len());
        head.put_u64(offset);
        Reply { head, data }
    }

    /// An error: an `ERROR` chunk with a message when structured replies
    /// are on (proto.md prefers it, and a `READ` must not get a simple
    /// reply then), a simple reply otherwise.
    pub fn error(cookie: u64, error: u32, message: &str, structured: bool) -> Reply {
        if !structured {
            return Reply::simple(cookie, error);
        }
        let message = truncate(message).as_bytes();
        let mut payload = Vec::with_capacity(6 + message.len());
        payload.put_u32(error);
        payload.put_u16(message.len() as u16);
        payload.put_slice(message);
        Reply::chunk(cookie, NBD_REPLY_TYPE_ERROR, &payload)
    }

    /// A final (`DONE`) structured chunk with a small payload.
    pub fn chunk(cookie: u64, kind: u16, payload: &[u8]) -> Reply {
        let mut head = chunk_header(cookie, kind, payload.len());
        head.put_slice(payload);
        Reply {
            head,
            data: Bytes::new(),
        }
    }
}

/// The header of a final chunk whose payload is `len` bytes.
fn chunk_header(cookie: u64, kind: u16, len: usize) -> Vec<u8> {
    let mut head = Vec::with_capacity(CHUNK_HEADER_SIZE + 8);
    head.put_u32(NBD_STRUCTURED_REPLY_MAGIC);
    head.put_u16(NBD_REPLY_FLAG_DONE);
    head.put_u16(kind);
    head.put_u64(cookie);
    // Payloads are bounded by MAX_PAYLOAD + 8 or MAX_EXTENTS descriptors,
    // both far below 4 GiB.
    head.put_u32(len as u32);
    head
}

/// A reply on its way to the socket, with the resources its request holds
/// until the reply is written.
struct Outgoing {
    reply: Reply,
    _slot: Option<OwnedSemaphorePermit>,
    _bytes: Option<OwnedSemaphorePermit>,
}

impl Outgoing {
    fn bare(reply: Reply) -> Outgoing {
        Outgoing {
            reply,
            _slot: None,
            _bytes: None,
        }
    }
}

/// Serves requests until `DISC`, the client goes away, or a protocol
/// violation (bad magic, which is returned as an error).
pub async fn run<R, W>(session: Session, mut reader: R, writer: W) -> io::Result<()>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let ctx = Arc::new(Context {
        export: session.export,
        structured: session.structured,
        block_status: session.block_status,
    });
    let (tx, rx) = mpsc::unbounded_channel::<Outgoing>();
    let writer = tokio::spawn(write_replies(writer, rx));
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let budget = Arc::new(Semaphore::new(MAX_BUFFERED as usize));

    let result = loop {
        let mut header = [0u8; REQUEST_SIZE];
        tokio::select! {
            read = reader.read_exact(&mut header) => {
                if let Err(e) = read {
                    break client_gone(e);
                }
            }
            // The writer stopped (the client no longer reads): stop too.
            _ = tx.closed() => break Ok(()),
        }
        let Some(req) = Request::parse(&header) else {
            break Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad request magic",
            ));
        };
        tracing::trace!(?req, "nbd request");
        let len = req.len as usize;
        match req.kind {
            NBD_CMD_DISC => break Ok(()),
            NBD_CMD_WRITE if req.len > MAX_PAYLOAD => {
                // Refuse without buffering it, but consume it to stay in step.
                if let Err(e) = skip(&mut reader, req.len).await {
                    break client_gone(e);
                }
                let msg = "write larger than the maximum payload";
                let reply = Reply::error(req.cookie, NBD_EINVAL, msg, ctx.structured);
                let _ = tx.send(Outgoing::bare(reply));
                continue;
            }
            _ => {}
        }

        // Admission: a slot, and payload bytes for reads and writes.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break Ok(());
        };
        // An over-long read is refused by `command::read`; until then it
        // holds no more than the largest valid request would.
        let cost = match req.kind {
            NBD_CMD_READ | NBD_CMD_WRITE => req.len.min(MAX_PAYLOAD),
            _ => 0,
        };
        let bytes = if cost > 0 {
            let Ok(p) = budget.clone().acquire_many_owned(cost).await else {
                break Ok(());
            };
            Some(p)
        } else {
            None
        };

        let mut payload = Bytes::new();
        if req.kind == NBD_CMD_WRITE && len > 0 {
            match read_payload(&mut reader, len).await {
                Ok(Some(p)) => payload = p,
                Ok(None) => break Ok(()), // vanished mid-payload
                Err(e) => break client_gone(e),
            }
        }

        let ctx = ctx.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            // A panicking export must not leave the client waiting forever.
            let reply = AssertUnwindSafe(command::execute(&ctx, &req, payload))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!(?req, "nbd: export panicked");
                    Reply::error(req.cookie, NBD_EIO, "internal error", ctx.structured)
                });
            let _ = tx.send(Outgoing {
                reply,
                _slot: Some(slot),
                _bytes: bytes,
            });
        });
    };

    // Requests already read still get their replies; the writer ends when
    // the last one is sent, then closes the socket.
    drop(tx);
    let _ = writer.await;
    result
}

/// Reads exactly `len` payload bytes without zero-filling a buffer first.
/// `Ok(None)` if the input ends early.
async fn read_payload<R: AsyncRead + Unpin>(
    reader: &mut R,
    len: usize,
) -> io::Result<Option<Bytes>> {
    let mut buf = BytesMut::with_capacity(len);
    while buf.len() < len {
        // `take` keeps us from reading into the next request even if the
        // buffer's capacity is larger than asked for.
        let want = (len - buf.len()) as u64;
        if (&mut *reader).take(want).read_buf(&mut buf).await? == 0 {
            return Ok(None);
        }
    }
    Ok(Some(buf.freeze()))
}

/// End of input is how a client leaves without `DISC`; not an error.
fn client_gone(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Ok(())
    } else {
        Err(e)
    }
}

/// The writer task: sends replies as they complete, batching whatever is
/// ready into one flush, and closes the socket when every sender is gone.
async fn write_replies<W: AsyncWrite + Unpin>(
    writer: W,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut w = BufWriter::with_capacity(64 << 10, writer);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(out) = next {
            if write_one(&mut w, &out.reply).await.is_err() {
                return; // dropping `rx` tells the reader to stop
            }
            drop(out); // frees its slot and buffer budget
            next = rx.try_recv().ok();
        }
        if w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

async fn write_one<W: AsyncWrite + Unpin>(w: &mut BufWriter<W>, reply: &Reply) -> io::Result<()> {
    w.write_all(&reply.head).await?;
    if !reply.data.is_empty() {
        w.write_all(&reply.data).await?;
    }
    Ok(())
}
