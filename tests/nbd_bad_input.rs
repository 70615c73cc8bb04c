//! Malformed input on the NBD port, spoken as raw bytes over a `TcpStream`.
//!
//! Issue 3, "Done when" 8: a wrong option magic, a client that never speaks NBD, unknown
//! client flags and garbage after the handshake (the server closes); an unknown option
//! (NBD_REP_ERR_UNSUP, and the session goes on); an unknown command (an EINVAL reply, and the
//! session goes on); reads and writes past the end or wrapping around 2^64 (EINVAL or ENOSPC,
//! nothing written, the stream stays in sync); 4 GiB lengths (an error or a close, never a
//! 4 GiB answer); clients that vanish mid-request. After each, the sheep is alive, its log has
//! no panic, and separate good clients (nbdinfo, qemu-io) read the known content.
//!
//! The byte layouts are written out by hand, in the harness's raw client
//! ([`sheepfold_tests::nbd_raw`]: magics, options, requests, replies) and below for
//! structured-reply chunk payloads: OFFSET_DATA 1 (offset u64 + data), OFFSET_HOLE 2
//! (offset u64, size u32), ERROR 0x8001 / ERROR_OFFSET 0x8002 (error u32, message length u16,
//! message, ...). Structured replies are negotiated only where named.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use sheepfold_tests::data::random_bytes;
use sheepfold_tests::nbd_raw::*;
use sheepfold_tests::tools::{all_output, qemu_io, tool, TOOL_TIMEOUT};
use sheepfold_tests::Cluster;

const VICTIM: &str = "victim";
const VICTIM_SIZE: u64 = 8 << 20;
const VICTIM_BYTE: u8 = 0x5a;
/// An 8 GiB VDI nobody writes, for in-range requests with absurd lengths.
const HUGE: &str = "huge";

/// A READ with structured replies negotiated: gathers chunks until DONE. Returns the data
/// (checked to be covered exactly once by data and hole chunks) or the error of an error chunk.
fn structured_read(s: &mut TcpStream, handle: u64, offset: u64, len: u32) -> Result<Vec<u8>, u32> {
    s.write_all(&request_bytes(CMD_READ, handle, offset, len))
        .expect("send read");
    let mut buf = vec![0u8; len as usize];
    let mut covered = 0u64;
    let mut error = None;
    loop {
        let h = must_read(s, 20, "structured reply chunk");
        assert_eq!(
            be_u32(&h[0..4]),
            STRUCTURED_REPLY_MAGIC,
            "with structured replies a READ must get chunks: {h:02x?}"
        );
        let flags = u16::from_be_bytes([h[4], h[5]]);
        let typ = u16::from_be_bytes([h[6], h[7]]);
        assert_eq!(be_u64(&h[8..16]), handle, "chunk handle");
        let payload = must_read(s, be_u32(&h[16..20]) as usize, "chunk payload");
        let in_range = |at: u64, n: u64| {
            assert!(
                at >= offset && at + n <= offset + u64::from(len),
                "chunk {at}+{n} outside the request {offset}+{len}"
            );
            (at - offset) as usize
        };
        match typ {
            0 => {}
            1 => {
                let at = be_u64(&payload[..8]);
                let data = &payload[8..];
                let pos = in_range(at, data.len() as u64);
                buf[pos..pos + data.len()].copy_from_slice(data);
                covered += data.len() as u64;
            }
            2 => {
                let n = u64::from(be_u32(&payload[8..12]));
                in_range(be_u64(&payload[..8]), n);
                covered += n;
            }
            0x8001 | 0x8002 => error = Some(be_u32(&payload[..4])),
            t => panic!("unexpected structured reply type {t:#x}"),
        }
        if flags & 1 != 0 {
            break;
        }
    }
    match error {
        Some(e) => Err(e),
        None => {
            assert_eq!(covered, u64::from(len), "chunks cover the read exactly");
            Ok(buf)
        }
    }
}

/// One formatted sheep holding `victim` (8 MiB of 0x5a, written over NBD) and `huge`.
struct Fixture {
    cluster: Cluster,
}

impl Fixture {
    fn new() -> Self {
        let cluster = Cluster::builder().nodes(1).start();
        cluster.format(1);
        cluster.dog_ok(0, &["vdi", "create", VICTIM, "8M"]);
        cluster.dog_ok(0, &["vdi", "create", HUGE, "8G"]);
        cluster.tool_ok(
            qemu_io(
                &cluster.nbd_uri(0, VICTIM),
                &[format!("write -P {VICTIM_BYTE:#x} 0 {VICTIM_SIZE}")],
            ),
            TOOL_TIMEOUT,
        );
        Self { cluster }
    }

    fn port(&self) -> u16 {
        self.cluster.nbd_port(0)
    }

    /// The sheep is alive with no panic logged; nbdinfo and qemu-io, on fresh connections,
    /// see the export and all of its known content.
    fn assert_healthy(&self, after: &str) {
        let c = &self.cluster;
        c.assert_no_panic(0);
        let mut info = tool("nbdinfo");
        info.arg(c.nbd_uri(0, VICTIM));
        let out = sheepfold_tests::process::run_with_timeout(info, None, TOOL_TIMEOUT);
        let text = all_output(&out);
        assert!(
            out.status.success() && text.contains(&format!("export-size: {VICTIM_SIZE}")),
            "after {after}: nbdinfo:\n{text}\n{}",
            c.log_tail(0, 40)
        );
        let check = qemu_io(
            &c.nbd_uri(0, VICTIM),
            &[format!("read -P {VICTIM_BYTE:#x} 0 {VICTIM_SIZE}")],
        );
        let out = sheepfold_tests::process::run_with_timeout(check, None, TOOL_TIMEOUT);
        let text = all_output(&out);
        assert!(
            out.status.success() && !text.contains("failed"),
            "after {after}: qemu-io read -P of the victim:\n{text}\n{}",
            c.log_tail(0, 40)
        );
        c.assert_no_panic(0);
    }
}

#[test]
fn broken_handshakes_and_garbage_are_closed() {
    let fx = Fixture::new();

    drop(connect(fx.port()));
    fx.assert_healthy("a connection closed before the greeting was read");

    // A client that never speaks NBD: an HTTP request where the client flags belong.
    let mut s = connect(fx.port());
    greeting(&mut s);
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let _ = s.shutdown(Shutdown::Write);
    if let Err(e) = drain_until_closed(&mut s, REPLY_TIMEOUT) {
        panic!("HTTP instead of NBD: {e}");
    }
    fx.assert_healthy("an HTTP request instead of client flags");

    // Unknown client flags; after our EOF at the latest the server must close.
    let mut s = connect(fx.port());
    greeting(&mut s);
    s.write_all(&0xffff_fffcu32.to_be_bytes()).expect("flags");
    let _ = s.shutdown(Shutdown::Write);
    if let Err(e) = drain_until_closed(&mut s, REPLY_TIMEOUT) {
        panic!("unknown client flags: {e}");
    }
    fx.assert_healthy("unknown client flags");

    // An option with the wrong magic: the framing is lost, the server must close by itself.
    let mut s = start(fx.port());
    let _ = s.write_all(&option_bytes(0x1122_3344_5566_7788, OPT_GO, &[]));
    if let Err(e) = drain_until_closed(&mut s, REPLY_TIMEOUT) {
        panic!("an option with a wrong magic (server must close): {e}");
    }
    fx.assert_healthy("an option with a wrong magic");

    // Garbage after a complete handshake: not a request magic, the server must close.
    let (mut s, _) = session(fx.port(), VICTIM);
    let mut junk = random_bytes(0x5eed_3010, 4096);
    junk[..4].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    let _ = s.write_all(&junk);
    if let Err(e) = drain_until_closed(&mut s, REPLY_TIMEOUT) {
        panic!("garbage after the handshake (server must close): {e}");
    }
    fx.assert_healthy("4 KiB of garbage after the handshake");
}

#[test]
fn unknown_option_is_unsupported_and_the_session_goes_on() {
    let fx = Fixture::new();
    let mut s = start(fx.port());

    send_option(&mut s, 0x4242, b"whatever");
    let (opt, typ, _) = read_option_reply(&mut s, "unknown option 0x4242");
    assert_eq!(opt, 0x4242, "the reply names the option");
    assert_eq!(typ, REP_ERR_UNSUP, "unknown option: NBD_REP_ERR_UNSUP");

    // A name that is no VDI: an error reply, and negotiation continues.
    let err = go(&mut s, "nosuchvdi").expect_err("GO of a missing export must fail");
    assert!(err & REP_ERR_BIT != 0);

    // NBD_OPT_LIST names both VDIs.
    send_option(&mut s, OPT_LIST, &[]);
    let mut names = Vec::new();
    loop {
        let (opt, typ, data) = read_option_reply(&mut s, "NBD_OPT_LIST");
        assert_eq!(opt, OPT_LIST);
        match typ {
            REP_SERVER => {
                let n = be_u32(&data) as usize;
                names.push(String::from_utf8_lossy(&data[4..4 + n]).into_owned());
            }
            REP_ACK => break,
            t => panic!("NBD_OPT_LIST: reply type {t:#x}"),
        }
    }
    names.sort();
    assert_eq!(names, [HUGE, VICTIM], "NBD_OPT_LIST");

    let (size, _) = go(&mut s, VICTIM).expect("GO victim after the errors");
    assert_eq!(size, VICTIM_SIZE);
    assert_eq!(
        good_read(&mut s, 4096, 4096),
        vec![VICTIM_BYTE; 4096],
        "read after the option errors"
    );
    s.write_all(&request_bytes(CMD_DISC, 9, 0, 0))
        .expect("disconnect");
    drain_until_closed(&mut s, REPLY_TIMEOUT).expect("NBD_CMD_DISC closes the connection");
    fx.assert_healthy("an unknown option and a missing export");

    // An option announcing 4 GiB of data: refused or closed, never buffered.
    let mut s = start(fx.port());
    let mut h = IHAVEOPT.to_be_bytes().to_vec();
    h.extend_from_slice(&OPT_GO.to_be_bytes());
    h.extend_from_slice(&0xffff_fff0u32.to_be_bytes());
    s.write_all(&h).expect("option header");
    let _ = s.write_all(&[0u8; 4096]);
    let _ = s.shutdown(Shutdown::Write);
    match read_n(&mut s, 20, REPLY_TIMEOUT) {
        Got::Bytes(r) => assert!(
            be_u32(&r[12..16]) & REP_ERR_BIT != 0,
            "a 4 GiB option must not succeed: {r:02x?}"
        ),
        Got::Closed { .. } => {}
        Got::Silent => panic!("a 4 GiB option followed by EOF: neither an error nor a close"),
    }
    drop(s);
    fx.assert_healthy("an option with a 4 GiB length");
}

#[test]
fn unknown_command_gets_einval_and_the_session_goes_on() {
    let fx = Fixture::new();
    let (mut s, _) = session(fx.port(), VICTIM);
    for (handle, typ) in [(0xabc_u64, 0x55_u16), (0xabd, 0xffff)] {
        let err = call(&mut s, typ, handle, 0, 0, &[]);
        assert_eq!(err, EINVAL, "unknown command {typ:#x}: want EINVAL");
    }
    assert_eq!(call(&mut s, CMD_FLUSH, 0xabe, 0, 0, &[]), 0, "flush");
    assert_eq!(
        good_read(&mut s, 0, 512),
        vec![VICTIM_BYTE; 512],
        "read after unknown commands"
    );
    drop(s);
    fx.assert_healthy("unknown commands");
}

#[test]
fn reads_and_writes_past_the_end_are_refused() {
    let fx = Fixture::new();
    let (mut s, size) = session(fx.port(), VICTIM);
    assert_eq!(size, VICTIM_SIZE);
    let refused = |err: u32| err == EINVAL || err == ENOSPC;

    let cases: [(&str, u64, u32); 3] = [
        ("straddling the end", size - 512, 1024),
        ("at the end", size, 1),
        ("wrapping around 2^64", u64::MAX - 511, 1024),
    ];
    for (i, &(what, offset, len)) in cases.iter().enumerate() {
        let h = 0x100 + i as u64;
        let err = call(&mut s, CMD_READ, h, offset, len, &[]);
        assert!(refused(err), "read {what} ({offset}+{len}): error {err}");

        let payload = vec![0x77u8; len as usize];
        let err = call(&mut s, CMD_WRITE, h + 0x10, offset, len, &payload);
        assert!(refused(err), "write {what} ({offset}+{len}): error {err}");

        let err = call(&mut s, CMD_WRITE_ZEROES, h + 0x20, offset, len, &[]);
        assert!(
            refused(err),
            "write_zeroes {what} ({offset}+{len}): error {err}"
        );

        // The payload was consumed (the stream is in sync) and nothing was written.
        assert_eq!(
            good_read(&mut s, size - 4096, 4096),
            vec![VICTIM_BYTE; 4096],
            "the last 4 KiB after a refused write {what}"
        );
    }
    drop(s);
    fx.assert_healthy("reads and writes past the end");
}

#[test]
fn structured_replies_carry_errors_and_data() {
    let fx = Fixture::new();
    for (name, offset, byte) in [(VICTIM, 0, VICTIM_BYTE), (HUGE, 4 << 30, 0)] {
        let mut s = start(fx.port());
        send_option(&mut s, OPT_STRUCTURED_REPLY, &[]);
        let (opt, typ, _) = read_option_reply(&mut s, "NBD_OPT_STRUCTURED_REPLY");
        assert_eq!((opt, typ), (OPT_STRUCTURED_REPLY, REP_ACK));
        let (size, _) = go(&mut s, name).expect("GO");

        let err = structured_read(&mut s, 1, size - 512, 1024).expect_err("read past the end");
        assert_eq!(
            err, EINVAL,
            "{name}: a read past the end, as an error chunk"
        );
        let got = structured_read(&mut s, 2, offset, 1 << 20).expect("good read");
        assert_eq!(got, vec![byte; 1 << 20], "{name}: 1 MiB at {offset}");
        s.write_all(&request_bytes(CMD_DISC, 3, 0, 0))
            .expect("disconnect");
        drain_until_closed(&mut s, REPLY_TIMEOUT).expect("NBD_CMD_DISC closes");
    }
    fx.assert_healthy("structured replies");
}

#[test]
fn four_gib_lengths_are_refused_or_closed() {
    let fx = Fixture::new();

    // In range of the 8 GiB export, but 4 GiB - 1 bytes long.
    let (mut s, size) = session(fx.port(), HUGE);
    assert_eq!(size, 8 << 30);
    s.write_all(&request_bytes(CMD_READ, 1, 0, u32::MAX))
        .expect("read request");
    let reply = read_reply(&mut s, REPLY_TIMEOUT);
    eprintln!("a 4 GiB read got {reply:?}");
    match reply {
        Reply::Simple(err, 1) => assert_ne!(err, 0, "a 4 GiB read must be refused"),
        Reply::Closed => {}
        other => panic!("a 4 GiB read: want an error or a close, got {other:?}"),
    }
    drop(s);
    fx.assert_healthy("a 4 GiB read");

    let (mut s, _) = session(fx.port(), HUGE);
    s.write_all(&request_bytes(CMD_WRITE, 2, 0, u32::MAX))
        .expect("write request");
    let _ = s.write_all(&vec![0xee; 64 * 1024]);
    let mut reply = read_reply(&mut s, Duration::from_secs(3));
    if let Reply::Silent = reply {
        // A server that streams the payload must give up when the client stops sending.
        let _ = s.shutdown(Shutdown::Write);
        reply = read_reply(&mut s, REPLY_TIMEOUT);
    }
    eprintln!("a 4 GiB write got {reply:?}");
    match reply {
        Reply::Simple(err, 2) => assert_ne!(err, 0, "a 4 GiB write of 64 KiB must fail"),
        Reply::Closed => {}
        other => panic!("a 4 GiB write: want an error or a close, got {other:?}"),
    }
    drop(s);
    fx.assert_healthy("a 4 GiB write");
}

#[test]
fn clients_vanishing_mid_request_are_survived() {
    let fx = Fixture::new();

    // Half a write payload, then gone: nothing of it may reach the disk.
    let (mut s, _) = session(fx.port(), VICTIM);
    let mut msg = request_bytes(CMD_WRITE, 1, 1 << 20, 1 << 20);
    msg.extend_from_slice(&vec![0xee; 300 * 1024]);
    s.write_all(&msg).expect("partial write");
    drop(s);
    fx.assert_healthy("a client vanishing in the middle of a write payload");

    // Half a request header.
    let (mut s, _) = session(fx.port(), VICTIM);
    s.write_all(&request_bytes(CMD_READ, 2, 0, 4096)[..14])
        .expect("half a header");
    drop(s);
    fx.assert_healthy("a client vanishing in the middle of a request header");

    // Sixty-four 1 MiB reads in flight, and nobody reads the replies.
    let (mut s, _) = session(fx.port(), VICTIM);
    let mut burst = Vec::new();
    for k in 0..64u64 {
        burst.extend_from_slice(&request_bytes(CMD_READ, 100 + k, (k % 8) << 20, 1 << 20));
    }
    s.write_all(&burst).expect("64 reads");
    drop(s);
    fx.assert_healthy("a client vanishing with 64 MiB of reads in flight");

    // Half an option during the handshake.
    let mut s = start(fx.port());
    let opt = option_bytes(IHAVEOPT, OPT_GO, &[0u8; 100]);
    s.write_all(&opt[..30]).expect("half an option");
    drop(s);
    fx.assert_healthy("a client vanishing in the middle of an option");
}
