//! Bad input to `dog`: it must say what is wrong on stderr and exit non-zero.
//!
//! Acceptance criterion 5: bad sizes (`vdi create x 10Q`, `-1`, empty), bad names (empty,
//! 300 bytes), and an unreachable address (a closed port) each give a clear message on stderr
//! and a non-zero exit; nothing is created by the failed commands.

use std::process::Output;

use sheepfold_tests::dog::{describe_output, dog, stderr_text};
use sheepfold_tests::ports::free_port;
use sheepfold_tests::Cluster;

/// A failed dog run: non-zero exit code (not a signal), a message on stderr, no panic.
fn assert_clean_failure(out: &Output, what: &str) {
    let stderr = stderr_text(out);
    assert!(
        !out.status.success(),
        "{what}: must fail: {}",
        describe_output(out)
    );
    assert!(
        out.status.code().is_some(),
        "{what}: dog was killed by a signal: {}",
        describe_output(out)
    );
    assert!(
        !stderr.trim().is_empty(),
        "{what}: no message on stderr: {}",
        describe_output(out)
    );
    assert!(
        !stderr.contains("panicked"),
        "{what}: dog panicked: {}",
        describe_output(out)
    );
}

#[test]
fn bad_sizes_and_names_are_rejected() {
    let cluster = Cluster::builder().nodes(1).start();
    cluster.format(1);

    let long_name = "a".repeat(300);
    let cases: [(&str, [&str; 4]); 5] = [
        ("size 10Q", ["vdi", "create", "x", "10Q"]),
        ("size -1", ["vdi", "create", "x", "-1"]),
        ("empty size", ["vdi", "create", "x", ""]),
        ("empty name", ["vdi", "create", "", "10M"]),
        ("300-byte name", ["vdi", "create", &long_name, "10M"]),
    ];
    for (what, args) in &cases {
        let out = cluster.dog(0, args);
        assert_clean_failure(&out, what);
    }

    // None of them created anything, and the cluster still takes a good request.
    assert_eq!(cluster.dog_ok(0, &["vdi", "list", "-r"]), "");
    cluster.dog_ok(0, &["vdi", "create", "x", "10M"]);
    let listing = cluster.dog_ok(0, &["vdi", "list", "-r"]);
    assert_eq!(
        listing.lines().count(),
        1,
        "after one good create:\n{listing}"
    );
    assert_eq!(listing.split(' ').nth(1), Some("x"), "{listing}");
}

#[test]
fn unreachable_address_is_reported() {
    // A port nobody listens on (checked free, never handed to a sheep).
    let port = free_port();
    let want = format!("failed to connect to 127.0.0.1:{port}");
    for args in [
        &["node", "list"][..],
        &["vdi", "list"],
        &["cluster", "info"],
        &["vdi", "create", "x", "10M"],
    ] {
        let what = format!("dog {} on closed port {port}", args.join(" "));
        let out = dog(port, args);
        assert_clean_failure(&out, &what);
        // Clients such as OpenStack cinder match this prefix (reference 5.3 / 6.2).
        assert!(
            stderr_text(&out).starts_with(&want),
            "{what}: stderr must start with '{want}': {}",
            describe_output(&out)
        );
    }
}
