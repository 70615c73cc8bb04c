//! Urgent verification: client I/O is waiting for an unverified (or
//! corrupt) local copy. Compare it with the other replicas now and pull a
//! better copy if there is one.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use qemu_proto::ObjectId;

use crate::error::SheepError;
use crate::gateway::{CopyState, ObjectReply, ObjectRpc};

use super::{best_version, needs_pull, sources, Recovery};

/// How long to wait before trying again when the others cannot be asked
/// (a view change in progress).
const RETRY: Duration = Duration::from_millis(200);

impl Recovery {
    /// Serves the gate's urgent requests, several at a time.
    pub(super) async fn serve_urgent(self: Arc<Self>) {
        let store = self.gateway.store().expect("a storing node");
        let Some(mut urgent) = store.gate().take_urgent() else {
            return;
        };
        let busy = Arc::new(Mutex::new(HashSet::new()));
        while let Some(oid) = urgent.recv().await {
            if !busy.lock().expect("busy lock").insert(oid) {
                continue; // already being verified
            }
            let me = self.clone();
            let busy = busy.clone();
            tokio::spawn(async move {
                let gate = me.gateway.store().expect("a storing node").gate();
                while gate.is_unverified(oid) {
                    if !(me.is_running)() {
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                    match me.verify(oid).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::debug!(%oid, "verification failed, retrying: {e}");
                            tokio::time::sleep(RETRY).await;
                        }
                    }
                }
                busy.lock().expect("busy lock").remove(&oid);
            });
        }
    }

    /// Compares the local copy of `oid` with the other replicas' and pulls
    /// the best one if the local copy is not it.
    pub(super) async fn verify(&self, oid: ObjectId) -> Result<(), SheepError> {
        let store = self.gateway.store().expect("a storing node");
        let (view, placement) = self.gateway.current();
        let replicas = placement.replicas(oid, (self.copies_of)(oid));
        let local = self.gateway.local();
        let view_id = view.id;
        let mut holders = Vec::new();
        let calls = replicas
            .iter()
            .filter(|a| **a != local)
            .map(|addr| async move {
                let rpc = ObjectRpc::Stat { oid: oid.0 };
                let r = self
                    .gateway
                    .call_replica(*addr, view_id, rpc, Bytes::new())
                    .await;
                (*addr, r)
            });
        for (addr, r) in futures::future::join_all(calls).await {
            match r {
                Ok((ObjectReply::Stat(Some(c)), _)) => holders.push((addr, c)),
                Ok(_) => {}
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => tracing::debug!(%oid, %addr, "stat failed: {e}"),
            }
        }
        let bad = store.gate().take_corrupt(oid);
        let mine = store.meta(oid).map(|m| CopyState {
            version: m.version,
            authoritative: false,
        });
        let best = best_version(&holders);
        match best {
            Some(b) if bad || needs_pull(mine, best) => {
                let from = sources(&holders, b, &replicas);
                if let Err(e) = self.gateway.pull(view.id, oid, &from, bad).await {
                    if bad {
                        store.gate().corrupt(oid);
                    }
                    return Err(e);
                }
            }
            // The only copy, or already the best one.
            _ => {}
        }
        store.gate().verified(oid);
        Ok(())
    }
}
