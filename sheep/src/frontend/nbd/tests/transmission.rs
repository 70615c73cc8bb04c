//! Transmission: structured replies, block status, concurrency and
//! ordering, errors, bounds, limits, and clients that misbehave.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::super::consts::*;
use super::client::*;
use super::memory::{MemCatalog, MemExport, BLOCK};

const HOLE: u32 = NBD_STATE_HOLE | NBD_STATE_ZERO;

fn catalog(disk: MemExport) -> Arc<MemCatalog> {
    Arc::new(
        MemCatalog::default()
            .with("disk", disk)
            .with("other", MemExport::new(BLOCK)),
    )
}

#[tokio::test]
async fn structured_reads_and_block_status() {
    let (mut c, _server) = Client::start(catalog(MemExport::new(3 * BLOCK))).await;
    c.go_structured("disk").await;
    let data = pattern(4096, 3);
    c.write(0, 1, BLOCK + 8192, &data).await;
    assert_eq!(c.status(1).await, 0);

    // Unallocated objects are holes that read as zeros.
    c.request(0, NBD_CMD_BLOCK_STATUS, 2, 0, 3 * BLOCK as u32)
        .await;
    let chunk = c.chunk().await;
    assert_eq!((chunk.cookie, chunk.flags), (2, NBD_REPLY_FLAG_DONE));
    let (id, list) = extents(&chunk);
    assert_ne!(id, 0);
    assert_eq!(
        list,
        [
            (BLOCK as u32, HOLE),
            (BLOCK as u32, 0),
            (BLOCK as u32, HOLE)
        ]
    );

    // Never more than asked for, and exactly one extent with REQ_ONE.
    c.request(0, NBD_CMD_BLOCK_STATUS, 3, 4096, 8192).await;
    assert_eq!(extents(&c.chunk().await).1, [(8192, HOLE)]);
    c.request(
        NBD_CMD_FLAG_REQ_ONE,
        NBD_CMD_BLOCK_STATUS,
        4,
        0,
        2 * BLOCK as u32,
    )
    .await;
    assert_eq!(extents(&c.chunk().await).1, [(BLOCK as u32, HOLE)]);

    // Past the end, or empty: EINVAL error chunks.
    for (cookie, offset, len) in [(5u64, 2 * BLOCK, BLOCK as u32 + 1), (6, 0, 0)] {
        c.request(0, NBD_CMD_BLOCK_STATUS, cookie, offset, len)
            .await;
        let chunk = c.chunk().await;
        assert_eq!((chunk.cookie, chunk.kind), (cookie, NBD_REPLY_TYPE_ERROR));
        assert_eq!(chunk.errno(), NBD_EINVAL);
        assert_eq!(chunk.flags, NBD_REPLY_FLAG_DONE);
    }

    // A read is one OFFSET_DATA chunk marked DONE (also with DF).
    for (cookie, flags) in [(7u64, 0), (8, NBD_CMD_FLAG_DF)] {
        c.request(flags, NBD_CMD_READ, cookie, BLOCK + 8192, 4096)
            .await;
        let chunk = c.chunk().await;
        assert_eq!(chunk.cookie, cookie);
        assert_eq!(
            (chunk.kind, chunk.flags),
            (NBD_REPLY_TYPE_OFFSET_DATA, NBD_REPLY_FLAG_DONE)
        );
        assert_eq!(
            u64::from_be_bytes(chunk.payload[..8].try_into().unwrap()),
            BLOCK + 8192
        );
        assert_eq!(chunk.payload[8..], data[..]);
    }

    // Errors on reads are error chunks (a simple reply is not allowed).
    c.request(0, NBD_CMD_READ, 9, 3 * BLOCK - 512, 1024).await;
    let chunk = c.chunk().await;
    assert_eq!(
        (chunk.cookie, chunk.kind, chunk.flags),
        (9, NBD_REPLY_TYPE_ERROR, NBD_REPLY_FLAG_DONE)
    );
    assert_eq!(chunk.errno(), NBD_EINVAL);
    let message_len = u16::from_be_bytes([chunk.payload[4], chunk.payload[5]]) as usize;
    assert_eq!(message_len, chunk.payload.len() - 6);

    // An empty read is a lone NONE chunk.
    c.request(0, NBD_CMD_READ, 10, 0, 0).await;
    let chunk = c.chunk().await;
    assert_eq!(
        (chunk.kind, chunk.flags, chunk.payload.len()),
        (NBD_REPLY_TYPE_NONE, NBD_REPLY_FLAG_DONE, 0)
    );

    // Oversized structured reads may say EOVERFLOW.
    c.request(0, NBD_CMD_READ, 11, 0, MAX_PAYLOAD + 1).await;
    assert_eq!(c.chunk().await.errno(), NBD_EOVERFLOW);
}

#[tokio::test]
async fn block_status_needs_a_context_for_this_export() {
    // Structured replies but no SET_META_CONTEXT.
    let (mut c, _server) = Client::start(catalog(MemExport::new(BLOCK))).await;
    c.option(NBD_OPT_STRUCTURED_REPLY, &[]).await;
    c.go("disk").await;
    c.request(0, NBD_CMD_BLOCK_STATUS, 1, 0, 4096).await;
    assert_eq!(c.chunk().await.errno(), NBD_EINVAL);

    // A context selected for another export does not carry over.
    let (mut c, _server) = Client::start(catalog(MemExport::new(BLOCK))).await;
    c.option(NBD_OPT_STRUCTURED_REPLY, &[]).await;
    c.option(
        NBD_OPT_SET_META_CONTEXT,
        &meta_request("other", &[BASE_ALLOCATION]),
    )
    .await;
    c.go("disk").await;
    c.request(0, NBD_CMD_BLOCK_STATUS, 1, 0, 4096).await;
    assert_eq!(c.chunk().await.errno(), NBD_EINVAL);
}

#[tokio::test]
async fn replies_come_back_out_of_order() {
    let disk = MemExport::new(BLOCK).slow_read(0, Duration::from_millis(300));
    let (mut c, _server) = Client::start(catalog(disk)).await;
    c.go("disk").await;
    c.write(0, 1, 4096, &[9; 512]).await;
    assert_eq!(c.status(1).await, 0);
    c.request(0, NBD_CMD_READ, 100, 0, 512).await; // slow
    c.request(0, NBD_CMD_READ, 200, 4096, 512).await; // fast
    c.request(0, NBD_CMD_FLUSH, 300, 0, 0).await; // fast
    let (error, cookie, data) = c.simple(512).await;
    assert_eq!((error, cookie, data), (0, 200, vec![9; 512]));
    assert_eq!(c.status(300).await, 0);
    let (error, cookie, data) = c.simple(512).await;
    assert_eq!((error, cookie, data), (0, 100, vec![0; 512]));
}

#[tokio::test]
async fn many_requests_in_flight_are_all_answered() {
    let (mut c, _server) = Client::start(catalog(MemExport::new(BLOCK))).await;
    c.go("disk").await;
    // More than the in-flight limit, all sent before reading any reply.
    let n = MAX_IN_FLIGHT as u64 * 3;
    let mut batch = Vec::new();
    for cookie in 0..n {
        batch.extend(request(0, NBD_CMD_READ, cookie, cookie * 512, 4096));
    }
    c.stream.write_all(&batch).await.unwrap();
    let mut seen = HashSet::new();
    for _ in 0..n {
        let (error, cookie, data) = c.simple(4096).await;
        assert_eq!((error, data.len()), (0, 4096));
        assert!(seen.insert(cookie));
    }
}

#[tokio::test]
async fn bad_request_magic_closes_the_connection() {
    let (mut c, server) = Client::start(catalog(MemExport::new(BLOCK))).await;
    c.go("disk").await;
    let mut bad = request(0, NBD_CMD_READ, 1, 0, 512);
    bad[0] ^= 0xff;
    c.stream.write_all(&bad).await.unwrap();
    c.expect_closed().await;
    assert!(within(server).await.unwrap().is_err());
}

#[tokio::test]
async fn unknown_commands_and_flags_are_einval() {
    let (mut c, _server) = Client::start(catalog(MemExport::new(BLOCK))).await;
    c.go("disk").await;
    c.request(0, 42, 1, 0, 512).await;
    assert_eq!(c.status(1).await, NBD_EINVAL);
    c.request(0, 8 /* RESIZE */, 2, 0, 0).await;
    assert_eq!(c.status(2).await, NBD_EINVAL);
    c.request(NBD_CMD_FLAG_NO_HOLE, NBD_CMD_READ, 3, 0, 512)
        .await;
    assert_eq!(c.simple(512).await.0, NBD_EINVAL);
    // DF is only valid with structured replies.
    c.request(NBD_CMD_FLAG_DF, NBD_CMD_READ, 4, 0, 512).await;
    assert_eq!(c.simple(512).await.0, NBD_EINVAL);
    c.write(0x8000, 5, 0, &[1; 16]).await;
    assert_eq!(c.status(5).await, NBD_EINVAL);
    // FUA is accepted on any command; CACHE is a no-op.
    c.request(NBD_CMD_FLAG_FUA, NBD_CMD_CACHE, 6, 0, 4096).await;
    assert_eq!(c.status(6).await, 0);
    // The connection is still in step.
    c.request(0, NBD_CMD_READ, 7, 0, 16).await;
    assert_eq!(c.simple(16).await, (0, 7, vec![0; 16]));
}

#[tokio::test]
async fn requests_beyond_the_end_fail_cleanly() {
    let cat = catalog(MemExport::new(BLOCK));
    let (mut c, _server) = Client::start(cat.clone()).await;
    c.go("disk").await;
    let end = BLOCK;
    c.request(0, NBD_CMD_READ, 1, end - 512, 1024).await;
    assert_eq!(c.simple(1024).await.0, NBD_EINVAL);
    c.request(0, NBD_CMD_READ, 2, u64::MAX - 100, 512).await; // offset + len overflows
    assert_eq!(c.simple(512).await.0, NBD_EINVAL);
    c.write(0, 3, end - 512, &[1; 1024]).await; // payload still consumed
    assert_eq!(c.status(3).await, NBD_ENOSPC);
    c.request(0, NBD_CMD_WRITE_ZEROES, 4, end, 1).await;
    assert_eq!(c.status(4).await, NBD_ENOSPC);
    c.request(0, NBD_CMD_TRIM, 5, end - 1, 2).await;
    assert_eq!(c.status(5).await, NBD_EINVAL);
    c.request(0, NBD_CMD_CACHE, 6, end, 1).await;
    assert_eq!(c.status(6).await, NBD_EINVAL);
    // Exactly up to the end is fine.
    c.write(0, 7, end - 512, &[2; 512]).await;
    assert_eq!(c.status(7).await, 0);
    assert_eq!(
        cat.get("disk").bytes(end - 1024, 1024),
        [vec![0; 512], vec![2; 512]].concat()
    );
}

#[tokio::test]
async fn oversized_requests_are_refused_and_the_connection_survives() {
    let cat = catalog(MemExport::new(BLOCK));
    let (mut c, _server) = Client::start(cat.clone()).await;
    c.go("disk").await;
    c.request(0, NBD_CMD_READ, 1, 0, MAX_PAYLOAD + 1).await;
    assert_eq!(c.simple(0).await, (NBD_EINVAL, 1, vec![]));
    // The over-long write payload is skipped, not buffered.
    c.write(0, 2, 0, &vec![0xee; MAX_PAYLOAD as usize + 1])
        .await;
    assert_eq!(c.status(2).await, NBD_EINVAL);
    c.write(0, 3, 0, &[5; 512]).await;
    assert_eq!(c.status(3).await, 0);
    assert_eq!(
        cat.get("disk").bytes(0, 513),
        [vec![5; 512], vec![0]].concat()
    );
    // A maximum-size read passes the size check; this 4 MiB export then
    // refuses it for running past the end.
    c.request(0, NBD_CMD_READ, 4, 0, MAX_PAYLOAD).await;
    assert_eq!(c.simple(0).await.0, NBD_EINVAL);
}

#[tokio::test]
async fn client_vanishing_mid_write_affects_no_one_else() {
    let cat = catalog(MemExport::new(BLOCK));
    let (mut c, server) = Client::start(cat.clone()).await;
    c.go("disk").await;
    let mut partial = request(0, NBD_CMD_WRITE, 1, 0, 1 << 20);
    partial.extend(vec![0xab; 1000]);
    c.stream.write_all(&partial).await.unwrap();
    drop(c);
    within(server).await.unwrap().unwrap();
    assert_eq!(cat.get("disk").bytes(0, 1000), vec![0; 1000]);

    let (mut c, _server) = Client::start(cat.clone()).await;
    c.go("disk").await;
    c.write(NBD_CMD_FLAG_FUA, 1, 0, &[3; 4096]).await;
    assert_eq!(c.status(1).await, 0);
    c.request(0, NBD_CMD_READ, 2, 0, 4096).await;
    assert_eq!(c.simple(4096).await, (0, 2, vec![3; 4096]));
}

#[tokio::test]
async fn disc_answers_outstanding_requests_first() {
    let disk = MemExport::new(BLOCK).slow_read(0, Duration::from_millis(200));
    let (mut c, server) = Client::start(catalog(disk)).await;
    c.go("disk").await;
    c.request(0, NBD_CMD_READ, 1, 0, 512).await;
    c.request(0, NBD_CMD_DISC, 2, 0, 0).await;
    assert_eq!(c.simple(512).await, (0, 1, vec![0; 512]));
    c.expect_closed().await;
    within(server).await.unwrap().unwrap();
}

#[tokio::test]
async fn write_zeroes_trim_flush_and_fua() {
    let cat = catalog(MemExport::new(3 * BLOCK));
    let disk = cat.get("disk");
    let (mut c, _server) = Client::start(cat.clone()).await;
    c.go_structured("disk").await;
    let full = vec![7u8; BLOCK as usize];
    for (cookie, block) in [(1u64, 0u64), (2, 1), (3, 2)] {
        c.write(NBD_CMD_FLAG_FUA, cookie, block * BLOCK, &full)
            .await;
        assert_eq!(c.status(cookie).await, 0);
    }
    assert_eq!(disk.fua_writes.load(Ordering::SeqCst), 3);

    // WRITE_ZEROES over block 0 and part of block 1: block 0 becomes a
    // hole, the rest reads as zeros.
    c.request(0, NBD_CMD_WRITE_ZEROES, 4, 0, BLOCK as u32 + 4096)
        .await;
    assert_eq!(c.status(4).await, 0);
    assert!(!disk.is_allocated(0) && disk.is_allocated(1));
    assert_eq!(disk.bytes(BLOCK, 4097), [vec![0; 4096], vec![7]].concat());

    // With NO_HOLE the zeros are written, so block 2 stays allocated.
    c.request(
        NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FUA,
        NBD_CMD_WRITE_ZEROES,
        5,
        2 * BLOCK,
        BLOCK as u32,
    )
    .await;
    assert_eq!(c.status(5).await, 0);
    assert!(disk.is_allocated(2));
    assert_eq!(
        disk.bytes(2 * BLOCK, BLOCK as usize),
        vec![0; BLOCK as usize]
    );

    // TRIM with FUA also flushes.
    let flushes = disk.flushes.load(Ordering::SeqCst);
    c.request(NBD_CMD_FLAG_FUA, NBD_CMD_TRIM, 6, BLOCK, BLOCK as u32)
        .await;
    assert_eq!(c.status(6).await, 0);
    assert!(!disk.is_allocated(1));
    assert_eq!(disk.flushes.load(Ordering::SeqCst), flushes + 1);

    c.request(0, NBD_CMD_BLOCK_STATUS, 7, 0, 3 * BLOCK as u32)
        .await;
    let want = [(2 * BLOCK as u32, HOLE), (BLOCK as u32, 0)];
    assert_eq!(extents(&c.chunk().await).1, want);

    // Zero-length writes, trims and zeroes are harmless no-ops.
    c.write(0, 8, 0, &[]).await;
    c.request(0, NBD_CMD_TRIM, 9, 0, 0).await;
    c.request(0, NBD_CMD_WRITE_ZEROES, 10, 0, 0).await;
    let mut cookies: Vec<u64> = Vec::new();
    for _ in 0..3 {
        let (error, cookie, _) = c.simple(0).await;
        assert_eq!(error, 0);
        cookies.push(cookie);
    }
    cookies.sort();
    assert_eq!(cookies, [8, 9, 10]);
}

#[tokio::test]
async fn a_panicking_export_gets_eio_not_a_hang() {
    let (mut c, _server) = Client::start(catalog(MemExport::new(BLOCK).panic_at(4096))).await;
    c.go("disk").await;
    c.request(0, NBD_CMD_READ, 1, 4096, 512).await;
    assert_eq!(c.simple(512).await.0, NBD_EIO);
    c.request(0, NBD_CMD_READ, 2, 0, 512).await;
    assert_eq!(c.simple(512).await, (0, 2, vec![0; 512]));
}
