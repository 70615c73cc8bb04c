//! Bounded polling. Every wait in the suite goes through [`poll_until`], so no test can hang.

use std::thread;
use std::time::{Duration, Instant};

/// Pause between two polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Calls `probe` every [`POLL_INTERVAL`] until it returns `Ok(value)`, and returns that value.
///
/// `probe` returns `Err(description)` while the condition does not hold; the last description
/// goes into the panic message when `timeout` expires, so a failing wait says what it saw.
/// The probe always runs at least once, even with a zero timeout.
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        let last = match probe() {
            Ok(value) => return value,
            Err(description) => description,
        };
        if Instant::now() >= deadline {
            panic!(
                "timed out after {:.1?} waiting for {what}; last seen: {last}",
                start.elapsed()
            );
        }
        thread::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now())));
    }
}
