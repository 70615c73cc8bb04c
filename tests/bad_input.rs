//! Malformed input on the sheep data port, spoken as raw bytes over a `TcpStream`.
//!
//! Acceptance criterion 4: a truncated header then close; a header with an unknown opcode
//! (an error reply with result INVALID_PARMS (0x05), or a closed connection); a write with an
//! absurd data_length (an error reply or a close, but no crash); garbage bytes. After each,
//! a separate good client (`dog vdi list`, `dog node list`) still works, the stored data is
//! intact, the process is alive and its log shows no panic.
//!
//! The byte layouts are written out here by hand on purpose (the tests do not use
//! qemu-proto). Request header, 48 bytes, little-endian: proto_ver u8@0, opcode u8@1,
//! flags u16@2, epoch u32@4, id u32@8, data_length u32@12, 32 opcode-specific bytes @16
//! (object requests: oid u64@16, offset u32@40). Response: same first 16 bytes, result u32@16.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use sheepfold_tests::data::{assert_same_bytes, random_bytes};
use sheepfold_tests::net::{drain_until_closed, read_n, Got};
use sheepfold_tests::text::sd_hash_vdi;
use sheepfold_tests::Cluster;

const HEADER_LEN: usize = 48;
const SD_PROTO_VER: u8 = 0x02;
const SD_SHEEP_PROTO_VER: u8 = 0x0a;
const OP_WRITE_OBJ: u8 = 0x03;
const OP_READ_VDIS: u8 = 0x15;
const FLAG_CMD_WRITE: u16 = 0x0001;
const RES_SUCCESS: u32 = 0x00;
const RES_INVALID_PARMS: u32 = 0x05;
const VDI_BITMAP_BYTES: u32 = 2 * 1024 * 1024;

/// How long the server gets to answer or close after we are done sending.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A request header, laid out by hand.
fn request(proto_ver: u8, opcode: u8, flags: u16, id: u32, data_length: u32) -> [u8; 48] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = proto_ver;
    h[1] = opcode;
    h[2..4].copy_from_slice(&flags.to_le_bytes());
    h[4..8].copy_from_slice(&0u32.to_le_bytes()); // epoch: clients send 0
    h[8..12].copy_from_slice(&id.to_le_bytes());
    h[12..16].copy_from_slice(&data_length.to_le_bytes());
    h
}

/// Sets the object-request fields: oid u64@16, offset u32@40.
fn set_obj(h: &mut [u8; 48], oid: u64, offset: u32) {
    h[16..24].copy_from_slice(&oid.to_le_bytes());
    h[40..44].copy_from_slice(&offset.to_le_bytes());
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

/// What the server did after our input.
#[derive(Debug)]
enum Reply {
    /// A complete 48-byte response header.
    Header([u8; HEADER_LEN]),
    /// EOF or reset, after `partial` bytes of a header.
    Closed { partial: usize },
    /// Neither a full header nor a close before the timeout.
    Silent,
}

fn connect(port: u16) -> TcpStream {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("write timeout");
    s
}

/// Reads one response header, or notices a close, within `timeout`.
fn read_reply(s: &mut TcpStream, timeout: Duration) -> Reply {
    match read_n(s, HEADER_LEN, timeout) {
        Got::Bytes(b) => Reply::Header(b.try_into().expect("48 bytes")),
        Got::Closed { partial } => Reply::Closed { partial },
        Got::Silent => Reply::Silent,
    }
}

/// A formatted one-node cluster holding one VDI of known content.
struct Fixture {
    cluster: Cluster,
    vdi_list: String,
    victim: Vec<u8>,
}

const VICTIM: &str = "victim";

impl Fixture {
    fn new(seed: u64) -> Self {
        let cluster = Cluster::builder().nodes(1).start();
        cluster.format(1);
        let victim = random_bytes(seed, 8 << 20);
        cluster.dog_ok(0, &["vdi", "create", VICTIM, "8M"]);
        cluster.write_vdi(0, VICTIM, 0, &victim);
        let vdi_list = cluster.dog_ok(0, &["vdi", "list", "-r"]);
        Self {
            cluster,
            vdi_list,
            victim,
        }
    }

    fn port(&self) -> u16 {
        self.cluster.port(0)
    }

    /// The sheep is alive, good clients get correct answers, data is intact, no panic logged.
    fn assert_healthy(&self, after: &str) {
        let c = &self.cluster;
        c.assert_running(0);
        let nodes = c.dog_ok(0, &["node", "list", "-r"]);
        assert_eq!(
            nodes.lines().count(),
            1,
            "after {after}: node list -r:\n{nodes}"
        );
        assert!(
            nodes.contains(&format!("127.0.0.1:{}", self.port())),
            "after {after}: node list -r:\n{nodes}"
        );
        assert_eq!(
            c.dog_ok(0, &["vdi", "list", "-r"]),
            self.vdi_list,
            "after {after}: vdi list -r changed"
        );
        assert_same_bytes(
            &format!("after {after}: victim VDI"),
            &c.read_vdi(0, VICTIM),
            &self.victim,
        );
        c.assert_running(0);
        let log = c.log(0);
        assert!(
            !log.contains("panicked"),
            "after {after}: sheep logged a panic:\n{}",
            c.log_tail(0, 60)
        );
    }
}

#[test]
fn truncated_header_then_close() {
    let fx = Fixture::new(0x5eed_0401);
    let full = request(SD_PROTO_VER, OP_READ_VDIS, 0, 1, VDI_BITMAP_BYTES);

    // Connect and close without a byte.
    drop(connect(fx.port()));
    fx.assert_healthy("an empty connection");

    // 20 of 48 header bytes, then an abrupt close.
    let mut s = connect(fx.port());
    s.write_all(&full[..20]).expect("send 20 bytes");
    drop(s);
    fx.assert_healthy("20 header bytes then close");

    // 47 bytes, then a half-close: the server must give up on this connection and close it.
    let mut s = connect(fx.port());
    s.write_all(&full[..47]).expect("send 47 bytes");
    s.shutdown(Shutdown::Write).expect("half-close");
    if let Err(e) = drain_until_closed(&mut s, REPLY_TIMEOUT) {
        panic!("47 header bytes then EOF: {e}");
    }
    fx.assert_healthy("47 header bytes then EOF");

    // A client stuck mid-header must not block anybody else while it stays connected.
    let mut stuck = connect(fx.port());
    stuck.write_all(&full[..10]).expect("send 10 bytes");
    fx.assert_healthy("10 header bytes on a connection that stays open");
    drop(stuck);
    fx.assert_healthy("closing the stuck connection");
}

#[test]
fn unknown_opcode_gets_invalid_parms_or_close() {
    let fx = Fixture::new(0x5eed_0402);
    // 0x42: unused public opcode (< 0x80, proto 0x02); 0xfe: unused internal one (proto 0x0a).
    for (proto_ver, opcode) in [(SD_PROTO_VER, 0x42u8), (SD_SHEEP_PROTO_VER, 0xfe)] {
        let id = 0xa5a5_0000 | u32::from(opcode);
        let mut s = connect(fx.port());
        s.write_all(&request(proto_ver, opcode, 0, id, 0))
            .expect("send header");
        match read_reply(&mut s, REPLY_TIMEOUT) {
            Reply::Header(h) => {
                assert_eq!(
                    u32_at(&h, 16),
                    RES_INVALID_PARMS,
                    "opcode {opcode:#04x}: result (reply header {h:02x?})"
                );
                assert_eq!(u32_at(&h, 8), id, "opcode {opcode:#04x}: id not echoed");
            }
            Reply::Closed { partial: 0 } => {}
            other => panic!("opcode {opcode:#04x}: want INVALID_PARMS or close, got {other:?}"),
        }
        drop(s);
        fx.assert_healthy(&format!("unknown opcode {opcode:#04x}"));
    }
}

#[test]
fn absurd_data_length_write_is_refused() {
    let fx = Fixture::new(0x5eed_0403);
    let oid = u64::from(sd_hash_vdi(VICTIM)) << 32; // data object 0 of the victim
    let mut h = request(SD_PROTO_VER, OP_WRITE_OBJ, FLAG_CMD_WRITE, 7, 0xFFFF_FFF0);
    set_obj(&mut h, oid, 0);

    let mut s = connect(fx.port());
    s.write_all(&h).expect("send header");
    // Some payload; the server may already have closed, so errors are fine here.
    let _ = s.write_all(&[0xab; 64 * 1024]);

    // A good server refuses at once; one that streams the payload must at least give up
    // when the client stops sending. Either way: an error reply or a close, never success.
    let mut reply = read_reply(&mut s, Duration::from_secs(3));
    if let Reply::Silent = reply {
        let _ = s.shutdown(Shutdown::Write);
        reply = read_reply(&mut s, REPLY_TIMEOUT);
    }
    match reply {
        Reply::Header(h) => assert_ne!(
            u32_at(&h, 16),
            RES_SUCCESS,
            "a 4 GiB write of 64 KiB must not succeed (reply {h:02x?})"
        ),
        Reply::Closed { partial: 0 } => {}
        other => panic!("absurd data_length: want an error reply or close, got {other:?}"),
    }
    drop(s);
    fx.assert_healthy("a write with data_length 0xFFFFFFF0");
}

#[test]
fn garbage_bytes_are_survived() {
    let fx = Fixture::new(0x5eed_0404);
    let mut random = random_bytes(0x5eed_0405, 4096);
    random[0] = 0xee; // not a valid proto_ver, whatever the rest says
    let http = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: sheepfold-test\r\n\
                 Accept: */*\r\nConnection: close\r\n\r\n"
        .to_vec();
    for (what, bytes) in [("4 KiB of random bytes", random), ("an HTTP request", http)] {
        let mut s = connect(fx.port());
        let _ = s.write_all(&bytes);
        // Replies, if any, are irrelevant; after our EOF the server must close.
        let _ = s.shutdown(Shutdown::Write);
        if let Err(e) = drain_until_closed(&mut s, REPLY_TIMEOUT) {
            panic!("{what}: {e}");
        }
        drop(s);
        fx.assert_healthy(what);
    }
}
