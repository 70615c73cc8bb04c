//! The fixed newstyle handshake and option haggling, up to the choice of an
//! export.
//!
//! Owns the option phase's state (structured replies, the selected metadata
//! context) and hands the transmission phase a [`Session`]. Invariants:
//! - Every option except `EXPORT_NAME` and a final `GO` gets exactly one
//!   final reply (`ACK` or an error), as fixed newstyle requires, including
//!   options we do not know (`ERR_UNSUP`) and ones too long to buffer
//!   (their bytes are skipped unread, so parsing stays in step).
//! - Memory per option is bounded by [`MAX_OPTION_LEN`].
//! - We only close the connection where proto.md allows a hard disconnect:
//!   bad magic, unknown client flags, `ABORT`, or an `EXPORT_NAME` we
//!   cannot satisfy (it has no error reply).

use std::io;
use std::sync::Arc;

use bytes::BufMut;
use qemu_proto::SdResult;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::consts::*;
use crate::frontend::export::{BlockExport, ExportCatalog};

/// What the handshake agreed on: everything transmission needs.
pub struct Session {
    /// The selected export.
    pub export: Arc<dyn BlockExport>,
    /// Its name as the client gave it (for logs).
    pub name: String,
    /// Structured replies were negotiated.
    pub structured: bool,
    /// `base:allocation` was selected for this export, so
    /// `NBD_CMD_BLOCK_STATUS` is allowed.
    pub block_status: bool,
    /// The transmission flags the client was given.
    pub flags: u16,
}

/// Option-phase state that later options and the final choice depend on.
#[derive(Default)]
struct Haggle {
    no_zeroes: bool,
    structured: bool,
    /// Export name for which the last `SET_META_CONTEXT` selected
    /// `base:allocation`; block status is only valid for that export.
    meta_export: Option<String>,
}

/// Runs the handshake. `Ok(None)` means the client aborted or asked for an
/// export we cannot serve via `EXPORT_NAME`: the caller just closes.
/// `Err` is an I/O error or a protocol violation that ends the connection.
pub async fn negotiate<R, W>(
    catalog: &dyn ExportCatalog,
    reader: &mut R,
    writer: &mut W,
) -> io::Result<Option<Session>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut hello = Vec::with_capacity(18);
    hello.put_u64(NBD_MAGIC);
    hello.put_u64(IHAVEOPT);
    hello.put_u16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    writer.write_all(&hello).await?;
    writer.flush().await?;

    let client_flags = reader.read_u32().await?;
    if client_flags & !(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES) != 0 {
        // proto.md: the server MUST drop the connection on unknown flags.
        return Err(invalid(format!("unknown client flags {client_flags:#x}")));
    }
    // A client without C_FIXED_NEWSTYLE only ever sends EXPORT_NAME, so
    // answering other options in fixed newstyle (as proto.md permits)
    // changes nothing for it.
    let mut state = Haggle {
        no_zeroes: client_flags & NBD_FLAG_C_NO_ZEROES != 0,
        ..Haggle::default()
    };

    loop {
        let magic = reader.read_u64().await?;
        if magic != IHAVEOPT {
            return Err(invalid(format!("bad option magic {magic:#x}")));
        }
        let option = reader.read_u32().await?;
        let len = reader.read_u32().await?;
        if len > MAX_OPTION_LEN {
            skip(reader, len).await?;
            if option == NBD_OPT_EXPORT_NAME {
                return Ok(None); // no error reply exists for it
            }
            let kind = if is_known(option) {
                NBD_REP_ERR_TOO_BIG
            } else {
                NBD_REP_ERR_UNSUP
            };
            send_error(writer, option, kind, "option too long").await?;
            continue;
        }
        let mut data = vec![0u8; len as usize];
        reader.read_exact(&mut data).await?;
        tracing::trace!(option, len, "nbd option");

        match option {
            NBD_OPT_EXPORT_NAME => return export_name(catalog, writer, &state, data).await,
            NBD_OPT_ABORT => {
                // The client may already be gone; that is fine.
                let _ = send_reply(writer, option, NBD_REP_ACK, &[]).await;
                return Ok(None);
            }
            NBD_OPT_LIST => list(catalog, writer, &data).await?,
            NBD_OPT_INFO | NBD_OPT_GO => {
                if let Some(session) = info_or_go(catalog, writer, &state, option, &data).await? {
                    return Ok(Some(session));
                }
            }
            NBD_OPT_STRUCTURED_REPLY => {
                if data.is_empty() {
                    state.structured = true;
                    send_reply(writer, option, NBD_REP_ACK, &[]).await?;
                } else {
                    send_error(writer, option, NBD_REP_ERR_INVALID, "unexpected data").await?;
                }
            }
            NBD_OPT_LIST_META_CONTEXT | NBD_OPT_SET_META_CONTEXT => {
                meta_context(writer, &mut state, option, &data).await?
            }
            // STARTTLS (we run in NOTLS mode), EXTENDED_HEADERS and
            // anything newer.
            _ => send_error(writer, option, NBD_REP_ERR_UNSUP, "unsupported option").await?,
        }
    }
}

/// Options this server implements (for choosing TOO_BIG over UNSUP).
fn is_known(option: u32) -> bool {
    matches!(
        option,
        NBD_OPT_EXPORT_NAME
            | NBD_OPT_ABORT
            | NBD_OPT_LIST
            | NBD_OPT_INFO
            | NBD_OPT_GO
            | NBD_OPT_STRUCTURED_REPLY
            | NBD_OPT_LIST_META_CONTEXT
            | NBD_OPT_SET_META_CONTEXT
    )
}

/// `NBD_OPT_EXPORT_NAME`: the old way in. Failure has no reply, so it ends
/// the session.
async fn export_name<W: AsyncWrite + Unpin>(
    catalog: &dyn ExportCatalog,
    writer: &mut W,
    state: &Haggle,
    data: Vec<u8>,
) -> io::Result<Option<Session>> {
    let Ok(name) = String::from_utf8(data) else {
        return Ok(None);
    };
    if name.is_empty() {
        tracing::debug!("nbd: EXPORT_NAME with the default (empty) name refused");
        return Ok(None);
    }
    let export = match catalog.open(&name).await {
        Ok(e) => e,
        Err(e) => {
            tracing::debug!(%name, "nbd: EXPORT_NAME refused: {e}");
            return Ok(None);
        }
    };
    let flags = transmission_flags(export.as_ref(), state.structured);
    let mut buf = Vec::with_capacity(10 + 124);
    buf.put_u64(export.size());
    buf.put_u16(flags);
    if !state.no_zeroes {
        buf.put_bytes(0, 124);
    }
    writer.write_all(&buf).await?;
    writer.flush().await?;
    let block_status = state.meta_export.as_deref() == Some(name.as_str());
    Ok(Some(Session {
        export,
        name,
        structured: state.structured,
        block_status,
        flags,
    }))
}

/// `NBD_OPT_LIST`: one `REP_SERVER` per export, then `ACK`.
async fn list<W: AsyncWrite + Unpin>(
    catalog: &dyn ExportCatalog,
    writer: &mut W,
    data: &[u8],
) -> io::Result<()> {
    if !data.is_empty() {
        return send_error(writer, NBD_OPT_LIST, NBD_REP_ERR_INVALID, "unexpected data").await;
    }
    let names = match catalog.list().await {
        Ok(n) => n,
        Err(e) => {
            // No error type fits "could not list right now" exactly; POLICY
            // keeps the client negotiating and carries the reason.
            let msg = format!("cannot list exports: {e}");
            return send_error(writer, NBD_OPT_LIST, NBD_REP_ERR_POLICY, &msg).await;
        }
    };
    let mut buf = Vec::new();
    for name in names
        .iter()
        .filter(|n| !n.is_empty() && n.len() <= MAX_STRING)
    {
        let mut payload = Vec::with_capacity(4 + name.len());
        payload.put_u32(name.len() as u32);
        payload.put_slice(name.as_bytes());
        put_reply(&mut buf, NBD_OPT_LIST, NBD_REP_SERVER, &payload);
    }
    put_reply(&mut buf, NBD_OPT_LIST, NBD_REP_ACK, &[]);
    writer.write_all(&buf).await?;
    writer.flush().await
}

/// `NBD_OPT_INFO` and `NBD_OPT_GO`: describe the export; `GO` also
/// returns the session.
async fn info_or_go<W: AsyncWrite + Unpin>(
    catalog: &dyn ExportCatalog,
    writer: &mut W,
    state: &Haggle,
    option: u32,
    data: &[u8],
) -> io::Result<Option<Session>> {
    // Data: u32 name length, name, u16 count, count x u16 info requests.
    let mut cur = Cursor(data);
    let parsed = (|| {
        let name = cur.string()?;
        let count = cur.u16()?;
        cur.bytes(2 * count as usize)?;
        cur.is_empty().then_some(name)
    })();
    let Some(name) = parsed else {
        return send_error(writer, option, NBD_REP_ERR_INVALID, "malformed request")
            .await
            .map(|_| None);
    };
    if name.is_empty() {
        let msg = "no default export: give a VDI name";
        return send_error(writer, option, NBD_REP_ERR_UNKNOWN, msg)
            .await
            .map(|_| None);
    }
    let export = match catalog.open(&name).await {
        Ok(e) => e,
        Err(e) => {
            // Missing or unavailable right now: either way the export is
            // not available; the message says why. An attach lock held
            // elsewhere is the server's policy, and says so.
            let msg = format!("{name}: {e}");
            let locked = matches!(e.result(), SdResult::VDI_LOCKED | SdResult::VDI_NOT_LOCKED);
            let kind = if locked {
                NBD_REP_ERR_POLICY
            } else {
                NBD_REP_ERR_UNKNOWN
            };
            return send_error(writer, option, kind, &msg).await.map(|_| None);
        }
    };
    let flags = transmission_flags(export.as_ref(), state.structured);

    // We always send the block sizes (proto.md lets a server send
    // information that was not asked for); the other requests (NAME,
    // DESCRIPTION) are optional and we ignore them.
    let mut buf = Vec::new();
    let mut info = Vec::with_capacity(14);
    info.put_u16(NBD_INFO_EXPORT);
    info.put_u64(export.size());
    info.put_u16(flags);
    put_reply(&mut buf, option, NBD_REP_INFO, &info);
    let (min, preferred, max) = block_sizes(export.as_ref());
    info.clear();
    info.put_u16(NBD_INFO_BLOCK_SIZE);
    info.put_u32(min);
    info.put_u32(preferred);
    info.put_u32(max);
    put_reply(&mut buf, option, NBD_REP_INFO, &info);
    put_reply(&mut buf, option, NBD_REP_ACK, &[]);
    writer.write_all(&buf).await?;
    writer.flush().await?;

    if option != NBD_OPT_GO {
        return Ok(None);
    }
    let block_status = state.meta_export.as_deref() == Some(name.as_str());
    Ok(Some(Session {
        export,
        name,
        structured: state.structured,
        block_status,
        flags,
    }))
}

/// `NBD_OPT_LIST_META_CONTEXT` and `NBD_OPT_SET_META_CONTEXT`. We offer
/// `base:allocation` on every export, so the export is not opened here;
/// `GO` reports a missing one.
async fn meta_context<W: AsyncWrite + Unpin>(
    writer: &mut W,
    state: &mut Haggle,
    option: u32,
    data: &[u8],
) -> io::Result<()> {
    let set = option == NBD_OPT_SET_META_CONTEXT;
    if set {
        // proto.md: SET replaces the previous selection even when it fails.
        state.meta_export = None;
        if !state.structured {
            let msg = "negotiate structured replies first";
            return send_error(writer, option, NBD_REP_ERR_INVALID, msg).await;
        }
    }
    // Data: u32 name length, name, u32 count, count x (u32 length, query).
    let mut cur = Cursor(data);
    let parsed = (|| {
        let name = cur.string()?;
        let count = cur.u32()?;
        let mut matched = false;
        for _ in 0..count {
            let query = cur.string()?;
            matched |= if set {
                query == BASE_ALLOCATION // "base:" selects nothing in SET
            } else {
                query == BASE_ALLOCATION || query == "base:"
            };
        }
        // No queries: LIST returns everything, SET selects nothing.
        let matched = matched || (!set && count == 0);
        cur.is_empty().then_some((name, matched))
    })();
    let Some((name, matched)) = parsed else {
        return send_error(writer, option, NBD_REP_ERR_INVALID, "malformed request").await;
    };

    let mut buf = Vec::new();
    if matched {
        let mut payload = Vec::with_capacity(4 + BASE_ALLOCATION.len());
        // LIST's ids are reserved and SHOULD be zero.
        payload.put_u32(if set { BASE_ALLOCATION_ID } else { 0 });
        payload.put_slice(BASE_ALLOCATION.as_bytes());
        put_reply(&mut buf, option, NBD_REP_META_CONTEXT, &payload);
        if set {
            state.meta_export = Some(name);
        }
    }
    put_reply(&mut buf, option, NBD_REP_ACK, &[]);
    writer.write_all(&buf).await?;
    writer.flush().await
}

/// The transmission flags for an export.
pub fn transmission_flags(export: &dyn BlockExport, structured: bool) -> u16 {
    // Flush and FUA go to every replica of the VDI, so their effect is
    // visible from every connection: multi-conn is safe.
    let mut flags =
        NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_CACHE;
    if export.read_only() {
        flags |= NBD_FLAG_READ_ONLY;
    } else {
        flags |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;
    }
    if structured {
        // A read is always answered with one data chunk, so "don't
        // fragment" costs nothing; proto.md requires it be off otherwise.
        flags |= NBD_FLAG_SEND_DF;
    }
    flags
}

/// Minimum, preferred and maximum block size for `NBD_INFO_BLOCK_SIZE`.
/// Exports are byte-addressed, so the minimum is 1; the preferred size is
/// the export's block (object) size, which proto.md requires to be a power
/// of two in `[512, max]`.
pub fn block_sizes(export: &dyn BlockExport) -> (u32, u32, u32) {
    let block = export.block_size().clamp(512, MAX_PAYLOAD);
    // Round down to a power of two (a no-op for the usual 4 MiB).
    let preferred = 1u32 << (31 - block.leading_zeros());
    (1, preferred, MAX_PAYLOAD)
}

/// Appends one option reply to `buf`.
fn put_reply(buf: &mut Vec<u8>, option: u32, kind: u32, payload: &[u8]) {
    buf.put_u64(OPTION_REPLY_MAGIC);
    buf.put_u32(option);
    buf.put_u32(kind);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
}

async fn send_reply<W: AsyncWrite + Unpin>(
    writer: &mut W,
    option: u32,
    kind: u32,
    payload: &[u8],
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(20 + payload.len());
    put_reply(&mut buf, option, kind, payload);
    writer.write_all(&buf).await?;
    writer.flush().await
}

/// Sends an error reply; its payload is a message for a human.
async fn send_error<W: AsyncWrite + Unpin>(
    writer: &mut W,
    option: u32,
    kind: u32,
    message: &str,
) -> io::Result<()> {
    send_reply(writer, option, kind, truncate(message).as_bytes()).await
}

/// Cuts a message to the protocol's string limit on a character boundary.
pub fn truncate(message: &str) -> &str {
    if message.len() <= MAX_STRING {
        return message;
    }
    let mut end = MAX_STRING;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// Reads and drops `len` bytes without buffering them (`UnexpectedEof` if
/// the input ends first).
pub async fn skip<R: AsyncRead + Unpin>(reader: &mut R, len: u32) -> io::Result<()> {
    let copied = tokio::io::copy(&mut reader.take(len as u64), &mut tokio::io::sink()).await?;
    if copied < len as u64 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Bounds-checked big-endian parsing of option data; `None` on any
/// malformation, never a panic.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.bytes(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.bytes(4)?.try_into().ok()?))
    }

    /// A u32-length-prefixed string: valid UTF-8, no NUL, at most 4 KiB.
    fn string(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        if len > MAX_STRING {
            return None;
        }
        let s = std::str::from_utf8(self.bytes(len)?).ok()?;
        (!s.contains('\0')).then(|| s.to_owned())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
