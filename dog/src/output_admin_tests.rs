//! Golden-output tests for the operator formatters (reference §5.3).

use super::*;
use qemu_proto::NodeId;

const MB: u64 = 1024 * 1024;

fn node(port: u16, vnodes: u16, zone: u32) -> SdNode {
    SdNode {
        nid: NodeId::new("127.0.0.1".parse().unwrap(), port),
        nr_vnodes: vnodes,
        zone,
        space: 0,
    }
}

fn state(in_recovery: bool, finished: u64, total: u64) -> RecoveryState {
    RecoveryState {
        in_recovery,
        state: qemu_proto::recovery::RW_RECOVER_OBJ,
        nr_finished: finished,
        nr_total: total,
    }
}

#[test]
fn recovery_info_plain() {
    let mut out = String::from(recovery_info_header(false));
    out.push_str(&recovery_info_row(
        0,
        &node(7000, 128, 0),
        &state(false, 0, 0),
        false,
    ));
    out.push_str(&recovery_info_row(
        1,
        &node(7001, 128, 16_777_343),
        &state(true, 1, 3),
        false,
    ));
    out.push_str(&recovery_info_row(
        2,
        &node(7002, 64, 2),
        &state(true, 40, 40),
        false,
    ));
    assert_eq!(
        out,
        "Nodes In Recovery:\n\
         \x20 Id   Host:Port         V-Nodes       Zone       Progress\n\
         \x20  1   127.0.0.1:7001        128   16777343       33.3%\n\
         \x20  2   127.0.0.1:7002         64          2      100.0%\n"
    );
}

/// The harness's `_wait_for_sheep_recovery` counts lines: with no node in
/// recovery the plain output is exactly the two header lines.
#[test]
fn recovery_info_idle_is_two_lines() {
    let mut out = String::from(recovery_info_header(false));
    for i in 0..3 {
        out.push_str(&recovery_info_row(
            i,
            &node(7000 + i as u16, 128, 0),
            &state(false, 5, 9),
            false,
        ));
    }
    assert_eq!(out.lines().count(), 2);
}

#[test]
fn recovery_info_raw() {
    assert_eq!(recovery_info_header(true), "");
    assert_eq!(
        recovery_info_row(
            3,
            &node(7003, 128, 7),
            &state(true, 12, 0x1_0000_0000),
            true
        ),
        "3 127.0.0.1:7003 128 7 12 4294967296\n"
    );
    assert_eq!(
        recovery_info_row(3, &node(7003, 128, 7), &state(false, 1, 2), true),
        ""
    );
}

#[test]
fn recovery_info_edge_values() {
    // A total of 0 (lists being gathered) prints 0.0, not C's nan.
    assert_eq!(
        recovery_info_row(0, &node(7000, 128, 0), &state(true, 0, 0), false),
        "   0   127.0.0.1:7000        128          0        0.0%\n"
    );
    // dog prints the zone with %d.
    assert_eq!(
        recovery_info_row(0, &node(7000, 128, 0xffff_fffe), &state(true, 1, 8), true),
        "0 127.0.0.1:7000 128 -2 1 8\n"
    );
    // A host longer than 20 columns pushes the rest right, as printf does.
    let mut n = node(7000, 128, 1);
    n.nid = NodeId::new("fd00:1234:5678::1".parse().unwrap(), 17000);
    assert_eq!(
        recovery_info_row(10, &n, &state(true, 2, 3), false),
        "  10   fd00:1234:5678::1:17000  128          1       66.7%\n"
    );
}

#[test]
fn recovery_stat_plain_and_raw() {
    let stats = RecoveryStats {
        objects_received: 12,
        bytes_received: 48 * MB,
        bytes_sent: 0,
    };
    let mut out = String::from(recovery_stat_header(false));
    out.push_str(&recovery_stat_row(0, &node(7000, 128, 0), &stats, false));
    let big = RecoveryStats {
        objects_received: 1_234_567,
        bytes_received: 5 * 1024 * 1024 * MB,
        bytes_sent: 4 * MB,
    };
    out.push_str(&recovery_stat_row(1, &node(7001, 128, 0), &big, false));
    assert_eq!(
        out,
        "  Id   Host:Port              Objects  Received      Sent\n\
         \x20  0   127.0.0.1:7000              12     48 MB    0.0 MB\n\
         \x20  1   127.0.0.1:7001         1234567    5.0 TB    4.0 MB\n"
    );
    assert_eq!(recovery_stat_header(true), "");
    assert_eq!(
        recovery_stat_row(0, &node(7000, 128, 0), &stats, true),
        "0 127.0.0.1:7000 12 50331648 0\n"
    );
}

#[test]
fn throttle_text() {
    assert_eq!(
        throttle(&RecoveryThrottling::new(4, 1000)),
        "max (4), interval (1000)\n"
    );
    assert_eq!(
        throttle(&RecoveryThrottling::new(0, 0)),
        "max (0), interval (0)\n"
    );
}

#[test]
fn cluster_recover_text() {
    assert_eq!(cluster_recover(true), "Cluster recovery: enable\n");
    assert_eq!(cluster_recover(false), "Cluster recovery: disable\n");
}

#[test]
fn vdi_check_text() {
    let fixed = [0x007c_2b25_0000_0001, 0x807c_2b25_0000_0000];
    assert_eq!(
        vdi_check("test", &fixed, false),
        "fixed replica 007c2b2500000001\nfixed replica 807c2b2500000000\n\
         finish check&repair test\n"
    );
    assert_eq!(vdi_check("test", &[], false), "finish check&repair test\n");
    assert_eq!(
        vdi_check("test", &[], true),
        "test is fine, no object is missing.\n"
    );
    assert_eq!(
        vdi_check("test", &fixed[..1], true),
        "fixed replica 007c2b2500000001\nfinish check&repair test\n"
    );
}

#[test]
fn cluster_check_headers() {
    let mut v = InodeHeader {
        name: "alpha".into(),
        snap_id: 2,
        ..Default::default()
    };
    assert_eq!(cluster_check_header(&v), "fix vdi alpha\n");
    v.snap_ctime = 1;
    v.snap_id = 1;
    v.tag = "gold".into();
    assert_eq!(
        cluster_check_header(&v),
        "fix snapshot alpha (id: 1, tag: \"gold\")\n"
    );
    v.tag.clear();
    assert_eq!(
        cluster_check_header(&v),
        "fix snapshot alpha (id: 1, tag: \"\")\n"
    );
}
