//! What operators see of recovery and what they can change at run time:
//! pause and resume (`dog cluster recover disable|enable`), the throttle
//! (`dog node recovery set-throttle`), progress (`dog node recovery`) and
//! cumulative counters of the bytes recovery moved.
//!
//! Everything here is plain shared state read by the recovery engine; it
//! never blocks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::gateway::CopyCounters;

/// Sheepdog's recovery throttle: at most `max` objects every `interval_ms`.
/// Both zero means unthrottled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Throttle {
    /// Objects per interval (0 with `interval_ms` 0: unthrottled).
    pub max: u32,
    /// The interval in milliseconds.
    pub interval_ms: u64,
}

impl Throttle {
    /// No limit.
    pub const UNTHROTTLED: Throttle = Throttle {
        max: 0,
        interval_ms: 0,
    };

    /// True when recovery runs at full speed.
    pub fn is_unthrottled(&self) -> bool {
        self.max == 0 || self.interval_ms == 0
    }
}

/// Which step a recovery pass is in (Sheepdog's `recovery_state.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryPhase {
    /// Collecting the object lists of every node.
    PrepareList = 0,
    /// Copying objects.
    RecoverObjects = 1,
    /// Done copying; waiting to drop copies that moved elsewhere.
    NotifyCompletion = 2,
}

/// Progress of the current pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryStatus {
    /// A pass is running or waiting (for the grace period or the throttle).
    pub in_recovery: bool,
    /// Its step.
    pub phase: RecoveryPhase,
    /// Objects of this pass done.
    pub finished: u64,
    /// Objects this pass must copy.
    pub total: u64,
}

/// Counters since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryCounters {
    /// Object copies this node received (recovery and write-path repair).
    pub objects_received: u64,
    /// Bytes of those copies.
    pub bytes_received: u64,
    /// Bytes this node sent to others for their copies.
    pub bytes_sent: u64,
}

/// Shared recovery settings and progress.
pub struct RecoveryControl {
    enabled: AtomicBool,
    throttle: Mutex<Throttle>,
    status: Mutex<RecoveryStatus>,
    copies: Arc<CopyCounters>,
    /// Wakes the engine when a setting changes.
    pub(crate) changed: tokio::sync::Notify,
}

impl RecoveryControl {
    /// Enabled, with `throttle`, idle; counting the copies of `copies`.
    pub fn new(throttle: Throttle, copies: Arc<CopyCounters>) -> Self {
        RecoveryControl {
            enabled: AtomicBool::new(true),
            throttle: Mutex::new(throttle),
            status: Mutex::new(RecoveryStatus {
                in_recovery: false,
                phase: RecoveryPhase::PrepareList,
                finished: 0,
                total: 0,
            }),
            copies,
            changed: tokio::sync::Notify::new(),
        }
    }

    /// False while an operator paused background recovery.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Pauses or resumes background recovery on this node.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// The current throttle.
    pub fn throttle(&self) -> Throttle {
        *self.throttle.lock().expect("throttle lock")
    }

    /// Changes the throttle.
    pub fn set_throttle(&self, t: Throttle) {
        *self.throttle.lock().expect("throttle lock") = t;
        self.changed.notify_waiters();
    }

    /// Progress of the current pass.
    pub fn status(&self) -> RecoveryStatus {
        *self.status.lock().expect("status lock")
    }

    pub(crate) fn update_status(&self, f: impl FnOnce(&mut RecoveryStatus)) {
        f(&mut self.status.lock().expect("status lock"));
    }

    /// The cumulative counters.
    pub fn counters(&self) -> RecoveryCounters {
        let (objects_received, bytes_received, bytes_sent) = self.copies.get();
        RecoveryCounters {
            objects_received,
            bytes_received,
            bytes_sent,
        }
    }
}
