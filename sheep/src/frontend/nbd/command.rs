//! What each transmission command does to the export, and which errors it
//! answers with.
//!
//! Owns the semantics of a single request: flag and bounds checks, the call
//! into the [`BlockExport`], and turning the outcome into exactly one
//! [`Reply`]. Invariants:
//! - The export is only ever called with a range inside it
//!   (`offset + len <= size`, no overflow) and a nonzero length, as the
//!   trait requires; invalid requests are answered without touching it.
//! - Writes, trims and write-zeroes never reach a read-only export.
//! - A read reply always carries exactly the requested number of bytes; an
//!   export returning a different amount is reported as `EIO` rather than
//!   desynchronising the stream.

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use futures::{StreamExt, TryStreamExt};
use qemu_proto::SdResult;

use super::consts::*;
use super::transmission::{Reply, Request};
use crate::error::SheepError;
use crate::frontend::export::{BlockExport, Extent};

/// Per-connection state every request task shares.
pub struct Context {
    /// The export chosen in the handshake.
    pub export: Arc<dyn BlockExport>,
    /// Structured replies were negotiated.
    pub structured: bool,
    /// `base:allocation` was selected, so block status is allowed.
    pub block_status: bool,
}

/// A refused or failed request: an NBD error value and a message for
/// structured error chunks.
struct Fail {
    errno: u32,
    message: String,
}

impl Fail {
    fn new(errno: u32, message: impl Into<String>) -> Fail {
        Fail {
            errno,
            message: message.into(),
        }
    }
}

impl From<SheepError> for Fail {
    fn from(e: SheepError) -> Fail {
        Fail::new(errno(&e), e.to_string())
    }
}

/// The NBD error value for a daemon error. Most failures (a replica
/// unreachable, the cluster halted) are plain I/O errors to the guest.
pub fn errno(e: &SheepError) -> u32 {
    match e.result() {
        SdResult::READONLY | SdResult::VDI_LOCKED => NBD_EPERM,
        SdResult::NO_SPACE => NBD_ENOSPC,
        SdResult::INVALID_PARMS => NBD_EINVAL,
        _ => NBD_EIO,
    }
}

/// Runs one request (anything but `DISC`) and builds its reply.
pub async fn execute(ctx: &Context, req: &Request, payload: Bytes) -> Reply {
    let started = std::time::Instant::now();
    let result = match req.kind {
        NBD_CMD_READ => read(ctx, req).await,
        NBD_CMD_WRITE => write(ctx, req, payload).await,
        NBD_CMD_FLUSH => flush(ctx, req).await,
        NBD_CMD_TRIM => trim(ctx, req).await,
        NBD_CMD_WRITE_ZEROES => write_zeroes(ctx, req).await,
        NBD_CMD_BLOCK_STATUS => block_status(ctx, req).await,
        NBD_CMD_CACHE => cache(ctx, req),
        other => Err(Fail::new(NBD_EINVAL, format!("unknown command {other}"))),
    };
    let m = &crate::metrics::instruments().nbd;
    let op = match req.kind {
        NBD_CMD_READ => &m.read,
        NBD_CMD_WRITE => &m.write,
        NBD_CMD_FLUSH => &m.flush,
        _ => &m.other,
    };
    op.record(started.elapsed(), result.is_ok());
    match result {
        Ok(reply) => reply,
        Err(fail) => {
            tracing::debug!(
                ?req,
                errno = fail.errno,
                "nbd request failed: {}",
                fail.message
            );
            Reply::error(req.cookie, fail.errno, &fail.message, ctx.structured)
        }
    }
}

/// Refuses flags that are not defined for the command (proto.md: EINVAL).
/// FUA is accepted everywhere, as proto.md requires once it is offered.
fn check_flags(req: &Request, allowed: u16) -> Result<(), Fail> {
    let extra = req.flags & !(allowed | NBD_CMD_FLAG_FUA);
    if extra != 0 {
        return Err(Fail::new(
            NBD_EINVAL,
            format!("unsupported command flags {extra:#x}"),
        ));
    }
    Ok(())
}

/// Checks `[offset, offset + len)` lies inside the export.
fn check_range(ctx: &Context, req: &Request, past_end: u32) -> Result<(), Fail> {
    match req.offset.checked_add(u64::from(req.len)) {
        Some(end) if end <= ctx.export.size() => Ok(()),
        _ => Err(Fail::new(past_end, "request beyond the end of the export")),
    }
}

fn check_writable(ctx: &Context) -> Result<(), Fail> {
    if ctx.export.read_only() {
        return Err(Fail::new(NBD_EPERM, "the export is read-only"));
    }
    Ok(())
}

fn fua(req: &Request) -> bool {
    req.flags & NBD_CMD_FLAG_FUA != 0
}

fn done(req: &Request) -> Result<Reply, Fail> {
    Ok(Reply::simple(req.cookie, 0))
}

async fn read(ctx: &Context, req: &Request) -> Result<Reply, Fail> {
    // DF only exists with structured replies; we always send one chunk.
    check_flags(req, if ctx.structured { NBD_CMD_FLAG_DF } else { 0 })?;
    if req.len > MAX_PAYLOAD {
        let errno = if ctx.structured {
            NBD_EOVERFLOW
        } else {
            NBD_EINVAL
        };
        return Err(Fail::new(errno, "read larger than the maximum payload"));
    }
    check_range(ctx, req, NBD_EINVAL)?;
    if req.len == 0 {
        return Ok(Reply::read(
            req.cookie,
            req.offset,
            Bytes::new(),
            ctx.structured,
        ));
    }
    let data = ctx.export.read(req.offset, req.len).await?;
    if data.len() != req.len as usize {
        tracing::error!(?req, got = data.len(), "nbd: export returned a short read");
        return Err(Fail::new(NBD_EIO, "short read"));
    }
    Ok(Reply::read(req.cookie, req.offset, data, ctx.structured))
}

async fn write(ctx: &Context, req: &Request, payload: Bytes) -> Result<Reply, Fail> {
    check_flags(req, 0)?;
    check_writable(ctx)?;
    // proto.md: a write past the end SHOULD get ENOSPC.
    check_range(ctx, req, NBD_ENOSPC)?;
    if !payload.is_empty() {
        ctx.export.write(req.offset, payload, fua(req)).await?;
    }
    done(req)
}

async fn flush(ctx: &Context, req: &Request) -> Result<Reply, Fail> {
    check_flags(req, 0)?;
    ctx.export.flush().await?;
    done(req)
}

async fn trim(ctx: &Context, req: &Request) -> Result<Reply, Fail> {
    check_flags(req, 0)?;
    check_writable(ctx)?;
    check_range(ctx, req, NBD_EINVAL)?;
    if req.len > 0 {
        ctx.export.trim(req.offset, u64::from(req.len)).await?;
        // The trait's trim has no FUA of its own; a flush makes the freed
        // objects' state durable before we answer.
        if fua(req) {
            ctx.export.flush().await?;
        }
    }
    done(req)
}

async fn write_zeroes(ctx: &Context, req: &Request) -> Result<Reply, Fail> {
    check_flags(req, NBD_CMD_FLAG_NO_HOLE)?;
    check_writable(ctx)?;
    check_range(ctx, req, NBD_ENOSPC)?;
    if req.len == 0 {
        return done(req);
    }
    if req.flags & NBD_CMD_FLAG_NO_HOLE != 0 {
        // The client wants the range provisioned, but the export's
        // write_zeroes frees whole objects; write real zeros instead.
        write_zero_data(ctx, req).await?;
    } else {
        ctx.export
            .write_zeroes(req.offset, u64::from(req.len), fua(req))
            .await?;
    }
    done(req)
}

/// Zeros shared by every `NO_HOLE` write (4 MiB of zero-initialised static
/// memory, so no allocation per request).
static ZEROES: [u8; 4 << 20] = [0; 4 << 20];

/// How many zero-writes of one `NO_HOLE` request run at once.
const ZERO_WRITE_PARALLELISM: usize = 8;

/// Writes zeros over the request's range, one block at a time (aligned to
/// the export's block size so each write stays inside one object).
async fn write_zero_data(ctx: &Context, req: &Request) -> Result<(), Fail> {
    let chunk = u64::from(ctx.export.block_size()).clamp(512, ZEROES.len() as u64);
    let end = req.offset + u64::from(req.len); // checked by check_range
    let mut pieces = Vec::new();
    let mut pos = req.offset;
    while pos < end {
        let next = ((pos / chunk + 1) * chunk).min(end);
        pieces.push((pos, next - pos));
        pos = next;
    }
    let fua = fua(req);
    futures::stream::iter(pieces)
        .map(|(offset, len)| {
            let data = Bytes::from_static(&ZEROES[..len as usize]);
            ctx.export.write(offset, data, fua)
        })
        .buffer_unordered(ZERO_WRITE_PARALLELISM)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn block_status(ctx: &Context, req: &Request) -> Result<Reply, Fail> {
    check_flags(req, NBD_CMD_FLAG_REQ_ONE)?;
    if !ctx.block_status {
        return Err(Fail::new(NBD_EINVAL, "no metadata context was selected"));
    }
    if req.len == 0 {
        return Err(Fail::new(NBD_EINVAL, "empty block status request"));
    }
    check_range(ctx, req, NBD_EINVAL)?;
    let extents = ctx
        .export
        .block_status(req.offset, u64::from(req.len))
        .await?;
    let req_one = req.flags & NBD_CMD_FLAG_REQ_ONE != 0;
    let mut descriptors = descriptors(&extents, req.len, req_one);
    if descriptors.is_empty() {
        // The export broke its contract; "allocated, contents unknown" is
        // always a truthful answer.
        tracing::warn!(?req, "nbd: export returned no extents");
        descriptors.push((req.len, 0));
    }
    let mut payload = Vec::with_capacity(4 + 8 * descriptors.len());
    payload.put_u32(BASE_ALLOCATION_ID);
    for (len, flags) in descriptors {
        payload.put_u32(len);
        payload.put_u32(flags);
    }
    Ok(Reply::chunk(
        req.cookie,
        NBD_REPLY_TYPE_BLOCK_STATUS,
        &payload,
    ))
}

/// Turns the export's extents into `(length, status)` descriptors covering
/// at most `want` bytes: zero-length extents dropped, neighbours with the
/// same status merged, at most [`MAX_EXTENTS`] of them (one for `REQ_ONE`).
/// Never claiming more than was asked keeps us inside the export and the
/// `REQ_ONE` rule.
pub fn descriptors(extents: &[Extent], want: u32, req_one: bool) -> Vec<(u32, u32)> {
    let limit = if req_one { 1 } else { MAX_EXTENTS };
    let mut out: Vec<(u32, u32)> = Vec::new();
    let mut left = want;
    for extent in extents {
        if left == 0 {
            break;
        }
        // `len <= left <= u32::MAX`, so the cast is exact.
        let len = extent.len.min(u64::from(left)) as u32;
        if len == 0 {
            continue;
        }
        let status = if extent.hole {
            NBD_STATE_HOLE | NBD_STATE_ZERO
        } else {
            0
        };
        let full = out.len() == limit;
        match out.last_mut() {
            // Merging cannot overflow: the total never exceeds `want`.
            Some(last) if last.1 == status => last.0 += len,
            _ if full => break,
            _ => out.push((len, status)),
        }
        left -= len;
    }
    out
}

/// `NBD_CMD_CACHE`: a prefetch hint; accepted and ignored (every read goes
/// to a replica anyway).
fn cache(ctx: &Context, req: &Request) -> Result<Reply, Fail> {
    check_flags(req, 0)?;
    check_range(ctx, req, NBD_EINVAL)?;
    done(req)
}
