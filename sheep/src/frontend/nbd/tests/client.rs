//! A raw-bytes NBD client for the tests: it builds and parses the wire
//! format by hand (independently of the server's encoders), over an
//! in-memory duplex stream whose other end runs [`serve_connection`].

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BufMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::super::consts::*;
use super::super::serve_connection;
use crate::frontend::export::ExportCatalog;

/// Long enough for any reply in these tests; short enough to fail fast.
const WAIT: Duration = Duration::from_secs(10);

/// Runs `f` with the test timeout.
pub async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    timeout(WAIT, f)
        .await
        .expect("timed out waiting for the server")
}

/// An option reply.
#[derive(Debug)]
pub struct OptReply {
    pub option: u32,
    pub kind: u32,
    pub data: Vec<u8>,
}

/// A structured reply chunk.
#[derive(Debug)]
pub struct Chunk {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub payload: Vec<u8>,
}

impl Chunk {
    /// The error value of an error chunk.
    pub fn errno(&self) -> u32 {
        assert!(self.kind & 0x8000 != 0, "not an error chunk: {self:?}");
        u32::from_be_bytes(self.payload[..4].try_into().unwrap())
    }
}

pub struct Client {
    pub stream: DuplexStream,
}

impl Client {
    /// Starts a server connection on an in-memory pipe.
    pub fn connect(catalog: Arc<dyn ExportCatalog>) -> (Client, JoinHandle<io::Result<()>>) {
        let (ours, theirs) = tokio::io::duplex(4 << 20);
        let server = tokio::spawn(serve_connection(catalog, theirs));
        (Client { stream: ours }, server)
    }

    /// Reads the greeting and answers with `client_flags`.
    pub async fn hello(&mut self, client_flags: u32) {
        let mut greeting = [0u8; 18];
        within(self.stream.read_exact(&mut greeting)).await.unwrap();
        assert_eq!(&greeting[..8], b"NBDMAGIC");
        assert_eq!(&greeting[8..16], b"IHAVEOPT");
        assert_eq!(u16::from_be_bytes([greeting[16], greeting[17]]), 0b11);
        self.stream.write_u32(client_flags).await.unwrap();
    }

    /// Connects and does the usual fixed newstyle greeting.
    pub async fn start(catalog: Arc<dyn ExportCatalog>) -> (Client, JoinHandle<io::Result<()>>) {
        let (mut client, server) = Client::connect(catalog);
        client
            .hello(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)
            .await;
        (client, server)
    }

    pub async fn send_option(&mut self, option: u32, data: &[u8]) {
        let mut buf = Vec::new();
        buf.put_u64(IHAVEOPT);
        buf.put_u32(option);
        buf.put_u32(data.len() as u32);
        buf.put_slice(data);
        self.stream.write_all(&buf).await.unwrap();
    }

    pub async fn opt_reply(&mut self) -> OptReply {
        within(async {
            assert_eq!(self.stream.read_u64().await.unwrap(), 0x3e889045565a9);
            let option = self.stream.read_u32().await.unwrap();
            let kind = self.stream.read_u32().await.unwrap();
            let len = self.stream.read_u32().await.unwrap();
            let mut data = vec![0; len as usize];
            self.stream.read_exact(&mut data).await.unwrap();
            OptReply { option, kind, data }
        })
        .await
    }

    /// Sends an option and collects replies up to and including the final
    /// one (`ACK` or an error).
    pub async fn option(&mut self, option: u32, data: &[u8]) -> Vec<OptReply> {
        self.send_option(option, data).await;
        let mut replies = Vec::new();
        loop {
            let reply = self.opt_reply().await;
            assert_eq!(reply.option, option);
            let last = reply.kind == NBD_REP_ACK || reply.kind & 0x8000_0000 != 0;
            replies.push(reply);
            if last {
                return replies;
            }
        }
    }

    /// `GO` to `name`; returns the `(size, flags)` of `NBD_INFO_EXPORT`.
    pub async fn go(&mut self, name: &str) -> (u64, u16) {
        let replies = self
            .option(NBD_OPT_GO, &info_request(name, &[NBD_INFO_BLOCK_SIZE]))
            .await;
        assert_eq!(replies.last().unwrap().kind, NBD_REP_ACK, "{replies:?}");
        export_info(&replies)
    }

    /// Negotiates structured replies and `base:allocation` for `name`,
    /// then enters transmission.
    pub async fn go_structured(&mut self, name: &str) -> (u64, u16) {
        let r = self.option(NBD_OPT_STRUCTURED_REPLY, &[]).await;
        assert_eq!(r[0].kind, NBD_REP_ACK);
        let r = self
            .option(
                NBD_OPT_SET_META_CONTEXT,
                &meta_request(name, &[BASE_ALLOCATION]),
            )
            .await;
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].kind, NBD_REP_META_CONTEXT);
        self.go(name).await
    }

    pub async fn request(&mut self, flags: u16, kind: u16, cookie: u64, offset: u64, len: u32) {
        self.stream
            .write_all(&request(flags, kind, cookie, offset, len))
            .await
            .unwrap();
    }

    pub async fn write(&mut self, flags: u16, cookie: u64, offset: u64, data: &[u8]) {
        let mut buf = request(flags, NBD_CMD_WRITE, cookie, offset, data.len() as u32);
        buf.extend_from_slice(data);
        self.stream.write_all(&buf).await.unwrap();
    }

    /// A simple reply; `data_len` bytes follow it when `error` is 0.
    pub async fn simple(&mut self, data_len: usize) -> (u32, u64, Vec<u8>) {
        within(async {
            assert_eq!(
                self.stream.read_u32().await.unwrap(),
                NBD_SIMPLE_REPLY_MAGIC
            );
            let error = self.stream.read_u32().await.unwrap();
            let cookie = self.stream.read_u64().await.unwrap();
            let mut data = vec![0; if error == 0 { data_len } else { 0 }];
            self.stream.read_exact(&mut data).await.unwrap();
            (error, cookie, data)
        })
        .await
    }

    /// Expects a simple reply with no data for `cookie`; returns its error.
    pub async fn status(&mut self, cookie: u64) -> u32 {
        let (error, got, _) = self.simple(0).await;
        assert_eq!(got, cookie);
        error
    }

    pub async fn chunk(&mut self) -> Chunk {
        within(async {
            assert_eq!(
                self.stream.read_u32().await.unwrap(),
                NBD_STRUCTURED_REPLY_MAGIC
            );
            let flags = self.stream.read_u16().await.unwrap();
            let kind = self.stream.read_u16().await.unwrap();
            let cookie = self.stream.read_u64().await.unwrap();
            let len = self.stream.read_u32().await.unwrap();
            let mut payload = vec![0; len as usize];
            self.stream.read_exact(&mut payload).await.unwrap();
            Chunk {
                flags,
                kind,
                cookie,
                payload,
            }
        })
        .await
    }

    /// Expects the server to close the connection.
    pub async fn expect_closed(&mut self) {
        let mut byte = [0u8; 1];
        let n = within(self.stream.read(&mut byte)).await.unwrap_or(0);
        assert_eq!(n, 0, "expected the server to close the connection");
    }
}

pub fn request(flags: u16, kind: u16, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(28);
    buf.put_u32(NBD_REQUEST_MAGIC);
    buf.put_u16(flags);
    buf.put_u16(kind);
    buf.put_u64(cookie);
    buf.put_u64(offset);
    buf.put_u32(len);
    buf
}

/// Data of `NBD_OPT_INFO` / `NBD_OPT_GO`.
pub fn info_request(name: &str, infos: &[u16]) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.put_u32(name.len() as u32);
    buf.put_slice(name.as_bytes());
    buf.put_u16(infos.len() as u16);
    for i in infos {
        buf.put_u16(*i);
    }
    buf
}

/// Data of `NBD_OPT_{LIST,SET}_META_CONTEXT`.
pub fn meta_request(name: &str, queries: &[&str]) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.put_u32(name.len() as u32);
    buf.put_slice(name.as_bytes());
    buf.put_u32(queries.len() as u32);
    for q in queries {
        buf.put_u32(q.len() as u32);
        buf.put_slice(q.as_bytes());
    }
    buf
}

/// The `(size, flags)` from the `NBD_INFO_EXPORT` among `replies`.
pub fn export_info(replies: &[OptReply]) -> (u64, u16) {
    let info = replies
        .iter()
        .find(|r| r.kind == NBD_REP_INFO && r.data[..2] == NBD_INFO_EXPORT.to_be_bytes())
        .expect("NBD_INFO_EXPORT");
    assert_eq!(info.data.len(), 12);
    let size = u64::from_be_bytes(info.data[2..10].try_into().unwrap());
    (size, u16::from_be_bytes([info.data[10], info.data[11]]))
}

/// The `(min, preferred, max)` from the `NBD_INFO_BLOCK_SIZE` among `replies`.
pub fn block_size_info(replies: &[OptReply]) -> (u32, u32, u32) {
    let info = replies
        .iter()
        .find(|r| r.kind == NBD_REP_INFO && r.data[..2] == NBD_INFO_BLOCK_SIZE.to_be_bytes())
        .expect("NBD_INFO_BLOCK_SIZE");
    assert_eq!(info.data.len(), 14);
    let at = |i: usize| u32::from_be_bytes(info.data[i..i + 4].try_into().unwrap());
    (at(2), at(6), at(10))
}

/// Decodes a `BLOCK_STATUS` chunk into `(context id, [(len, flags)])`.
pub fn extents(chunk: &Chunk) -> (u32, Vec<(u32, u32)>) {
    assert_eq!(chunk.kind, NBD_REPLY_TYPE_BLOCK_STATUS, "{chunk:?}");
    let p = &chunk.payload;
    assert_eq!((p.len() - 4) % 8, 0);
    let at = |i: usize| u32::from_be_bytes(p[i..i + 4].try_into().unwrap());
    let list = (4..p.len())
        .step_by(8)
        .map(|i| (at(i), at(i + 4)))
        .collect();
    (at(0), list)
}

/// A recognisable byte pattern.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
