//! Result codes (`SD_RES_*`, reference §1.9) and their sheep text.
//!
//! Owns [`SdResult`], the u32 at offset 16 of every response. Invariant:
//! [`SdResult::message`] returns byte-for-byte what sheep's `sd_strerror`
//! (`include/sheep.h`) prints, including `"Invalid error code %x"` for values
//! it has no text for (0x92-0x95, 0x99 and every undefined value).

use std::borrow::Cow;

/// A Sheepdog result code as carried in `rsp.result`. Unknown values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SdResult(pub u32);

impl SdResult {
    /// `SD_RES_SUCCESS`: "Success".
    pub const SUCCESS: SdResult = SdResult(0x00);
    /// `SD_RES_UNKNOWN`: "Unknown error".
    pub const UNKNOWN: SdResult = SdResult(0x01);
    /// `SD_RES_NO_OBJ`: "No object found".
    pub const NO_OBJ: SdResult = SdResult(0x02);
    /// `SD_RES_EIO`: "I/O error".
    pub const EIO: SdResult = SdResult(0x03);
    /// `SD_RES_VDI_EXIST`: "VDI exists already".
    pub const VDI_EXIST: SdResult = SdResult(0x04);
    /// `SD_RES_INVALID_PARMS`: "Invalid parameters".
    pub const INVALID_PARMS: SdResult = SdResult(0x05);
    /// `SD_RES_SYSTEM_ERROR`: "System error".
    pub const SYSTEM_ERROR: SdResult = SdResult(0x06);
    /// `SD_RES_VDI_LOCKED`: "VDI is already locked".
    pub const VDI_LOCKED: SdResult = SdResult(0x07);
    /// `SD_RES_NO_VDI`: "No VDI found".
    pub const NO_VDI: SdResult = SdResult(0x08);
    /// `SD_RES_NO_BASE_VDI`: "No base VDI found".
    pub const NO_BASE_VDI: SdResult = SdResult(0x09);
    /// `SD_RES_VDI_READ`: "Failed to read from requested VDI".
    pub const VDI_READ: SdResult = SdResult(0x0a);
    /// `SD_RES_VDI_WRITE`: "Failed to write to requested VDI".
    pub const VDI_WRITE: SdResult = SdResult(0x0b);
    /// `SD_RES_BASE_VDI_READ`: "Failed to read from base VDI".
    pub const BASE_VDI_READ: SdResult = SdResult(0x0c);
    /// `SD_RES_BASE_VDI_WRITE`: "Failed to write to base VDI".
    pub const BASE_VDI_WRITE: SdResult = SdResult(0x0d);
    /// `SD_RES_NO_TAG`: "Failed to find requested tag".
    pub const NO_TAG: SdResult = SdResult(0x0e);
    /// `SD_RES_STARTUP`: "System is still booting".
    pub const STARTUP: SdResult = SdResult(0x0f);
    /// `SD_RES_VDI_NOT_LOCKED`: "VDI is not locked".
    pub const VDI_NOT_LOCKED: SdResult = SdResult(0x10);
    /// `SD_RES_SHUTDOWN`: "System is shutting down".
    pub const SHUTDOWN: SdResult = SdResult(0x11);
    /// `SD_RES_NO_MEM`: "Out of memory on server".
    pub const NO_MEM: SdResult = SdResult(0x12);
    /// `SD_RES_FULL_VDI`: "Maximum number of VDIs reached".
    pub const FULL_VDI: SdResult = SdResult(0x13);
    /// `SD_RES_VER_MISMATCH`: "Protocol version mismatch".
    pub const VER_MISMATCH: SdResult = SdResult(0x14);
    /// `SD_RES_NO_SPACE`: "Server has no space for new objects".
    pub const NO_SPACE: SdResult = SdResult(0x15);
    /// `SD_RES_WAIT_FOR_FORMAT`: "Waiting for cluster to be formatted".
    pub const WAIT_FOR_FORMAT: SdResult = SdResult(0x16);
    /// `SD_RES_WAIT_FOR_JOIN`: "Waiting for other nodes to join cluster".
    pub const WAIT_FOR_JOIN: SdResult = SdResult(0x17);
    /// `SD_RES_JOIN_FAILED`: "Node has failed to join cluster".
    pub const JOIN_FAILED: SdResult = SdResult(0x18);
    /// `SD_RES_HALT`: "IO has halted as there are not enough living nodes".
    pub const HALT: SdResult = SdResult(0x19);
    /// `SD_RES_READONLY`: "Object is read-only".
    pub const READONLY: SdResult = SdResult(0x1a);
    /// `SD_RES_INODE_INVALIDATED`: "Inode object is invalidated".
    pub const INODE_INVALIDATED: SdResult = SdResult(0x1d);
    /// `SD_RES_OLD_NODE_VER`: "Request has an old epoch".
    pub const OLD_NODE_VER: SdResult = SdResult(0x81);
    /// `SD_RES_NEW_NODE_VER`: "Request has a new epoch".
    pub const NEW_NODE_VER: SdResult = SdResult(0x82);
    /// `SD_RES_NOT_FORMATTED`: "Cluster has not been formatted".
    pub const NOT_FORMATTED: SdResult = SdResult(0x83);
    /// `SD_RES_INVALID_CTIME`: "Creation times differ".
    pub const INVALID_CTIME: SdResult = SdResult(0x84);
    /// `SD_RES_INVALID_EPOCH`: "Invalid epoch".
    pub const INVALID_EPOCH: SdResult = SdResult(0x85);
    /// `SD_RES_NETWORK_ERROR`: "Network error between sheep".
    pub const NETWORK_ERROR: SdResult = SdResult(0x86);
    /// `SD_RES_NO_CACHE`: "No cache object found".
    pub const NO_CACHE: SdResult = SdResult(0x87);
    /// `SD_RES_BUFFER_SMALL`: "The buffer is too small".
    pub const BUFFER_SMALL: SdResult = SdResult(0x88);
    /// `SD_RES_FORCE_RECOVER`: "Cluster is running/halted and cannot be force recovered".
    pub const FORCE_RECOVER: SdResult = SdResult(0x89);
    /// `SD_RES_NO_STORE`: "Targeted backend store is not found".
    pub const NO_STORE: SdResult = SdResult(0x8a);
    /// `SD_RES_NO_SUPPORT`: "Operation is not supported".
    pub const NO_SUPPORT: SdResult = SdResult(0x8b);
    /// `SD_RES_NODE_IN_RECOVERY`: "Targeted node is in recovery".
    pub const NODE_IN_RECOVERY: SdResult = SdResult(0x8c);
    /// `SD_RES_KILLED`: "Node is killed".
    pub const KILLED: SdResult = SdResult(0x8d);
    /// `SD_RES_OID_EXIST`: "Object ID exists already".
    pub const OID_EXIST: SdResult = SdResult(0x8e);
    /// `SD_RES_AGAIN`: "Ask to try again".
    pub const AGAIN: SdResult = SdResult(0x8f);
    /// `SD_RES_STALE_OBJ`: "Object may be stale".
    pub const STALE_OBJ: SdResult = SdResult(0x90);
    /// `SD_RES_CLUSTER_ERROR`: "Cluster driver error".
    pub const CLUSTER_ERROR: SdResult = SdResult(0x91);
    /// `SD_RES_VDI_NOT_EMPTY` (sheep has no text: prints "Invalid error code 92").
    pub const VDI_NOT_EMPTY: SdResult = SdResult(0x92);
    /// `SD_RES_NOT_FOUND` (sheep has no text: prints "Invalid error code 93").
    pub const NOT_FOUND: SdResult = SdResult(0x93);
    /// `SD_RES_INCOMPLETE` (sheep has no text: prints "Invalid error code 94").
    pub const INCOMPLETE: SdResult = SdResult(0x94);
    /// `SD_RES_COLLECTING_CINFO` (sheep has no text: prints "Invalid error code 95").
    pub const COLLECTING_CINFO: SdResult = SdResult(0x95);
    /// `SD_RES_GATEWAY_MODE`: "Targeted node is gateway mode".
    pub const GATEWAY_MODE: SdResult = SdResult(0x97);
    /// `SD_RES_INVALID_VNODES_STRATEGY`: "Invalid cluster vnodes strategy".
    pub const INVALID_VNODES_STRATEGY: SdResult = SdResult(0x98);
    /// `SD_RES_NO_CHECKPOINT_ENTRY` (sheep has no text: prints "Invalid error code 99").
    pub const NO_CHECKPOINT_ENTRY: SdResult = SdResult(0x99);

    /// True for `SD_RES_SUCCESS`.
    pub fn is_success(self) -> bool {
        self.0 == 0
    }

    /// The text sheep's `sd_strerror` prints for this code (what dog shows).
    pub fn message(self) -> Cow<'static, str> {
        match self.known_text() {
            Some(t) => Cow::Borrowed(t),
            None => Cow::Owned(format!("Invalid error code {:x}", self.0)),
        }
    }

    /// The C macro name (`"SD_RES_NO_VDI"`), or `None` for an undefined value.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x00 => "SD_RES_SUCCESS",
            0x01 => "SD_RES_UNKNOWN",
            0x02 => "SD_RES_NO_OBJ",
            0x03 => "SD_RES_EIO",
            0x04 => "SD_RES_VDI_EXIST",
            0x05 => "SD_RES_INVALID_PARMS",
            0x06 => "SD_RES_SYSTEM_ERROR",
            0x07 => "SD_RES_VDI_LOCKED",
            0x08 => "SD_RES_NO_VDI",
            0x09 => "SD_RES_NO_BASE_VDI",
            0x0a => "SD_RES_VDI_READ",
            0x0b => "SD_RES_VDI_WRITE",
            0x0c => "SD_RES_BASE_VDI_READ",
            0x0d => "SD_RES_BASE_VDI_WRITE",
            0x0e => "SD_RES_NO_TAG",
            0x0f => "SD_RES_STARTUP",
            0x10 => "SD_RES_VDI_NOT_LOCKED",
            0x11 => "SD_RES_SHUTDOWN",
            0x12 => "SD_RES_NO_MEM",
            0x13 => "SD_RES_FULL_VDI",
            0x14 => "SD_RES_VER_MISMATCH",
            0x15 => "SD_RES_NO_SPACE",
            0x16 => "SD_RES_WAIT_FOR_FORMAT",
            0x17 => "SD_RES_WAIT_FOR_JOIN",
            0x18 => "SD_RES_JOIN_FAILED",
            0x19 => "SD_RES_HALT",
            0x1a => "SD_RES_READONLY",
            0x1d => "SD_RES_INODE_INVALIDATED",
            0x81 => "SD_RES_OLD_NODE_VER",
            0x82 => "SD_RES_NEW_NODE_VER",
            0x83 => "SD_RES_NOT_FORMATTED",
            0x84 => "SD_RES_INVALID_CTIME",
            0x85 => "SD_RES_INVALID_EPOCH",
            0x86 => "SD_RES_NETWORK_ERROR",
            0x87 => "SD_RES_NO_CACHE",
            0x88 => "SD_RES_BUFFER_SMALL",
            0x89 => "SD_RES_FORCE_RECOVER",
            0x8a => "SD_RES_NO_STORE",
            0x8b => "SD_RES_NO_SUPPORT",
            0x8c => "SD_RES_NODE_IN_RECOVERY",
            0x8d => "SD_RES_KILLED",
            0x8e => "SD_RES_OID_EXIST",
            0x8f => "SD_RES_AGAIN",
            0x90 => "SD_RES_STALE_OBJ",
            0x91 => "SD_RES_CLUSTER_ERROR",
            0x92 => "SD_RES_VDI_NOT_EMPTY",
            0x93 => "SD_RES_NOT_FOUND",
            0x94 => "SD_RES_INCOMPLETE",
            0x95 => "SD_RES_COLLECTING_CINFO",
            0x97 => "SD_RES_GATEWAY_MODE",
            0x98 => "SD_RES_INVALID_VNODES_STRATEGY",
            0x99 => "SD_RES_NO_CHECKPOINT_ENTRY",
            _ => return None,
        })
    }

    fn known_text(self) -> Option<&'static str> {
        Some(match self.0 {
            0x00 => "Success",
            0x01 => "Unknown error",
            0x02 => "No object found",
            0x03 => "I/O error",
            0x04 => "VDI exists already",
            0x05 => "Invalid parameters",
            0x06 => "System error",
            0x07 => "VDI is already locked",
            0x08 => "No VDI found",
            0x09 => "No base VDI found",
            0x0a => "Failed to read from requested VDI",
            0x0b => "Failed to write to requested VDI",
            0x0c => "Failed to read from base VDI",
            0x0d => "Failed to write to base VDI",
            0x0e => "Failed to find requested tag",
            0x0f => "System is still booting",
            0x10 => "VDI is not locked",
            0x11 => "System is shutting down",
            0x12 => "Out of memory on server",
            0x13 => "Maximum number of VDIs reached",
            0x14 => "Protocol version mismatch",
            0x15 => "Server has no space for new objects",
            0x16 => "Waiting for cluster to be formatted",
            0x17 => "Waiting for other nodes to join cluster",
            0x18 => "Node has failed to join cluster",
            0x19 => "IO has halted as there are not enough living nodes",
            0x1a => "Object is read-only",
            0x1d => "Inode object is invalidated",
            0x81 => "Request has an old epoch",
            0x82 => "Request has a new epoch",
            0x83 => "Cluster has not been formatted",
            0x84 => "Creation times differ",
            0x85 => "Invalid epoch",
            0x86 => "Network error between sheep",
            0x87 => "No cache object found",
            0x88 => "The buffer is too small",
            0x89 => "Cluster is running/halted and cannot be force recovered",
            0x8a => "Targeted backend store is not found",
            0x8b => "Operation is not supported",
            0x8c => "Targeted node is in recovery",
            0x8d => "Node is killed",
            0x8e => "Object ID exists already",
            0x8f => "Ask to try again",
            0x90 => "Object may be stale",
            0x91 => "Cluster driver error",
            0x97 => "Targeted node is gateway mode",
            0x98 => "Invalid cluster vnodes strategy",
            _ => return None,
        })
    }
}

impl Default for SdResult {
    /// `SUCCESS`.
    fn default() -> Self {
        SdResult::SUCCESS
    }
}

impl From<u32> for SdResult {
    fn from(v: u32) -> Self {
        SdResult(v)
    }
}

impl std::fmt::Display for SdResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for SdResult {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_clients_parse() {
        assert_eq!(SdResult::VDI_EXIST.message(), "VDI exists already");
        assert_eq!(SdResult::NO_VDI.message(), "No VDI found");
        assert_eq!(SdResult::NO_TAG.message(), "Failed to find requested tag");
        assert_eq!(
            SdResult::WAIT_FOR_FORMAT.message(),
            "Waiting for cluster to be formatted"
        );
        assert_eq!(
            SdResult::WAIT_FOR_JOIN.message(),
            "Waiting for other nodes to join cluster"
        );
        assert_eq!(
            SdResult::VDI_WRITE.message(),
            "Failed to write to requested VDI"
        );
        assert_eq!(
            SdResult::HALT.message(),
            "IO has halted as there are not enough living nodes"
        );
        assert_eq!(
            SdResult::FORCE_RECOVER.message(),
            "Cluster is running/halted and cannot be force recovered"
        );
        assert_eq!(SdResult::SUCCESS.to_string(), "Success");
        assert_eq!(
            SdResult::INVALID_VNODES_STRATEGY.message(),
            "Invalid cluster vnodes strategy"
        );
    }

    #[test]
    fn codes_without_text() {
        assert_eq!(SdResult::VDI_NOT_EMPTY.message(), "Invalid error code 92");
        assert_eq!(SdResult::NOT_FOUND.message(), "Invalid error code 93");
        assert_eq!(SdResult::INCOMPLETE.message(), "Invalid error code 94");
        assert_eq!(
            SdResult::COLLECTING_CINFO.message(),
            "Invalid error code 95"
        );
        assert_eq!(
            SdResult::NO_CHECKPOINT_ENTRY.message(),
            "Invalid error code 99"
        );
        assert_eq!(SdResult(0x1b).message(), "Invalid error code 1b");
        assert_eq!(SdResult(0x96).message(), "Invalid error code 96");
        assert_eq!(SdResult(0xabcdef).to_string(), "Invalid error code abcdef");
    }

    #[test]
    fn values_and_names() {
        assert!(SdResult::SUCCESS.is_success());
        assert!(!SdResult::NO_OBJ.is_success());
        assert_eq!(SdResult::INODE_INVALIDATED.0, 0x1d);
        assert_eq!(SdResult::NO_CHECKPOINT_ENTRY.0, 0x99);
        assert_eq!(SdResult::GATEWAY_MODE.0, 0x97);
        assert_eq!(SdResult::NO_VDI.name(), Some("SD_RES_NO_VDI"));
        assert_eq!(SdResult(0x96).name(), None);
        let e: Box<dyn std::error::Error> = Box::new(SdResult::EIO);
        assert_eq!(e.to_string(), "I/O error");
    }
}
