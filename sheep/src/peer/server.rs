//! The server side of peer RPC: runs each request of a connection as its own
//! task and writes replies as they complete.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::sync::{mpsc, watch};

use super::{Frame, FrameKind};
use crate::cluster::{BoxFuture, View};

/// What runs peer requests (the node's dispatcher).
pub trait PeerService: Send + Sync + 'static {
    /// Runs one request; returns the reply's (meta, data).
    fn handle(&self, meta: Bytes, data: Bytes) -> BoxFuture<'_, (Bytes, Bytes)>;
}

/// Serves one peer connection (the preamble has been consumed) until it
/// closes or sends something malformed.
pub async fn serve_peer<R, W>(
    read: R,
    write: W,
    service: Arc<dyn PeerService>,
    view: watch::Receiver<Arc<View>>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel::<Frame>();
    let writer = tokio::spawn(super::write_frames(rx, write));

    let mut reader = BufReader::with_capacity(256 << 10, read);
    loop {
        let frame = match Frame::read(&mut reader).await {
            Ok(Some(f)) if f.kind == FrameKind::Request => f,
            Ok(Some(_)) | Ok(None) => break,
            Err(e) => {
                tracing::debug!("peer connection closed: {e}");
                break;
            }
        };
        let current = view.borrow().id;
        if frame.view != 0 && frame.view != current {
            // Refuse work made under another view: the sender retries once
            // the views agree, so nobody acknowledges a misplaced write.
            let _ = tx.send(Frame {
                kind: FrameKind::ViewMismatch,
                id: frame.id,
                view: current,
                meta: Bytes::new(),
                data: Bytes::new(),
            });
            continue;
        }
        let service = service.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let (meta, data) = service.handle(frame.meta, frame.data).await;
            let _ = tx.send(Frame {
                kind: FrameKind::Response,
                id: frame.id,
                view: 0,
                meta,
                data,
            });
        });
    }
    drop(tx);
    let _ = writer.await;
}
