//! Two clients create the same VDI name through two different nodes at the same moment.
//!
//! Acceptance criterion 3: 50 rounds with 50 names; in each round two `dog vdi create`
//! processes start together, one per node. Exactly one succeeds; the other fails with stderr
//! ending in `VDI exists already`. Afterwards both nodes list each name exactly once.

use std::collections::BTreeMap;
use std::process::Output;
use std::sync::Barrier;
use std::thread;

use sheepfold_tests::dog::{describe_output, dog_command, DOG_TIMEOUT};
use sheepfold_tests::process::run_with_timeout;
use sheepfold_tests::Cluster;

const ROUNDS: usize = 50;

/// Starts `dog vdi create NAME 4M` against both ports together (released by one barrier)
/// and returns both outputs, in port order.
fn create_concurrently(ports: [u16; 2], name: &str) -> [Output; 2] {
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        let handles = ports.map(|port| {
            let cmd = dog_command(port, &["vdi", "create", name, "4M"]);
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                run_with_timeout(cmd, None, DOG_TIMEOUT)
            })
        });
        handles.map(|h| h.join().expect("dog runner thread"))
    })
}

#[test]
fn same_name_from_two_nodes_exactly_one_wins() {
    let cluster = Cluster::builder().nodes(2).distinct_zones().start();
    cluster.format(2);
    let ports = [cluster.port(0), cluster.port(1)];

    let mut wins = [0usize; 2];
    for round in 0..ROUNDS {
        let name = format!("race{round:02}");
        let outs = create_concurrently(ports, &name);
        let ok: Vec<bool> = outs.iter().map(|o| o.status.success()).collect();
        assert_eq!(
            ok.iter().filter(|&&b| b).count(),
            1,
            "round {round} ({name}): want exactly one success\n[node 0] {}\n[node 1] {}",
            describe_output(&outs[0]),
            describe_output(&outs[1])
        );
        let winner = ok.iter().position(|&b| b).expect("one winner");
        wins[winner] += 1;
        let loser = &outs[1 - winner];
        let stderr = String::from_utf8_lossy(&loser.stderr);
        assert!(
            stderr.trim_end().ends_with("VDI exists already"),
            "round {round} ({name}): the loser (node {}) must fail with 'VDI exists already': {}",
            1 - winner,
            describe_output(loser)
        );
    }
    eprintln!("wins per node: {wins:?}");

    for on in 0..2 {
        let listing = cluster.dog_ok(on, &["vdi", "list", "-r"]);
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for line in listing.lines() {
            let name = line.split(' ').nth(1).unwrap_or_default().to_owned();
            *counts.entry(name).or_insert(0) += 1;
        }
        let want: BTreeMap<String, usize> =
            (0..ROUNDS).map(|r| (format!("race{r:02}"), 1)).collect();
        assert_eq!(counts, want, "vdi list -r on node {on}:\n{listing}");
    }
}
