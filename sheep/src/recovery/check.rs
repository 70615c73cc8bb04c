//! `dog vdi check`: compare every replica of every object of a VDI, and
//! repair the missing, corrupt and stale ones from a good copy.
//!
//! Each replica scrubs its copy (every block against its checksum) and
//! reports its version and a digest of the content. The good copy is the
//! newest among the ones that pass; a replica without it, or with another
//! digest for the same version, pulls it.

use std::net::SocketAddr;

use bytes::Bytes;
use qemu_proto::ObjectId;

use crate::error::SheepError;
use crate::gateway::{Gateway, ObjectReply, ObjectRpc, ScrubState};
use crate::vdi::VdiService;

/// What `dog vdi check` found and fixed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Objects examined.
    pub objects: u64,
    /// Objects with at least one replica repaired.
    pub fixed: Vec<ObjectId>,
}

/// Checks and repairs every object of VDI `vid`: its inode first (the index
/// is read from it), then every data object its index references.
pub async fn check_vdi(
    vdis: &VdiService,
    gateway: &Gateway,
    vid: u32,
) -> Result<CheckReport, SheepError> {
    let copies = vdis.copies(vid);
    let mut report = CheckReport::default();
    let inode = ObjectId::inode(vid);
    check_object(gateway, inode, copies, &mut report).await?;
    let header = vdis.read_header(vid).await?;
    let index = vdis.read_index(vid, &header).await?;
    for (idx, owner) in index.iter().enumerate() {
        if *owner != 0 {
            let oid = ObjectId::data(*owner, idx as u32);
            check_object(gateway, oid, vdis.copies(*owner), &mut report).await?;
        }
    }
    Ok(report)
}

async fn check_object(
    gateway: &Gateway,
    oid: ObjectId,
    copies: usize,
    report: &mut CheckReport,
) -> Result<(), SheepError> {
    gateway
        .settle(|view, placement| async move {
            let replicas = placement.replicas(oid, copies);
            let view_id = view.id;
            let calls = replicas.iter().map(|addr| async move {
                let rpc = ObjectRpc::Scrub { oid: oid.0 };
                let r = gateway
                    .call_replica(*addr, view_id, rpc, Bytes::new())
                    .await;
                (*addr, r)
            });
            let mut states: Vec<(SocketAddr, ScrubState)> = Vec::new();
            for (addr, r) in futures::future::join_all(calls).await {
                match r? {
                    (ObjectReply::Scrub(s), _) => states.push((addr, s)),
                    _ => return Err(qemu_proto::SdResult::INVALID_PARMS.into()),
                }
            }
            let best = states
                .iter()
                .filter_map(|(a, s)| match s {
                    ScrubState::Good { version, digest } => Some((*version, *digest, *a)),
                    _ => None,
                })
                .max_by_key(|(v, _, _)| *v);
            let Some((version, digest, _)) = best else {
                // No good copy anywhere (or the object does not exist).
                return Ok(false);
            };
            let sources: Vec<SocketAddr> = states
                .iter()
                .filter(|(_, s)| *s == ScrubState::Good { version, digest })
                .map(|(a, _)| *a)
                .collect();
            let mut fixed = false;
            for (addr, s) in &states {
                if *s == (ScrubState::Good { version, digest }) {
                    continue;
                }
                tracing::info!(%oid, %addr, state = ?s, "repairing a replica");
                let rpc = ObjectRpc::Pull {
                    oid: oid.0,
                    sources: sources.clone(),
                };
                gateway
                    .call_replica(*addr, view_id, rpc, Bytes::new())
                    .await?;
                fixed = true;
            }
            Ok(fixed)
        })
        .await
        .map(|fixed| {
            report.objects += 1;
            if fixed {
                report.fixed.push(oid);
            }
        })
}
