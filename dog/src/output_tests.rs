//! Golden-output tests for the formatters (reference 5.3 examples).

use super::*;
use chrono::Utc;
use qemu_proto::NodeId;

const MB: u64 = 1024 * 1024;
/// 2018-01-01 00:00:00 UTC.
const T2018: u64 = 1_514_764_800;

fn node(port: u16, vnodes: u16, zone: u32) -> SdNode {
    SdNode {
        nid: NodeId::new("127.0.0.1".parse().unwrap(), port),
        nr_vnodes: vnodes,
        zone,
        space: 0,
    }
}

#[test]
fn node_list_golden() {
    let nodes = [node(7000, 128, 0)];
    assert_eq!(
        node_list(&nodes, false),
        "  Id   Host:Port         V-Nodes       Zone\n   0   127.0.0.1:7000      \t128          0\n"
    );
    assert_eq!(node_list(&nodes, true), "0 127.0.0.1:7000 128 0\n");
}

#[test]
fn node_list_gateway_and_zone() {
    let nodes = [node(7000, 128, 16_777_343), node(7001, 0, 1)];
    assert_eq!(
        node_list(&nodes, false),
        "  Id   Host:Port         V-Nodes       Zone\n   \
         0   127.0.0.1:7000      \t128   16777343\n   \
         1   127.0.0.1:7001      \t 0          1\n"
    );
    assert_eq!(
        node_list(&nodes, true),
        "0 127.0.0.1:7000 128 16777343\n1 127.0.0.1:7001 0 1\n"
    );
}

#[test]
fn node_info_golden() {
    let mut out = String::from(node_info_header(false));
    out.push_str(&node_info_row(0, 178 * MB, 98 * MB, false));
    out.push_str(&node_info_total(355 * MB, 155 * MB, 100 * MB, false));
    assert_eq!(
        out,
        "Id\tSize\tUsed\tAvail\tUse%\n \
         0\t178 MB\t80 MB\t98 MB\t 44%\n\
         Total\t355 MB\t200 MB\t155 MB\t 56%\n\n\
         Total virtual image size\t100 MB\n"
    );
}

#[test]
fn node_info_raw() {
    let mut out = String::from(node_info_header(true));
    out.push_str(&node_info_row(0, 1000, 250, true));
    out.push_str(&node_info_total(1000, 250, 4096, true));
    assert_eq!(out, "0 1000 750 250 75%\nTotal 1000 750 250 75% 4096\n");
}

#[test]
fn node_info_zero_size() {
    assert_eq!(node_info_row(3, 0, 0, true), "3 0 0 0 0%\n");
    assert_eq!(node_info_total(0, 0, 0, true), "Total 0 0 0 0% 0\n");
}

fn inode(name: &str, vid: u32, size: u64) -> InodeHeader {
    InodeHeader {
        name: name.into(),
        create_time: T2018 << 32,
        vdi_size: size,
        nr_copies: 6,
        block_size_shift: 22,
        vdi_id: vid,
        ..Default::default()
    }
}

#[test]
fn vdi_list_golden() {
    let mut snap = inode("test", 0x7c2b25, 4096 * MB);
    snap.snap_ctime = (T2018 << 32) | 5;
    snap.snap_id = 1;
    snap.tag = "snap1".into();
    let mut cur = inode("test", 0x7c2b27, 4096 * MB);
    cur.snap_id = 2;
    cur.parent_vdi_id = 0x7c2b25;
    let mut out = String::from(vdi_list_header(false));
    let (my, cow) = inode_stat(snap.vdi_id, &[0x7c2b25, 0, 0]);
    out.push_str(&vdi_list_row(&Utc, &snap, my, cow, false));
    let (my, cow) = inode_stat(cur.vdi_id, &[0x7c2b25, 0, 0]);
    out.push_str(&vdi_list_row(&Utc, &cur, my, cow, false));
    assert_eq!(
        out,
        "  Name        Id    Size    Used  Shared    Creation time   VDI id  Copies  Tag   Block Size Shift\n\
         s test         1  4.0 GB  4.0 MB  0.0 MB 2018-01-01 00:00   7c2b25      6         snap1  22\n  \
         test         0  4.0 GB  0.0 MB  4.0 MB 2018-01-01 00:00   7c2b27      6                22\n"
    );
}

#[test]
fn vdi_list_raw_golden() {
    let cur = inode("test", 0x7c2b25, 4095);
    assert_eq!(vdi_list_header(true), "");
    assert_eq!(
        vdi_list_row(&Utc, &cur, 0, 0, true),
        "= test 0 4095 0 0 1514764800 7c2b25 6  22\n"
    );
}

#[test]
fn vdi_list_raw_flags_and_escapes() {
    let mut snap = inode("my vol\\x", 0x10, 8 * MB);
    snap.snap_ctime = 1;
    snap.snap_id = 3;
    snap.tag = "t".into();
    assert_eq!(
        vdi_list_row(&Utc, &snap, 1, 1, true),
        "s my\\ vol\\\\x 3 8388608 4194304 4194304 1514764800 10 6 t 22\n"
    );
    let mut clone = inode("c1", 0x11, 4 * MB);
    clone.snap_id = 1;
    clone.parent_vdi_id = 0x10;
    clone.nr_copies = 3;
    assert!(vdi_list_row(&Utc, &clone, 0, 1, true).starts_with("c c1 0 4194304 0 4194304 "));
    assert!(vdi_list_row(&Utc, &clone, 0, 1, false).starts_with("c c1           0  4.0 MB"));
}

/// tests/functional/041.out, first listing (dates filtered there).
#[test]
fn vdi_list_golden_041_snapshot_chain() {
    let rows: [(u32, u32, &str, &[u32]); 4] = [
        (0x7c2b25, 1, "snap1", &[0x7c2b25, 0, 0]),
        (0x7c2b26, 2, "snap2", &[0x7c2b25, 0x7c2b26, 0]),
        (0x7c2b27, 3, "snap3", &[0x7c2b27, 0x7c2b26, 0]),
        (0x7c2b28, 4, "", &[0x7c2b27, 0x7c2b26, 0]),
    ];
    let mut out = String::new();
    for (vid, snap_id, tag, ids) in rows {
        let mut v = inode("test", vid, 12 * MB);
        v.snap_id = snap_id;
        v.tag = tag.into();
        if !tag.is_empty() {
            v.snap_ctime = T2018 << 32;
        }
        if vid != 0x7c2b25 {
            v.parent_vdi_id = vid - 1;
        }
        let (my, cow) = inode_stat(vid, ids);
        out.push_str(&vdi_list_row(&Utc, &v, my, cow, false));
    }
    assert_eq!(
        out,
        "s test         1   12 MB  4.0 MB  0.0 MB 2018-01-01 00:00   7c2b25      6         snap1  22\n\
         s test         2   12 MB  4.0 MB  4.0 MB 2018-01-01 00:00   7c2b26      6         snap2  22\n\
         s test         3   12 MB  4.0 MB  4.0 MB 2018-01-01 00:00   7c2b27      6         snap3  22\n  \
         test         0   12 MB  0.0 MB  8.0 MB 2018-01-01 00:00   7c2b28      6                22\n"
    );
}

/// A clone's first snapshot is an `s` (snap_id 1 and a parent, but a
/// snapshot); the clone's next working VDI (snap_id 2) is a plain VDI.
#[test]
fn vdi_list_snapshot_of_a_clone() {
    let mut s = inode("c1", 0x11, 4 * MB);
    s.snap_id = 1;
    s.parent_vdi_id = 0x10;
    s.snap_ctime = 1;
    s.tag = "t1".into();
    assert_eq!(
        vdi_list_row(&Utc, &s, 0, 1, true),
        "s c1 1 4194304 0 4194304 1514764800 11 6 t1 22\n"
    );
    let mut w = inode("c1", 0x12, 4 * MB);
    w.snap_id = 2;
    w.parent_vdi_id = 0x11;
    assert_eq!(
        vdi_list_row(&Utc, &w, 0, 1, true),
        "= c1 0 4194304 0 4194304 1514764800 12 6  22\n"
    );
}

#[test]
fn vdi_list_long_name_and_ec() {
    let mut v = inode("a-very-long-name", 0xabc, 40 * MB);
    v.copy_policy = 0x22;
    assert_eq!(
        vdi_list_row(&Utc, &v, 10, 0, false),
        "  a-very-long-name     0   40 MB   40 MB  0.0 MB 2018-01-01 00:00      abc    4:2                22\n"
    );
}

#[test]
fn inode_stat_counts() {
    assert_eq!(inode_stat(5, &[5, 0, 7, 5, 0]), (2, 1));
    assert_eq!(inode_stat(5, &[]), (0, 0));
}

fn epoch(e: u32, ports: &[u16]) -> EpochLog {
    EpochLog {
        ctime: (T2018 << 32) | 123,
        time: T2018,
        epoch: e,
        nr_copies: 3,
        flags: CLUSTER_FLAG_AUTO_VNODES,
        drv_name: "plain".into(),
        nodes: ports.iter().map(|&p| node(p, 128, 0)).collect(),
        ..Default::default()
    }
}

#[test]
fn cluster_info_golden() {
    let logs = [epoch(2, &[7000, 7001, 7002]), epoch(1, &[7000, 7001])];
    let out = cluster_info(&Utc, SdResult::SUCCESS, &logs, ClusterInfoOpts::default());
    assert_eq!(
        out,
        "Cluster status: running, auto-recovery enabled\n\
         \n\
         Cluster created at Mon Jan  1 00:00:00 2018\n\
         \n\
         Epoch Time           Version [Host:Port:V-Nodes,,,]\n\
         2018-01-01 00:00:00      2 [127.0.0.1:7000:128, 127.0.0.1:7001:128, 127.0.0.1:7002:128]\n\
         2018-01-01 00:00:00      1 [127.0.0.1:7000:128, 127.0.0.1:7001:128]\n"
    );
}

#[test]
fn cluster_info_raw() {
    let logs = [epoch(1, &[7000, 7001])];
    let opts = ClusterInfoOpts {
        raw: true,
        ..Default::default()
    };
    assert_eq!(
        cluster_info(&Utc, SdResult::SUCCESS, &logs, opts),
        "running, auto-recovery enabled\n\n1514764800 1 [127.0.0.1:7000:128, 127.0.0.1:7001:128]\n"
    );
}

#[test]
fn cluster_info_verbose() {
    let mut logs = [epoch(1, &[7000])];
    logs[0].disable_recovery = true;
    let opts = ClusterInfoOpts {
        verbose: true,
        ..Default::default()
    };
    let out = cluster_info(&Utc, SdResult::SUCCESS, &logs, opts);
    assert!(out.starts_with(
        "Cluster status: running, auto-recovery disabled\n\
         Cluster store: plain with 3 redundancy policy\n\
         Cluster vnodes strategy: auto\n\
         Cluster vnode mode: node\n\
         Cluster created at Mon Jan  1 00:00:00 2018\n\n"
    ));
    let raw = ClusterInfoOpts {
        verbose: true,
        raw: true,
        ..Default::default()
    };
    logs[0].flags = 0;
    logs[0].copy_policy = 0x22;
    assert_eq!(
        cluster_info(&Utc, SdResult::SUCCESS, &logs, raw),
        "running, auto-recovery disabled\nplain with 4:2 redundancy policy\nfixed\nnode\n\
         1514764800 1 [127.0.0.1:7000:128]\n"
    );
}

#[test]
fn cluster_info_waiting_for_format() {
    let out = cluster_info(
        &Utc,
        SdResult::WAIT_FOR_FORMAT,
        &[],
        ClusterInfoOpts::default(),
    );
    assert_eq!(
        out,
        "Cluster status: Waiting for cluster to be formatted\n\n"
    );
    let v = ClusterInfoOpts {
        verbose: true,
        ..Default::default()
    };
    assert_eq!(
        cluster_info(&Utc, SdResult::WAIT_FOR_FORMAT, &[], v),
        "Cluster status: Waiting for cluster to be formatted\n\
         Cluster store: Waiting for cluster to be formatted\n\
         Cluster vnode mode: node\n"
    );
}

#[test]
fn cluster_info_diff() {
    let logs = [
        epoch(3, &[7000, 7002]),
        epoch(2, &[7000, 7001]),
        epoch(1, &[7000]),
    ];
    let opts = ClusterInfoOpts {
        raw: true,
        diff: true,
        ..Default::default()
    };
    assert_eq!(
        cluster_info(&Utc, SdResult::SUCCESS, &logs, opts),
        "running, auto-recovery enabled\n\n\
         1514764800 3 [+127.0.0.1:7002-127.0.0.1:7001]\n\
         1514764800 2 [+127.0.0.1:7001]\n\
         1514764800 1 [formated]\n"
    );
}

#[test]
fn ctime_pads_day() {
    assert_eq!(ctime(&Utc, T2018), "Mon Jan  1 00:00:00 2018\n");
    assert_eq!(
        ctime(&Utc, T2018 + 9 * 86400 + 3661),
        "Wed Jan 10 01:01:01 2018\n"
    );
}
