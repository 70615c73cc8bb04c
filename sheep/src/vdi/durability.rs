//! When a volume's writes become durable: at the next flush (write-back) or
//! before the write is acknowledged (write-through), chosen per volume from
//! the client's own pattern; and flushes that have nothing to make durable.
//!
//! Why: a client that flushes after every write (a database committing, a
//! journaling file system, fio with `fsync=1`) pays twice per write with
//! write-back: one round trip to every replica for the write, and another
//! for the flush. Sent synchronously, such a write is durable after the
//! first round trip and the flush that follows has nothing left to do.
//! Clients that write many times between flushes keep write-back, whose one
//! flush covers all those writes. A write-through interval ends at its
//! second write, so a burst after a commit pays for at most one synced write.
//!
//! Invariant (NBD's and Sheepdog's flush contract): a flush returns only once
//! every write *completed* before the flush began is durable on every
//! replica. A flush skips the round to the replicas only when no write has
//! completed unsynced since the last successful round began.

use std::sync::Mutex;

/// The write-back/write-through state of one volume.
#[derive(Debug, Default)]
pub struct Durability {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Writes begun since the last flush.
    writes_since_flush: u64,
    /// The last interval between flushes held one write: send the first
    /// write of the next interval synchronously.
    write_through: bool,
    /// Writes completed without a sync, ever (a counter, never reset).
    unsynced: u64,
    /// `unsynced` as it stood when the last successful flush round began:
    /// every write counted up to there is durable.
    flushed: u64,
}

/// A flush round in progress: which unsynced writes it covers.
#[derive(Debug, Clone, Copy)]
#[must_use = "a flush round must be ended when it succeeds"]
pub struct FlushRound(u64);

impl Durability {
    /// Decides how a write beginning now is sent: `true` means synchronously
    /// (durable on every replica before it is acknowledged).
    pub fn begin_write(&self, fua: bool) -> bool {
        let mut s = self.state.lock().expect("durability lock");
        s.writes_since_flush += 1;
        fua || (s.write_through && s.writes_since_flush == 1)
    }

    /// Records a write that ended (even in failure: part of it may have been
    /// applied) and whether it was sent synchronously.
    pub fn end_write(&self, synced: bool) {
        if !synced {
            self.state.lock().expect("durability lock").unsynced += 1;
        }
    }

    /// Begins a flush: `None` when every completed write is durable already,
    /// otherwise the round to run (and then [`Durability::end_flush`]).
    pub fn begin_flush(&self) -> Option<FlushRound> {
        let mut s = self.state.lock().expect("durability lock");
        let writes = std::mem::take(&mut s.writes_since_flush);
        if writes > 0 {
            s.write_through = writes == 1;
        }
        (s.unsynced != s.flushed).then_some(FlushRound(s.unsynced))
    }

    /// Records a successful flush round.
    pub fn end_flush(&self, round: FlushRound) {
        let mut s = self.state.lock().expect("durability lock");
        s.flushed = s.flushed.max(round.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_back_until_the_client_flushes_after_each_write() {
        let d = Durability::default();
        // Several writes per flush: write-back, and the flush has work.
        for _ in 0..3 {
            assert!(!d.begin_write(false));
            d.end_write(false);
        }
        let round = d.begin_flush().expect("unsynced writes to flush");
        d.end_flush(round);
        // Nothing written since: nothing to flush.
        assert!(d.begin_flush().is_none());

        // One write per flush: the next interval's first write goes
        // through, and its flush is free.
        assert!(!d.begin_write(false));
        d.end_write(false);
        d.end_flush(d.begin_flush().expect("one unsynced write"));
        for _ in 0..5 {
            assert!(d.begin_write(false), "flush-per-write: write-through");
            d.end_write(true);
            assert!(d.begin_flush().is_none(), "nothing left to flush");
        }

        // A burst: only its first write is synced, and the flush covers
        // the rest; after it the volume is back to write-back.
        assert!(d.begin_write(false));
        d.end_write(true);
        assert!(!d.begin_write(false));
        d.end_write(false);
        d.end_flush(d.begin_flush().expect("the burst's unsynced write"));
        assert!(
            !d.begin_write(false),
            "two writes last interval: write-back"
        );
    }

    #[test]
    fn fua_is_always_synced_and_failed_rounds_are_retried() {
        let d = Durability::default();
        assert!(d.begin_write(true));
        d.end_write(true);
        assert!(d.begin_write(true), "FUA even in the middle of a burst");
        d.end_write(true);
        assert!(d.begin_flush().is_none());

        assert!(!d.begin_write(false));
        d.end_write(false);
        let _failed = d.begin_flush().expect("one unsynced write");
        // The round failed (never ended): the next flush must run again.
        let round = d.begin_flush().expect("still unsynced");
        d.end_flush(round);
        assert!(d.begin_flush().is_none());
    }

    #[test]
    fn a_write_completing_during_a_round_needs_the_next_one() {
        let d = Durability::default();
        for _ in 0..2 {
            assert!(!d.begin_write(false));
            d.end_write(false);
        }
        let round = d.begin_flush().expect("unsynced writes");
        // Completes while the round runs: the round may have missed it.
        assert!(!d.begin_write(false));
        d.end_write(false);
        d.end_flush(round);
        assert!(d.begin_flush().is_some());
    }
}
