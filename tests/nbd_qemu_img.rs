//! qemu-img against the NBD server: importing images and mapping allocation.
//!
//! Issue 3, "Done when" 1: `qemu-img convert -n -O raw SRC nbd://127.0.0.1:P/NAME` of a sparse
//! qcow2 and of a sparse raw image into freshly created VDIs, then `qemu-img compare SRC
//! nbd://...` (through another node) succeeds; the store holds exactly the objects the source
//! wrote (copies x written objects), so a sparse source stays sparse.
//!
//! "Done when" 6: `qemu-img map --output=json nbd://...` reports holes (`"data": false`,
//! `"zero": true`) for every unwritten object and data for the written ranges; an object
//! zeroed with WRITE_ZEROES (holes allowed) or trimmed becomes a hole again and leaves the
//! stores, while a partly zeroed one keeps its data.

use std::collections::BTreeSet;
use std::path::Path;

use sheepfold_tests::data::{data_oid_name, replica_counts};
use sheepfold_tests::tools::{
    all_output, extent_at, parse_qemu_img_map, qemu_io, tool, MapExtent, TOOL_IO_TIMEOUT,
    TOOL_TIMEOUT,
};
use sheepfold_tests::Cluster;

const MIB: u64 = 1 << 20;
const OBJ: u64 = 4 * MIB;
const COPIES: usize = 2;

/// A 3-node cluster in distinct zones, formatted with copies 2.
fn cluster() -> Cluster {
    let cluster = Cluster::builder().nodes(3).distinct_zones().start();
    cluster.format(COPIES as u8);
    cluster
}

/// `(pattern byte, offset, length)` written into a source image.
type Write = (u8, u64, u64);

/// Object indices a set of writes touches.
fn objects_of(writes: &[Write]) -> BTreeSet<u32> {
    writes
        .iter()
        .flat_map(|&(_, off, len)| (off / OBJ..=(off + len - 1) / OBJ).map(|i| i as u32))
        .collect()
}

/// Creates a sparse image of `size` bytes in `format` and writes `writes` into it with qemu-io.
fn make_image(cluster: &Cluster, path: &Path, format: &str, size: u64, writes: &[Write]) {
    let mut create = tool("qemu-img");
    create.args(["create", "-q", "-f", format]);
    create.arg(path).arg(size.to_string());
    cluster.tool_ok(create, TOOL_TIMEOUT);
    let mut io = tool("qemu-io");
    io.args(["-f", format]).arg(path);
    for &(p, off, len) in writes {
        io.args(["-c", &format!("write -P {p:#x} {off} {len}")]);
    }
    let out = cluster.tool_ok(io, TOOL_TIMEOUT);
    assert_eq!(
        all_output(&out).matches("wrote ").count(),
        writes.len(),
        "qemu-io writes into {}: {}",
        path.display(),
        all_output(&out)
    );
}

/// The data objects of `vid` on every node, checked to be exactly `want` objects, each on
/// exactly `COPIES` nodes.
fn assert_objects(cluster: &Cluster, what: &str, vid: u32, want: &BTreeSet<u32>) {
    let prefix = format!("00{vid:06x}");
    let per_node: Vec<BTreeSet<String>> = (0..cluster.len())
        .map(|i| {
            cluster
                .data_objects(i)
                .into_iter()
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .collect();
    let counts = replica_counts(&per_node);
    let want_names: BTreeSet<String> = want.iter().map(|&i| data_oid_name(vid, i)).collect();
    assert_eq!(
        counts.keys().cloned().collect::<BTreeSet<_>>(),
        want_names,
        "{what}: data objects in the stores (per node: {per_node:?})"
    );
    let total: usize = counts.values().sum();
    assert_eq!(
        total,
        COPIES * want.len(),
        "{what}: want {COPIES} copies of each of {} objects, per node: {per_node:?}",
        want.len()
    );
}

#[test]
fn convert_qcow2_and_raw_then_compare_and_stay_sparse() {
    let cluster = cluster();
    let tmp = tempfile::tempdir().expect("tempdir");
    let size = 64 * MIB;

    // Scattered, unaligned patterns. Every run of zeros between them starts and ends inside
    // an object that holds data, so only whole untouched objects are left out.
    let qcow2_writes: [Write; 5] = [
        (0x11, 0, 64 * 1024),
        (0x22, OBJ - 4, 8192), // across the 0/1 boundary
        (0x33, 5 * OBJ, MIB),  // object 5
        (0x44, 10 * OBJ + 12_345, 12_345),
        (0x55, size - 4096, 4096), // the last object
    ];
    let raw_writes: [Write; 4] = [
        (0x66, 2 * OBJ + 100, 1000),
        (0x77, 4 * OBJ - 216, 1000), // across the 3/4 boundary
        (0x88, 7 * OBJ, OBJ),        // all of object 7
        (0x99, 12 * OBJ + 777, 3000),
    ];
    let qcow2 = tmp.path().join("src.qcow2");
    let raw = tmp.path().join("src.raw");
    make_image(&cluster, &qcow2, "qcow2", size, &qcow2_writes);
    make_image(&cluster, &raw, "raw", size, &raw_writes);

    cluster.dog_ok(0, &["vdi", "create", "fromqcow2", "64M"]);
    cluster.dog_ok(0, &["vdi", "create", "fromraw", "64M"]);

    let cases = [
        ("fromqcow2", &qcow2, "qcow2", &qcow2_writes[..], 1),
        ("fromraw", &raw, "raw", &raw_writes[..], 2),
    ];
    for &(name, src, format, writes, via) in &cases {
        let mut convert = tool("qemu-img");
        convert
            .args(["convert", "-n", "-f", format, "-O", "raw"])
            .arg(src)
            .arg(cluster.nbd_uri(via, name));
        cluster.tool_ok(convert, TOOL_IO_TIMEOUT);

        // Compare through a node other than the one that imported.
        let mut compare = tool("qemu-img");
        compare
            .args(["compare", "-f", format, "-F", "raw"])
            .arg(src)
            .arg(cluster.nbd_uri(0, name));
        let out = cluster.tool_ok(compare, TOOL_IO_TIMEOUT);
        assert!(
            all_output(&out).contains("Images are identical"),
            "qemu-img compare {name}: {}",
            all_output(&out)
        );

        let vid = cluster.vdi_id(0, name);
        assert_objects(
            &cluster,
            &format!("{name} after qemu-img convert"),
            vid,
            &objects_of(writes),
        );
    }

    // The comparison is not vacuous: the qcow2 image differs from the raw import.
    let mut compare = tool("qemu-img");
    compare
        .args(["compare", "-f", "qcow2", "-F", "raw"])
        .arg(&qcow2)
        .arg(cluster.nbd_uri(2, "fromraw"));
    let out = sheepfold_tests::process::run_with_timeout(compare, None, TOOL_IO_TIMEOUT);
    assert_eq!(
        out.status.code(),
        Some(1),
        "qemu-img compare of different images must exit 1: {}",
        all_output(&out)
    );

    for i in 0..3 {
        cluster.assert_no_panic(i);
    }
}

/// `qemu-img map --output=json` of `name` through `node`, checked to cover `[0, size)`
/// contiguously. Returns the JSON (for messages) and the extents.
fn qemu_img_map(cluster: &Cluster, node: usize, name: &str, size: u64) -> (String, Vec<MapExtent>) {
    let mut map = tool("qemu-img");
    map.args(["map", "--output=json", "-f", "raw"])
        .arg(cluster.nbd_uri(node, name));
    let out = cluster.tool_ok(map, TOOL_TIMEOUT);
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    let extents = parse_qemu_img_map(&json).unwrap_or_else(|e| panic!("{e}"));
    let mut pos = 0;
    for e in &extents {
        assert_eq!(e.start, pos, "extents not contiguous:\n{json}");
        pos += e.length;
    }
    assert_eq!(pos, size, "extents do not cover the disk:\n{json}");
    (json, extents)
}

#[test]
fn map_reports_holes_and_data() {
    let cluster = cluster();
    let size = 64 * MIB;
    cluster.dog_ok(1, &["vdi", "create", "mapped", "64M"]);

    // All of object 2, 64 KiB in the middle of object 5, 4 KiB at the very end (object 15).
    let written: [(u64, u64); 3] = [
        (2 * OBJ, OBJ),
        (5 * OBJ + MIB, 64 * 1024),
        (size - 4096, 4096),
    ];
    let cmds: Vec<String> = written
        .iter()
        .map(|&(off, len)| format!("write -P 0xa5 {off} {len}"))
        .collect();
    cluster.tool_ok(qemu_io(&cluster.nbd_uri(0, "mapped"), &cmds), TOOL_TIMEOUT);

    let (json, extents) = qemu_img_map(&cluster, 2, "mapped", size);

    let data_objects: BTreeSet<u64> = written
        .iter()
        .flat_map(|&(off, len)| off / OBJ..=(off + len - 1) / OBJ)
        .collect();
    for e in &extents {
        let first = e.start / OBJ;
        let last = (e.start + e.length - 1) / OBJ;
        if (first..=last).all(|i| !data_objects.contains(&i)) {
            assert!(
                !e.data && e.zero,
                "extent {e:?} over unwritten objects {first}..={last} must be a zero hole:\n{json}"
            );
        }
    }
    for &(off, len) in &written {
        let mut at = off;
        while at < off + len {
            let e = extent_at(&extents, at).expect("covered");
            assert!(
                e.data && !e.zero,
                "written range {off}+{len}: byte {at} is in {e:?}, want data:\n{json}"
            );
            at = e.start + e.length;
        }
    }
    for i in 0..3 {
        cluster.assert_no_panic(i);
    }
}

#[test]
fn zeroed_and_trimmed_objects_become_holes() {
    let cluster = cluster();
    let size = 16 * MIB;
    cluster.dog_ok(0, &["vdi", "create", "freed", "16M"]);
    let uri = cluster.nbd_uri(1, "freed");

    // Objects 0-3 full of data; then WRITE_ZEROES that may punch holes (`-u`) over object 1,
    // TRIM over object 2, and WRITE_ZEROES over half of object 3 (stays allocated).
    cluster.tool_ok(
        qemu_io(&uri, &[format!("write -P 0x3c 0 {size}")]),
        TOOL_TIMEOUT,
    );
    cluster.tool_ok(
        qemu_io(
            &uri,
            &[
                format!("write -z -u {OBJ} {OBJ}"),
                format!("discard {} {OBJ}", 2 * OBJ),
                format!("write -z {} {}", 3 * OBJ, OBJ / 2),
                format!("read -P 0 {OBJ} {OBJ}"),
                format!("read -P 0 {} {}", 3 * OBJ, OBJ / 2),
                format!("read -P 0x3c {} {}", 3 * OBJ + OBJ / 2, OBJ / 2),
                format!("read -P 0x3c 0 {OBJ}"),
            ],
        ),
        TOOL_TIMEOUT,
    );

    let (json, extents) = qemu_img_map(&cluster, 1, "freed", size);
    for (idx, data) in [(0, true), (1, false), (2, false), (3, true)] {
        let e = extent_at(&extents, idx * OBJ + OBJ / 4).expect("covered");
        assert_eq!(
            e.data, data,
            "object {idx}: want data={data}, extent {e:?}:\n{json}"
        );
    }
    let vid = cluster.vdi_id(0, "freed");
    assert_objects(
        &cluster,
        "after zeroing object 1 and trimming object 2",
        vid,
        &[0, 3].into_iter().collect(),
    );
    for i in 0..3 {
        cluster.assert_no_panic(i);
    }
}
