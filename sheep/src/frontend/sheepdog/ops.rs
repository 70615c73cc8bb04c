//! What each Sheepdog opcode does, mapped onto the gateway, the VDI
//! namespace and the cluster format. Errors become result codes here and
//! nowhere else.

use bytes::Bytes;
use qemu_proto::cluster::{ClusterInfo, ClusterStatus, EpochLog};
use qemu_proto::consts::{self, SD_INODE_SIZE};
use qemu_proto::header::{ClusterDefaultRsp, NodeRsp, VdiRsp};
use qemu_proto::inode;
use qemu_proto::name::{decode_fixed, validate_vdi_name};
use qemu_proto::node::{NodeId, SdNode};
use qemu_proto::{flags, ObjectId, Opcode, SdRequest, SdResponse, SdResult};

use super::MAX_DATA;
use crate::cluster::Member;
use crate::error::SheepError;
use crate::format::ClusterConfig;
use crate::node::{NodeStatus, Sheep};
use crate::store::CreateMode;
use crate::vdi::{AttachMode, AttachState, LockOp, NewVdi, VdiRef};

mod object;
use object::*;

type OpResult = Result<Bytes, SheepError>;

/// Runs one request and builds its reply.
pub async fn dispatch(sheep: &Sheep, req: &SdRequest, data: Bytes) -> (SdResponse, Bytes) {
    let mut rsp = SdResponse::for_request(req, SdResult::SUCCESS);
    rsp.epoch = sheep.format.epoch();
    let result = match check(sheep, req) {
        Ok(op) => run(sheep, op, req, &mut rsp, data).await,
        Err(r) => Err(r.into()),
    };
    match result {
        Ok(mut out) => {
            if !req.has_write_flag() || req.flags & flags::CMD_PIGGYBACK != 0 {
                // Never send more than the client said it would read.
                out.truncate(req.data_length as usize);
            }
            rsp.data_length = out.len() as u32;
            (rsp, out)
        }
        Err(e) => {
            let code = e.result();
            if code != SdResult::NO_OBJ && code != SdResult::NO_VDI && code != SdResult::VDI_EXIST {
                tracing::debug!(op = ?req.opcode(), "request failed: {e}");
            }
            rsp.result = code;
            rsp.data_length = 0;
            (rsp, Bytes::new())
        }
    }
}

/// Protocol version and cluster-status gates (Sheepdog's `queue_request`).
fn check(sheep: &Sheep, req: &SdRequest) -> Result<Opcode, SdResult> {
    let op = req.opcode().ok_or(SdResult::INVALID_PARMS)?;
    if op.is_internal() {
        if req.proto_ver != consts::SD_SHEEP_PROTO_VER {
            return Err(SdResult::VER_MISMATCH);
        }
    } else if req.proto_ver != 0 && req.proto_ver > consts::SD_PROTO_VER {
        return Err(SdResult::VER_MISMATCH);
    }
    let allowed_before_running = matches!(
        op,
        Opcode::MakeFs
            | Opcode::Shutdown
            | Opcode::GetNodeList
            | Opcode::StatCluster
            | Opcode::ClusterInfo
            | Opcode::GetClusterDefault
            | Opcode::StatSheep
            | Opcode::ReadVdis
            | Opcode::ReadDelVdis
            | Opcode::KillNode
            | Opcode::GetLoglevel
    ) || super::admin::allowed_before_running(op);
    match sheep.status() {
        NodeStatus::Running => Ok(op),
        _ if allowed_before_running => Ok(op),
        NodeStatus::WaitForFormat => Err(SdResult::WAIT_FOR_FORMAT),
        NodeStatus::WaitForJoin => Err(SdResult::WAIT_FOR_JOIN),
        NodeStatus::Halted => Err(SdResult::HALT),
    }
}

async fn run(
    sheep: &Sheep,
    op: Opcode,
    req: &SdRequest,
    rsp: &mut SdResponse,
    data: Bytes,
) -> OpResult {
    match op {
        Opcode::ReadObj => read_obj(sheep, req).await,
        Opcode::WriteObj => write_obj(sheep, req, data).await,
        Opcode::CreateAndWriteObj => create_and_write_obj(sheep, req, data).await,
        Opcode::RemoveObj => {
            let oid = ObjectId(req.obj().oid);
            let copies = copies_for(sheep, req, oid);
            sheep.gateway.remove(oid, copies).await?;
            Ok(Bytes::new())
        }
        Opcode::NewVdi => new_vdi(sheep, req, rsp, &data).await,
        Opcode::GetVdiInfo | Opcode::LockVdi => {
            let r = vdi_ref(req, &data)?;
            if op == Opcode::LockVdi {
                check_attach_lock(sheep, &r)?;
            }
            let (vid, header) = sheep.vdis.lookup(&r).await?;
            rsp.set_vdi(&VdiRsp {
                vdi_id: vid,
                copies: header.nr_copies,
                block_size_shift: header.block_size_shift,
                ..VdiRsp::default()
            });
            Ok(Bytes::new())
        }
        // QEMU's close sends the name along and changes nothing (locks are
        // taken by attaching); `dog vdi lock unlock` sends only the vid and
        // releases every attachment of the VDI.
        Opcode::ReleaseVdi if data.is_empty() => {
            let vid = req.vdi().base_vdi_id;
            let meta = sheep.vdis.registry().meta(vid).ok_or(SdResult::NO_VDI)?;
            if sheep.vdis.ledger().lock(&meta.name).attachments.is_empty() {
                return Err(SdResult::VDI_NOT_LOCKED.into());
            }
            sheep
                .vdis
                .lock_op(LockOp::Unlock { name: meta.name })
                .await?;
            Ok(Bytes::new())
        }
        Opcode::ReleaseVdi => Ok(Bytes::new()),
        Opcode::ListLocks => Ok(Bytes::from(list_locks(sheep).await)),
        Opcode::DelVdi => {
            let vid = sheep.vdis.delete(vdi_ref(req, &data)?).await?;
            rsp.set_vdi(&VdiRsp {
                vdi_id: vid,
                ..VdiRsp::default()
            });
            Ok(Bytes::new())
        }
        Opcode::FlattenVdi => {
            let vid = sheep.vdis.flatten(vdi_ref(req, &data)?).await?;
            rsp.set_vdi(&VdiRsp {
                vdi_id: vid,
                ..VdiRsp::default()
            });
            Ok(Bytes::new())
        }
        Opcode::ReadVdis | Opcode::ReadDelVdis => {
            if req.data_length as usize != consts::VDI_BITMAP_BYTES {
                return Err(SdResult::INVALID_PARMS.into());
            }
            let reg = sheep.vdis.registry();
            Ok(Bytes::from(if op == Opcode::ReadVdis {
                reg.inuse_bytes()
            } else {
                reg.deleted_bytes()
            }))
        }
        // Obsolete in Sheepdog, which answers INVALID_PARMS so that QEMU
        // stops sending it and writes synchronously (DIRECT) from then on.
        // QEMU takes that answer as a successful flush, so make the
        // writeback-mode writes it sent before durable first.
        Opcode::FlushVdi => {
            sheep.gateway.flush_all().await?;
            Err(SdResult::INVALID_PARMS.into())
        }
        Opcode::GetClusterDefault => {
            let cfg = sheep.format.config();
            rsp.set_cluster_default(&ClusterDefaultRsp {
                nr_copies: cfg.as_ref().map_or(consts::SD_DEFAULT_COPIES, |c| c.copies),
                copy_policy: cfg.as_ref().map_or(0, |c| c.copy_policy),
                block_size_shift: cfg
                    .as_ref()
                    .map_or(consts::SD_DEFAULT_BLOCK_SIZE_SHIFT, |c| c.block_size_shift),
            });
            Ok(Bytes::new())
        }
        Opcode::GetNodeList => {
            let nodes = node_list(&sheep.view().members);
            rsp.set_node(&NodeRsp {
                nr_nodes: nodes.len() as u32,
                ..NodeRsp::default()
            });
            Ok(Bytes::from(qemu_proto::node::encode_node_list(&nodes)))
        }
        Opcode::MakeFs => make_fs(sheep, req).await,
        Opcode::StatSheep => {
            let (used, free) = match sheep.gateway.store() {
                Some(s) => s.usage().await?,
                None => (0, 0),
            };
            rsp.set_node(&NodeRsp {
                store_size: used + free,
                store_free: free,
                ..NodeRsp::default()
            });
            Ok(Bytes::new())
        }
        Opcode::StatCluster => {
            rsp.result = match sheep.status() {
                NodeStatus::Running => SdResult::SUCCESS,
                NodeStatus::WaitForFormat => SdResult::WAIT_FOR_FORMAT,
                NodeStatus::WaitForJoin => SdResult::WAIT_FOR_JOIN,
                NodeStatus::Halted => SdResult::HALT,
            };
            stat_cluster(sheep, req)
        }
        Opcode::ClusterInfo => Ok(Bytes::from(cluster_info(sheep).encode())),
        Opcode::Exist => match sheep.gateway.store() {
            Some(store) => {
                store.read(ObjectId(req.obj().oid), 0, 0).await?;
                Ok(Bytes::new())
            }
            None => Err(SdResult::NO_OBJ.into()),
        },
        op if super::admin::handles(op) => super::admin::run(sheep, op, req, data).await,
        _ => Err(SdResult::NO_SUPPORT.into()),
    }
}

/// The VDI a GET_VDI_INFO, LOCK_VDI, DEL_VDI or FLATTEN_VDI names: name
/// (and tag) from a 256- or 512-byte payload, snapshot id from the header.
fn vdi_ref(req: &SdRequest, data: &[u8]) -> Result<VdiRef, SdResult> {
    let n = consts::SD_MAX_VDI_LEN;
    if !req.has_write_flag() || (data.len() != n && data.len() != n + consts::SD_MAX_VDI_TAG_LEN) {
        return Err(SdResult::INVALID_PARMS);
    }
    let name = decode_fixed(&data[..n]);
    validate_vdi_name(&name).map_err(|_| SdResult::INVALID_PARMS)?;
    let tag = if data.len() > n {
        decode_fixed(&data[n..])
    } else {
        String::new()
    };
    Ok(VdiRef {
        name,
        tag,
        snapid: req.vdi().snapid,
    })
}

async fn new_vdi(sheep: &Sheep, req: &SdRequest, rsp: &mut SdResponse, data: &[u8]) -> OpResult {
    if data.len() != consts::SD_MAX_VDI_LEN || !req.has_write_flag() {
        return Err(SdResult::INVALID_PARMS.into());
    }
    let name = decode_fixed(data);
    validate_vdi_name(&name).map_err(|_| SdResult::INVALID_PARMS)?;
    let args = req.vdi();
    if args.copy_policy != 0 || args.store_policy != 0 {
        return Err(SdResult::NO_SUPPORT.into());
    }
    if args.block_size_shift != 0
        && !(consts::MIN_BLOCK_SIZE_SHIFT..=consts::MAX_BLOCK_SIZE_SHIFT)
            .contains(&args.block_size_shift)
    {
        return Err(SdResult::INVALID_PARMS.into());
    }
    if args.copies > consts::SD_MAX_COPIES {
        return Err(SdResult::INVALID_PARMS.into());
    }
    let vid = sheep
        .vdis
        .new_vdi(NewVdi {
            name,
            size: args.vdi_size,
            copies: args.copies,
            block_size_shift: args.block_size_shift,
            snapid: args.snapid,
            base: args.base_vdi_id,
        })
        .await?;
    let meta = sheep.vdis.registry().meta(vid);
    rsp.set_vdi(&VdiRsp {
        vdi_id: vid,
        copies: meta.as_ref().map_or(args.copies, |m| m.copies),
        block_size_shift: meta.map_or(args.block_size_shift, |m| m.block_size_shift),
        ..VdiRsp::default()
    });
    Ok(Bytes::new())
}

async fn make_fs(sheep: &Sheep, req: &SdRequest) -> OpResult {
    let args = req.cluster();
    let copies = if args.copies == 0 {
        consts::SD_DEFAULT_COPIES
    } else {
        args.copies
    };
    let shift = if args.block_size_shift == 0 {
        consts::SD_DEFAULT_BLOCK_SIZE_SHIFT
    } else {
        args.block_size_shift
    };
    if copies > consts::SD_MAX_COPIES
        || args.copy_policy != 0
        || !(consts::MIN_BLOCK_SIZE_SHIFT..=consts::MAX_BLOCK_SIZE_SHIFT).contains(&shift)
    {
        return Err(SdResult::INVALID_PARMS.into());
    }
    let ctime = if args.ctime == 0 {
        crate::util::sd_now()
    } else {
        args.ctime
    };
    sheep
        .format_cluster(ClusterConfig {
            ctime,
            copies,
            copy_policy: 0,
            flags: args.flags,
            block_size_shift: shift,
            store: "plain".into(),
        })
        .await?;
    Ok(Bytes::new())
}

/// Members as Sheepdog's `sd_node` records, sorted as the view is.
fn node_list(members: &[Member]) -> Vec<SdNode> {
    members
        .iter()
        .map(|m| SdNode {
            nid: NodeId::new(m.addr.ip(), m.addr.port()),
            nr_vnodes: m.vnodes,
            zone: m.zone,
            space: m.space,
        })
        .collect()
}

/// The epoch log, newest first, as many records as the client's buffer
/// holds. A record with more nodes than the client's `nodes_nr` slots gets
/// BUFFER_SMALL, as in Sheepdog, so the client asks again with more room
/// rather than seeing a cut-down history.
fn stat_cluster(sheep: &Sheep, req: &SdRequest) -> OpResult {
    let nodes_nr = req.cluster().nodes_nr as usize;
    let record = qemu_proto::cluster::epoch_log_size(nodes_nr);
    let fit = (req.data_length as usize).checked_div(record).unwrap_or(0);
    let cfg = sheep.format.config();
    let epochs: Vec<_> = sheep.format.epochs().into_iter().take(fit).collect();
    if epochs.iter().any(|e| e.nodes.len() > nodes_nr) {
        return Err(SdResult::BUFFER_SMALL.into());
    }
    let mut out = Vec::new();
    for (i, e) in epochs.into_iter().enumerate() {
        let nodes = e
            .nodes
            .iter()
            .map(|(addr, vnodes, zone)| SdNode {
                nid: NodeId::new(addr.ip(), addr.port()),
                nr_vnodes: *vnodes,
                zone: *zone,
                space: 0,
            })
            .collect();
        // Only the newest record carries the cluster settings.
        let log = EpochLog {
            ctime: if i == 0 {
                cfg.as_ref().map_or(0, |c| c.ctime)
            } else {
                0
            },
            time: e.time,
            epoch: e.epoch,
            disable_recovery: i == 0 && !sheep.recovery.enabled(),
            nr_copies: if i == 0 {
                cfg.as_ref().map_or(0, |c| c.copies)
            } else {
                0
            },
            copy_policy: 0,
            flags: if i == 0 {
                cfg.as_ref().map_or(0, |c| c.flags)
            } else {
                0
            },
            drv_name: match (i, &cfg) {
                (0, Some(c)) => c.store.clone(),
                _ => String::new(),
            },
            nodes,
        };
        out.extend_from_slice(&log.encode(nodes_nr));
    }
    Ok(Bytes::from(out))
}

fn cluster_info(sheep: &Sheep) -> ClusterInfo {
    let cfg = sheep.format.config();
    let nodes = node_list(&sheep.view().members);
    ClusterInfo {
        proto_ver: consts::SD_SHEEP_PROTO_VER,
        disable_recovery: !sheep.recovery.enabled(),
        nr_nodes: nodes.len() as u16,
        epoch: sheep.format.epoch(),
        ctime: cfg.as_ref().map_or(0, |c| c.ctime),
        flags: cfg.as_ref().map_or(0, |c| c.flags),
        nr_copies: cfg.as_ref().map_or(0, |c| c.copies),
        copy_policy: cfg.as_ref().map_or(0, |c| c.copy_policy),
        status: match sheep.status() {
            NodeStatus::Running => ClusterStatus::Ok,
            _ => ClusterStatus::Wait,
        }
        .as_u8(),
        block_size_shift: cfg
            .as_ref()
            .map_or(consts::SD_DEFAULT_BLOCK_SIZE_SHIFT, |c| c.block_size_shift),
        default_store: cfg.map_or_else(|| "plain".to_string(), |c| c.store),
        nodes,
    }
}

/// LOCK_VDI (QEMU sends it on every open): refused while the working VDI
/// is attached read-write through another sheep, so a QEMU on a second
/// host cannot open a disk another host runs. Opening through the sheep
/// the attachment was made through (the address in the attachment's
/// Sheepdog-protocol XML) is the attached VM itself and is allowed.
fn check_attach_lock(sheep: &Sheep, r: &VdiRef) -> Result<(), SheepError> {
    if !r.tag.is_empty() || r.snapid != 0 {
        return Ok(());
    }
    let lock = sheep.vdis.ledger().lock(&r.name);
    let elsewhere = lock
        .attachments
        .iter()
        .filter(|a| a.mode == AttachMode::ReadWrite)
        .find(|a| a.node != sheep.local.addr);
    match elsewhere {
        None => Ok(()),
        Some(a) => Err(SheepError::Refused {
            code: SdResult::VDI_LOCKED,
            message: format!(
                "{} is attached read-write on host {} through {}",
                r.name, a.host, a.node
            ),
        }),
    }
}

/// The LIST_LOCKS reply: every attachment this node knows of.
async fn list_locks(sheep: &Sheep) -> Vec<u8> {
    let mut entries = Vec::new();
    for (name, state) in sheep.vdis.ledger().locked() {
        let vid = sheep
            .vdis
            .lookup(&VdiRef {
                name: name.clone(),
                tag: String::new(),
                snapid: 0,
            })
            .await
            .map_or(0, |(vid, _)| vid);
        for a in state.attachments {
            let from = match &a.state {
                AttachState::Pending { from } => from.clone(),
                AttachState::Active => String::new(),
            };
            entries.push(qemu_proto::locks::LockEntry {
                vid,
                read_only: a.mode == AttachMode::ReadOnly,
                pending: !from.is_empty(),
                name: name.clone(),
                id: a.id,
                host: a.host,
                node: a.node.to_string(),
                from,
            });
        }
    }
    qemu_proto::locks::encode_lock_list(&entries)
}
