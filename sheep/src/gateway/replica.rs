//! The replica side of object I/O: the messages sent to the nodes holding
//! an object, and how a node serves them from its local store.
//!
//! Client I/O (`Read`, `Write`, `Create`) passes the store's gate: it waits
//! while the local copy is unverified or being recovered. Copies between
//! nodes (`Fetch`, `Install`, `Pull`) and checks (`Stat`, `Scrub`, `List`)
//! do not wait for verification: they are how verification happens.

use std::net::SocketAddr;

use bytes::Bytes;
use qemu_proto::ObjectId;
use serde::{Deserialize, Serialize};

use crate::error::SheepError;
use crate::store::{Backing, CreateMode, StoreError, Version};

use super::Gateway;

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
    /// Write the payload at `offset` into an existing object.
    Write {
        /// Object id.
        oid: u64,
        /// Byte offset in the object.
        offset: u64,
        /// Make it durable before replying.
        sync: bool,
        /// The same on every replica (and on retries): versions count it.
        write_id: u64,
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
        /// Identifies the create in the new copy's version.
        write_id: u64,
        /// Make a backed copy: it holds only the payload, and reads the
        /// rest from this (immutable) object.
        backing: Option<Backing>,
    },
    /// The whole object and its version, to copy it.
    Fetch {
        /// Object id.
        oid: u64,
    },
    /// Create the object from a copy (payload) if it is missing here.
    Install {
        /// Object id.
        oid: u64,
        /// The copy's version.
        version: Version,
    },
    /// Replace the local copy with the best of `sources` (a repair).
    Pull {
        /// Object id.
        oid: u64,
        /// Nodes holding good copies, best first.
        sources: Vec<SocketAddr>,
    },
    /// Version of the local copy.
    Stat {
        /// Object id.
        oid: u64,
    },
    /// Check every block of the local copy.
    Scrub {
        /// Object id.
        oid: u64,
    },
    /// Make a backed copy a plain one (copy the backing object's blocks
    /// in), if it is backed by `from` (by anything, if `None`).
    Unback {
        /// Object id.
        oid: u64,
        /// Only a copy backed by this object.
        from: Option<u64>,
    },
    /// Remove the object.
    Remove {
        /// Object id.
        oid: u64,
    },
    /// Make every unsynced write durable.
    Flush,
    /// List every object held, with versions.
    List,
}

/// A local copy as reported to others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyState {
    /// Which writes it holds.
    pub version: Version,
    /// False while the copy is unverified (its node restarted or lost its
    /// majority since it last checked it): others must not prefer it over
    /// a verified copy.
    pub authoritative: bool,
}

/// What a scrub found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScrubState {
    /// No copy here.
    Missing,
    /// A block failed its checksum.
    Corrupt,
    /// Every block is good; the content's digest.
    Good {
        /// The copy's version.
        version: Version,
        /// crc32c of the content.
        digest: u32,
    },
}

/// A replica's successful answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ObjectReply {
    /// Done; read data, if any, is in the frame's data part.
    Done,
    /// A fetched copy's version (its bytes are the data part).
    Copy(Version),
    /// The local copy, if any.
    Stat(Option<CopyState>),
    /// What a scrub found.
    Scrub(ScrubState),
    /// Every object held.
    List(Vec<(u64, CopyState)>),
}

impl Gateway {
    /// Serves one object request from the local store. A gateway-only node
    /// holds nothing and says so.
    pub async fn serve_replica(
        &self,
        rpc: ObjectRpc,
        data: Bytes,
    ) -> Result<(ObjectReply, Bytes), SheepError> {
        let Some(store) = self.store() else {
            return Err(qemu_proto::SdResult::GATEWAY_MODE.into());
        };
        let done = |d: Vec<u8>| Ok((ObjectReply::Done, Bytes::from(d)));
        let state = |oid: ObjectId, version: Version| CopyState {
            version,
            authoritative: !store.gate().is_unverified(oid),
        };
        match rpc {
            ObjectRpc::Read { oid, offset, len } => {
                let read = store.read(ObjectId(oid), offset, len as usize).await?;
                done(self.resolve_read(offset, read).await?)
            }
            ObjectRpc::Write {
                oid,
                offset,
                sync,
                write_id,
            } => {
                let oid = ObjectId(oid);
                let write = |base| store.write(oid, offset, data.clone(), sync, write_id, base);
                match write(Vec::new()).await {
                    // A backed copy lacks the rest of a block the write
                    // covers partly: fetch it from the backing and retry.
                    Err(StoreError::NeedBase {
                        backing, blocks, ..
                    }) => write(self.base_blocks(backing, &blocks).await?).await?,
                    r => r?,
                }
                done(Vec::new())
            }
            ObjectRpc::Create {
                oid,
                offset,
                mode,
                sync,
                write_id,
                backing,
            } => {
                let oid = ObjectId(oid);
                let create = |base| {
                    store.create(
                        oid,
                        offset,
                        data.clone(),
                        mode,
                        sync,
                        write_id,
                        backing,
                        base,
                    )
                };
                match create(Vec::new()).await {
                    Err(StoreError::NeedBase {
                        backing, blocks, ..
                    }) => create(self.base_blocks(backing, &blocks).await?).await?,
                    r => r?,
                }
                done(Vec::new())
            }
            ObjectRpc::Fetch { oid } => {
                let (version, read) = store.fetch(ObjectId(oid)).await?;
                let bytes = self.resolve_whole(read).await?;
                self.counters.count_sent(bytes.len() as u64);
                Ok((ObjectReply::Copy(version), Bytes::from(bytes)))
            }
            ObjectRpc::Unback { oid, from } => {
                self.unback_local(ObjectId(oid), from.map(ObjectId)).await?;
                done(Vec::new())
            }
            ObjectRpc::Install { oid, version } => {
                let len = data.len() as u64;
                store
                    .install(ObjectId(oid), version, data, CreateMode::Exclusive, false)
                    .await?;
                self.counters.count_received(len);
                done(Vec::new())
            }
            ObjectRpc::Pull { oid, sources } => {
                let view = self.current().0.id;
                // A repair: replace whatever is here (missing, corrupt or
                // diverged) with the good copy.
                self.pull(view, ObjectId(oid), &sources, true).await?;
                done(Vec::new())
            }
            ObjectRpc::Stat { oid } => {
                let oid = ObjectId(oid);
                let s = store.meta(oid).map(|m| state(oid, m.version));
                Ok((ObjectReply::Stat(s), Bytes::new()))
            }
            ObjectRpc::Scrub { oid } => {
                let oid = ObjectId(oid);
                let scrubbed = if store.meta(oid).is_some_and(|m| m.backing.is_some()) {
                    // Digest what readers see, so a backed copy and a plain
                    // one with the same content agree.
                    match store.fetch(oid).await {
                        Ok((version, read)) => self
                            .resolve_whole(read)
                            .await
                            .map(|data| (version, crc32c::crc32c(&data))),
                        Err(e) => Err(e.into()),
                    }
                } else {
                    store.scrub(oid).await.map_err(SheepError::from)
                };
                let s = match scrubbed {
                    Ok((version, digest)) => ScrubState::Good { version, digest },
                    Err(SheepError::Store(StoreError::NoObject(_))) => ScrubState::Missing,
                    Err(SheepError::Store(StoreError::Corrupt(..))) => ScrubState::Corrupt,
                    Err(e) => return Err(e),
                };
                Ok((ObjectReply::Scrub(s), Bytes::new()))
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
                let list = store
                    .list()
                    .into_iter()
                    .map(|(oid, m)| (oid.0, state(oid, m.version)))
                    .collect();
                Ok((ObjectReply::List(list), Bytes::new()))
            }
        }
    }
}
