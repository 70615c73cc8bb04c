//! Recovery and repair records (reference §1.7, §1.11, §3.4).
//!
//! * [`RecoveryState`], `struct recovery_state` (24 bytes): the
//!   STAT_RECOVERY reply as Sheepdog defines it.
//! * [`RecoveryStats`]: Sheepfold's 24-byte extension that follows it in
//!   the STAT_RECOVERY reply (cumulative counters). Sheepdog's dog asks for
//!   24 bytes and never sees it; [`StatRecoveryReply`] is the whole reply.
//! * [`RecoveryThrottling`], `struct recovery_throttling` (24 bytes): the
//!   GET_RECOVERY reply and SET_RECOVERY payload.
//! * [`CheckVdiReply`]: the reply of Sheepfold's CHECK_VDI (0xe1).
//!
//! Invariants: encoders produce exactly the C sizes with zero padding;
//! decoders never panic and fail with `Truncated` / `BadLength`.

use crate::consts::SD_INODE_DATA_INDEX;
use crate::error::ProtoError;
use crate::wire::{get_u32, get_u64, need, put_u32, put_u64};

/// `RW_PREPARE_LIST`: collecting the object lists.
pub const RW_PREPARE_LIST: u32 = 0;
/// `RW_RECOVER_OBJ`: copying objects.
pub const RW_RECOVER_OBJ: u32 = 1;
/// `RW_NOTIFY_COMPLETION`: done copying, telling the others.
pub const RW_NOTIFY_COMPLETION: u32 = 2;

/// `struct recovery_state` (24 bytes), the STAT_RECOVERY reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryState {
    /// @0: recovery running.
    pub in_recovery: bool,
    /// @4: 0 PREPARE_LIST, 1 RECOVER_OBJ, 2 NOTIFY_COMPLETION.
    pub state: u32,
    /// @8: objects recovered.
    pub nr_finished: u64,
    /// @16: objects to recover.
    pub nr_total: u64,
}

impl RecoveryState {
    /// Wire size.
    pub const SIZE: usize = 24;

    /// Encodes 24 bytes.
    pub fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0] = self.in_recovery as u8;
        put_u32(&mut b, 4, self.state);
        put_u64(&mut b, 8, self.nr_finished);
        put_u64(&mut b, 16, self.nr_total);
        b
    }

    /// Decodes from the start of `b` (needs 24 bytes).
    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        need(b, Self::SIZE)?;
        Ok(RecoveryState {
            in_recovery: b[0] != 0,
            state: get_u32(b, 4),
            nr_finished: get_u64(b, 8),
            nr_total: get_u64(b, 16),
        })
    }
}

/// Sheepfold's extension of the STAT_RECOVERY reply (24 bytes after the
/// `recovery_state`): what recovery and replica repair moved since the
/// daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// @0: object copies this node received.
    pub objects_received: u64,
    /// @8: bytes of those copies.
    pub bytes_received: u64,
    /// @16: bytes this node sent for other nodes' copies.
    pub bytes_sent: u64,
}

impl RecoveryStats {
    /// Wire size.
    pub const SIZE: usize = 24;

    /// Encodes 24 bytes.
    pub fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        put_u64(&mut b, 0, self.objects_received);
        put_u64(&mut b, 8, self.bytes_received);
        put_u64(&mut b, 16, self.bytes_sent);
        b
    }

    /// Decodes from the start of `b` (needs 24 bytes).
    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        need(b, Self::SIZE)?;
        Ok(RecoveryStats {
            objects_received: get_u64(b, 0),
            bytes_received: get_u64(b, 8),
            bytes_sent: get_u64(b, 16),
        })
    }
}

/// The whole STAT_RECOVERY reply: Sheepdog's `recovery_state`, then (from
/// a Sheepfold sheep) the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatRecoveryReply {
    /// The first 24 bytes.
    pub state: RecoveryState,
    /// The next 24 bytes; `None` when the sheep sent only 24 bytes.
    pub stats: Option<RecoveryStats>,
}

impl StatRecoveryReply {
    /// Size with the extension: what a client asks for in `data_length`.
    pub const SIZE: usize = RecoveryState::SIZE + RecoveryStats::SIZE;

    /// Encodes 24 bytes, or 48 with the counters.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.state.encode().to_vec();
        if let Some(stats) = &self.stats {
            b.extend_from_slice(&stats.encode());
        }
        b
    }

    /// Decodes a reply of at least 24 bytes; the counters are read when
    /// 48 bytes are there.
    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        let state = RecoveryState::decode(b)?;
        let stats = if b.len() >= Self::SIZE {
            Some(RecoveryStats::decode(&b[RecoveryState::SIZE..])?)
        } else {
            None
        };
        Ok(StatRecoveryReply { state, stats })
    }
}

/// `struct recovery_throttling` (24 bytes), GET/SET_RECOVERY payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryThrottling {
    /// @0: objects recovered per interval.
    pub max_exec_count: u32,
    /// @8: the interval, ms.
    pub queue_work_interval: u64,
    /// @16: throttling enabled.
    pub throttling: bool,
}

impl RecoveryThrottling {
    /// Wire size.
    pub const SIZE: usize = 24;

    /// `max` objects every `interval_ms`; `throttling` is set as sheep's
    /// `set_recovery` does (both non-zero).
    pub fn new(max: u32, interval_ms: u64) -> Self {
        RecoveryThrottling {
            max_exec_count: max,
            queue_work_interval: interval_ms,
            throttling: max > 0 && interval_ms > 0,
        }
    }

    /// Sheepdog's rule: max and interval are both zero (unthrottled) or
    /// both non-zero.
    pub fn is_valid(&self) -> bool {
        (self.max_exec_count == 0) == (self.queue_work_interval == 0)
    }

    /// Encodes 24 bytes.
    pub fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        put_u32(&mut b, 0, self.max_exec_count);
        put_u64(&mut b, 8, self.queue_work_interval);
        b[16] = self.throttling as u8;
        b
    }

    /// Decodes from the start of `b` (needs 24 bytes).
    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        need(b, Self::SIZE)?;
        Ok(RecoveryThrottling {
            max_exec_count: get_u32(b, 0),
            queue_work_interval: get_u64(b, 8),
            throttling: b[16] != 0,
        })
    }
}

/// The reply of CHECK_VDI (Sheepfold, 0xe1; the request names the VDI by
/// `vdi.base_vdi_id`): u64 LE count of objects checked, then the u64 LE
/// oids of the objects that had a replica repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckVdiReply {
    /// Objects checked (the inode and every allocated data object).
    pub objects: u64,
    /// Oids of the objects repaired, in the order they were fixed.
    pub fixed: Vec<u64>,
}

impl CheckVdiReply {
    /// The largest reply for a VDI: the count, the inode and every data
    /// object of a full index. A client passes it as `data_length`.
    pub const MAX_SIZE: usize = 8 * (2 + SD_INODE_DATA_INDEX as usize);

    /// Encodes `8 + 8 × fixed` bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 * (1 + self.fixed.len()));
        b.extend_from_slice(&self.objects.to_le_bytes());
        for oid in &self.fixed {
            b.extend_from_slice(&oid.to_le_bytes());
        }
        b
    }

    /// Decodes a whole reply: at least 8 bytes, a multiple of 8.
    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        need(b, 8)?;
        if !b.len().is_multiple_of(8) {
            return Err(ProtoError::BadLength {
                what: "CHECK_VDI reply",
                len: b.len(),
            });
        }
        Ok(CheckVdiReply {
            objects: get_u64(b, 0),
            fixed: b[8..].chunks_exact(8).map(|c| get_u64(c, 0)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn recovery_state_offsets() {
        let r = RecoveryState {
            in_recovery: true,
            state: RW_RECOVER_OBJ,
            nr_finished: 10,
            nr_total: 0x1_0000_0000,
        };
        let b = r.encode();
        assert_eq!(b[0], 1);
        assert_eq!(&b[1..4], &[0, 0, 0]);
        assert_eq!(&b[4..8], &1u32.to_le_bytes());
        assert_eq!(&b[8..16], &10u64.to_le_bytes());
        assert_eq!(&b[16..24], &0x1_0000_0000u64.to_le_bytes());
        assert_eq!(RecoveryState::decode(&b), Ok(r));
        assert!(RecoveryState::decode(&b[..23]).is_err());
    }

    #[test]
    fn stat_recovery_extension() {
        let reply = StatRecoveryReply {
            state: RecoveryState {
                in_recovery: false,
                state: RW_NOTIFY_COMPLETION,
                nr_finished: 3,
                nr_total: 3,
            },
            stats: Some(RecoveryStats {
                objects_received: 7,
                bytes_received: 7 << 22,
                bytes_sent: 0x0102_0304_0506_0708,
            }),
        };
        let b = reply.encode();
        assert_eq!(b.len(), 48);
        assert_eq!(StatRecoveryReply::SIZE, 48);
        assert_eq!(&b[..24], &reply.state.encode());
        assert_eq!(&b[24..32], &7u64.to_le_bytes());
        assert_eq!(&b[32..40], &(7u64 << 22).to_le_bytes());
        assert_eq!(&b[40..48], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(StatRecoveryReply::decode(&b), Ok(reply));
        // Sheepdog's dog reads only the first 24 bytes.
        assert_eq!(RecoveryState::decode(&b[..24]), Ok(reply.state));
        // A Sheepdog sheep sends 24 bytes: no counters.
        let old = StatRecoveryReply::decode(&b[..24]).unwrap();
        assert_eq!(old.stats, None);
        assert_eq!(old.state, reply.state);
        // A partial extension is ignored rather than misread.
        assert_eq!(StatRecoveryReply::decode(&b[..40]).unwrap().stats, None);
        assert!(StatRecoveryReply::decode(&b[..20]).is_err());
        let without = StatRecoveryReply {
            stats: None,
            ..reply
        };
        assert_eq!(without.encode().len(), 24);
    }

    #[test]
    fn throttling_offsets_and_rule() {
        let t = RecoveryThrottling::new(4, 100);
        assert!(t.throttling && t.is_valid());
        let b = t.encode();
        assert_eq!(&b[0..4], &4u32.to_le_bytes());
        assert_eq!(&b[4..8], &[0; 4]);
        assert_eq!(&b[8..16], &100u64.to_le_bytes());
        assert_eq!(b[16], 1);
        assert_eq!(&b[17..], &[0; 7]);
        assert_eq!(RecoveryThrottling::decode(&b), Ok(t));
        assert!(RecoveryThrottling::decode(&b[..16]).is_err());

        let off = RecoveryThrottling::new(0, 0);
        assert!(!off.throttling && off.is_valid());
        assert!(!RecoveryThrottling::new(0, 5).is_valid());
        assert!(!RecoveryThrottling::new(5, 0).is_valid());
        assert!(!RecoveryThrottling::new(5, 0).throttling);
    }

    #[test]
    fn check_vdi_reply() {
        let r = CheckVdiReply {
            objects: 3,
            fixed: vec![0x007c_2b25_0000_0001, 0x807c_2b25_0000_0000],
        };
        let b = r.encode();
        assert_eq!(b.len(), 24);
        assert_eq!(&b[..8], &3u64.to_le_bytes());
        assert_eq!(&b[8..16], &0x007c_2b25_0000_0001u64.to_le_bytes());
        assert_eq!(CheckVdiReply::decode(&b), Ok(r));
        let empty = CheckVdiReply {
            objects: 0,
            fixed: vec![],
        };
        assert_eq!(empty.encode(), vec![0; 8]);
        assert_eq!(CheckVdiReply::decode(&[0; 8]), Ok(empty));
        assert!(matches!(
            CheckVdiReply::decode(&[0; 7]),
            Err(ProtoError::Truncated { .. })
        ));
        assert!(matches!(
            CheckVdiReply::decode(&[0; 12]),
            Err(ProtoError::BadLength { len: 12, .. })
        ));
        assert_eq!(CheckVdiReply::MAX_SIZE, 8 * ((1 << 20) + 2));
    }

    proptest! {
        #[test]
        fn round_trips(s: u32, f: u64, t: u64, a: u64, b2: u64, c: u64,
                       fixed in proptest::collection::vec(any::<u64>(), 0..20)) {
            let st = StatRecoveryReply {
                state: RecoveryState { in_recovery: s & 1 == 1, state: s, nr_finished: f, nr_total: t },
                stats: Some(RecoveryStats { objects_received: a, bytes_received: b2, bytes_sent: c }),
            };
            prop_assert_eq!(StatRecoveryReply::decode(&st.encode()), Ok(st));
            let r = CheckVdiReply { objects: a, fixed };
            prop_assert_eq!(CheckVdiReply::decode(&r.encode()), Ok(r));
        }

        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = StatRecoveryReply::decode(&b);
            let _ = RecoveryStats::decode(&b);
            let _ = RecoveryThrottling::decode(&b);
            let _ = CheckVdiReply::decode(&b);
        }
    }
}
