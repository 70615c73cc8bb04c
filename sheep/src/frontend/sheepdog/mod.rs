//! The Sheepdog protocol front end (clients: dog, QEMU's sheepdog driver).
//!
//! A connection carries many requests at once: each request runs as its own
//! task and its reply is written when it completes, matched by the request
//! id, as QEMU expects. A request is a 48-byte header followed by
//! `data_length` bytes only if it has the WRITE flag.
//!
//! Malformed input never takes the daemon down: an unknown opcode or bad
//! parameters get an error reply; a payload too large to accept gets an
//! error reply and the connection is closed (its bytes cannot be skipped
//! safely); a client that vanishes mid-request just ends its connection.

mod admin;
mod ops;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use qemu_proto::consts::SD_REQ_SIZE;
use qemu_proto::{Opcode, SdRequest, SdResponse, SdResult};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, Semaphore};

use crate::node::Sheep;

/// Largest payload a client may send or ask for in one request. A 4 MiB
/// object read or write is the usual; the full inode is 12.5 MB.
pub const MAX_DATA: u32 = 64 << 20;

/// Requests one connection may have in flight before reading pauses.
const MAX_IN_FLIGHT: usize = 128;

/// Serves one client connection whose first 4 bytes were already read.
pub async fn serve_client<R, W>(
    sheep: Arc<Sheep>,
    first: [u8; 4],
    read: R,
    mut write: W,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<(SdResponse, Bytes)>();
    let killer = sheep.clone();
    let writer = tokio::spawn(async move {
        let mut buf = BytesMut::new();
        while let Some((rsp, data)) = rx.recv().await {
            buf.clear();
            buf.extend_from_slice(&rsp.to_bytes());
            buf.extend_from_slice(&data);
            let written = write.write_all(&buf).await.is_ok();
            if admin::kills(&rsp) {
                // KILL_NODE: stop only once the client has its answer.
                let _ = write.flush().await;
                killer.kill();
            }
            if !written {
                break;
            }
        }
    });

    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut reader = BufReader::with_capacity(256 << 10, read);
    let mut header = [0u8; SD_REQ_SIZE];
    header[..4].copy_from_slice(&first);
    let mut have = 4;
    let result = loop {
        if let Err(e) = reader.read_exact(&mut header[have..]).await {
            break if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Ok(())
            } else {
                Err(e)
            };
        }
        have = 0;
        let req = SdRequest::from_bytes(&header);
        let mut data = Bytes::new();
        if req.data_length > MAX_DATA {
            let _ = tx.send((error_reply(&req, SdResult::INVALID_PARMS), Bytes::new()));
            if req.has_write_flag() {
                // We cannot skip a payload we refuse to buffer, so the
                // stream is out of sync: answer, then close.
                break Ok(());
            }
            continue;
        }
        if req.has_write_flag() {
            let mut buf = BytesMut::zeroed(req.data_length as usize);
            if let Err(e) = reader.read_exact(&mut buf).await {
                break Err(e);
            }
            data = buf.freeze();
        }
        let permit = slots.clone().acquire_owned().await.expect("semaphore open");
        let sheep = sheep.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let reply = ops::dispatch(&sheep, &req, data).await;
            let m = &crate::metrics::instruments().sheepdog;
            let op = match req.opcode() {
                Some(Opcode::ReadObj) => &m.read,
                Some(Opcode::WriteObj | Opcode::CreateAndWriteObj) => &m.write,
                Some(Opcode::FlushVdi) => &m.flush,
                _ => &m.other,
            };
            op.record(started.elapsed(), reply.0.result == SdResult::SUCCESS);
            let _ = tx.send(reply);
            drop(permit);
        });
    };
    drop(tx);
    let _ = writer.await;
    result
}

/// A reply carrying only an error.
fn error_reply(req: &SdRequest, result: SdResult) -> SdResponse {
    SdResponse::for_request(req, result)
}
