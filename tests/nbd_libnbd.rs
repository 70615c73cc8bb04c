//! libnbd's clients against the NBD server: nbdinfo and nbdcopy.
//!
//! Issue 3, "Done when" 3: `nbdinfo nbd://...` shows the export with its size and flags
//! (`export-size`, `can_flush: true`, `can_trim: true`, `can_multi_conn: true`, writable,
//! `base:allocation`), and `nbdinfo --list nbd://127.0.0.1:P` lists every VDI.
//!
//! "Done when" 4: `nbdcopy` round-trips 256 MiB: a random file into a VDI through one node and
//! back out through another, byte-identical (and `dog vdi read` through the third agrees).

use std::collections::BTreeMap;

use sheepfold_tests::data::{assert_same_bytes, random_bytes};
use sheepfold_tests::process::run_with_timeout;
use sheepfold_tests::tools::{all_output, tool, TOOL_IO_TIMEOUT, TOOL_TIMEOUT};
use sheepfold_tests::Cluster;

const MIB: usize = 1 << 20;

fn cluster() -> Cluster {
    let cluster = Cluster::builder().nodes(3).distinct_zones().start();
    cluster.format(2);
    cluster
}

/// nbdinfo's text output split into exports: `export="NAME":` starts a block of
/// `key: value` lines.
fn nbdinfo_exports(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut exports = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("export=\"")
            .and_then(|l| l.strip_suffix("\":"))
        {
            current = Some(name.to_owned());
            exports.insert(name.to_owned(), BTreeMap::new());
        } else if let (Some(name), Some((k, v))) = (&current, line.trim().split_once(':')) {
            exports
                .get_mut(name)
                .expect("current export")
                .insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    exports
}

#[test]
fn nbdinfo_shows_size_flags_and_lists_every_vdi() {
    let cluster = cluster();
    let vdis = [
        ("alpha", "64M", 64u64 << 20),
        ("beta", "1G", 1 << 30),
        ("gamma", "4M", 4 << 20),
    ];
    for (i, (name, size, _)) in vdis.iter().enumerate() {
        cluster.dog_ok(i, &["vdi", "create", name, size]);
    }

    let mut info = tool("nbdinfo");
    info.arg(cluster.nbd_uri(1, "alpha"));
    let text = all_output(&cluster.tool_ok(info, TOOL_TIMEOUT));
    let exports = nbdinfo_exports(&text);
    let alpha = exports
        .get("alpha")
        .unwrap_or_else(|| panic!("nbdinfo shows no export=\"alpha\":\n{text}"));
    let want = [
        ("export-size", "67108864 (64M)"),
        ("is_read_only", "false"),
        ("can_flush", "true"),
        ("can_fua", "true"),
        ("can_trim", "true"),
        ("can_zero", "true"),
        ("can_multi_conn", "true"),
    ];
    for (k, v) in want {
        assert_eq!(
            alpha.get(k).map(String::as_str),
            Some(v),
            "nbdinfo line `{k}`:\n{text}"
        );
    }
    assert!(
        text.contains("base:allocation"),
        "nbdinfo lists the base:allocation context:\n{text}"
    );

    let mut size = tool("nbdinfo");
    size.arg("--size").arg(cluster.nbd_uri(2, "beta"));
    let out = cluster.tool_ok(size, TOOL_TIMEOUT);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1073741824");

    for node in 0..3 {
        let mut list = tool("nbdinfo");
        list.arg("--list")
            .arg(format!("nbd://127.0.0.1:{}", cluster.nbd_port(node)));
        let text = all_output(&cluster.tool_ok(list, TOOL_TIMEOUT));
        let exports = nbdinfo_exports(&text);
        assert_eq!(
            exports.keys().map(String::as_str).collect::<Vec<_>>(),
            ["alpha", "beta", "gamma"],
            "nbdinfo --list through node {node}:\n{text}"
        );
        for (name, _, bytes) in vdis {
            let size = exports[name]
                .get("export-size")
                .cloned()
                .unwrap_or_default();
            assert!(
                size.starts_with(&format!("{bytes} ")),
                "--list through node {node}: {name} has export-size {size:?}:\n{text}"
            );
        }
    }

    // A name that is no VDI is refused, and the server carries on.
    let mut missing = tool("nbdinfo");
    missing.arg(cluster.nbd_uri(0, "nosuchvdi"));
    let out = run_with_timeout(missing, None, TOOL_TIMEOUT);
    assert!(
        !out.status.success(),
        "nbdinfo of a missing export must fail:\n{}",
        all_output(&out)
    );
    for i in 0..3 {
        cluster.assert_no_panic(i);
    }
}

#[test]
fn nbdcopy_round_trips_256_mib() {
    let cluster = cluster();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = random_bytes(0x5eed_3004, 256 * MIB);
    let src = tmp.path().join("src");
    let back = tmp.path().join("back");
    std::fs::write(&src, &data).expect("write the source file");
    cluster.dog_ok(0, &["vdi", "create", "big", "256M"]);

    let mut copy_in = tool("nbdcopy");
    copy_in
        .arg("--flush")
        .arg(&src)
        .arg(cluster.nbd_uri(0, "big"));
    cluster.tool_ok(copy_in, TOOL_IO_TIMEOUT);

    let mut copy_out = tool("nbdcopy");
    copy_out.arg(cluster.nbd_uri(1, "big")).arg(&back);
    cluster.tool_ok(copy_out, TOOL_IO_TIMEOUT);
    let got = std::fs::read(&back).expect("read the copy");
    assert_same_bytes("nbdcopy out through node 1", &got, &data);
    drop(got);

    assert_same_bytes(
        "dog vdi read through node 2",
        &cluster.read_vdi(2, "big"),
        &data,
    );
    for i in 0..3 {
        cluster.assert_no_panic(i);
    }
}
