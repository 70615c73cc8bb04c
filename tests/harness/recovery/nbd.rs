//! An NBD client for disks under failure: every outcome (error reply, close, silence) comes
//! back as a value instead of a panic, so tests can tell a refused write from a lost one.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::BlockModel;
use crate::nbd_raw::{
    be_u32, be_u64, option_bytes, request_bytes, CMD_READ, CMD_WRITE, FLAG_FIXED_NEWSTYLE,
    FLAG_NO_ZEROES, IHAVEOPT, NBDMAGIC, OPT_GO, OPT_REPLY_MAGIC, REP_ACK, REP_ERR_BIT,
    SIMPLE_REPLY_MAGIC,
};
use crate::net::{read_n, Got};
use crate::Cluster;

/// Opens an NBD session on `name` at 127.0.0.1:`port` (fixed newstyle, NBD_OPT_GO); `Err`
/// instead of a panic if the server refuses, closes or stays silent for `timeout`.
pub fn nbd_open(port: u16, name: &str, timeout: Duration) -> Result<TcpStream, String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let g = bytes(&mut s, 18, timeout, "greeting")?;
    if be_u64(&g[0..8]) != NBDMAGIC || be_u64(&g[8..16]) != IHAVEOPT {
        return Err(format!("bad greeting {g:02x?}"));
    }
    let flags = u16::from_be_bytes([g[16], g[17]]);
    let client = u32::from(FLAG_FIXED_NEWSTYLE | (flags & FLAG_NO_ZEROES));
    let mut msg = client.to_be_bytes().to_vec();
    let mut go = (name.len() as u32).to_be_bytes().to_vec();
    go.extend_from_slice(name.as_bytes());
    go.extend_from_slice(&0u16.to_be_bytes());
    msg.extend_from_slice(&option_bytes(IHAVEOPT, OPT_GO, &go));
    s.write_all(&msg).map_err(|e| format!("send GO: {e}"))?;
    loop {
        let h = bytes(&mut s, 20, timeout, "option reply")?;
        if be_u64(&h[0..8]) != OPT_REPLY_MAGIC {
            return Err(format!("bad option reply {h:02x?}"));
        }
        let typ = be_u32(&h[12..16]);
        bytes(&mut s, be_u32(&h[16..20]) as usize, timeout, "option data")?;
        match typ {
            REP_ACK => return Ok(s),
            t if t & REP_ERR_BIT != 0 => return Err(format!("GO {name}: error reply {t:#x}")),
            _ => {}
        }
    }
}

fn bytes(s: &mut TcpStream, n: usize, timeout: Duration, what: &str) -> Result<Vec<u8>, String> {
    match read_n(s, n, timeout) {
        Got::Bytes(b) => Ok(b),
        Got::Closed { partial } => Err(format!("{what}: closed after {partial} bytes")),
        Got::Silent => Err(format!("{what}: no answer within {timeout:?}")),
    }
}

/// How an NBD request ended when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NbdFailure {
    /// An error reply (errno).
    Error(u32),
    /// The connection closed or broke.
    Closed(String),
    /// No reply within the timeout.
    Silent,
}

fn request(
    s: &mut TcpStream,
    typ: u16,
    handle: u64,
    offset: u64,
    len: u32,
    payload: &[u8],
    timeout: Duration,
) -> Result<(), NbdFailure> {
    let mut msg = request_bytes(typ, handle, offset, len);
    msg.extend_from_slice(payload);
    s.write_all(&msg)
        .map_err(|e| NbdFailure::Closed(format!("send: {e}")))?;
    match read_n(s, 16, timeout) {
        Got::Bytes(h) => {
            if be_u32(&h[0..4]) != SIMPLE_REPLY_MAGIC || be_u64(&h[8..16]) != handle {
                return Err(NbdFailure::Closed(format!("bad reply {h:02x?}")));
            }
            match be_u32(&h[4..8]) {
                0 => Ok(()),
                err => Err(NbdFailure::Error(err)),
            }
        }
        Got::Closed { partial } => Err(NbdFailure::Closed(format!("after {partial} bytes"))),
        Got::Silent => Err(NbdFailure::Silent),
    }
}

/// NBD_CMD_WRITE; `Ok` only for a success reply within `timeout`.
pub fn nbd_write(
    s: &mut TcpStream,
    handle: u64,
    offset: u64,
    data: &[u8],
    timeout: Duration,
) -> Result<(), NbdFailure> {
    request(
        s,
        CMD_WRITE,
        handle,
        offset,
        data.len() as u32,
        data,
        timeout,
    )
}

/// NBD_CMD_READ; the data for a success reply within `timeout`.
pub fn nbd_read(
    s: &mut TcpStream,
    handle: u64,
    offset: u64,
    len: u32,
    timeout: Duration,
) -> Result<Vec<u8>, NbdFailure> {
    request(s, CMD_READ, handle, offset, len, &[], timeout)?;
    match read_n(s, len as usize, timeout) {
        Got::Bytes(b) => Ok(b),
        Got::Closed { partial } => Err(NbdFailure::Closed(format!("data after {partial} bytes"))),
        Got::Silent => Err(NbdFailure::Silent),
    }
}

/// Reads `[0, model.size())` through an NBD session on node `node` in 1 MiB requests and
/// checks every byte against `model`; panics (with node logs) on any failure.
pub fn nbd_verify_all(cluster: &Cluster, node: usize, name: &str, model: &BlockModel) {
    const CHUNK: u64 = 1 << 20;
    let timeout = Duration::from_secs(60);
    let mut s = nbd_open(cluster.nbd_port(node), name, timeout).unwrap_or_else(|e| {
        panic!(
            "NBD open {name} on node {node}: {e}\n{}",
            cluster.all_log_tails()
        )
    });
    let mut offset = 0;
    while offset < model.size() {
        let len = CHUNK.min(model.size() - offset);
        let got = nbd_read(&mut s, offset, offset, len as u32, timeout).unwrap_or_else(|e| {
            panic!(
                "NBD read {offset}+{len} of {name} on node {node}: {e:?}\n{}",
                cluster.all_log_tails()
            )
        });
        if let Err(e) = model.check(&format!("NBD read via node {node}"), offset, &got) {
            panic!("{e}");
        }
        offset += len;
    }
}

/// `dog vdi read NAME` (the whole VDI) through node `node`, checked against `model`.
pub fn dog_verify_all(cluster: &Cluster, node: usize, name: &str, model: &BlockModel) {
    let got = cluster.read_vdi(node, name);
    if let Err(e) = model.check(&format!("dog vdi read via node {node}"), 0, &got) {
        panic!("{e}");
    }
}
