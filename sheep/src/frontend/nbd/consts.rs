//! Numbers of the NBD protocol (magics, option and command codes, flags,
//! error values) and this server's limits.
//!
//! Values are as given by the NBD protocol document (`doc/proto.md` of
//! NetworkBlockDevice/nbd); everything on the wire is big-endian. Only what
//! this server sends or recognises is listed.

// ---- Handshake -----------------------------------------------------------

/// First 8 bytes the server sends (`NBDMAGIC`).
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// Newstyle magic (`IHAVEOPT`): sent after [`NBD_MAGIC`] and at the start
/// of every option the client sends.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

/// Handshake flag: the server speaks fixed newstyle.
pub const NBD_FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the server can omit the 124 zero bytes after
/// `NBD_OPT_EXPORT_NAME`.
pub const NBD_FLAG_NO_ZEROES: u16 = 1 << 1;

/// Client flag: the client speaks fixed newstyle.
pub const NBD_FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const NBD_FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Option: select an export and enter transmission (no error reply possible).
pub const NBD_OPT_EXPORT_NAME: u32 = 1;
/// Option: end the session.
pub const NBD_OPT_ABORT: u32 = 2;
/// Option: list the exports.
pub const NBD_OPT_LIST: u32 = 3;
/// Option: describe an export without selecting it.
pub const NBD_OPT_INFO: u32 = 6;
/// Option: describe an export and enter transmission.
pub const NBD_OPT_GO: u32 = 7;
/// Option: use structured replies in transmission.
pub const NBD_OPT_STRUCTURED_REPLY: u32 = 8;
/// Option: list metadata contexts matching queries.
pub const NBD_OPT_LIST_META_CONTEXT: u32 = 9;
/// Option: select metadata contexts for `NBD_CMD_BLOCK_STATUS`.
pub const NBD_OPT_SET_META_CONTEXT: u32 = 10;

/// Option reply: success / end of a list.
pub const NBD_REP_ACK: u32 = 1;
/// Option reply: one export of a `NBD_OPT_LIST`.
pub const NBD_REP_SERVER: u32 = 2;
/// Option reply: one piece of information about an export.
pub const NBD_REP_INFO: u32 = 3;
/// Option reply: one metadata context.
pub const NBD_REP_META_CONTEXT: u32 = 4;
/// Error option reply: option not supported.
pub const NBD_REP_ERR_UNSUP: u32 = 0x8000_0001;
/// Error option reply: refused by policy.
pub const NBD_REP_ERR_POLICY: u32 = 0x8000_0002;
/// Error option reply: malformed option.
pub const NBD_REP_ERR_INVALID: u32 = 0x8000_0003;
/// Error option reply: no such export.
pub const NBD_REP_ERR_UNKNOWN: u32 = 0x8000_0006;
/// Error option reply: request or reply too large.
pub const NBD_REP_ERR_TOO_BIG: u32 = 0x8000_0009;

/// Information type: size and transmission flags.
pub const NBD_INFO_EXPORT: u16 = 0;
/// Information type: minimum, preferred and maximum block sizes.
pub const NBD_INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flag: always set.
pub const NBD_FLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: the export is read-only.
pub const NBD_FLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: `NBD_CMD_FLUSH` is supported.
pub const NBD_FLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: `NBD_CMD_FLAG_FUA` is supported.
pub const NBD_FLAG_SEND_FUA: u16 = 1 << 3;
/// Transmission flag: `NBD_CMD_TRIM` is supported.
pub const NBD_FLAG_SEND_TRIM: u16 = 1 << 5;
/// Transmission flag: `NBD_CMD_WRITE_ZEROES` (and `NO_HOLE`) is supported.
pub const NBD_FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag: `NBD_CMD_FLAG_DF` is supported on reads.
pub const NBD_FLAG_SEND_DF: u16 = 1 << 7;
/// Transmission flag: flush and FUA are visible across connections.
pub const NBD_FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
/// Transmission flag: `NBD_CMD_CACHE` is understood.
pub const NBD_FLAG_SEND_CACHE: u16 = 1 << 10;

/// The one metadata context we serve.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// The id we give [`BASE_ALLOCATION`] in `NBD_OPT_SET_META_CONTEXT`
/// (any value works; the client treats it as opaque).
pub const BASE_ALLOCATION_ID: u32 = 1;
/// `base:allocation` status: the extent is not allocated.
pub const NBD_STATE_HOLE: u32 = 1 << 0;
/// `base:allocation` status: the extent reads as zeros.
pub const NBD_STATE_ZERO: u32 = 1 << 1;

// ---- Transmission ---------------------------------------------------------

/// Magic of a request.
pub const NBD_REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const NBD_SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk.
pub const NBD_STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Size of a request header.
pub const REQUEST_SIZE: usize = 28;
/// Size of a simple reply header.
pub const SIMPLE_REPLY_SIZE: usize = 16;
/// Size of a structured reply chunk header.
pub const CHUNK_HEADER_SIZE: usize = 20;

/// Command: read.
pub const NBD_CMD_READ: u16 = 0;
/// Command: write (payload follows the header).
pub const NBD_CMD_WRITE: u16 = 1;
/// Command: disconnect (no reply).
pub const NBD_CMD_DISC: u16 = 2;
/// Command: make completed writes durable.
pub const NBD_CMD_FLUSH: u16 = 3;
/// Command: discard a range.
pub const NBD_CMD_TRIM: u16 = 4;
/// Command: prefetch hint.
pub const NBD_CMD_CACHE: u16 = 5;
/// Command: make a range read as zeros.
pub const NBD_CMD_WRITE_ZEROES: u16 = 6;
/// Command: query metadata contexts.
pub const NBD_CMD_BLOCK_STATUS: u16 = 7;

/// Command flag: durable before the reply.
pub const NBD_CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag (`WRITE_ZEROES`): leave the range allocated.
pub const NBD_CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// Command flag (`READ`): at most one content chunk.
pub const NBD_CMD_FLAG_DF: u16 = 1 << 2;
/// Command flag (`BLOCK_STATUS`): exactly one extent.
pub const NBD_CMD_FLAG_REQ_ONE: u16 = 1 << 3;

/// Structured reply flag: the last chunk of a reply.
pub const NBD_REPLY_FLAG_DONE: u16 = 1 << 0;
/// Chunk type: empty, final.
pub const NBD_REPLY_TYPE_NONE: u16 = 0;
/// Chunk type: data at an offset.
pub const NBD_REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Chunk type: extents of one metadata context.
pub const NBD_REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Chunk type: an error with an optional message.
pub const NBD_REPLY_TYPE_ERROR: u16 = 0x8001;

/// Error: operation not permitted (write to a read-only export).
pub const NBD_EPERM: u32 = 1;
/// Error: input/output error.
pub const NBD_EIO: u32 = 5;
/// Error: invalid argument.
pub const NBD_EINVAL: u32 = 22;
/// Error: no space left (also: write past the end).
pub const NBD_ENOSPC: u32 = 28;
/// Error: value too large.
pub const NBD_EOVERFLOW: u32 = 75;

// ---- Limits ---------------------------------------------------------------

/// Largest read or write payload we accept (and advertise as the maximum
/// block size): 32 MiB, the size every client must be able to live with.
pub const MAX_PAYLOAD: u32 = 32 << 20;

/// Largest option payload we buffer. Export names and queries are at most
/// 4 KiB each, so this is plenty; longer options are skipped unread.
pub const MAX_OPTION_LEN: u32 = 64 << 10;

/// Longest string (export name, context name, error message) the protocol
/// allows.
pub const MAX_STRING: usize = 4096;

/// Requests one connection may have in flight before we stop reading.
pub const MAX_IN_FLIGHT: usize = 128;

/// Read and write payload bytes one connection may hold at once (requests
/// waiting for the export plus replies waiting for the socket). Reading
/// from the client pauses when it is spent, so a connection's memory is
/// bounded whatever the client sends.
pub const MAX_BUFFERED: u32 = 96 << 20;

/// Most extents we put in one block status reply (the limit proto.md asks
/// servers to stay under).
pub const MAX_EXTENTS: usize = 1 << 20;
