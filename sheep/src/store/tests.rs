use super::*;
use bytes::Bytes;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

fn store() -> (tempfile::TempDir, ObjectStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = ObjectStore::open(dir.path(), false).unwrap();
    (dir, s)
}

#[tokio::test]
async fn create_read_write_remove() {
    let (_d, s) = store();
    let oid = ObjectId::data(7, 1);
    assert!(matches!(
        s.read(oid, 0, 4).await,
        Err(StoreError::NoObject(_))
    ));
    assert!(matches!(
        s.write(oid, 0, Bytes::from_static(b"x"), true, 1, Vec::new())
            .await,
        Err(StoreError::NoObject(_))
    ));
    let abcd = Bytes::from_static(b"abcd");
    s.create(
        oid,
        4096,
        abcd,
        CreateMode::Replace,
        true,
        2,
        None,
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(s.read(oid, 4094, 8).await.unwrap().data, b"\0\0abcd\0\0");
    s.write(oid, 4095, Bytes::from_static(b"Z"), false, 3, Vec::new())
        .await
        .unwrap();
    s.flush().await.unwrap();
    assert_eq!(s.read(oid, 4094, 4).await.unwrap().data, b"\0Zab");
    assert_eq!(
        s.meta(oid).unwrap(),
        Meta {
            version: Version::created(2).next(3),
            extent: 4100,
            backing: None,
        }
    );
    assert_eq!(s.list().len(), 1);
    assert!(matches!(
        s.create(
            oid,
            0,
            Bytes::new(),
            CreateMode::Exclusive,
            true,
            4,
            None,
            Vec::new()
        )
        .await,
        Err(StoreError::Exists(_))
    ));
    s.remove(oid).await.unwrap();
    s.remove(oid).await.unwrap();
    assert!(s.list().is_empty());
}

#[tokio::test]
async fn a_synchronous_write_makes_an_unsynced_create_findable() {
    let (_d, s) = store();
    let oid = ObjectId::data(7, 2);
    let one = Bytes::from_static(b"one");
    s.create(oid, 0, one, CreateMode::Replace, false, 1, None, Vec::new())
        .await
        .unwrap();
    assert!(s.files.dir_unsynced(), "the new name is not on disk yet");
    // Acknowledged as durable: its file's name must be durable too, not
    // left for a flush the client may never send.
    s.write(oid, 0, Bytes::from_static(b"two"), true, 2, Vec::new())
        .await
        .unwrap();
    assert!(!s.files.dir_unsynced());
    assert_eq!(s.read(oid, 0, 3).await.unwrap().data, b"two");
}

#[tokio::test]
async fn reopened_store_keeps_versions_and_suspects_every_copy() {
    let dir = tempfile::tempdir().unwrap();
    let oid = ObjectId::data(1, 0);
    {
        let s = ObjectStore::open(dir.path(), false).unwrap();
        let data = Bytes::from(vec![5u8; 10000]);
        s.create(oid, 0, data, CreateMode::Replace, true, 9, None, Vec::new())
            .await
            .unwrap();
        s.write(oid, 0, Bytes::from_static(b"hi"), true, 10, Vec::new())
            .await
            .unwrap();
        assert!(!s.gate().is_unverified(oid), "a create is fresh");
    }
    let s = Arc::new(ObjectStore::open(dir.path(), false).unwrap());
    assert_eq!(s.meta(oid).unwrap().version, Version::created(9).next(10));
    assert_eq!(s.meta(oid).unwrap().extent, 10000);
    assert!(s.gate().is_unverified(oid));
    // Client I/O asks for verification and waits for it...
    let mut urgent = s.gate().take_urgent().unwrap();
    let reader = s.clone();
    let read = tokio::spawn(async move { reader.read(oid, 0, 2).await });
    assert_eq!(urgent.recv().await, Some(oid));
    assert!(!read.is_finished());
    // ...until recovery has verified the copy.
    s.gate().verified(oid);
    assert_eq!(read.await.unwrap().unwrap().data, b"hi");
    let (v, _) = s.fetch(oid).await.unwrap();
    assert_eq!(v, Version::created(9).next(10));
}

#[tokio::test]
async fn corrupt_bytes_are_never_returned() {
    let (d, s) = store();
    let oid = ObjectId::data(3, 0);
    let data = Bytes::from(vec![1u8; 8192]);
    s.create(oid, 0, data, CreateMode::Replace, true, 1, None, Vec::new())
        .await
        .unwrap();
    let path = d.path().join("obj").join(oid.to_string());
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&[0xAA; 16], 4096).unwrap();
    let mut urgent = s.gate().take_urgent().unwrap();
    assert!(matches!(
        s.read(oid, 4000, 200).await,
        Err(StoreError::Corrupt(_, 4096))
    ));
    assert!(matches!(s.scrub(oid).await, Err(StoreError::Corrupt(..))));
    assert!(matches!(s.fetch(oid).await, Err(StoreError::Corrupt(..))));
    assert_eq!(urgent.recv().await, Some(oid), "repair requested");
    // Installing a good copy under the exclusive lock repairs it.
    let guard = s.gate().exclusive(oid).await;
    let good = Bytes::from(vec![1u8; 8192]);
    s.install(oid, Version::created(1), good, CreateMode::Replace, true)
        .await
        .unwrap();
    drop(guard);
    assert_eq!(s.read(oid, 4000, 200).await.unwrap().data, vec![1u8; 200]);
    assert!(s.scrub(oid).await.is_ok());
}

#[tokio::test]
async fn usage_counts_object_bytes() {
    let (_d, s) = store();
    let data = Bytes::from(vec![1u8; 1 << 20]);
    s.create(
        ObjectId::data(1, 0),
        0,
        data,
        CreateMode::Replace,
        false,
        1,
        None,
        Vec::new(),
    )
    .await
    .unwrap();
    let (used, free) = s.usage().await.unwrap();
    assert!(used >= 1 << 20);
    assert!(free > 0);
}

#[tokio::test]
async fn backed_copies_report_what_they_never_wrote_and_fill() {
    let (_d, s) = store();
    let oid = ObjectId::data(9, 2);
    let backing = Backing {
        oid: ObjectId::data(8, 2).0,
        copies: 2,
    };
    // A partial first write needs the rest of its block from the backing.
    let err = s
        .create(
            oid,
            4096 + 10,
            Bytes::from_static(b"new"),
            CreateMode::Exclusive,
            true,
            1,
            Some(backing),
            Vec::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NeedBase { backing: b, blocks, .. } if *b == backing && blocks == &[1]),
        "{err:?}"
    );
    assert!(s.meta(oid).is_none(), "nothing was created");
    s.create(
        oid,
        4096 + 10,
        Bytes::from_static(b"new"),
        CreateMode::Exclusive,
        true,
        1,
        Some(backing),
        vec![(1, vec![b'b'; 4096])],
    )
    .await
    .unwrap();
    assert_eq!(s.meta(oid).unwrap().backing, Some(backing));

    let read = s.read(oid, 4096, 3 * 4096).await.unwrap();
    assert_eq!(&read.data[..13], b"bbbbbbbbbbnew");
    assert!(read.data[13..4096].iter().all(|b| *b == b'b'));
    assert_eq!(
        read.from_backing,
        Some((backing, vec![(8192, 8192)])),
        "blocks 2 and 3 read from the backing"
    );
    // A read inside written blocks needs nothing from the backing.
    assert_eq!(s.read(oid, 4096, 100).await.unwrap().from_backing, None);

    // Filling with another backing does nothing; with its own it makes the
    // copy plain and keeps what was written.
    let other = Backing { oid: 1, copies: 2 };
    assert!(!s.fill(oid, other, Bytes::new()).await.unwrap());
    let content = Bytes::from(vec![b'p'; 4 * 4096]);
    assert!(s.fill(oid, backing, content).await.unwrap());
    let meta = s.meta(oid).unwrap();
    assert_eq!((meta.backing, meta.extent), (None, 4 * 4096));
    let read = s.read(oid, 0, 4 * 4096).await.unwrap();
    assert_eq!(read.from_backing, None);
    assert!(read.data[..4096].iter().all(|b| *b == b'p'));
    assert_eq!(&read.data[4096..4096 + 13], b"bbbbbbbbbbnew");
    assert!(read.data[8192..].iter().all(|b| *b == b'p'));
    assert_eq!(meta.version, Version::created(1), "a fill is not a write");
}

#[tokio::test]
async fn a_fetch_of_a_backed_copy_always_names_its_backing() {
    let (_d, s) = store();
    let oid = ObjectId::data(9, 3);
    let backing = Backing { oid: 77, copies: 1 };
    let block = Bytes::from(vec![1u8; 4096]);
    s.create(
        oid,
        0,
        block,
        CreateMode::Exclusive,
        true,
        1,
        Some(backing),
        Vec::new(),
    )
    .await
    .unwrap();
    // Every byte up to the extent is the copy's own, yet what lies past it
    // is the backing's.
    let (_, read) = s.fetch(oid).await.unwrap();
    assert_eq!(read.data.len(), 4096);
    assert_eq!(read.from_backing, Some((backing, Vec::new())));
}

#[tokio::test]
async fn a_paced_install_writes_the_whole_copy() {
    let (_d, s) = store();
    let oid = ObjectId::data(5, 5);
    let data = Bytes::from(
        (0..(1 << 20) + 100)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    s.install(
        oid,
        Version::created(3),
        data.clone(),
        CreateMode::Replace,
        true,
    )
    .await
    .unwrap();
    assert_eq!(s.meta(oid).unwrap().extent, data.len() as u64);
    let (version, read) = s.fetch(oid).await.unwrap();
    assert_eq!((version, &read.data[..]), (Version::created(3), &data[..]));
    assert!(s.scrub(oid).await.is_ok());
}

/// Pages of `file` dirty or under writeback (the `cachestat` system call).
#[cfg(target_arch = "x86_64")]
fn unsynced_pages(file: &std::fs::File) -> u64 {
    use std::os::unix::io::AsRawFd;
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        cache: u64,
        dirty: u64,
        writeback: u64,
        evicted: u64,
        recently_evicted: u64,
    }
    const SYS_CACHESTAT: libc::c_long = 451;
    let whole = Range { off: 0, len: 0 };
    let mut stat = Stat::default();
    // SAFETY: both structs are the kernel's layout and outlive the call.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &whole as *const Range,
            &mut stat as *mut Stat,
            0,
        )
    };
    assert_eq!(r, 0, "cachestat: {}", io::Error::last_os_error());
    stat.dirty + stat.writeback
}

#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn synchronous_overwrites_of_clean_copies_are_synced_without_the_inode() {
    let (d, s) = store();
    let ext4 = rustix::fs::statfs(d.path()).unwrap().f_type as i64 == 0xEF53;
    let oid = ObjectId::data(9, 1);
    let fill = |b: u8, n: usize| Bytes::from(vec![b; n]);
    s.create(
        oid,
        0,
        fill(1, 8192),
        CreateMode::Replace,
        true,
        1,
        None,
        Vec::new(),
    )
    .await
    .unwrap();
    let file = std::fs::File::open(d.path().join("obj").join(oid.to_string())).unwrap();
    let fast = || s.synced_writes().overwrite;

    // Over written blocks of a synced copy: synced without fdatasync.
    s.write(oid, 4096, fill(2, 4096), true, 2, Vec::new())
        .await
        .unwrap();
    assert_eq!(fast(), u64::from(ext4));
    assert_eq!(unsynced_pages(&file), 0, "data and trailer written");
    // Into a never-written block, or partly over one: the file allocates,
    // so fdatasync.
    s.write(oid, 3 * 4096, fill(3, 4096), true, 3, Vec::new())
        .await
        .unwrap();
    s.write(oid, 8192 - 100, fill(4, 200), true, 4, Vec::new())
        .await
        .unwrap();
    assert_eq!(fast(), u64::from(ext4));
    // After an unsynced write, fdatasync until a flush has synced it.
    s.write(oid, 0, fill(5, 10), false, 5, Vec::new())
        .await
        .unwrap();
    assert!(
        unsynced_pages(&file) > 0,
        "the unsynced write is in the cache"
    );
    s.write(oid, 10, fill(6, 10), true, 6, Vec::new())
        .await
        .unwrap();
    assert_eq!(fast(), u64::from(ext4));
    s.flush().await.unwrap();
    s.write(oid, 20, fill(7, 10), true, 7, Vec::new())
        .await
        .unwrap();
    assert_eq!(fast(), 2 * u64::from(ext4));
    assert_eq!(unsynced_pages(&file), 0);
    assert_eq!(s.synced_writes().fdatasync, 5 - 2 * u64::from(ext4));

    let read = s.read(oid, 0, 4 * 4096).await.unwrap().data;
    let mut want = vec![1u8; 4 * 4096];
    want[..10].fill(5);
    want[10..20].fill(6);
    want[20..30].fill(7);
    want[4096..8192 - 100].fill(2);
    want[8192 - 100..8192 + 100].fill(4);
    want[8192 + 100..3 * 4096].fill(0);
    want[3 * 4096..].fill(3);
    assert_eq!(read, want);
}
