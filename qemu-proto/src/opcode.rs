//! Request opcodes (`SD_OP_*`, reference §1.6 and §1.7).
//!
//! Owns [`Opcode`]: every opcode value defined by sheep, with its C name and the
//! protocol version a request for it must carry. Invariant: `from_u8(x.as_u8())
//! == Some(x)` for every variant and `from_u8` returns `None` for undefined values.

use crate::consts::{SD_PROTO_VER, SD_SHEEP_PROTO_VER};

/// A Sheepdog request opcode. Values < 0x80 are public (QEMU, dog); values
/// >= 0x80 are internal (dog and sheep only).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// `SD_OP_CREATE_AND_WRITE_OBJ`
    CreateAndWriteObj = 0x01,
    /// `SD_OP_READ_OBJ`
    ReadObj = 0x02,
    /// `SD_OP_WRITE_OBJ`
    WriteObj = 0x03,
    /// `SD_OP_REMOVE_OBJ`
    RemoveObj = 0x04,
    /// `SD_OP_DISCARD_OBJ`
    DiscardObj = 0x05,
    /// `SD_OP_NEW_VDI`
    NewVdi = 0x11,
    /// `SD_OP_LOCK_VDI`
    LockVdi = 0x12,
    /// `SD_OP_RELEASE_VDI`
    ReleaseVdi = 0x13,
    /// `SD_OP_GET_VDI_INFO`
    GetVdiInfo = 0x14,
    /// `SD_OP_READ_VDIS`
    ReadVdis = 0x15,
    /// `SD_OP_FLUSH_VDI`
    FlushVdi = 0x16,
    /// `SD_OP_DEL_VDI`
    DelVdi = 0x17,
    /// `SD_OP_GET_CLUSTER_DEFAULT`
    GetClusterDefault = 0x18,
    /// `SD_OP_GET_NODE_LIST`
    GetNodeList = 0x82,
    /// `SD_OP_MAKE_FS`
    MakeFs = 0x84,
    /// `SD_OP_SHUTDOWN`
    Shutdown = 0x85,
    /// `SD_OP_STAT_SHEEP`
    StatSheep = 0x86,
    /// `SD_OP_STAT_CLUSTER`
    StatCluster = 0x87,
    /// `SD_OP_GET_VDI_ATTR`
    GetVdiAttr = 0x89,
    /// `SD_OP_FORCE_RECOVER`
    ForceRecover = 0x8a,
    /// `SD_OP_GET_STORE_LIST`
    GetStoreList = 0x90,
    /// `SD_OP_SNAPSHOT`
    Snapshot = 0x91,
    /// `SD_OP_RESTORE`
    Restore = 0x92,
    /// `SD_OP_GET_SNAP_FILE`
    GetSnapFile = 0x93,
    /// `SD_OP_CLEANUP`
    Cleanup = 0x94,
    /// `SD_OP_TRACE_STATUS`
    TraceStatus = 0x95,
    /// `SD_OP_TRACE_READ_BUF`
    TraceReadBuf = 0x96,
    /// `SD_OP_STAT_RECOVERY`
    StatRecovery = 0x97,
    /// `SD_OP_FLUSH_DEL_CACHE`
    FlushDelCache = 0x98,
    /// `SD_OP_NOTIFY_VDI_DEL`
    NotifyVdiDel = 0x99,
    /// `SD_OP_KILL_NODE`
    KillNode = 0x9a,
    /// `SD_OP_TRACE_ENABLE`
    TraceEnable = 0x9b,
    /// `SD_OP_TRACE_DISABLE`
    TraceDisable = 0x9c,
    /// `SD_OP_GET_OBJ_LIST`
    GetObjList = 0xa1,
    /// `SD_OP_GET_EPOCH`
    GetEpoch = 0xa2,
    /// `SD_OP_CREATE_AND_WRITE_PEER`
    CreateAndWritePeer = 0xa3,
    /// `SD_OP_READ_PEER`
    ReadPeer = 0xa4,
    /// `SD_OP_WRITE_PEER`
    WritePeer = 0xa5,
    /// `SD_OP_REMOVE_PEER`
    RemovePeer = 0xa6,
    /// `SD_OP_ENABLE_RECOVER`
    EnableRecover = 0xa8,
    /// `SD_OP_DISABLE_RECOVER`
    DisableRecover = 0xa9,
    /// `SD_OP_GET_VDI_COPIES`
    GetVdiCopies = 0xab,
    /// `SD_OP_COMPLETE_RECOVERY`
    CompleteRecovery = 0xac,
    /// `SD_OP_FLUSH_NODES`
    FlushNodes = 0xad,
    /// `SD_OP_FLUSH_PEER`
    FlushPeer = 0xae,
    /// `SD_OP_NOTIFY_VDI_ADD`
    NotifyVdiAdd = 0xaf,
    /// `SD_OP_DELETE_CACHE`
    DeleteCache = 0xb0,
    /// `SD_OP_MD_INFO`
    MdInfo = 0xb1,
    /// `SD_OP_MD_PLUG`
    MdPlug = 0xb2,
    /// `SD_OP_MD_UNPLUG`
    MdUnplug = 0xb3,
    /// `SD_OP_GET_HASH`
    GetHash = 0xb4,
    /// `SD_OP_REWEIGHT`
    Reweight = 0xb5,
    /// `SD_OP_GET_CACHE_INFO`
    GetCacheInfo = 0xb6,
    /// `SD_OP_CACHE_PURGE`
    CachePurge = 0xb7,
    /// `SD_OP_STAT`
    Stat = 0xb8,
    /// `SD_OP_GET_LOGLEVEL`
    GetLoglevel = 0xb9,
    /// `SD_OP_SET_LOGLEVEL`
    SetLoglevel = 0xba,
    /// `SD_OP_NFS_CREATE`
    NfsCreate = 0xbb,
    /// `SD_OP_NFS_DELETE`
    NfsDelete = 0xbc,
    /// `SD_OP_EXIST`
    Exist = 0xbd,
    /// `SD_OP_CLUSTER_INFO`
    ClusterInfo = 0xbe,
    /// `SD_OP_ALTER_CLUSTER_COPY`
    AlterClusterCopy = 0xbf,
    /// `SD_OP_ALTER_VDI_COPY`
    AlterVdiCopy = 0xc0,
    /// `SD_OP_DECREF_OBJ`
    DecrefObj = 0xc1,
    /// `SD_OP_DECREF_PEER`
    DecrefPeer = 0xc2,
    /// `SD_OP_PREVENT_INODE_UPDATE`
    PreventInodeUpdate = 0xc3,
    /// `SD_OP_ALLOW_INODE_UPDATE`
    AllowInodeUpdate = 0xc4,
    /// `SD_OP_REPAIR_REPLICA`
    RepairReplica = 0xc5,
    /// `SD_OP_OIDS_EXIST`
    OidsExist = 0xc6,
    /// `SD_OP_VDI_STATE_CHECKPOINT_CTL`
    VdiStateCheckpointCtl = 0xc7,
    /// `SD_OP_INODE_COHERENCE`
    InodeCoherence = 0xc8,
    /// `SD_OP_READ_DEL_VDIS`
    ReadDelVdis = 0xc9,
    /// `SD_OP_GET_RECOVERY`
    GetRecovery = 0xca,
    /// `SD_OP_SET_RECOVERY`
    SetRecovery = 0xcb,
    /// `SD_OP_SET_VNODES`
    SetVnodes = 0xcc,
    /// `SD_OP_GET_VNODES`
    GetVnodes = 0xcd,
    /// Sheepfold extension `SD_OP_FLATTEN_VDI`: copy every object a VDI
    /// shares with its ancestors into the VDI itself, online, so that it no
    /// longer depends on them. Payload: the name (256 bytes, WRITE flag).
    FlattenVdi = 0xe0,
    /// Sheepfold extension `SD_OP_CHECK_VDI`: compare every replica of
    /// every object of a VDI and repair the missing, corrupt or stale ones
    /// (`dog vdi check`, `dog cluster check`). Request: `vdi.base_vdi_id`
    /// = vid; reply: [`crate::recovery::CheckVdiReply`].
    CheckVdi = 0xe1,
    /// Sheepfold extension `SD_OP_LIST_LOCKS`: every attachment (attach
    /// lock) of every VDI (`dog vdi lock list`). Reply:
    /// [`crate::locks::encode_lock_list`].
    ListLocks = 0xe2,
}

/// Every defined opcode, in ascending numeric order.
pub const ALL_OPCODES: [Opcode; 79] = [
    Opcode::CreateAndWriteObj,
    Opcode::ReadObj,
    Opcode::WriteObj,
    Opcode::RemoveObj,
    Opcode::DiscardObj,
    Opcode::NewVdi,
    Opcode::LockVdi,
    Opcode::ReleaseVdi,
    Opcode::GetVdiInfo,
    Opcode::ReadVdis,
    Opcode::FlushVdi,
    Opcode::DelVdi,
    Opcode::GetClusterDefault,
    Opcode::GetNodeList,
    Opcode::MakeFs,
    Opcode::Shutdown,
    Opcode::StatSheep,
    Opcode::StatCluster,
    Opcode::GetVdiAttr,
    Opcode::ForceRecover,
    Opcode::GetStoreList,
    Opcode::Snapshot,
    Opcode::Restore,
    Opcode::GetSnapFile,
    Opcode::Cleanup,
    Opcode::TraceStatus,
    Opcode::TraceReadBuf,
    Opcode::StatRecovery,
    Opcode::FlushDelCache,
    Opcode::NotifyVdiDel,
    Opcode::KillNode,
    Opcode::TraceEnable,
    Opcode::TraceDisable,
    Opcode::GetObjList,
    Opcode::GetEpoch,
    Opcode::CreateAndWritePeer,
    Opcode::ReadPeer,
    Opcode::WritePeer,
    Opcode::RemovePeer,
    Opcode::EnableRecover,
    Opcode::DisableRecover,
    Opcode::GetVdiCopies,
    Opcode::CompleteRecovery,
    Opcode::FlushNodes,
    Opcode::FlushPeer,
    Opcode::NotifyVdiAdd,
    Opcode::DeleteCache,
    Opcode::MdInfo,
    Opcode::MdPlug,
    Opcode::MdUnplug,
    Opcode::GetHash,
    Opcode::Reweight,
    Opcode::GetCacheInfo,
    Opcode::CachePurge,
    Opcode::Stat,
    Opcode::GetLoglevel,
    Opcode::SetLoglevel,
    Opcode::NfsCreate,
    Opcode::NfsDelete,
    Opcode::Exist,
    Opcode::ClusterInfo,
    Opcode::AlterClusterCopy,
    Opcode::AlterVdiCopy,
    Opcode::DecrefObj,
    Opcode::DecrefPeer,
    Opcode::PreventInodeUpdate,
    Opcode::AllowInodeUpdate,
    Opcode::RepairReplica,
    Opcode::OidsExist,
    Opcode::VdiStateCheckpointCtl,
    Opcode::InodeCoherence,
    Opcode::ReadDelVdis,
    Opcode::GetRecovery,
    Opcode::SetRecovery,
    Opcode::SetVnodes,
    Opcode::GetVnodes,
    Opcode::FlattenVdi,
    Opcode::CheckVdi,
    Opcode::ListLocks,
];

impl Opcode {
    /// Decodes an opcode byte; `None` if sheep does not define it.
    pub fn from_u8(v: u8) -> Option<Opcode> {
        ALL_OPCODES.iter().copied().find(|o| o.as_u8() == v)
    }

    /// The wire value of this opcode.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// True for internal opcodes (>= 0x80), which require `SD_SHEEP_PROTO_VER`.
    pub fn is_internal(self) -> bool {
        self.as_u8() >= 0x80
    }

    /// The `proto_ver` a request for this opcode carries: `SD_PROTO_VER` (0x02)
    /// for public opcodes, `SD_SHEEP_PROTO_VER` (0x0a) for internal ones.
    pub fn proto_ver(self) -> u8 {
        if self.is_internal() {
            SD_SHEEP_PROTO_VER
        } else {
            SD_PROTO_VER
        }
    }

    /// The C macro name, e.g. `"SD_OP_READ_OBJ"`.
    pub fn name(self) -> &'static str {
        match self {
            Opcode::CreateAndWriteObj => "SD_OP_CREATE_AND_WRITE_OBJ",
            Opcode::ReadObj => "SD_OP_READ_OBJ",
            Opcode::WriteObj => "SD_OP_WRITE_OBJ",
            Opcode::RemoveObj => "SD_OP_REMOVE_OBJ",
            Opcode::DiscardObj => "SD_OP_DISCARD_OBJ",
            Opcode::NewVdi => "SD_OP_NEW_VDI",
            Opcode::LockVdi => "SD_OP_LOCK_VDI",
            Opcode::ReleaseVdi => "SD_OP_RELEASE_VDI",
            Opcode::GetVdiInfo => "SD_OP_GET_VDI_INFO",
            Opcode::ReadVdis => "SD_OP_READ_VDIS",
            Opcode::FlushVdi => "SD_OP_FLUSH_VDI",
            Opcode::DelVdi => "SD_OP_DEL_VDI",
            Opcode::GetClusterDefault => "SD_OP_GET_CLUSTER_DEFAULT",
            Opcode::GetNodeList => "SD_OP_GET_NODE_LIST",
            Opcode::MakeFs => "SD_OP_MAKE_FS",
            Opcode::Shutdown => "SD_OP_SHUTDOWN",
            Opcode::StatSheep => "SD_OP_STAT_SHEEP",
            Opcode::StatCluster => "SD_OP_STAT_CLUSTER",
            Opcode::GetVdiAttr => "SD_OP_GET_VDI_ATTR",
            Opcode::ForceRecover => "SD_OP_FORCE_RECOVER",
            Opcode::GetStoreList => "SD_OP_GET_STORE_LIST",
            Opcode::Snapshot => "SD_OP_SNAPSHOT",
            Opcode::Restore => "SD_OP_RESTORE",
            Opcode::GetSnapFile => "SD_OP_GET_SNAP_FILE",
            Opcode::Cleanup => "SD_OP_CLEANUP",
            Opcode::TraceStatus => "SD_OP_TRACE_STATUS",
            Opcode::TraceReadBuf => "SD_OP_TRACE_READ_BUF",
            Opcode::StatRecovery => "SD_OP_STAT_RECOVERY",
            Opcode::FlushDelCache => "SD_OP_FLUSH_DEL_CACHE",
            Opcode::NotifyVdiDel => "SD_OP_NOTIFY_VDI_DEL",
            Opcode::KillNode => "SD_OP_KILL_NODE",
            Opcode::TraceEnable => "SD_OP_TRACE_ENABLE",
            Opcode::TraceDisable => "SD_OP_TRACE_DISABLE",
            Opcode::GetObjList => "SD_OP_GET_OBJ_LIST",
            Opcode::GetEpoch => "SD_OP_GET_EPOCH",
            Opcode::CreateAndWritePeer => "SD_OP_CREATE_AND_WRITE_PEER",
            Opcode::ReadPeer => "SD_OP_READ_PEER",
            Opcode::WritePeer => "SD_OP_WRITE_PEER",
            Opcode::RemovePeer => "SD_OP_REMOVE_PEER",
            Opcode::EnableRecover => "SD_OP_ENABLE_RECOVER",
            Opcode::DisableRecover => "SD_OP_DISABLE_RECOVER",
            Opcode::GetVdiCopies => "SD_OP_GET_VDI_COPIES",
            Opcode::CompleteRecovery => "SD_OP_COMPLETE_RECOVERY",
            Opcode::FlushNodes => "SD_OP_FLUSH_NODES",
            Opcode::FlushPeer => "SD_OP_FLUSH_PEER",
            Opcode::NotifyVdiAdd => "SD_OP_NOTIFY_VDI_ADD",
            Opcode::DeleteCache => "SD_OP_DELETE_CACHE",
            Opcode::MdInfo => "SD_OP_MD_INFO",
            Opcode::MdPlug => "SD_OP_MD_PLUG",
            Opcode::MdUnplug => "SD_OP_MD_UNPLUG",
            Opcode::GetHash => "SD_OP_GET_HASH",
            Opcode::Reweight => "SD_OP_REWEIGHT",
            Opcode::GetCacheInfo => "SD_OP_GET_CACHE_INFO",
            Opcode::CachePurge => "SD_OP_CACHE_PURGE",
            Opcode::Stat => "SD_OP_STAT",
            Opcode::GetLoglevel => "SD_OP_GET_LOGLEVEL",
            Opcode::SetLoglevel => "SD_OP_SET_LOGLEVEL",
            Opcode::NfsCreate => "SD_OP_NFS_CREATE",
            Opcode::NfsDelete => "SD_OP_NFS_DELETE",
            Opcode::Exist => "SD_OP_EXIST",
            Opcode::ClusterInfo => "SD_OP_CLUSTER_INFO",
            Opcode::AlterClusterCopy => "SD_OP_ALTER_CLUSTER_COPY",
            Opcode::AlterVdiCopy => "SD_OP_ALTER_VDI_COPY",
            Opcode::DecrefObj => "SD_OP_DECREF_OBJ",
            Opcode::DecrefPeer => "SD_OP_DECREF_PEER",
            Opcode::PreventInodeUpdate => "SD_OP_PREVENT_INODE_UPDATE",
            Opcode::AllowInodeUpdate => "SD_OP_ALLOW_INODE_UPDATE",
            Opcode::RepairReplica => "SD_OP_REPAIR_REPLICA",
            Opcode::OidsExist => "SD_OP_OIDS_EXIST",
            Opcode::VdiStateCheckpointCtl => "SD_OP_VDI_STATE_CHECKPOINT_CTL",
            Opcode::InodeCoherence => "SD_OP_INODE_COHERENCE",
            Opcode::ReadDelVdis => "SD_OP_READ_DEL_VDIS",
            Opcode::GetRecovery => "SD_OP_GET_RECOVERY",
            Opcode::SetRecovery => "SD_OP_SET_RECOVERY",
            Opcode::SetVnodes => "SD_OP_SET_VNODES",
            Opcode::GetVnodes => "SD_OP_GET_VNODES",
            Opcode::FlattenVdi => "SD_OP_FLATTEN_VDI",
            Opcode::CheckVdi => "SD_OP_CHECK_VDI",
            Opcode::ListLocks => "SD_OP_LIST_LOCKS",
        }
    }

    /// The peer opcode a gateway opcode maps to when fanned out to replicas
    /// (`sheep/ops.c` map_table), or `None` if it has no peer form.
    pub fn peer_op(self) -> Option<Opcode> {
        match self {
            Opcode::CreateAndWriteObj => Some(Opcode::CreateAndWritePeer),
            Opcode::ReadObj => Some(Opcode::ReadPeer),
            Opcode::WriteObj => Some(Opcode::WritePeer),
            Opcode::RemoveObj => Some(Opcode::RemovePeer),
            Opcode::DecrefObj => Some(Opcode::DecrefPeer),
            _ => None,
        }
    }
}

impl std::fmt::Display for Opcode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_bytes() {
        let mut n = 0;
        for v in 0..=255u8 {
            if let Some(op) = Opcode::from_u8(v) {
                assert_eq!(op.as_u8(), v);
                n += 1;
            }
        }
        assert_eq!(n, ALL_OPCODES.len());
        assert_eq!(n, 79, "76 Sheepdog opcodes and three Sheepfold extensions");
        assert!(ALL_OPCODES.windows(2).all(|w| w[0].as_u8() < w[1].as_u8()));
    }

    #[test]
    fn undefined_values() {
        for v in [
            0x00u8, 0x06, 0x10, 0x19, 0x80, 0x81, 0x83, 0x88, 0xa0, 0xa7, 0xaa, 0xce, 0xe3, 0xff,
        ] {
            assert_eq!(Opcode::from_u8(v), None, "{v:#x}");
        }
    }

    #[test]
    fn versions_and_names() {
        assert_eq!(Opcode::ReadObj.proto_ver(), 0x02);
        assert!(!Opcode::GetClusterDefault.is_internal());
        assert_eq!(Opcode::GetNodeList.proto_ver(), 0x0a);
        assert!(Opcode::GetNodeList.is_internal());
        assert_eq!(Opcode::ReadObj.name(), "SD_OP_READ_OBJ");
        assert_eq!(Opcode::GetVnodes.name(), "SD_OP_GET_VNODES");
        assert_eq!(Opcode::VdiStateCheckpointCtl.as_u8(), 0xc7);
        assert_eq!(Opcode::KillNode.to_string(), "SD_OP_KILL_NODE");
        assert_eq!(Opcode::DecrefObj.peer_op(), Some(Opcode::DecrefPeer));
        assert_eq!(Opcode::NewVdi.peer_op(), None);
        assert_eq!(Opcode::from_u8(0xe0), Some(Opcode::FlattenVdi));
        assert_eq!(Opcode::from_u8(0xe1), Some(Opcode::CheckVdi));
        assert_eq!(Opcode::CheckVdi.name(), "SD_OP_CHECK_VDI");
        assert_eq!(Opcode::CheckVdi.proto_ver(), 0x0a);
        assert_eq!(Opcode::CheckVdi.peer_op(), None);
    }
}
