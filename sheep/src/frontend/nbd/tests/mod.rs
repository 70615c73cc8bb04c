//! Tests of the NBD server, speaking raw NBD bytes over in-memory duplex
//! streams to an in-memory catalog ([`memory`]); [`client`] is the
//! hand-written client side. [`handshake`] and [`transmission`] cover the
//! two phases; this file adds property tests feeding arbitrary input, and
//! an ignored test that drives real clients (qemu-io, qemu-img, nbdinfo,
//! nbdcopy, fio) over TCP.

mod client;
mod handshake;
mod memory;
mod transmission;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BufMut;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use self::client::{info_request, meta_request, Client};
use self::memory::{MemCatalog, MemExport, BLOCK};
use super::consts::*;

/// Runs `f` on a fresh runtime (proptest bodies are synchronous).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Feeds `input` to a server connection, then hangs up; the connection
/// must end by itself, without panicking, and the export must never have
/// been called outside its bounds.
async fn survives(catalog: Arc<MemCatalog>, mut client: Client, server: ServerTask, input: &[u8]) {
    // The server may close first (e.g. on a bad magic); that is fine.
    let _ = client.stream.write_all(input).await;
    let _ = client.stream.flush().await;
    drop(client);
    let joined = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the connection did not end after the client left");
    assert!(
        !joined.as_ref().is_err_and(|e| e.is_panic()),
        "server panicked"
    );
    assert_eq!(catalog.get("disk").violations.load(Ordering::SeqCst), 0);
}

type ServerTask = tokio::task::JoinHandle<std::io::Result<()>>;

fn fuzz_catalog() -> Arc<MemCatalog> {
    Arc::new(MemCatalog::default().with("disk", MemExport::new(3 * BLOCK)))
}

/// An option with a small known code and arbitrary data, sometimes a
/// well-formed GO/INFO/META request.
fn arb_option() -> impl Strategy<Value = Vec<u8>> {
    let data = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        Just(info_request("disk", &[NBD_INFO_BLOCK_SIZE])),
        Just(meta_request("disk", &[BASE_ALLOCATION, "base:"])),
    ];
    (0u32..14, any::<bool>(), data).prop_map(|(option, bad_len, data)| {
        let mut buf = Vec::new();
        buf.put_u64(IHAVEOPT);
        buf.put_u32(option);
        // Sometimes a length that disagrees with the data that follows.
        buf.put_u32(if bad_len {
            data.len() as u32 + 3
        } else {
            data.len() as u32
        });
        buf.extend(data);
        buf
    })
}

/// A request with a valid magic and arbitrary fields, biased towards
/// ranges at the edges of the 12 MiB disk; writes carry their payload.
fn arb_request() -> impl Strategy<Value = Vec<u8>> {
    let edge = 3 * BLOCK;
    let offset = prop_oneof![
        Just(0u64),
        Just(edge - 512),
        Just(edge),
        Just(u64::MAX - 1),
        any::<u64>(),
        0..edge
    ];
    let len = prop_oneof![
        Just(0u32),
        Just(512),
        Just(BLOCK as u32),
        Just(u32::MAX),
        0u32..8192
    ];
    (any::<u16>(), 0u16..10, offset, len, any::<u8>()).prop_map(
        |(flags, kind, offset, len, fill)| {
            let mut buf = client::request(flags & 0x3f, kind, 7, offset, len);
            if kind == NBD_CMD_WRITE && len <= 8192 {
                buf.extend(vec![fill; len as usize]);
            }
            buf
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn arbitrary_option_phase_input_is_survived(
        options in proptest::collection::vec(arb_option(), 0..6),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        block_on(async {
            let catalog = fuzz_catalog();
            let (client, server) = Client::start(catalog.clone()).await;
            let input: Vec<u8> = options.concat().into_iter().chain(tail).collect();
            survives(catalog, client, server, &input).await;
        });
    }

    #[test]
    fn arbitrary_requests_are_survived(
        structured in any::<bool>(),
        requests in proptest::collection::vec(arb_request(), 0..24),
        tail in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        block_on(async {
            let catalog = fuzz_catalog();
            let (mut client, server) = Client::start(catalog.clone()).await;
            if structured {
                client.go_structured("disk").await;
            } else {
                client.go("disk").await;
            }
            let input: Vec<u8> = requests.concat().into_iter().chain(tail).collect();
            survives(catalog, client, server, &input).await;
        });
    }

    #[test]
    fn arbitrary_bytes_are_survived(input in proptest::collection::vec(any::<u8>(), 0..256)) {
        block_on(async {
            let catalog = fuzz_catalog();
            let (mut client, server) = Client::connect(catalog.clone());
            let mut greeting = [0u8; 18];
            client.stream.read_exact(&mut greeting).await.unwrap();
            survives(catalog, client, server, &input).await;
        });
    }
}

/// Drives real NBD clients against the server over TCP. Needs qemu-io,
/// qemu-img, nbdinfo, nbdcopy and fio on PATH:
/// `cargo test -p sheep nbd::tests::real_clients -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs qemu-io, qemu-img, nbdinfo, nbdcopy and fio installed"]
async fn real_clients() {
    let size = 64 << 20;
    let catalog = Arc::new(
        MemCatalog::default()
            .with("disk", MemExport::new(size))
            .with("snap@1", MemExport::new(size).read_only()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(super::serve(catalog.clone(), listener));
    let uri = format!("nbd://127.0.0.1:{port}/disk");
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("copy.raw");
    let copy = copy.to_str().unwrap();

    let out = run("nbdinfo", &[&uri]).await;
    for want in [
        "export-size: 67108864",
        "can_multi_conn: true",
        "can_fua: true",
        "base:allocation",
    ] {
        assert!(out.contains(want), "nbdinfo lacks {want:?}");
    }
    let out = run("nbdinfo", &["--list", &format!("nbd://127.0.0.1:{port}")]).await;
    assert!(out.contains("disk") && out.contains("snap@1"));
    let snap = format!("nbd://127.0.0.1:{port}/snap@1");
    assert!(run("nbdinfo", &[&snap])
        .await
        .contains("is_read_only: true"));

    let out = run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0xab 0 1M",
            "-c",
            "read -P 0xab 0 1M",
            "-c",
            "write -P 0xcd 5M 3M",
            "-c",
            "write -z 16M 4M",
            "-c",
            "read -P 0 16M 4M",
            "-c",
            "discard 32M 4M",
            "-c",
            "aio_write -P 0x11 40M 64k",
            "-c",
            "aio_write -P 0x22 41M 64k",
            "-c",
            "aio_flush",
            "-c",
            "read -P 0x22 41M 64k",
            "-c",
            "flush",
            &uri,
        ],
    )
    .await;
    assert!(
        !out.contains("fail") && !out.contains("error"),
        "qemu-io: {out}"
    );
    let map = run("qemu-img", &["map", "--output=json", "-f", "raw", &uri]).await;
    assert!(
        map.contains("\"data\": false") && map.contains("\"data\": true"),
        "{map}"
    );
    run("nbdcopy", &[&uri, copy]).await;
    let data = std::fs::read(copy).unwrap();
    assert_eq!(data.len() as u64, size);
    assert!(data[..1 << 20].iter().all(|b| *b == 0xab));
    assert_eq!(data[..], catalog.get("disk").bytes(0, size as usize)[..]);
    run(
        "nbdcopy",
        &["--flush", copy, &format!("nbd://127.0.0.1:{port}/disk")],
    )
    .await;
    run(
        "fio",
        &[
            "--name=nbd",
            "--ioengine=nbd",
            &format!("--uri={uri}"),
            "--rw=randrw",
            "--bs=4k",
            "--iodepth=16",
            "--size=32M",
            "--runtime=3",
            "--time_based",
            "--verify=crc32c",
            "--do_verify=1",
            // No verify state file left in the working directory.
            "--verify_state_save=0",
        ],
    )
    .await;
}

/// Runs a command to completion; panics unless it succeeds. Returns its
/// stdout and stderr together.
async fn run(program: &str, args: &[&str]) -> String {
    let output = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("$ {program} {}\n{text}", args.join(" "));
    assert!(output.status.success(), "{program} failed: {text}");
    text
}
