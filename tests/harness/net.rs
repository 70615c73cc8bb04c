//! Bounded reads from a server that may answer, close or stay silent; shared by the raw
//! protocol tests (Sheepdog and NBD).

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// True for the errors that mean the peer closed the connection.
pub fn is_reset(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

/// What the server did next.
#[derive(Debug)]
pub enum Got {
    /// All the bytes asked for.
    Bytes(Vec<u8>),
    /// EOF or reset after `partial` bytes.
    Closed { partial: usize },
    /// Neither within the timeout.
    Silent,
}

/// Reads exactly `n` bytes, or notices a close, within `timeout`.
pub fn read_n(s: &mut TcpStream, n: usize, timeout: Duration) -> Got {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Got::Silent;
        }
        s.set_read_timeout(Some(left)).expect("read timeout");
        match s.read(&mut buf[got..]) {
            Ok(0) => return Got::Closed { partial: got },
            Ok(k) => got += k,
            Err(e) if is_reset(e.kind()) => return Got::Closed { partial: got },
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading from sheep: {e}"),
        }
    }
    Got::Bytes(buf)
}

/// Reads and discards until the server closes; `Err` if still open after `timeout`.
pub fn drain_until_closed(s: &mut TcpStream, timeout: Duration) -> Result<usize, String> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "connection still open after {timeout:?} ({total} bytes received)"
            ));
        }
        s.set_read_timeout(Some(left)).expect("read timeout");
        match s.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            Err(e) if is_reset(e.kind()) => return Ok(total),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading from sheep: {e}"),
        }
    }
}
