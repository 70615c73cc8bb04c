//! Option haggling: GO, EXPORT_NAME, INFO, LIST, ABORT, unknown options,
//! metadata contexts and the ways a handshake ends.

use std::sync::Arc;

use bytes::BufMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::super::consts::*;
use super::client::*;
use super::memory::{MemCatalog, MemExport, BLOCK};

const MIB: u64 = 1 << 20;

fn catalog() -> Arc<MemCatalog> {
    Arc::new(
        MemCatalog::default()
            .with("disk", MemExport::new(3 * BLOCK))
            .with("alpha@snap1", MemExport::new(MIB).read_only()),
    )
}

const WRITABLE_FLAGS: u16 = NBD_FLAG_HAS_FLAGS
    | NBD_FLAG_SEND_FLUSH
    | NBD_FLAG_SEND_FUA
    | NBD_FLAG_SEND_TRIM
    | NBD_FLAG_SEND_WRITE_ZEROES
    | NBD_FLAG_CAN_MULTI_CONN
    | NBD_FLAG_SEND_CACHE;

#[tokio::test]
async fn go_then_write_and_read_back() {
    let cat = catalog();
    let (mut c, server) = Client::start(cat.clone()).await;
    let replies = c
        .option(NBD_OPT_GO, &info_request("disk", &[NBD_INFO_BLOCK_SIZE]))
        .await;
    assert_eq!(replies.last().unwrap().kind, NBD_REP_ACK);
    assert_eq!(export_info(&replies), (3 * BLOCK, WRITABLE_FLAGS));
    assert_eq!(block_size_info(&replies), (1, 4 << 20, 32 << 20));

    // A write straddling two objects, read back with simple replies.
    let data = pattern(8192, 7);
    let offset = BLOCK - 4096;
    c.write(0, 1, offset, &data).await;
    assert_eq!(c.status(1).await, 0);
    c.request(0, NBD_CMD_READ, 2, offset, 8192).await;
    let (error, cookie, got) = c.simple(8192).await;
    assert_eq!((error, cookie), (0, 2));
    assert_eq!(got, data);
    assert_eq!(cat.get("disk").bytes(offset, 8192), data);

    c.request(0, NBD_CMD_FLUSH, 3, 0, 0).await;
    assert_eq!(c.status(3).await, 0);
    assert_eq!(
        cat.get("disk")
            .flushes
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );

    c.request(0, NBD_CMD_DISC, 4, 0, 0).await;
    c.expect_closed().await;
    within(server).await.unwrap().unwrap();
}

#[tokio::test]
async fn export_name_serves_old_clients() {
    // Without NO_ZEROES: size, flags and 124 zero bytes.
    let (mut c, _server) = Client::connect(catalog());
    c.hello(NBD_FLAG_C_FIXED_NEWSTYLE).await;
    c.send_option(NBD_OPT_EXPORT_NAME, b"disk").await;
    let mut reply = [0u8; 8 + 2 + 124];
    within(c.stream.read_exact(&mut reply)).await.unwrap();
    assert_eq!(
        u64::from_be_bytes(reply[..8].try_into().unwrap()),
        3 * BLOCK
    );
    assert_eq!(u16::from_be_bytes([reply[8], reply[9]]), WRITABLE_FLAGS);
    assert!(reply[10..].iter().all(|b| *b == 0));
    c.request(0, NBD_CMD_READ, 9, 0, 512).await;
    assert_eq!(c.simple(512).await, (0, 9, vec![0; 512]));

    // With NO_ZEROES (and a non-fixed-newstyle client): just size and flags.
    let (mut c, _server) = Client::connect(catalog());
    c.hello(NBD_FLAG_C_NO_ZEROES).await;
    c.send_option(NBD_OPT_EXPORT_NAME, b"disk").await;
    let mut reply = [0u8; 10];
    within(c.stream.read_exact(&mut reply)).await.unwrap();
    c.request(0, NBD_CMD_READ, 10, 0, 512).await;
    assert_eq!(c.simple(512).await, (0, 10, vec![0; 512]));

    // An unknown export cannot be refused politely: the server hangs up.
    for name in ["nope", ""] {
        let (mut c, server) = Client::start(catalog()).await;
        c.send_option(NBD_OPT_EXPORT_NAME, name.as_bytes()).await;
        c.expect_closed().await;
        within(server).await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn list_names_every_export() {
    let (mut c, _server) = Client::start(catalog()).await;
    let replies = c.option(NBD_OPT_LIST, &[]).await;
    let names: Vec<String> = replies
        .iter()
        .filter(|r| r.kind == NBD_REP_SERVER)
        .map(|r| {
            let len = u32::from_be_bytes(r.data[..4].try_into().unwrap()) as usize;
            assert_eq!(len, r.data.len() - 4);
            String::from_utf8(r.data[4..].to_vec()).unwrap()
        })
        .collect();
    assert_eq!(names, ["alpha@snap1", "disk"]);
    assert_eq!(replies.len(), 3);
    assert_eq!(replies[2].kind, NBD_REP_ACK);

    // LIST takes no data.
    let replies = c.option(NBD_OPT_LIST, b"x").await;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].kind, NBD_REP_ERR_INVALID);

    // Still negotiating: GO works.
    assert_eq!(c.go("disk").await.0, 3 * BLOCK);
}

#[tokio::test]
async fn info_describes_without_entering_transmission() {
    let (mut c, server) = Client::start(catalog()).await;
    // Block sizes come even when not asked for.
    let replies = c
        .option(NBD_OPT_INFO, &info_request("alpha@snap1", &[]))
        .await;
    assert_eq!(replies.last().unwrap().kind, NBD_REP_ACK);
    let (size, flags) = export_info(&replies);
    assert_eq!(size, MIB);
    assert_eq!(
        flags,
        NBD_FLAG_HAS_FLAGS
            | NBD_FLAG_READ_ONLY
            | NBD_FLAG_SEND_FLUSH
            | NBD_FLAG_CAN_MULTI_CONN
            | NBD_FLAG_SEND_CACHE
    );
    assert_eq!(block_size_info(&replies), (1, 4 << 20, 32 << 20));

    // Unknown, default and malformed requests get errors, not hang-ups.
    for (data, want) in [
        (info_request("nope", &[]), NBD_REP_ERR_UNKNOWN),
        (
            info_request("", &[NBD_INFO_BLOCK_SIZE]),
            NBD_REP_ERR_UNKNOWN,
        ),
        (
            info_request("disk", &[1, 2])[..10].to_vec(),
            NBD_REP_ERR_INVALID,
        ),
        (
            [info_request("disk", &[]), vec![0]].concat(),
            NBD_REP_ERR_INVALID,
        ),
        (vec![0xff, 0xff, 0xff, 0xff, 0, 0], NBD_REP_ERR_INVALID),
        (vec![], NBD_REP_ERR_INVALID),
    ] {
        let replies = c.option(NBD_OPT_INFO, &data).await;
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert_eq!(replies[0].kind, want);
    }
    let replies = c.option(NBD_OPT_GO, &info_request("nope", &[])).await;
    assert_eq!(replies[0].kind, NBD_REP_ERR_UNKNOWN);
    assert!(String::from_utf8_lossy(&replies[0].data).contains("nope"));

    // ABORT is acknowledged, then the server closes.
    let replies = c.option(NBD_OPT_ABORT, &[]).await;
    assert_eq!(replies[0].kind, NBD_REP_ACK);
    c.expect_closed().await;
    within(server).await.unwrap().unwrap();
}

#[tokio::test]
async fn unknown_options_are_unsupported_and_skipped() {
    let (mut c, _server) = Client::start(catalog()).await;
    for (option, len) in [
        (42u32, 10usize),
        (5 /* STARTTLS */, 0),
        (11 /* EXTENDED_HEADERS */, 0),
    ] {
        let replies = c.option(option, &vec![0xaa; len]).await;
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].kind, NBD_REP_ERR_UNSUP);
    }
    // Options too long to buffer are skipped unread; parsing stays in step.
    let replies = c.option(99, &vec![0x55; 200 << 10]).await;
    assert_eq!(replies[0].kind, NBD_REP_ERR_UNSUP);
    let replies = c.option(NBD_OPT_INFO, &vec![0x55; 200 << 10]).await;
    assert_eq!(replies[0].kind, NBD_REP_ERR_TOO_BIG);
    assert_eq!(c.go("disk").await.0, 3 * BLOCK);
}

#[tokio::test]
async fn bad_client_flags_or_option_magic_close_the_connection() {
    let (mut c, server) = Client::connect(catalog());
    c.hello(0x100).await;
    c.expect_closed().await;
    assert!(within(server).await.unwrap().is_err());

    let (mut c, server) = Client::start(catalog()).await;
    let mut bad = Vec::new();
    bad.put_u64(0x1234_5678);
    bad.put_u32(NBD_OPT_LIST);
    bad.put_u32(0);
    c.stream.write_all(&bad).await.unwrap();
    c.expect_closed().await;
    assert!(within(server).await.unwrap().is_err());

    // A client that leaves mid-handshake is not an error.
    let (c, server) = Client::start(catalog()).await;
    drop(c);
    within(server).await.unwrap().unwrap();
}

#[tokio::test]
async fn meta_contexts_offer_base_allocation() {
    let (mut c, _server) = Client::start(catalog()).await;
    // SET needs structured replies first.
    let r = c
        .option(
            NBD_OPT_SET_META_CONTEXT,
            &meta_request("disk", &[BASE_ALLOCATION]),
        )
        .await;
    assert_eq!(r[0].kind, NBD_REP_ERR_INVALID);
    assert_eq!(
        c.option(NBD_OPT_STRUCTURED_REPLY, &[]).await[0].kind,
        NBD_REP_ACK
    );
    assert_eq!(
        c.option(NBD_OPT_STRUCTURED_REPLY, b"x").await[0].kind,
        NBD_REP_ERR_INVALID
    );

    let context = |r: &OptReply| {
        assert_eq!(r.kind, NBD_REP_META_CONTEXT);
        let id = u32::from_be_bytes(r.data[..4].try_into().unwrap());
        (id, String::from_utf8(r.data[4..].to_vec()).unwrap())
    };
    // LIST: no query, the "base:" wildcard and the exact name all match.
    for queries in [
        &[][..],
        &["base:"],
        &[BASE_ALLOCATION, "qemu:dirty-bitmap:x"],
    ] {
        let r = c
            .option(NBD_OPT_LIST_META_CONTEXT, &meta_request("disk", queries))
            .await;
        assert_eq!(r.len(), 2, "{queries:?}: {r:?}");
        assert_eq!(context(&r[0]), (0, BASE_ALLOCATION.to_owned()));
        assert_eq!(r[1].kind, NBD_REP_ACK);
    }
    // Unknown namespaces and SET's "base:" select nothing.
    for (option, queries) in [
        (NBD_OPT_LIST_META_CONTEXT, &["x-other:thing"][..]),
        (NBD_OPT_SET_META_CONTEXT, &["base:"]),
        (NBD_OPT_SET_META_CONTEXT, &[]),
    ] {
        let r = c.option(option, &meta_request("disk", queries)).await;
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].kind, NBD_REP_ACK);
    }
    // A malformed query list.
    let mut bad = meta_request("disk", &[BASE_ALLOCATION]);
    bad.truncate(bad.len() - 1);
    let r = c.option(NBD_OPT_SET_META_CONTEXT, &bad).await;
    assert_eq!(r[0].kind, NBD_REP_ERR_INVALID);

    let r = c
        .option(
            NBD_OPT_SET_META_CONTEXT,
            &meta_request("disk", &[BASE_ALLOCATION]),
        )
        .await;
    assert_eq!(r.len(), 2);
    let (id, name) = context(&r[0]);
    assert_ne!(id, 0);
    assert_eq!(name, BASE_ALLOCATION);

    // With structured replies, reads may be sent "don't fragment".
    let (_, flags) = c.go("disk").await;
    assert_eq!(flags, WRITABLE_FLAGS | NBD_FLAG_SEND_DF);
    c.request(0, NBD_CMD_BLOCK_STATUS, 1, 0, 4096).await;
    let chunk = c.chunk().await;
    assert_eq!(
        extents(&chunk),
        (id, vec![(4096, NBD_STATE_HOLE | NBD_STATE_ZERO)])
    );
}

#[tokio::test]
async fn read_only_exports_refuse_writes() {
    let cat = catalog();
    let (mut c, _server) = Client::start(cat.clone()).await;
    let (_, flags) = c.go("alpha@snap1").await;
    assert_ne!(flags & NBD_FLAG_READ_ONLY, 0);
    c.write(0, 1, 0, &[1; 512]).await;
    assert_eq!(c.status(1).await, NBD_EPERM);
    c.request(0, NBD_CMD_TRIM, 2, 0, 512).await;
    assert_eq!(c.status(2).await, NBD_EPERM);
    c.request(0, NBD_CMD_WRITE_ZEROES, 3, 0, 512).await;
    assert_eq!(c.status(3).await, NBD_EPERM);
    c.request(0, NBD_CMD_READ, 4, 0, 512).await;
    assert_eq!(c.simple(512).await, (0, 4, vec![0; 512]));
    c.request(0, NBD_CMD_FLUSH, 5, 0, 0).await;
    assert_eq!(c.status(5).await, 0);
    assert!(!cat.get("alpha@snap1").is_allocated(0));
}
