//! Tests of the object file layout: checksums, backed copies, caching.

use super::*;

fn file() -> (tempfile::TempDir, File) {
    let d = tempfile::tempdir().unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(d.path().join("o"))
        .unwrap();
    (d, f)
}

#[test]
fn large_writes_go_in_aligned_pieces_that_cover_them() {
    let piece = WRITE_PIECE as u64;
    for (offset, len) in [
        (0, 1 << 20),
        (100, 3 * WRITE_PIECE),
        (piece - 1, 2),
        (5, 7),
        (0, 0),
    ] {
        let mut next = 0;
        for (at, n) in pieces(offset, len) {
            assert_eq!(at, next, "pieces follow each other");
            assert!(n > 0 && n <= WRITE_PIECE);
            let (from, to) = (offset + at as u64, offset + (at + n) as u64);
            assert_eq!(
                from / piece,
                (to - 1) / piece,
                "{from}..{to} crosses a piece boundary"
            );
            next = at + n;
        }
        assert_eq!(next, len, "pieces cover the write");
    }
    // And the bytes land where they belong.
    let (_d, f) = file();
    let data: Vec<u8> = (0..3 * WRITE_PIECE + 4096)
        .map(|i| (i % 251) as u8)
        .collect();
    write_checked(&f, 4096, &data, false, &[]).unwrap().unwrap();
    let read = read_checked(&f, 4096, data.len()).unwrap().unwrap();
    assert_eq!(read.data, data);
}

#[test]
fn unaligned_writes_keep_checksums_right() {
    let (_d, f) = file();
    write_checked(&f, 100, &[7u8; 5000], false, &[])
        .unwrap()
        .unwrap();
    write_checked(&f, 4000, &[9u8; 200], false, &[])
        .unwrap()
        .unwrap();
    let read = read_checked(&f, 0, 9000).unwrap().unwrap();
    assert_eq!(read.unwritten, vec![(8192, 808)]);
    let got = read.data;
    assert!(got[..100].iter().all(|b| *b == 0));
    assert!(got[100..4000].iter().all(|b| *b == 7));
    assert!(got[4000..4200].iter().all(|b| *b == 9));
    assert!(got[4200..5100].iter().all(|b| *b == 7));
    assert!(got[5100..].iter().all(|b| *b == 0));
    assert!(scrub(&f, 5100).unwrap().is_ok());
}

#[test]
fn corruption_is_detected_and_holes_are_not_checked() {
    let (_d, f) = file();
    write_checked(&f, 8192, &[1u8; 4096], false, &[])
        .unwrap()
        .unwrap();
    // Bytes changed behind the store's back.
    f.write_all_at(&[2u8; 10], 8200).unwrap();
    assert_eq!(
        read_checked(&f, 8192, 10).unwrap().unwrap_err().offset,
        8192
    );
    assert!(read_checked(&f, 0, 4096).unwrap().is_ok());
    assert_eq!(scrub(&f, 12288).unwrap().unwrap_err().offset, 8192);
}

#[test]
fn meta_round_trips_and_versions_commute() {
    let (_d, f) = file();
    assert_eq!(read_meta(&f).unwrap(), None);
    let m = Meta {
        version: Version::created(1).next(2).next(3),
        extent: 12345,
        backing: Some(Backing {
            oid: 0x8000_0000_0000_0007,
            copies: 3,
        }),
    };
    write_meta(&f, &m).unwrap();
    assert_eq!(read_meta(&f).unwrap(), Some(m));
    assert_eq!(
        Version::created(1).next(3).next(2),
        m.version,
        "the same writes in another order give the same version"
    );
    assert_ne!(Version::created(1).next(4).next(2), m.version);
}

#[test]
fn backed_writes_merge_partial_blocks_into_the_backing_content() {
    let (_d, f) = file();
    // Whole blocks need nothing from the backing object.
    write_checked(&f, 4096, &[1u8; 4096], true, &[])
        .unwrap()
        .unwrap();
    let read = read_checked(&f, 0, 3 * 4096).unwrap().unwrap();
    assert_eq!(read.unwritten, vec![(0, 4096), (8192, 4096)]);
    // A partial never-written block needs its backing content...
    let need = write_checked(&f, 8192 + 100, &[2u8; 10], true, &[])
        .unwrap()
        .unwrap_err();
    assert_eq!(need.blocks, vec![2]);
    let read = read_checked(&f, 8192, 4096).unwrap().unwrap();
    assert_eq!(read.unwritten, vec![(8192, 4096)], "nothing was written");
    // ... and with it, the whole block holds backing bytes and new ones.
    write_checked(&f, 8192 + 100, &[2u8; 10], true, &[(2, vec![9u8; 4096])])
        .unwrap()
        .unwrap();
    let read = read_checked(&f, 8192, 4096).unwrap().unwrap();
    assert!(read.unwritten.is_empty());
    assert!(read.data[..100].iter().all(|b| *b == 9));
    assert!(read.data[100..110].iter().all(|b| *b == 2));
    assert!(read.data[110..].iter().all(|b| *b == 9));
    // A partial write into a block the copy holds needs nothing.
    write_checked(&f, 4096 + 5, &[3u8; 5], true, &[])
        .unwrap()
        .unwrap();
    let read = read_checked(&f, 4096, 16).unwrap().unwrap();
    assert_eq!(
        &read.data[..],
        &[1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1]
    );
}

#[test]
fn filling_writes_only_unwritten_nonzero_blocks() {
    let (_d, f) = file();
    write_checked(&f, 4096, &[1u8; 4096], true, &[])
        .unwrap()
        .unwrap();
    let mut backing = vec![7u8; 3 * 4096 + 100];
    backing[2 * 4096..3 * 4096].fill(0);
    let written = fill_unwritten(&f, &backing).unwrap();
    assert_eq!(written, 4096 + 100);
    let read = read_checked(&f, 0, 4 * 4096).unwrap().unwrap();
    // Block 2 (zeros in the backing) and block 3's tail stay unwritten.
    assert_eq!(read.unwritten, vec![(2 * 4096, 4096)]);
    assert!(read.data[..4096].iter().all(|b| *b == 7));
    assert!(read.data[4096..8192].iter().all(|b| *b == 1));
    assert!(read.data[3 * 4096..3 * 4096 + 100].iter().all(|b| *b == 7));
    assert!(read.data[3 * 4096 + 100..].iter().all(|b| *b == 0));
    assert!(scrub(&f, 4 * 4096).unwrap().is_ok());
}

#[test]
fn blocks_written_tells_overwrites_from_writes_into_holes() {
    let (_d, f) = file();
    write_checked(&f, BLOCK, &vec![7u8; 2 * BLOCK as usize], false, &[])
        .unwrap()
        .unwrap();
    assert!(blocks_written(&f, BLOCK, 2 * BLOCK).unwrap());
    assert!(blocks_written(&f, BLOCK + 10, 100).unwrap());
    assert!(blocks_written(&f, 0, 0).unwrap(), "nothing to write");
    assert!(!blocks_written(&f, 0, BLOCK).unwrap(), "block 0 is a hole");
    assert!(
        !blocks_written(&f, 2 * BLOCK, BLOCK + 1).unwrap(),
        "ends in a hole"
    );
    assert!(
        !blocks_written(&f, BLOCK - 1, 2).unwrap(),
        "starts in a hole"
    );
}
