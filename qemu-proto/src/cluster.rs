//! Cluster-wide records: `struct cluster_info` (CLUSTER_INFO reply),
//! `struct epoch_log` (STAT_CLUSTER reply) and `struct vdi_state`
//! (reference §1.11). The recovery records live in [`crate::recovery`] and
//! are re-exported here.
//!
//! Invariants: encoders produce exactly the C struct sizes (491,568; 48 +
//! slots×80; 1428) with padding zero; decoders never panic, fail with
//! `Truncated` on short input, and clamp node counts to the available slots.

use crate::consts::{
    CLUSTER_INFO_SIZE, EPOCH_LOG_HEADER_SIZE, SD_MAX_NODES, SD_NODE_SIZE, STORE_LEN,
};
use crate::error::ProtoError;
use crate::name::{decode_fixed, write_fixed_truncating};
use crate::node::{decode_node_list, NodeId, SdNode, NODE_ID_SIZE};
use crate::wire::{get_u16, get_u32, get_u64, need, put_u16, put_u32, put_u64};

pub use crate::recovery::{RecoveryState, RecoveryThrottling};

/// Cluster status (`enum sd_status`, stored as one byte in `cluster_info`).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterStatus {
    /// Running.
    Ok = 1,
    /// Waiting for format or for nodes to join.
    Wait = 2,
    /// Shutting down.
    Shutdown = 3,
    /// Killed.
    Killed = 4,
}

impl ClusterStatus {
    /// Decodes the status byte; `None` for values other than 1..=4.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => ClusterStatus::Ok,
            2 => ClusterStatus::Wait,
            3 => ClusterStatus::Shutdown,
            4 => ClusterStatus::Killed,
            _ => return None,
        })
    }

    /// The wire byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// `struct cluster_info` (491,568 bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterInfo {
    /// @0: `SD_SHEEP_PROTO_VER` of the cluster.
    pub proto_ver: u8,
    /// @1: recovery disabled.
    pub disable_recovery: bool,
    /// @2: number of valid entries in `nodes` (int16 in C).
    pub nr_nodes: u16,
    /// @4: current epoch.
    pub epoch: u32,
    /// @8: cluster creation time (0 = not formatted).
    pub ctime: u64,
    /// @16: `CLUSTER_FLAG_*`.
    pub flags: u16,
    /// @18: default copies.
    pub nr_copies: u8,
    /// @19: default copy policy.
    pub copy_policy: u8,
    /// @20: [`ClusterStatus`] byte.
    pub status: u8,
    /// @21: default object size shift.
    pub block_size_shift: u8,
    /// @25, 16 B: backend store name ("plain", "tree").
    pub default_store: String,
    /// @48: the node list at `epoch` (6144 slots on the wire).
    pub nodes: Vec<SdNode>,
}

impl ClusterInfo {
    /// Encodes exactly `CLUSTER_INFO_SIZE` bytes. `nr_nodes` is written as is;
    /// nodes beyond 6144 are dropped (use [`ClusterInfo::try_encode`] to reject).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; CLUSTER_INFO_SIZE];
        b[0] = self.proto_ver;
        b[1] = self.disable_recovery as u8;
        put_u16(&mut b, 2, self.nr_nodes);
        put_u32(&mut b, 4, self.epoch);
        put_u64(&mut b, 8, self.ctime);
        put_u16(&mut b, 16, self.flags);
        b[18] = self.nr_copies;
        b[19] = self.copy_policy;
        b[20] = self.status;
        b[21] = self.block_size_shift;
        write_fixed_truncating(&mut b[25..25 + STORE_LEN], &self.default_store);
        for (i, n) in self.nodes.iter().take(SD_MAX_NODES).enumerate() {
            let off = 48 + i * SD_NODE_SIZE;
            b[off..off + SD_NODE_SIZE].copy_from_slice(&n.encode());
        }
        b
    }

    /// Like [`ClusterInfo::encode`] but fails with `TooManyNodes` if more than
    /// 6144 nodes are given.
    pub fn try_encode(&self) -> Result<Vec<u8>, ProtoError> {
        if self.nodes.len() > SD_MAX_NODES {
            return Err(ProtoError::TooManyNodes(self.nodes.len()));
        }
        Ok(self.encode())
    }

    /// Decodes; `nodes` = the first `nr_nodes` entries (clamped to 0..=6144;
    /// a negative int16 counts as 0). Needs 48 + nr_nodes×80 bytes, so both a
    /// full 491,568-byte reply and a trimmed one decode.
    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        need(b, 48)?;
        let raw = get_u16(b, 2);
        let nr = if (raw as i16) < 0 {
            0
        } else {
            (raw as usize).min(SD_MAX_NODES)
        };
        let nodes = decode_node_list(&b[48..], nr).map_err(|_| ProtoError::Truncated {
            need: 48 + nr * SD_NODE_SIZE,
            have: b.len(),
        })?;
        Ok(ClusterInfo {
            proto_ver: b[0],
            disable_recovery: b[1] != 0,
            nr_nodes: raw,
            epoch: get_u32(b, 4),
            ctime: get_u64(b, 8),
            flags: get_u16(b, 16),
            nr_copies: b[18],
            copy_policy: b[19],
            status: b[20],
            block_size_shift: b[21],
            default_store: decode_fixed(&b[25..25 + STORE_LEN]),
            nodes,
        })
    }

    /// The status byte as a [`ClusterStatus`], if valid.
    pub fn cluster_status(&self) -> Option<ClusterStatus> {
        ClusterStatus::from_u8(self.status)
    }
}

/// One `struct epoch_log` record (48-byte header + node slots).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochLog {
    /// @0: cluster creation time.
    pub ctime: u64,
    /// @8: time of this epoch (time_t).
    pub time: u64,
    /// @16: epoch number.
    pub epoch: u32,
    /// @24: recovery disabled.
    pub disable_recovery: bool,
    /// @25: copies.
    pub nr_copies: u8,
    /// @26: copy policy.
    pub copy_policy: u8,
    /// @30: `CLUSTER_FLAG_*`.
    pub flags: u16,
    /// @32, 16 B: cluster driver name.
    pub drv_name: String,
    /// @48: members (count at @20).
    pub nodes: Vec<SdNode>,
}

/// Size of one epoch record with `nodes_nr` node slots (saturating).
pub fn epoch_log_size(nodes_nr: usize) -> usize {
    nodes_nr
        .saturating_mul(SD_NODE_SIZE)
        .saturating_add(EPOCH_LOG_HEADER_SIZE)
}

impl EpochLog {
    /// Encodes `48 + nodes_nr×80` bytes; `nr_nodes` = `min(nodes.len(), nodes_nr)`,
    /// unused slots zero.
    pub fn encode(&self, nodes_nr: usize) -> Vec<u8> {
        let mut b = vec![0u8; epoch_log_size(nodes_nr)];
        let n = self.nodes.len().min(nodes_nr);
        put_u64(&mut b, 0, self.ctime);
        put_u64(&mut b, 8, self.time);
        put_u32(&mut b, 16, self.epoch);
        put_u32(&mut b, 20, n as u32);
        b[24] = self.disable_recovery as u8;
        b[25] = self.nr_copies;
        b[26] = self.copy_policy;
        put_u16(&mut b, 30, self.flags);
        write_fixed_truncating(&mut b[32..32 + STORE_LEN], &self.drv_name);
        for (i, node) in self.nodes.iter().take(n).enumerate() {
            let off = EPOCH_LOG_HEADER_SIZE + i * SD_NODE_SIZE;
            b[off..off + SD_NODE_SIZE].copy_from_slice(&node.encode());
        }
        b
    }

    /// Decodes one record with `nodes_nr` slots (needs `48 + nodes_nr×80`
    /// bytes); `nodes` = the first `min(nr_nodes, nodes_nr)` slots.
    pub fn decode(b: &[u8], nodes_nr: usize) -> Result<Self, ProtoError> {
        need(b, epoch_log_size(nodes_nr))?;
        let n = (get_u32(b, 20) as usize).min(nodes_nr);
        Ok(EpochLog {
            ctime: get_u64(b, 0),
            time: get_u64(b, 8),
            epoch: get_u32(b, 16),
            disable_recovery: b[24] != 0,
            nr_copies: b[25],
            copy_policy: b[26],
            flags: get_u16(b, 30),
            drv_name: decode_fixed(&b[32..32 + STORE_LEN]),
            nodes: decode_node_list(&b[EPOCH_LOG_HEADER_SIZE..], n)?,
        })
    }
}

/// Decodes a STAT_CLUSTER reply: `b.len() / (48 + nodes_nr×80)` records,
/// newest first; a trailing partial record is ignored.
pub fn decode_epoch_logs(b: &[u8], nodes_nr: usize) -> Result<Vec<EpochLog>, ProtoError> {
    let rec = epoch_log_size(nodes_nr);
    b.chunks_exact(rec)
        .map(|c| EpochLog::decode(c, nodes_nr))
        .collect()
}

/// Max participants in a `vdi_state` (`SD_MAX_COPIES`).
pub const VDI_STATE_MAX_PARTICIPANTS: usize = 31;

/// `struct vdi_state` (1428 bytes), the GET_VDI_COPIES reply element.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VdiState {
    /// @0: vid.
    pub vid: u32,
    /// @4: copies.
    pub nr_copies: u8,
    /// @5: is a snapshot.
    pub snapshot: bool,
    /// @6: deleted.
    pub deleted: bool,
    /// @7: copy policy.
    pub copy_policy: u8,
    /// @8: object size shift.
    pub block_size_shift: u8,
    /// @12: parent vid.
    pub parent_vid: u32,
    /// @16: 1 UNLOCKED, 2 LOCKED, 3 SHARED.
    pub lock_state: u32,
    /// @20, 40 B: lock owner.
    pub lock_owner: NodeId,
    /// @64 (count @60): per-participant shared state (u32 each) and @188 node
    /// ids, at most 31.
    pub participants: Vec<(u32, NodeId)>,
}

impl VdiState {
    /// Wire size.
    pub const SIZE: usize = 1428;

    /// Encodes 1428 bytes; participants beyond 31 are dropped.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; Self::SIZE];
        put_u32(&mut b, 0, self.vid);
        b[4] = self.nr_copies;
        b[5] = self.snapshot as u8;
        b[6] = self.deleted as u8;
        b[7] = self.copy_policy;
        b[8] = self.block_size_shift;
        put_u32(&mut b, 12, self.parent_vid);
        put_u32(&mut b, 16, self.lock_state);
        b[20..60].copy_from_slice(&self.lock_owner.encode());
        let n = self.participants.len().min(VDI_STATE_MAX_PARTICIPANTS);
        put_u32(&mut b, 60, n as u32);
        for (i, (st, nid)) in self.participants.iter().take(n).enumerate() {
            put_u32(&mut b, 64 + 4 * i, *st);
            let off = 188 + NODE_ID_SIZE * i;
            b[off..off + NODE_ID_SIZE].copy_from_slice(&nid.encode());
        }
        b
    }

    /// Decodes from the start of `b` (needs 1428 bytes).
    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        need(b, Self::SIZE)?;
        let n = (get_u32(b, 60) as usize).min(VDI_STATE_MAX_PARTICIPANTS);
        let mut participants = Vec::with_capacity(n);
        for i in 0..n {
            let nid = NodeId::decode(&b[188 + NODE_ID_SIZE * i..])?;
            participants.push((get_u32(b, 64 + 4 * i), nid));
        }
        Ok(VdiState {
            vid: get_u32(b, 0),
            nr_copies: b[4],
            snapshot: b[5] != 0,
            deleted: b[6] != 0,
            copy_policy: b[7],
            block_size_shift: b[8],
            parent_vid: get_u32(b, 12),
            lock_state: get_u32(b, 16),
            lock_owner: NodeId::decode(&b[20..60])?,
            participants,
        })
    }
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
