//! The daemon's error type and its mapping to Sheepdog result codes, which
//! happens once, at the protocol edge (and on peer replies, which carry the
//! code so the gateway sees the same error a local call would give).

use qemu_proto::SdResult;

use crate::peer::PeerError;
use crate::store::StoreError;

/// Anything that can fail inside a sheep.
#[derive(Debug, thiserror::Error)]
pub enum SheepError {
    /// The local object store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Talking to a peer failed.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// A definite protocol-level answer (e.g. NO_VDI, VDI_EXIST).
    #[error("{0}")]
    Result(SdResult),
    /// No node in the view stores objects.
    #[error("no node in the cluster stores objects")]
    NoStorage,
    /// The membership did not settle in time for the request.
    #[error("membership did not settle: {0}")]
    Unsettled(String),
    /// A request refused for a reason a person should read (an attach
    /// lock held elsewhere, say), with the result code clients get.
    #[error("{message}")]
    Refused {
        /// The result code.
        code: SdResult,
        /// Why, for people.
        message: String,
    },
}

impl SheepError {
    /// The Sheepdog result code a client sees for this error.
    pub fn result(&self) -> SdResult {
        match self {
            SheepError::Store(StoreError::NoObject(_)) => SdResult::NO_OBJ,
            SheepError::Store(StoreError::Exists(_)) => SdResult::OID_EXIST,
            SheepError::Store(StoreError::Io(_)) => SdResult::EIO,
            SheepError::Store(StoreError::Corrupt(..)) => SdResult::EIO,
            // Retryable: the object is being recovered.
            SheepError::Store(StoreError::Busy(_)) => SdResult::AGAIN,
            SheepError::Store(StoreError::OutOfRange(..)) => SdResult::INVALID_PARMS,
            // Handled where the store is called; never a client's answer.
            SheepError::Store(StoreError::NeedBase { .. }) => SdResult::EIO,
            SheepError::Peer(_) => SdResult::NETWORK_ERROR,
            SheepError::Result(r) => *r,
            SheepError::NoStorage => SdResult::NO_SPACE,
            SheepError::Unsettled(_) => SdResult::HALT,
            SheepError::Refused { code, .. } => *code,
        }
    }

    /// Rebuilds an error from a result code carried in a peer reply.
    pub fn from_result(code: u32) -> Self {
        SheepError::Result(SdResult(code))
    }

    /// True when trying again, possibly in a newer view, may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SheepError::Peer(_) | SheepError::Store(StoreError::Busy(_))
        ) || matches!(self, SheepError::Result(r)
                if *r == SdResult::NETWORK_ERROR || *r == SdResult::AGAIN)
    }

    /// True when the object does not exist where it was looked for.
    pub fn is_no_object(&self) -> bool {
        self.result() == SdResult::NO_OBJ
    }
}

impl From<SdResult> for SheepError {
    fn from(r: SdResult) -> Self {
        SheepError::Result(r)
    }
}
