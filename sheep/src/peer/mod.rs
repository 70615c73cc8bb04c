//! Peer RPC: how sheep talk to each other.
//!
//! Peers share the data port with clients. A peer connection starts with the
//! 4-byte [`PREAMBLE`], which can never begin a Sheepdog header (its first
//! byte would be a protocol version), and then carries [`Frame`]s both ways.
//! One connection multiplexes many requests; replies carry the request's id
//! and may come back in any order.
//!
//! This layer moves opaque messages. It knows one thing about their meaning:
//! every request carries the sender's membership view id, and a server whose
//! own view differs answers [`FrameKind::ViewMismatch`] without running the
//! request. This is what keeps nodes with different views from acknowledging
//! writes to the wrong places. View id 0 means "valid in any view" and is
//! used only for requests that do not depend on placement (cluster format,
//! statistics, VDI bitmap exchange).
//!
//! Frame layout (little-endian):
//! `len u32 | kind u8 | id u64 | view u64 | meta_len u32 | meta | data`,
//! where `len` counts everything after itself. `meta` is the rmp-serde
//! encoded message; `data` is the raw object payload, kept outside msgpack so
//! megabytes are not re-encoded.

mod client;
mod server;

pub use client::PeerClient;
pub use server::{serve_peer, PeerService};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// First bytes a peer sends on a new connection.
pub const PREAMBLE: [u8; 4] = *b"SFP1";

/// Largest frame accepted (a 4 MiB object plus headroom; larger objects are
/// moved in pieces).
pub const MAX_FRAME: usize = 80 << 20;

const FIXED: usize = 1 + 8 + 8 + 4;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A request to run.
    Request = 0,
    /// The reply to request `id`.
    Response = 1,
    /// The receiver's view differs; `view` holds the receiver's view id.
    ViewMismatch = 2,
}

/// One message on a peer connection.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Request, response or view mismatch.
    pub kind: FrameKind,
    /// Request id, echoed in the reply.
    pub id: u64,
    /// Sender's view id (0: any view).
    pub view: u64,
    /// rmp-serde encoded message.
    pub meta: Bytes,
    /// Raw payload.
    pub data: Bytes,
}

/// Errors of the peer layer.
#[derive(Debug, thiserror::Error, Clone)]
pub enum PeerError {
    /// Could not reach the peer, or the connection broke mid-request.
    #[error("network error with {addr}: {reason}")]
    Network {
        /// The peer.
        addr: std::net::SocketAddr,
        /// What happened.
        reason: String,
    },
    /// The peer's view differs from the one the request was made in.
    #[error("peer {addr} is in view {theirs:016x}")]
    ViewMismatch {
        /// The peer.
        addr: std::net::SocketAddr,
        /// The peer's view id.
        theirs: u64,
    },
    /// A message could not be encoded or decoded.
    #[error("bad peer message: {0}")]
    Codec(String),
}

impl Frame {
    /// Serializes the frame into `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(4 + FIXED + self.meta.len() + self.data.len());
        self.encode_head(out);
        out.put_slice(&self.data);
    }

    /// Serializes everything but the payload into `out` (the payload
    /// follows it on the wire).
    pub fn encode_head(&self, out: &mut BytesMut) {
        let len = FIXED + self.meta.len() + self.data.len();
        out.reserve(4 + FIXED + self.meta.len());
        out.put_u32_le(len as u32);
        out.put_u8(self.kind as u8);
        out.put_u64_le(self.id);
        out.put_u64_le(self.view);
        out.put_u32_le(self.meta.len() as u32);
        out.put_slice(&self.meta);
    }

    /// Reads one frame; `Ok(None)` on a clean end of stream.
    pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(len) as usize;
        if !(FIXED..=MAX_FRAME).contains(&len) {
            return Err(invalid(format!("peer frame length {len}")));
        }
        // Filled by reads straight into spare capacity: zeroing megabytes
        // first would cost a pass over memory per copy received.
        let mut buf = BytesMut::with_capacity(len);
        while buf.len() < len {
            let want = len - buf.len();
            let mut rest = (&mut buf).limit(want);
            if r.read_buf(&mut rest).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        let mut buf = buf.freeze();
        let kind = match buf.get_u8() {
            0 => FrameKind::Request,
            1 => FrameKind::Response,
            2 => FrameKind::ViewMismatch,
            k => return Err(invalid(format!("peer frame kind {k}"))),
        };
        let id = buf.get_u64_le();
        let view = buf.get_u64_le();
        let meta_len = buf.get_u32_le() as usize;
        if meta_len > buf.len() {
            return Err(invalid(format!("peer meta length {meta_len}")));
        }
        let meta = buf.split_to(meta_len);
        Ok(Some(Frame {
            kind,
            id,
            view,
            meta,
            data: buf,
        }))
    }

    /// Writes one frame.
    pub async fn write<W: AsyncWrite + Unpin>(&self, w: &mut W) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        w.write_all(&out).await
    }
}

/// Payloads at least this long are written from their own buffer instead
/// of being copied into the batch (a pass over memory per object copy).
const COPY_LIMIT: usize = 64 << 10;

/// Writes every frame queued on `rx` to `w`, batching frames that are
/// already waiting into one write, until the queue closes or `w` fails.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Frame>,
    mut w: W,
) {
    let mut buf = BytesMut::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            if frame.data.len() < COPY_LIMIT {
                frame.encode(&mut buf);
            } else {
                frame.encode_head(&mut buf);
                let sent =
                    w.write_all(&buf).await.is_ok() && w.write_all(&frame.data).await.is_ok();
                buf.clear();
                if !sent {
                    return;
                }
            }
            next = rx.try_recv().ok();
        }
        if !buf.is_empty() {
            if w.write_all(&buf).await.is_err() {
                return;
            }
            buf.clear();
        }
    }
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// The subsystem a request is for; its number is the first byte of `meta`,
/// so each subsystem owns and encodes its own messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Endpoint {
    /// Object I/O on a replica (`gateway::ObjectRpc`).
    Object = 1,
    /// The VDI namespace (`vdi::VdiRpc`).
    Vdi = 2,
    /// Cluster format and node status (`format::ClusterRpc`).
    Cluster = 3,
}

impl Endpoint {
    /// Splits a request's meta into its endpoint and message bytes.
    pub fn split(meta: &Bytes) -> Result<(Endpoint, Bytes), PeerError> {
        let ep = match meta.first() {
            Some(1) => Endpoint::Object,
            Some(2) => Endpoint::Vdi,
            Some(3) => Endpoint::Cluster,
            other => return Err(PeerError::Codec(format!("unknown endpoint {other:?}"))),
        };
        Ok((ep, meta.slice(1..)))
    }

    /// Encodes a request message for this endpoint.
    pub fn encode<T: serde::Serialize>(self, msg: &T) -> Bytes {
        let mut out = vec![self as u8];
        // Encoding our own plain enums into a Vec cannot fail.
        rmp_serde::encode::write(&mut out, msg).expect("peer message encodes");
        Bytes::from(out)
    }
}

/// Encodes a message for a frame's `meta`.
pub fn encode_meta<T: serde::Serialize>(msg: &T) -> Bytes {
    // Encoding our own plain enums into a Vec cannot fail.
    Bytes::from(rmp_serde::to_vec(msg).expect("peer message encodes"))
}

/// Decodes a frame's `meta`.
pub fn decode_meta<T: serde::de::DeserializeOwned>(meta: &[u8]) -> Result<T, PeerError> {
    rmp_serde::from_slice(meta).map_err(|e| PeerError::Codec(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frame_round_trip_and_limits() {
        let f = Frame {
            kind: FrameKind::Response,
            id: 9,
            view: 77,
            meta: Bytes::from_static(b"meta"),
            data: Bytes::from_static(b"payload"),
        };
        let mut out = BytesMut::new();
        f.encode(&mut out);
        let mut r = &out[..];
        let g = Frame::read(&mut r).await.unwrap().unwrap();
        assert_eq!((g.kind, g.id, g.view), (FrameKind::Response, 9, 77));
        assert_eq!(&g.meta[..], b"meta");
        assert_eq!(&g.data[..], b"payload");
        assert!(Frame::read(&mut r).await.unwrap().is_none());

        let huge = (MAX_FRAME as u32 + 1).to_le_bytes();
        let mut r = &huge[..];
        assert!(Frame::read(&mut r).await.is_err());
        let mut bad = BytesMut::new();
        bad.put_u32_le(FIXED as u32);
        bad.put_u8(1);
        bad.put_u64_le(1);
        bad.put_u64_le(1);
        bad.put_u32_le(1000); // meta longer than the frame
        let mut r = &bad[..];
        assert!(Frame::read(&mut r).await.is_err());
    }
}
