//! `dog vdi tree` and `dog vdi list` (plain and `-r`) for snapshots and clones (issue 4,
//! "Done when" 3), compared whole with Sheepdog's golden outputs after Sheepdog's own
//! `_filter_short_date` (every `YYYY-MM-DD HH:MM` becomes `DATE`; the tree's column widths are
//! computed from the real dates first, exactly as in the goldens).
//!
//! - [`rollback_sequence_like_039`]: functional test 039 step by step (writes and pattern
//!   reads through NBD with qemu-io instead of `sheepdog:test`), including the rollback prompt,
//!   the refused rollbacks to snapshot ids 0 and 5, and the vids Sheepdog hands out
//!   (7c2b25..7c2b2e: a working VDI gets a new vid on every snapshot and rollback; deleted vids
//!   are never reused). Copies are 2 (3 nodes) where the golden has 6.
//! - [`two_families_like_017`]: functional test 017's two trees (the write to `test2:1` that
//!   branches from snapshot 1 is done with `dog vdi rollback -s 1`, which sends the same
//!   DEL_VDI + NEW_VDI).
//! - [`clones_snapshot_of_clone_and_clone_of_clone`]: a clone (flag `c`, own tree), a snapshot
//!   of that clone (the clone's inode becomes `s`, its new working VDI is not a clone), and a
//!   clone of that snapshot; Used and Shared per VDI; `list NAME`; after `vdi flatten` the
//!   clone owns everything and loses its `c`.
//!
//! Every extracted date must be the UTC minute of a moment inside the test.

use sheepfold_tests::dog::{dog_with_input, stderr_text, stdout_text, DOG_TIMEOUT};
use sheepfold_tests::snapshots::MIB;
use sheepfold_tests::text::{
    mask_shape, strnumber, unix_now, UtcTime, MINUTE_SHAPE, VDI_LIST_HEADER,
};
use sheepfold_tests::tools::{all_output, qemu_io, tool, TOOL_TIMEOUT};
use sheepfold_tests::Cluster;

/// The rollback confirmation prompt (no newline; 039.out shows the next output right after).
const ROLLBACK_PROMPT: &str =
    "This operation discards any changes made since the previous\nsnapshot was taken.  Continue? [yes/no]: ";

fn cluster() -> Cluster {
    let cluster = Cluster::builder().nodes(3).distinct_zones().start();
    cluster.format(2);
    cluster
}

/// Sheepdog's `_filter_short_date`: every `YYYY-MM-DD HH:MM` becomes `DATE`. Returns the
/// filtered text and the dates found.
fn filter_short_date(text: &str) -> (String, Vec<String>) {
    let mut dates = Vec::new();
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| {
            let mut line = line.to_owned();
            while let Some((masked, date)) = mask_shape(&line, MINUTE_SHAPE, "DATE") {
                line = masked;
                dates.push(date);
            }
            line
        })
        .collect();
    (lines.join("\n"), dates)
}

/// Checks that every date is the UTC minute of a second in `[t0, now]`.
fn assert_dates_within(dates: &[String], t0: i64, what: &str) {
    let t1 = unix_now();
    let allowed: Vec<String> = (t0..=t1)
        .map(|t| UtcTime::from_unix(t).to_minute())
        .collect();
    for d in dates {
        assert!(
            allowed.contains(d),
            "{what}: date {d} is not a minute between unix {t0} and {t1}"
        );
    }
}

/// `dog vdi tree` through `node`, date-filtered and checked against `want`.
fn assert_tree(cluster: &Cluster, node: usize, t0: i64, want: &str, what: &str) {
    let out = cluster.dog_ok(node, &["vdi", "tree"]);
    let (filtered, dates) = filter_short_date(&out);
    assert_eq!(
        filtered, want,
        "{what}: dog vdi tree through node {node}:\n{out}"
    );
    assert_dates_within(&dates, t0, what);
}

/// `dog vdi list [ARGS]` through `node`, date-filtered and checked against `want` (header and
/// rows). Also checks that the raw listing matches `raw` with ctimes replaced by `CTIME`, and
/// that each row's minute is the UTC rendering of its raw ctime.
fn assert_list(
    cluster: &Cluster,
    node: usize,
    t0: i64,
    args: &[&str],
    want: &[&str],
    raw: &[&str],
) {
    let mut cmd = vec!["vdi", "list"];
    cmd.extend_from_slice(args);
    let out = cluster.dog_ok(node, &cmd);
    let (filtered, dates) = filter_short_date(&out);
    let mut want_text = want.join("\n");
    want_text.push('\n');
    assert_eq!(
        filtered,
        want_text,
        "dog vdi list {} through node {node}:\n{out}",
        args.join(" ")
    );
    assert_dates_within(&dates, t0, "vdi list");

    cmd.push("-r");
    let out = cluster.dog_ok(node, &cmd);
    let mut ctimes = Vec::new();
    let masked: Vec<String> = out
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(' ').collect();
            assert!(f.len() == 11, "raw line {l:?}");
            ctimes.push(f[6].parse::<i64>().expect("raw ctime"));
            f[6] = "CTIME";
            f.join(" ")
        })
        .collect();
    assert_eq!(
        masked,
        raw.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "dog vdi list -r {} through node {node}:\n{out}",
        args.join(" ")
    );
    let now = unix_now();
    for c in &ctimes {
        assert!(
            (t0..=now).contains(c),
            "raw ctime {c} outside [{t0}, {now}]"
        );
    }
    let plain_dates: Vec<String> = ctimes
        .iter()
        .map(|&c| UtcTime::from_unix(c).to_minute())
        .collect();
    assert_eq!(dates, plain_dates, "plain dates are the raw ctimes in UTC");
}

/// qemu-io through NBD node `node`: one command, which must report `verb`.
fn qemu_io_ok(cluster: &Cluster, node: usize, export: &str, cmd: &str, verb: &str) {
    let work = tempfile::tempdir().expect("tempdir");
    let mut c = tool("qemu-io");
    if export.contains('@') {
        c.arg("-r"); // snapshots are exported read-only
    }
    c.args(["-f", "raw"])
        .arg(cluster.nbd_uri(node, export))
        .args(["-c", cmd])
        .current_dir(work.path());
    let out = cluster.tool_ok(c, TOOL_TIMEOUT);
    let text = all_output(&out);
    assert!(
        text.contains(verb) && !text.contains("Pattern verification failed"),
        "qemu-io {cmd} on {export} through node {node}: {text}"
    );
}

fn write(cluster: &Cluster, node: usize, pattern: u8) {
    qemu_io_ok(
        cluster,
        node,
        "test",
        &format!("write -P {pattern} 0 512"),
        "wrote 512/512 bytes at offset 0",
    );
}

fn read(cluster: &Cluster, node: usize, pattern: u8) {
    qemu_io_ok(
        cluster,
        node,
        "test",
        &format!("read -P {pattern} 0 512"),
        "read 512/512 bytes at offset 0",
    );
}

/// 039's `echo yes | dog vdi rollback test -s TAG`.
fn rollback_yes(cluster: &Cluster, node: usize, tag: &str) -> std::process::Output {
    dog_with_input(
        cluster.port(node),
        &["vdi", "rollback", "test", "-s", tag],
        b"yes\n",
        DOG_TIMEOUT,
    )
}

/// A plain `dog vdi list` row with its date masked:
/// `"%c %-8s %5d %7s %7s %7s %s  %7x %6s %13s %3u"`, sizes through `strnumber`, copies 2.
fn list_row(flag: char, name: &str, id: u32, sizes: [u64; 3], vid: u32, tag: &str) -> String {
    let [size, used, shared] = sizes.map(strnumber);
    format!("{flag} {name:<8} {id:>5} {size:>7} {used:>7} {shared:>7} DATE  {vid:>7x} {:>6} {tag:>13} {:>3}", 2, 22)
}

/// A row of 039's list: a snapshot `(id, tag)` owning object 0, or the working VDI.
fn row(snap: Option<(u32, &str)>, vid: &str) -> String {
    let vid = u32::from_str_radix(vid, 16).expect("hex vid");
    match snap {
        Some((id, tag)) => list_row('s', "test", id, [4 << 30, 4 * MIB, 0], vid, tag),
        None => list_row(' ', "test", 0, [4 << 30, 0, 4 * MIB], vid, ""),
    }
}

fn raw_row(snap: Option<(u32, &str)>, vid: &str) -> String {
    match snap {
        Some((id, tag)) => format!("s test {id} 4294967296 4194304 0 CTIME {vid} 2 {tag} 22"),
        None => format!("= test 0 4294967296 0 4194304 CTIME {vid} 2  22"),
    }
}

#[test]
fn rollback_sequence_like_039() {
    let cluster = cluster();
    let t0 = unix_now();
    cluster.dog_ok(0, &["vdi", "create", "test", "4G"]);

    write(&cluster, 0, 1);
    cluster.dog_ok(1, &["vdi", "snapshot", "test", "-s", "snap1"]);
    write(&cluster, 2, 2);

    let out = rollback_yes(&cluster, 0, "snap1");
    assert!(out.status.success(), "rollback: {}", stderr_text(&out));
    assert_eq!(stdout_text(&out), ROLLBACK_PROMPT, "the rollback prompt");
    read(&cluster, 1, 1);
    let snap1 = row(Some((1, "snap1")), "7c2b25");
    let snap2 = row(Some((2, "snap2")), "7c2b27");
    let (rsnap1, rsnap2) = (
        raw_row(Some((1, "snap1")), "7c2b25"),
        raw_row(Some((2, "snap2")), "7c2b27"),
    );
    assert_tree(
        &cluster,
        2,
        t0,
        "test---[DATE]---(you are here)\n",
        "039 #1",
    );
    assert_list(
        &cluster,
        0,
        t0,
        &[],
        &[VDI_LIST_HEADER, &snap1, &row(None, "7c2b27")],
        &[&rsnap1, &raw_row(None, "7c2b27")],
    );

    write(&cluster, 1, 2);
    cluster.dog_ok(2, &["vdi", "snapshot", "test", "-s", "snap2"]);
    write(&cluster, 0, 3);
    let out = rollback_yes(&cluster, 1, "snap1");
    assert!(out.status.success(), "rollback: {}", stderr_text(&out));
    read(&cluster, 2, 1);
    let branch = "test---[DATE]-+-[DATE]\n                          `-(you are here)\n";
    assert_tree(&cluster, 0, t0, branch, "039 #2");
    assert_list(
        &cluster,
        1,
        t0,
        &[],
        &[VDI_LIST_HEADER, &snap1, &snap2, &row(None, "7c2b29")],
        &[&rsnap1, &rsnap2, &raw_row(None, "7c2b29")],
    );

    let out = rollback_yes(&cluster, 2, "snap2");
    assert!(out.status.success(), "rollback: {}", stderr_text(&out));
    read(&cluster, 0, 2);
    assert_tree(
        &cluster,
        1,
        t0,
        "test---[DATE]---[DATE]---(you are here)\n",
        "039 #3",
    );
    assert_list(
        &cluster,
        2,
        t0,
        &[],
        &[VDI_LIST_HEADER, &snap1, &snap2, &row(None, "7c2b2a")],
        &[&rsnap1, &rsnap2, &raw_row(None, "7c2b2a")],
    );

    let out = rollback_yes(&cluster, 0, "snap1");
    assert!(out.status.success(), "rollback: {}", stderr_text(&out));
    read(&cluster, 1, 1);
    assert_tree(&cluster, 2, t0, branch, "039 #4");
    assert_list(
        &cluster,
        0,
        t0,
        &[],
        &[VDI_LIST_HEADER, &snap1, &snap2, &row(None, "7c2b2b")],
        &[&rsnap1, &rsnap2, &raw_row(None, "7c2b2b")],
    );

    write(&cluster, 2, 3);
    cluster.dog_ok(0, &["vdi", "snapshot", "test", "-s", "snap3"]);
    write(&cluster, 1, 4);
    cluster.dog_ok(2, &["vdi", "snapshot", "test", "-s", "snap4"]);

    // These fail: the snapshot ids don't belong to snapshots.
    let out = rollback_yes(&cluster, 0, "0");
    assert!(!out.status.success(), "rollback -s 0 must fail");
    assert_eq!(
        stderr_text(&out),
        "The snapshot id must be larger than zero\n",
        "rollback -s 0"
    );
    let out = rollback_yes(&cluster, 1, "5");
    assert!(!out.status.success(), "rollback -s 5 must fail");
    assert!(
        stderr_text(&out).ends_with(
            "Failed to open VDI test (snapshot id: 5 snapshot tag: ): Failed to find requested tag\n"
        ),
        "rollback -s 5: {}",
        stderr_text(&out)
    );

    let out = rollback_yes(&cluster, 2, "snap3");
    assert!(out.status.success(), "rollback: {}", stderr_text(&out));
    read(&cluster, 0, 3);
    assert_tree(
        &cluster,
        1,
        t0,
        "test---[DATE]-+-[DATE]\n\
         \x20                         `-[DATE]-+-[DATE]\n\
         \x20                                              `-(you are here)\n",
        "039 #5",
    );
    let snap3 = row(Some((3, "snap3")), "7c2b2b");
    let snap4 = row(Some((4, "snap4")), "7c2b2c");
    let (rsnap3, rsnap4) = (
        raw_row(Some((3, "snap3")), "7c2b2b"),
        raw_row(Some((4, "snap4")), "7c2b2c"),
    );
    assert_list(
        &cluster,
        2,
        t0,
        &[],
        &[
            VDI_LIST_HEADER,
            &snap1,
            &snap2,
            &snap3,
            &snap4,
            &row(None, "7c2b2e"),
        ],
        &[&rsnap1, &rsnap2, &rsnap3, &rsnap4, &raw_row(None, "7c2b2e")],
    );
    // The snapshots still hold what was written before each of them.
    for (tag, pattern) in [("snap1", 1), ("snap2", 2), ("snap3", 3), ("snap4", 4)] {
        qemu_io_ok(
            &cluster,
            pattern as usize % 3,
            &format!("test@{tag}"),
            &format!("read -P {pattern} 0 512"),
            "read 512/512 bytes",
        );
    }
    for i in 0..3 {
        cluster.assert_no_panic(i);
    }
}

#[test]
fn two_families_like_017() {
    let cluster = cluster();
    let t0 = unix_now();
    cluster.dog_ok(0, &["vdi", "create", "test", "4G"]);
    for (k, tag) in ["tag1", "tag2", "tag3"].into_iter().enumerate() {
        cluster.dog_ok(k % 3, &["vdi", "snapshot", "-s", tag, "test"]);
    }
    cluster.dog_ok(1, &["vdi", "create", "test2", "4G"]);
    cluster.dog_ok(2, &["vdi", "snapshot", "-s", "tag1", "test2"]);
    cluster.dog_ok(0, &["vdi", "snapshot", "-s", "tag2", "test2"]);
    // 017 writes to sheepdog:test2:1, which branches from snapshot 1 (DEL_VDI + NEW_VDI).
    cluster.dog_ok(1, &["vdi", "rollback", "-f", "-s", "1", "test2"]);
    cluster.dog_ok(2, &["vdi", "snapshot", "-s", "tag3", "test2"]);
    let want = "test---[DATE]---[DATE]---[DATE]---(you are here)\n\
                test2---[DATE]-+-[DATE]\n\
                \x20                          `-[DATE]---(you are here)\n";
    for node in 0..3 {
        assert_tree(&cluster, node, t0, want, "017");
    }
}

#[test]
fn clones_snapshot_of_clone_and_clone_of_clone() {
    let cluster = cluster();
    let work = tempfile::tempdir().expect("tempdir");
    let t0 = unix_now();
    // Names with known hashes: test 7c2b25, alpha ed202b, test1 fd32fc.
    cluster.dog_ok(0, &["vdi", "create", "test", "100M"]);
    let mut c = qemu_io(
        &cluster.nbd_uri(0, "test"),
        &[
            "write -P 0x11 0 4M".to_owned(),
            "write -P 0x12 4M 4096".to_owned(),
        ],
    );
    c.current_dir(work.path());
    cluster.tool_ok(c, TOOL_TIMEOUT);
    cluster.dog_ok(1, &["vdi", "snapshot", "-s", "snap1", "test"]);
    cluster.dog_ok(2, &["vdi", "clone", "-s", "snap1", "test", "alpha"]);

    // Right after the clone: 'c', everything shared.
    let size = (100 * MIB).to_string();
    let fresh_clone = format!("c alpha 0 {size} 0 8388608 CTIME ed202b 2  22");
    assert_list(
        &cluster,
        0,
        t0,
        &["alpha"],
        &[
            VDI_LIST_HEADER,
            &list_row('c', "alpha", 0, [100 * MIB, 0, 8 * MIB], 0xed202b, ""),
        ],
        &[&fresh_clone],
    );
    assert_tree(
        &cluster,
        1,
        t0,
        "test---[DATE]---(you are here)\nalpha---(you are here)\n",
        "a clone has a tree of its own",
    );

    // The clone's writes: copy-on-write of object 0, a new object 2.
    let mut c = qemu_io(
        &cluster.nbd_uri(1, "alpha"),
        &[
            "write -P 0x21 100 100".to_owned(),
            "write -P 0x22 8M 512".to_owned(),
        ],
    );
    c.current_dir(work.path());
    cluster.tool_ok(c, TOOL_TIMEOUT);
    // A snapshot of the clone, and a clone of that snapshot.
    cluster.dog_ok(2, &["vdi", "snapshot", "-s", "asnap", "alpha"]);
    cluster.dog_ok(0, &["vdi", "clone", "-s", "asnap", "alpha", "test1"]);

    let m = 100 * MIB;
    let plain = [
        VDI_LIST_HEADER.to_owned(),
        list_row('s', "test", 1, [m, 8 * MIB, 0], 0x7c2b25, "snap1"),
        list_row(' ', "test", 0, [m, 0, 8 * MIB], 0x7c2b26, ""),
        list_row('s', "alpha", 1, [m, 8 * MIB, 4 * MIB], 0xed202b, "asnap"),
        list_row(' ', "alpha", 0, [m, 0, 12 * MIB], 0xed202c, ""),
        list_row('c', "test1", 0, [m, 0, 12 * MIB], 0xfd32fc, ""),
    ];
    let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
    let raw = [
        format!("s test 1 {size} 8388608 0 CTIME 7c2b25 2 snap1 22"),
        format!("= test 0 {size} 0 8388608 CTIME 7c2b26 2  22"),
        format!("s alpha 1 {size} 8388608 4194304 CTIME ed202b 2 asnap 22"),
        format!("= alpha 0 {size} 0 12582912 CTIME ed202c 2  22"),
        format!("c test1 0 {size} 0 12582912 CTIME fd32fc 2  22"),
    ];
    let raw: Vec<&str> = raw.iter().map(String::as_str).collect();
    for node in 0..3 {
        assert_list(&cluster, node, t0, &[], &plain, &raw);
    }
    assert_list(
        &cluster,
        1,
        t0,
        &["alpha"],
        &[VDI_LIST_HEADER, plain[3], plain[4]],
        &raw[2..4],
    );
    assert_list(
        &cluster,
        2,
        t0,
        &["test1"],
        &[VDI_LIST_HEADER, plain[5]],
        &raw[4..],
    );
    assert_tree(
        &cluster,
        0,
        t0,
        "test---[DATE]---(you are here)\nalpha---[DATE]---(you are here)\ntest1---(you are here)\n",
        "snapshot of a clone, clone of a clone",
    );

    // Flatten: test1 owns its three objects and is no longer a clone.
    cluster.dog_ok(1, &["vdi", "flatten", "test1"]);
    assert_list(
        &cluster,
        2,
        t0,
        &["test1"],
        &[
            VDI_LIST_HEADER,
            &list_row(' ', "test1", 0, [100 * MIB, 12 * MIB, 0], 0xfd32fc, ""),
        ],
        &[&format!("= test1 0 {size} 12582912 0 CTIME fd32fc 2  22")],
    );
    assert_tree(
        &cluster,
        0,
        t0,
        "test---[DATE]---(you are here)\nalpha---[DATE]---(you are here)\ntest1---(you are here)\n",
        "after flatten",
    );
    // Its data is what the snapshot of the clone held.
    let mut c = qemu_io(
        &cluster.nbd_uri(2, "test1"),
        &[
            "read -P 0x11 0 100".to_owned(),
            "read -P 0x21 100 100".to_owned(),
            "read -P 0x11 200 4194104".to_owned(),
            "read -P 0x12 4M 4096".to_owned(),
            "read -P 0 4198400 4190208".to_owned(),
            "read -P 0x22 8M 512".to_owned(),
        ],
    );
    c.current_dir(work.path());
    let out = cluster.tool_ok(c, TOOL_TIMEOUT);
    let text = all_output(&out);
    assert_eq!(
        text.matches("read ").count(),
        6,
        "pattern reads of the flattened clone: {text}"
    );
    assert!(!text.contains("verification failed"), "{text}");
}

#[test]
fn list_rows_match_the_039_golden() {
    // 039.out rows (copies 6 there, 2 here), after _filter_short_date.
    let golden = [
        "s test         1  4.0 GB  4.0 MB  0.0 MB DATE   7c2b25      6         snap1  22",
        "  test         0  4.0 GB  0.0 MB  4.0 MB DATE   7c2b27      6                22",
    ];
    let ours = [row(Some((1, "snap1")), "7c2b25"), row(None, "7c2b27")];
    for (g, o) in golden.iter().zip(&ours) {
        assert_eq!(g.replace("      6 ", "      2 "), *o);
    }
    let (text, dates) = filter_short_date("a---[2018-01-01 00:00]-+-[2018-01-02 03:04]\n");
    assert_eq!(text, "a---[DATE]-+-[DATE]\n");
    assert_eq!(dates, ["2018-01-01 00:00", "2018-01-02 03:04"]);
}
