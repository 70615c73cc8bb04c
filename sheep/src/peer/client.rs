//! The client side of peer RPC: one pooled, multiplexed connection per peer.
//!
//! A call registers a one-shot slot under a fresh request id, queues its
//! frame to the connection's writer task and waits for the reader task to
//! fill the slot. When a connection breaks, every call waiting on it fails
//! with [`PeerError::Network`] and the next call dials again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::{Frame, FrameKind, PeerError, PREAMBLE};

/// How long dialing a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a single call may take (a 4 MiB synchronous write on a slow
/// disk is well inside this).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Frame>>>>;

struct Connection {
    tx: mpsc::UnboundedSender<Frame>,
    pending: Pending,
}

/// Pooled connections to every peer this node talks to.
#[derive(Default)]
pub struct PeerClient {
    conns: tokio::sync::Mutex<HashMap<SocketAddr, Arc<Connection>>>,
    next_id: AtomicU64,
}

impl PeerClient {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends a request made in view `view` and waits for its reply frame.
    pub async fn call(
        &self,
        addr: SocketAddr,
        view: u64,
        meta: Bytes,
        data: Bytes,
    ) -> Result<Frame, PeerError> {
        let started = std::time::Instant::now();
        let r = self.call_once(addr, view, meta, data).await;
        let m = crate::metrics::instruments();
        m.peer_rpc.record(started.elapsed().as_secs_f64());
        if r.is_err() {
            m.peer_errors.increment(1);
        }
        r
    }

    async fn call_once(
        &self,
        addr: SocketAddr,
        view: u64,
        meta: Bytes,
        data: Bytes,
    ) -> Result<Frame, PeerError> {
        let conn = self.connection(addr).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (slot_tx, slot_rx) = oneshot::channel();
        conn.pending
            .lock()
            .expect("pending lock")
            .insert(id, slot_tx);
        let frame = Frame {
            kind: FrameKind::Request,
            id,
            view,
            meta,
            data,
        };
        if conn.tx.send(frame).is_err() {
            conn.pending.lock().expect("pending lock").remove(&id);
            self.forget(addr, &conn).await;
            return Err(network(addr, "connection closed"));
        }
        let reply = match tokio::time::timeout(CALL_TIMEOUT, slot_rx).await {
            Ok(Ok(frame)) => frame,
            Ok(Err(_)) => return Err(network(addr, "connection lost")),
            Err(_) => {
                conn.pending.lock().expect("pending lock").remove(&id);
                return Err(network(addr, "timed out"));
            }
        };
        match reply.kind {
            FrameKind::ViewMismatch => Err(PeerError::ViewMismatch {
                addr,
                theirs: reply.view,
            }),
            _ => Ok(reply),
        }
    }

    /// Sends `req` to `endpoint` on `addr` and decodes the reply, which is a
    /// `Result<Rep, u32>` (the error being a Sheepdog result code).
    pub async fn request<Req, Rep>(
        &self,
        addr: SocketAddr,
        view: u64,
        endpoint: super::Endpoint,
        req: &Req,
        data: Bytes,
    ) -> Result<(Result<Rep, u32>, Bytes), PeerError>
    where
        Req: serde::Serialize,
        Rep: serde::de::DeserializeOwned,
    {
        let reply = self.call(addr, view, endpoint.encode(req), data).await?;
        let rep = super::decode_meta(&reply.meta)?;
        Ok((rep, reply.data))
    }

    async fn connection(&self, addr: SocketAddr) -> Result<Arc<Connection>, PeerError> {
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(&addr) {
            if !c.tx.is_closed() {
                return Ok(c.clone());
            }
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| network(addr, "connect timed out"))?
            .map_err(|e| network(addr, &e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(spawn_connection(addr, stream));
        conns.insert(addr, conn.clone());
        Ok(conn)
    }

    async fn forget(&self, addr: SocketAddr, conn: &Arc<Connection>) {
        let mut conns = self.conns.lock().await;
        if conns.get(&addr).is_some_and(|c| Arc::ptr_eq(c, conn)) {
            conns.remove(&addr);
        }
    }
}

fn network(addr: SocketAddr, reason: &str) -> PeerError {
    PeerError::Network {
        addr,
        reason: reason.to_string(),
    }
}

/// Starts the writer and reader tasks of a new connection.
fn spawn_connection(addr: SocketAddr, stream: TcpStream) -> Connection {
    let (read_half, mut write_half) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel::<Frame>();
    let pending: Pending = Arc::default();

    let writer = tokio::spawn(async move {
        if write_half.write_all(&PREAMBLE).await.is_ok() {
            super::write_frames(rx, write_half).await;
        }
    });

    let reader_pending = pending.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(256 << 10, read_half);
        loop {
            match Frame::read(&mut reader).await {
                Ok(Some(frame)) => {
                    let slot = reader_pending
                        .lock()
                        .expect("pending lock")
                        .remove(&frame.id);
                    if let Some(slot) = slot {
                        let _ = slot.send(frame);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%addr, "peer connection: {e}");
                    break;
                }
            }
        }
        // Stopping the writer closes the queue, so the pool dials afresh;
        // dropping the slots wakes every waiting call with an error.
        writer.abort();
        reader_pending.lock().expect("pending lock").clear();
    });

    Connection { tx, pending }
}
