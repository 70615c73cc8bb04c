//! A raw NBD client: every byte of the fixed-newstyle handshake and of the transmission phase
//! laid out by hand (big-endian), for tests that must send what no real client would.
//!
//! Greeting: NBDMAGIC u64, IHAVEOPT u64, handshake flags u16; client flags u32. Option:
//! IHAVEOPT u64, option u32, length u32, data. Option reply: 0x3e889045565a9 u64, option u32,
//! reply type u32, length u32, data. Request: 0x25609513 u32, flags u16, type u16, handle u64,
//! offset u64, length u32 (+ data for WRITE). Simple reply: 0x67446698 u32, error u32,
//! handle u64 (+ data for a successful READ). Structured reply chunk: 0x668e33ef u32,
//! flags u16 (DONE = 1), type u16, handle u64, length u32, payload.
//!
//! Nothing here uses the server's code. Every read is bounded by a timeout.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub use crate::net::{drain_until_closed, read_n, Got};

pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
pub const FLAG_NO_ZEROES: u16 = 2;

pub const OPT_LIST: u32 = 3;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_ERR_UNSUP: u32 = 0x8000_0001;
pub const REP_ERR_BIT: u32 = 0x8000_0000;
pub const INFO_EXPORT: u16 = 0;

pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_FLAG_FUA: u16 = 1;

pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;

/// How long the server gets to answer or close.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}

pub fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

pub fn connect(port: u16) -> TcpStream {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_write_timeout(Some(REPLY_TIMEOUT))
        .expect("write timeout");
    s.set_read_timeout(Some(REPLY_TIMEOUT))
        .expect("read timeout");
    s
}

pub fn must_read(s: &mut TcpStream, n: usize, what: &str) -> Vec<u8> {
    match read_n(s, n, REPLY_TIMEOUT) {
        Got::Bytes(b) => b,
        other => panic!("{what}: want {n} bytes, got {other:?}"),
    }
}

/// Reads the 18-byte greeting and checks it; returns the handshake flags.
pub fn greeting(s: &mut TcpStream) -> u16 {
    let g = must_read(s, 18, "greeting");
    assert_eq!(be_u64(&g[0..8]), NBDMAGIC, "greeting NBDMAGIC: {g:02x?}");
    assert_eq!(be_u64(&g[8..16]), IHAVEOPT, "greeting IHAVEOPT: {g:02x?}");
    let flags = u16::from_be_bytes([g[16], g[17]]);
    assert!(
        flags & FLAG_FIXED_NEWSTYLE != 0,
        "fixed newstyle not offered: {flags:#x}"
    );
    flags
}

/// Greeting plus our client flags (fixed newstyle, and no-zeroes when offered).
pub fn start(port: u16) -> TcpStream {
    let mut s = connect(port);
    let flags = greeting(&mut s);
    let client = u32::from(FLAG_FIXED_NEWSTYLE | (flags & FLAG_NO_ZEROES));
    s.write_all(&client.to_be_bytes()).expect("client flags");
    s
}

pub fn option_bytes(magic: u64, option: u32, data: &[u8]) -> Vec<u8> {
    let mut m = magic.to_be_bytes().to_vec();
    m.extend_from_slice(&option.to_be_bytes());
    m.extend_from_slice(&(data.len() as u32).to_be_bytes());
    m.extend_from_slice(data);
    m
}

pub fn send_option(s: &mut TcpStream, option: u32, data: &[u8]) {
    s.write_all(&option_bytes(IHAVEOPT, option, data))
        .expect("send option");
}

/// One option reply: (option, reply type, data).
pub fn read_option_reply(s: &mut TcpStream, what: &str) -> (u32, u32, Vec<u8>) {
    let h = must_read(s, 20, what);
    assert_eq!(
        be_u64(&h[0..8]),
        OPT_REPLY_MAGIC,
        "{what}: reply magic {h:02x?}"
    );
    let len = be_u32(&h[16..20]) as usize;
    assert!(len <= 1 << 20, "{what}: option reply of {len} bytes");
    let data = must_read(s, len, what);
    (be_u32(&h[8..12]), be_u32(&h[12..16]), data)
}

/// NBD_OPT_GO for `name` with no information requests; returns (size, transmission flags)
/// from NBD_INFO_EXPORT, or the error reply type.
pub fn go(s: &mut TcpStream, name: &str) -> Result<(u64, u16), u32> {
    let mut data = (name.len() as u32).to_be_bytes().to_vec();
    data.extend_from_slice(name.as_bytes());
    data.extend_from_slice(&0u16.to_be_bytes());
    send_option(s, OPT_GO, &data);
    let mut export = None;
    loop {
        let (opt, typ, data) = read_option_reply(s, "NBD_OPT_GO");
        assert_eq!(opt, OPT_GO, "reply to GO names option {opt}");
        match typ {
            REP_INFO => {
                if data.len() >= 12 && u16::from_be_bytes([data[0], data[1]]) == INFO_EXPORT {
                    export = Some((
                        be_u64(&data[2..10]),
                        u16::from_be_bytes([data[10], data[11]]),
                    ));
                }
            }
            REP_ACK => return Ok(export.expect("NBD_INFO_EXPORT before the ACK")),
            t if t & REP_ERR_BIT != 0 => return Err(t),
            t => panic!("unexpected reply type {t:#x} to GO"),
        }
    }
}

/// A connection in the transmission phase on `name`.
pub fn session(port: u16, name: &str) -> (TcpStream, u64) {
    let mut s = start(port);
    let (size, _) = go(&mut s, name).unwrap_or_else(|t| panic!("GO {name}: error {t:#x}"));
    (s, size)
}

pub fn request_bytes(typ: u16, handle: u64, offset: u64, len: u32) -> Vec<u8> {
    request_bytes_with_flags(0, typ, handle, offset, len)
}

pub fn request_bytes_with_flags(
    flags: u16,
    typ: u16,
    handle: u64,
    offset: u64,
    len: u32,
) -> Vec<u8> {
    let mut r = REQUEST_MAGIC.to_be_bytes().to_vec();
    r.extend_from_slice(&flags.to_be_bytes());
    r.extend_from_slice(&typ.to_be_bytes());
    r.extend_from_slice(&handle.to_be_bytes());
    r.extend_from_slice(&offset.to_be_bytes());
    r.extend_from_slice(&len.to_be_bytes());
    r
}

/// A simple reply, or what happened instead.
#[derive(Debug)]
pub enum Reply {
    /// (error, handle).
    Simple(u32, u64),
    Closed,
    Silent,
}

pub fn read_reply(s: &mut TcpStream, timeout: Duration) -> Reply {
    match read_n(s, 16, timeout) {
        Got::Bytes(h) => {
            assert_eq!(
                be_u32(&h[0..4]),
                SIMPLE_REPLY_MAGIC,
                "reply magic: {h:02x?}"
            );
            Reply::Simple(be_u32(&h[4..8]), be_u64(&h[8..16]))
        }
        Got::Closed { partial: 0 } => Reply::Closed,
        Got::Closed { partial } => panic!("server closed after {partial} bytes of a reply"),
        Got::Silent => Reply::Silent,
    }
}

/// Sends a request and expects a simple reply with `handle`; returns its error.
pub fn call(
    s: &mut TcpStream,
    typ: u16,
    handle: u64,
    offset: u64,
    len: u32,
    payload: &[u8],
) -> u32 {
    let mut msg = request_bytes(typ, handle, offset, len);
    msg.extend_from_slice(payload);
    s.write_all(&msg).expect("send request");
    match read_reply(s, REPLY_TIMEOUT) {
        Reply::Simple(err, h) => {
            assert_eq!(h, handle, "reply handle");
            err
        }
        other => panic!("request type {typ} {offset}+{len}: want a reply, got {other:?}"),
    }
}

/// A good READ on an open session; returns the data.
pub fn good_read(s: &mut TcpStream, offset: u64, len: u32) -> Vec<u8> {
    let err = call(s, CMD_READ, 0x600d, offset, len, &[]);
    assert_eq!(err, 0, "good read {offset}+{len}");
    must_read(s, len as usize, "read data")
}

/// A good WRITE on an open session (the reply must be success).
pub fn good_write(s: &mut TcpStream, offset: u64, data: &[u8]) {
    let err = call(s, CMD_WRITE, 0x600e, offset, data.len() as u32, data);
    assert_eq!(err, 0, "good write {offset}+{}", data.len());
}

/// A good WRITE with FUA (durable on every replica before the reply).
pub fn good_fua_write(s: &mut TcpStream, offset: u64, data: &[u8]) {
    let mut msg =
        request_bytes_with_flags(CMD_FLAG_FUA, CMD_WRITE, 0x600f, offset, data.len() as u32);
    msg.extend_from_slice(data);
    s.write_all(&msg).expect("send request");
    match read_reply(s, REPLY_TIMEOUT) {
        Reply::Simple(0, 0x600f) => {}
        other => panic!("FUA write {offset}+{}: {other:?}", data.len()),
    }
}
