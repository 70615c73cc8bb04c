//! The replica side of object I/O: the messages a gateway sends to the nodes
//! holding an object, and how a node applies them to its local store.

use bytes::Bytes;
use qemu_proto::ObjectId;
use serde::{Deserialize, Serialize};

use crate::error::SheepError;
use crate::store::{CreateMode, ObjectStore};

/// Object I/O on one replica. Payloads travel in the frame's data part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ObjectRpc {
    /// Read `len` bytes at `offset`.
    Read {
        /// Object id.
        oid: u64,
        /// Byte offset in the object.
        offset: u64,
        /// Bytes to read.
        len: u32,
    },
    /// Read the whole object (to copy it to a replica that lacks it).
    ReadAll {
        /// Object id.
        oid: u64,
    },
    /// Write the payload at `offset` into an existing object.
    Write {
        /// Object id.
        oid: u64,
        /// Byte offset in the object.
        offset: u64,
        /// Make it durable before replying.
        sync: bool,
    },
    /// Create the object with the payload at `offset`.
    Create {
        /// Object id.
        oid: u64,
        /// Byte offset of the payload.
        offset: u64,
        /// Replace or keep an existing copy.
        mode: CreateMode,
        /// Make it durable before replying.
        sync: bool,
    },
    /// Remove the object.
    Remove {
        /// Object id.
        oid: u64,
    },
    /// Make every unsynced write durable.
    Flush,
    /// List every object held.
    List,
}

/// A replica's successful answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ObjectReply {
    /// Done; read data, if any, is in the frame's data part.
    Done,
    /// The objects held.
    List(Vec<u64>),
}

/// Applies one request to the local store. `None` store means this node is
/// a gateway and holds nothing.
pub async fn apply(
    store: Option<&ObjectStore>,
    rpc: ObjectRpc,
    data: Bytes,
) -> Result<(ObjectReply, Bytes), SheepError> {
    let Some(store) = store else {
        return Err(qemu_proto::SdResult::GATEWAY_MODE.into());
    };
    let done = |d: Vec<u8>| Ok((ObjectReply::Done, Bytes::from(d)));
    match rpc {
        ObjectRpc::Read { oid, offset, len } => {
            done(store.read(ObjectId(oid), offset, len as usize).await?)
        }
        ObjectRpc::ReadAll { oid } => done(store.read_all(ObjectId(oid)).await?),
        ObjectRpc::Write { oid, offset, sync } => {
            store.write(ObjectId(oid), offset, data, sync).await?;
            done(Vec::new())
        }
        ObjectRpc::Create {
            oid,
            offset,
            mode,
            sync,
        } => {
            store
                .create(ObjectId(oid), offset, data, mode, sync)
                .await?;
            done(Vec::new())
        }
        ObjectRpc::Remove { oid } => {
            store.remove(ObjectId(oid)).await?;
            done(Vec::new())
        }
        ObjectRpc::Flush => {
            store.flush().await?;
            done(Vec::new())
        }
        ObjectRpc::List => {
            let list = store.list().await?.into_iter().map(|o| o.0).collect();
            Ok((ObjectReply::List(list), Bytes::new()))
        }
    }
}
