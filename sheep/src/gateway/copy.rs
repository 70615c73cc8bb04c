//! Whole-object copies between nodes: the write path's repair of a replica
//! that lacks an object, and pulls that replace a local copy with a better
//! one (recovery, verification after a restart, repair of a corrupt copy).
//!
//! Ordering: a pull holds the object's exclusive gate lock from before the
//! fetch until the copy is installed, so a client write that reaches this
//! node meanwhile waits and is applied on top of the new copy, never lost
//! under it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use qemu_proto::{ObjectId, SdResult};

use crate::error::SheepError;
use crate::store::{CreateMode, Version};

use super::{Gateway, ObjectReply, ObjectRpc};

/// How often a pull fetches again when the local copy holds writes the
/// source has not applied yet (in flight to it).
const PULL_ATTEMPTS: usize = 3;
const PULL_RETRY: Duration = Duration::from_millis(100);

/// Client I/O this recent makes background copies yield to it (paced
/// installs here, fewer pulls at once in recovery).
pub const CLIENTS_ACTIVE: Duration = Duration::from_millis(500);

/// Bytes moved by object copies since the daemon started.
#[derive(Default)]
pub struct CopyCounters {
    objects_received: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
}

impl CopyCounters {
    /// (objects received, bytes received, bytes sent).
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.objects_received.load(Ordering::Relaxed),
            self.bytes_received.load(Ordering::Relaxed),
            self.bytes_sent.load(Ordering::Relaxed),
        )
    }

    pub(super) fn count_received(&self, bytes: u64) {
        self.objects_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(super) fn count_sent(&self, bytes: u64) {
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Gateway {
    /// Bytes moved by copies.
    pub fn counters(&self) -> &std::sync::Arc<CopyCounters> {
        &self.counters
    }

    /// Fetches `oid` from the first of `sources` that has a good copy.
    pub async fn fetch(
        &self,
        view: u64,
        oid: ObjectId,
        sources: &[SocketAddr],
    ) -> Result<(Version, Bytes), SheepError> {
        let mut last = SheepError::Store(crate::store::StoreError::NoObject(oid));
        for addr in sources {
            match self
                .call_replica(*addr, view, ObjectRpc::Fetch { oid: oid.0 }, Bytes::new())
                .await
            {
                Ok((ObjectReply::Copy(v), data)) => return Ok((v, data)),
                Ok(_) => last = SdResult::INVALID_PARMS.into(),
                Err(e) => {
                    tracing::debug!(%oid, %addr, "fetch failed: {e}");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Gives `to`, which lacks `oid`, a copy from `from`, which has it.
    /// Returns false when `to` had meanwhile got a copy another way: that
    /// copy may predate the caller's write, so the caller must apply it.
    pub(super) async fn copy_object(
        &self,
        view: u64,
        oid: ObjectId,
        from: SocketAddr,
        to: SocketAddr,
    ) -> Result<bool, SheepError> {
        tracing::info!(%oid, %from, %to, "copying a missing replica");
        let (version, content) = self.fetch(view, oid, &[from]).await?;
        let rpc = ObjectRpc::Install {
            oid: oid.0,
            version,
        };
        match self.call_replica(to, view, rpc, content).await {
            Ok(_) => Ok(true),
            Err(e) if e.result() == SdResult::OID_EXIST => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Replaces the local copy of `oid` with the first good copy among
    /// `sources` (best first). Keeps the local copy when it already has the
    /// same version, unless `local_bad` (it failed a checksum). Returns
    /// whether a copy was installed.
    pub async fn pull(
        &self,
        view: u64,
        oid: ObjectId,
        sources: &[SocketAddr],
        local_bad: bool,
    ) -> Result<bool, SheepError> {
        let Some(store) = self.store() else {
            return Err(SdResult::GATEWAY_MODE.into());
        };
        let _exclusive = store.gate().exclusive(oid).await;
        for attempt in 1..=PULL_ATTEMPTS {
            let (version, data) = self.fetch(view, oid, sources).await?;
            if let Some(local) = store.meta(oid) {
                if local.version == version && !local_bad {
                    store.gate().verified(oid);
                    return Ok(false);
                }
                if local.version.count > version.count && attempt < PULL_ATTEMPTS {
                    // This copy applied a write that is still on its way
                    // to the source: fetch again once it has landed there.
                    tokio::time::sleep(PULL_RETRY).await;
                    continue;
                }
            }
            let len = data.len() as u64;
            // While clients use this node, make the copy durable in small
            // steps, so their flushes never wait behind a whole object.
            let paced = store.clients_active_within(CLIENTS_ACTIVE);
            store
                .install(oid, version, data, CreateMode::Replace, paced)
                .await?;
            self.counters.count_received(len);
            tracing::debug!(%oid, %version, "installed a copy");
            return Ok(true);
        }
        unreachable!("the last attempt always installs")
    }
}
