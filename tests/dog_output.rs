//! Exact text of `dog node list`, `dog vdi list` and `dog cluster info` (reference 5.3).
//!
//! Acceptance criterion 6. Rows are rebuilt from Sheepdog's printf formats and compared whole.
//! Times are masked, then checked: vdi list's `%Y-%m-%d %H:%M` must be the UTC rendering of
//! the raw listing's ctime, and every ctime must fall inside the test's own time window.
//! dog runs with `TZ=UTC`.

use std::collections::BTreeSet;
use std::time::Duration;

use sheepfold_tests::data::random_bytes;
use sheepfold_tests::text::{
    epoch_node, mask_shape, node_list_raw_row, node_list_row, sd_hash_vdi, strnumber, unix_now,
    UtcTime, DEFAULT_VNODES, EPOCH_HEADER, LOCALHOST_ZONE, MINUTE_SHAPE, NODE_LIST_HEADER,
    SECOND_SHAPE, STATUS_RUNNING, VDI_LIST_HEADER,
};
use sheepfold_tests::wait::poll_until;
use sheepfold_tests::Cluster;

const MIB: u64 = 1 << 20;

#[test]
fn node_list_plain_and_raw() {
    // Default zones: every node advertises 127.0.0.1, hence zone 16777343.
    let cluster = Cluster::builder().nodes(3).start();
    let mut ports: Vec<u16> = (0..3).map(|i| cluster.port(i)).collect();
    ports.sort();

    let mut plain = vec![NODE_LIST_HEADER.to_owned()];
    plain.extend(
        ports
            .iter()
            .enumerate()
            .map(|(id, &p)| node_list_row(id, p, DEFAULT_VNODES, LOCALHOST_ZONE)),
    );
    let raw: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(id, &p)| node_list_raw_row(id, p, DEFAULT_VNODES, LOCALHOST_ZONE))
        .collect();

    for on in 0..3 {
        let got = cluster.dog_ok(on, &["node", "list"]);
        assert_eq!(got.lines().collect::<Vec<_>>(), plain, "node {on}:\n{got}");
        assert!(got.ends_with('\n'), "node {on}: missing final newline");
        let got = cluster.dog_ok(on, &["node", "list", "-r"]);
        assert_eq!(got.lines().collect::<Vec<_>>(), raw, "node {on}:\n{got}");
    }
}

/// One VDI the listing test creates.
struct Vdi {
    name: &'static str,
    size: u64,
    used: u64,
    copies: &'static str,
}

#[test]
fn vdi_list_plain_and_raw() {
    let cluster = Cluster::builder().nodes(2).distinct_zones().start();
    cluster.format(2);

    // Listed in vid order: test 7c2b25, alpha ed202b, test1 fd32fc (names' hashes).
    let vdis = [
        Vdi {
            name: "test",
            size: 10 * MIB,
            used: 4 * MIB,
            copies: "2",
        },
        Vdi {
            name: "alpha",
            size: 1024 * MIB,
            used: 12 * MIB,
            copies: "2",
        },
        Vdi {
            name: "test1",
            size: 100 * MIB,
            used: 0,
            copies: "1",
        },
    ];
    let t0 = unix_now();
    cluster.dog_ok(0, &["vdi", "create", "alpha", "1G"]);
    cluster.dog_ok(1, &["vdi", "create", "test", "10M"]);
    cluster.dog_ok(0, &["vdi", "create", "test1", "100M", "-c", "1"]);
    cluster.write_vdi(1, "test", 0, &random_bytes(0x5eed_0601, 4096));
    cluster.write_vdi(0, "alpha", 0, &random_bytes(0x5eed_0602, 12 << 20));
    let t1 = unix_now();

    // Raw: "= NAME 0 SIZE USED SHARED CTIME VID COPIES TAG BSS", tag empty -> double space.
    let raw = cluster.dog_ok(0, &["vdi", "list", "-r"]);
    let raw_lines: Vec<&str> = raw.lines().collect();
    assert_eq!(raw_lines.len(), vdis.len(), "vdi list -r:\n{raw}");
    let mut ctimes = Vec::new();
    for (line, v) in raw_lines.iter().zip(&vdis) {
        let mut fields: Vec<&str> = line.split(' ').collect();
        assert!(fields.len() > 6, "raw line '{line}'");
        let ctime: i64 = fields[6]
            .parse()
            .unwrap_or_else(|_| panic!("ctime field of '{line}'"));
        assert!(
            (t0 - 1..=t1 + 1).contains(&ctime),
            "ctime {ctime} of '{line}' outside [{t0}, {t1}]"
        );
        ctimes.push(ctime);
        fields[6] = "CTIME";
        let want = format!(
            "= {} 0 {} {} 0 CTIME {:x} {}  22",
            v.name,
            v.size,
            v.used,
            sd_hash_vdi(v.name),
            v.copies
        );
        assert_eq!(fields.join(" "), want, "vdi list -r:\n{raw}");
    }

    // Plain: "%c %-8s %5d %7s %7s %7s %s  %7x %6s %13s %3u".
    let plain_row = |v: &Vdi| {
        format!(
            "  {:<8} {:>5} {:>7} {:>7} {:>7} DATE  {:>7x} {:>6} {:>13} {:>3}",
            v.name,
            0,
            strnumber(v.size),
            strnumber(v.used),
            strnumber(0),
            sd_hash_vdi(v.name),
            v.copies,
            "",
            22
        )
    };
    for on in 0..2 {
        let plain = cluster.dog_ok(on, &["vdi", "list"]);
        let lines: Vec<&str> = plain.lines().collect();
        assert_eq!(lines.len(), 1 + vdis.len(), "node {on}: vdi list:\n{plain}");
        assert_eq!(lines[0], VDI_LIST_HEADER, "node {on}: header");
        for ((line, v), ctime) in lines[1..].iter().zip(&vdis).zip(&ctimes) {
            let (masked, time) = mask_shape(line, MINUTE_SHAPE, "DATE")
                .unwrap_or_else(|| panic!("node {on}: no creation time in '{line}'"));
            assert_eq!(masked, plain_row(v), "node {on}: vdi list:\n{plain}");
            assert_eq!(
                time,
                UtcTime::from_unix(*ctime).to_minute(),
                "node {on}: creation time of {} (TZ=UTC)",
                v.name
            );
        }
        // The raw listing is the same from every node.
        assert_eq!(cluster.dog_ok(on, &["vdi", "list", "-r"]), raw, "node {on}");
    }

    // A name argument selects exactly that name ("test", not "test1").
    let only = cluster.dog_ok(0, &["vdi", "list", "test"]);
    let only: Vec<&str> = only.lines().collect();
    assert_eq!(only.len(), 2, "vdi list test: {only:?}");
    assert_eq!(only[0], VDI_LIST_HEADER);
    let (masked, _) = mask_shape(only[1], MINUTE_SHAPE, "DATE").expect("a creation time");
    assert_eq!(masked, plain_row(&vdis[0]));
    assert_eq!(
        cluster.dog_ok(0, &["vdi", "list", "test", "-r"]),
        format!("{}\n", raw_lines[0])
    );
    // No match: only the header, and nothing at all with -r.
    assert_eq!(
        cluster.dog_ok(0, &["vdi", "list", "nosuch"]),
        format!("{VDI_LIST_HEADER}\n")
    );
    assert_eq!(cluster.dog_ok(0, &["vdi", "list", "nosuch", "-r"]), "");
}

#[test]
fn cluster_info_before_format() {
    let cluster = Cluster::builder().nodes(1).start();
    let plain = cluster.dog(0, &["cluster", "info"]);
    let plain = String::from_utf8_lossy(&plain.stdout);
    assert_eq!(
        plain.lines().next(),
        Some("Cluster status: Waiting for cluster to be formatted"),
        "cluster info:\n{plain}"
    );
    let raw = cluster.dog(0, &["cluster", "info", "-r"]);
    let raw = String::from_utf8_lossy(&raw.stdout);
    assert_eq!(
        raw.lines().next(),
        Some("Waiting for cluster to be formatted"),
        "cluster info -r:\n{raw}"
    );
}

/// One parsed epoch line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Epoch {
    /// Unix seconds (raw) or `%Y-%m-%d %H:%M:%S` (plain).
    time: String,
    version: u32,
    nodes: Vec<String>,
}

/// Parses `TIME VERSION [a, b, c]` and checks that re-rendering it with `render` gives
/// back the very same line (so spacing is exact).
fn parse_epoch(line: &str, time_len: usize, render: impl Fn(&Epoch) -> String) -> Epoch {
    fn bad<T>(line: &str) -> T {
        panic!("malformed epoch line '{line}'")
    }
    let (time, rest) = line.split_at_checked(time_len).unwrap_or_else(|| bad(line));
    let (version, list) = rest.split_once(" [").unwrap_or_else(|| bad(line));
    let list = list.strip_suffix(']').unwrap_or_else(|| bad(line));
    let epoch = Epoch {
        time: time.to_owned(),
        version: version.trim_start().parse().unwrap_or_else(|_| bad(line)),
        nodes: list.split(", ").map(str::to_owned).collect(),
    };
    assert_eq!(render(&epoch), line, "epoch line spacing");
    epoch
}

/// `dog cluster info` (plain and raw) on node `on`: checks the whole structure and returns
/// the epochs (newest first) and the plain text's epoch lines.
fn cluster_info(cluster: &Cluster, on: usize, since: i64) -> (Vec<Epoch>, Vec<String>) {
    let now = unix_now();
    let plain = cluster.dog_ok(on, &["cluster", "info"]);
    let lines: Vec<&str> = plain.lines().collect();
    assert!(lines.len() >= 6, "cluster info:\n{plain}");
    assert_eq!(lines[0], STATUS_RUNNING, "cluster info:\n{plain}");
    assert_eq!(lines[1], "", "cluster info:\n{plain}");
    let created = lines[2]
        .strip_prefix("Cluster created at ")
        .unwrap_or_else(|| panic!("line 3 of cluster info:\n{plain}"));
    let ctimes: Vec<String> = (since - 1..=now + 1)
        .map(|t| UtcTime::from_unix(t).to_ctime())
        .collect();
    assert!(
        ctimes.iter().any(|c| c == created),
        "creation time '{created}' is no ctime(3) UTC rendering of [{since}, {now}]"
    );
    assert_eq!(lines[3], "", "cluster info:\n{plain}");
    assert_eq!(lines[4], EPOCH_HEADER, "cluster info:\n{plain}");
    let epochs: Vec<Epoch> = lines[5..]
        .iter()
        .map(|l| {
            parse_epoch(l, SECOND_SHAPE.len(), |e| {
                format!("{} {:6} [{}]", e.time, e.version, e.nodes.join(", "))
            })
        })
        .collect();
    let (lo, hi) = (
        UtcTime::from_unix(since - 1).to_second(),
        UtcTime::from_unix(now + 1).to_second(),
    );
    let known: BTreeSet<String> = (0..cluster.len())
        .map(|i| epoch_node(cluster.port(i), DEFAULT_VNODES))
        .collect();
    for (k, e) in epochs.iter().enumerate() {
        assert!(
            mask_shape(&e.time, SECOND_SHAPE, "").is_some() && lo <= e.time && e.time <= hi,
            "epoch time '{}' outside [{lo}, {hi}]:\n{plain}",
            e.time
        );
        assert!(
            e.nodes.iter().all(|n| known.contains(n)),
            "unknown node in epoch {}:\n{plain}",
            e.version
        );
        let mut sorted = e.nodes.clone();
        sorted.sort_by_key(|n| n.split(':').nth(1).and_then(|p| p.parse::<u16>().ok()));
        sorted.dedup();
        assert_eq!(sorted, e.nodes, "epoch nodes not sorted by port:\n{plain}");
        if let Some(next) = epochs.get(k + 1) {
            assert_eq!(e.version, next.version + 1, "versions:\n{plain}");
            assert!(e.time >= next.time, "times not newest first:\n{plain}");
        }
    }
    assert!(epochs.last().is_some_and(|e| e.version >= 1));

    let raw = cluster.dog_ok(on, &["cluster", "info", "-r"]);
    let raw_lines: Vec<&str> = raw.lines().collect();
    assert!(raw_lines.len() >= 3, "cluster info -r:\n{raw}");
    assert_eq!(raw_lines[0], "running, auto-recovery enabled", "-r:\n{raw}");
    assert_eq!(raw_lines[1], "", "cluster info -r:\n{raw}");
    let raw_epochs: Vec<Epoch> = raw_lines[2..]
        .iter()
        .map(|l| {
            let time_len = l.find(' ').unwrap_or(0);
            parse_epoch(l, time_len, |e| {
                format!("{} {} [{}]", e.time, e.version, e.nodes.join(", "))
            })
        })
        .collect();
    let as_plain: Vec<Epoch> = raw_epochs
        .iter()
        .map(|e| Epoch {
            time: UtcTime::from_unix(e.time.parse().expect("raw epoch time")).to_second(),
            ..e.clone()
        })
        .collect();
    // The raw listing was taken after the plain one, so a view change in between may have put
    // newer epochs on top; everything the plain listing showed must follow them unchanged.
    assert!(
        as_plain.len() >= epochs.len()
            && as_plain[as_plain.len() - epochs.len()..] == epochs[..]
            && as_plain
                .windows(2)
                .all(|w| w[0].version == w[1].version + 1),
        "raw vs plain epochs:\n{raw}\n{plain}"
    );
    (epochs, lines[5..].iter().map(|s| s.to_string()).collect())
}

/// The expected node list of an epoch line holding `members`.
fn epoch_nodes(cluster: &Cluster, members: &[usize]) -> Vec<String> {
    let mut ports: Vec<u16> = members.iter().map(|&i| cluster.port(i)).collect();
    ports.sort();
    ports
        .iter()
        .map(|&p| epoch_node(p, DEFAULT_VNODES))
        .collect()
}

/// Waits until node `on`'s newest epoch is newer than `after`, then checks that it is exactly
/// one newer, lists `members`, and that the older lines are unchanged.
fn expect_next_epoch(
    cluster: &Cluster,
    on: usize,
    since: i64,
    after: &(Vec<Epoch>, Vec<String>),
    members: &[usize],
) -> (Vec<Epoch>, Vec<String>) {
    let old_top = after.0[0].version;
    let now = poll_until("a new epoch", Duration::from_secs(15), || {
        let info = cluster_info(cluster, on, since);
        if info.0[0].version > old_top {
            Ok(info)
        } else {
            Err(format!("top epoch still {old_top}"))
        }
    });
    let lines = format!(
        "epoch lines before:\n{}\nafter:\n{}",
        after.1.join("\n"),
        now.1.join("\n")
    );
    assert_eq!(
        now.0[0].version,
        old_top + 1,
        "one view change, one epoch; {lines}"
    );
    assert_eq!(now.0[0].nodes, epoch_nodes(cluster, members), "{lines}");
    assert_eq!(
        now.1[1..],
        after.1[..],
        "older epoch lines must not change; {lines}"
    );
    now
}

#[test]
fn cluster_info_plain_and_raw() {
    let since = unix_now();
    let mut cluster = Cluster::builder().nodes(3).start();
    cluster.format(2);

    let first = cluster_info(&cluster, 0, since);
    assert_eq!(
        first.0[0].nodes,
        epoch_nodes(&cluster, &[0, 1, 2]),
        "newest epoch lists all 3 nodes; epoch lines:\n{}",
        first.1.join("\n")
    );

    // A fourth node joins: one more epoch on top, history unchanged.
    let added = cluster.add_node();
    let second = expect_next_epoch(&cluster, 0, since, &first, &[0, 1, 2, added]);

    // A node dies: the same again.
    cluster.kill9(1);
    cluster.wait_for_view(&[0, 2, added], Duration::from_secs(15));
    expect_next_epoch(&cluster, 0, since, &second, &[0, 2, added]);
}
