//! Pure formatters for dog's tables, byte for byte as Sheepdog prints them.
//!
//! Nothing here does I/O: each function returns the exact text (including
//! tabs, padding and the trailing newline) for `node list`, `node info`,
//! `vdi list` and `cluster info`. Times are rendered in a caller-given time
//! zone (`chrono::Local` in production, `Utc` in tests).

use chrono::{DateTime, TimeZone};
use qemu_proto::consts::{CLUSTER_FLAG_AUTO_VNODES, CLUSTER_FLAG_DISKMODE};
use qemu_proto::{EpochLog, InodeHeader, SdNode, SdResult};

use crate::client::addr_string;
use crate::options::redundancy_scheme;
use crate::size::strnumber;

/// `addr_to_str(addr, port)`: `a.b.c.d:port`, IPv6 without brackets.
pub fn host_port(node: &SdNode) -> String {
    format!("{}:{}", addr_string(node.nid.addr), node.nid.port)
}

/// `%-Ns`: left-justified in `width` bytes.
fn left(s: &str, width: usize) -> String {
    format!("{s}{}", " ".repeat(width.saturating_sub(s.len())))
}

/// `%Ns`: right-justified in `width` bytes.
fn right(s: &str, width: usize) -> String {
    format!("{}{s}", " ".repeat(width.saturating_sub(s.len())))
}

/// `strftime(fmt, localtime(secs))` in `tz`; the bare number if out of range.
pub fn format_time<Tz: TimeZone>(tz: &Tz, secs: u64, fmt: &str) -> String
where
    Tz::Offset: std::fmt::Display,
{
    i64::try_from(secs)
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .map(|utc| utc.with_timezone(tz).format(fmt).to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// `ctime(3)` text including its trailing newline, e.g.
/// `"Mon Jan  1 00:00:00 2018\n"`.
pub fn ctime<Tz: TimeZone>(tz: &Tz, secs: u64) -> String
where
    Tz::Offset: std::fmt::Display,
{
    format!("{}\n", format_time(tz, secs, "%a %b %e %H:%M:%S %Y"))
}

/// `dog node list`: header (unless raw) and one row per node, ids in order.
pub fn node_list(nodes: &[SdNode], raw: bool) -> String {
    let mut out = String::new();
    if !raw {
        out.push_str("  Id   Host:Port         V-Nodes       Zone\n");
    }
    for (i, n) in nodes.iter().enumerate() {
        let host = host_port(n);
        if raw {
            out.push_str(&format!("{i} {host} {} {}\n", n.nr_vnodes, n.zone));
        } else {
            out.push_str(&format!(
                "{i:4}   {}\t{:2}{:11}\n",
                left(&host, 20),
                n.nr_vnodes,
                n.zone
            ));
        }
    }
    out
}

/// `dog node info` header (empty when raw).
pub fn node_info_header(raw: bool) -> &'static str {
    if raw {
        ""
    } else {
        "Id\tSize\tUsed\tAvail\tUse%\n"
    }
}

/// `(int)(used / size * 100)`, 0 when the size is 0.
fn use_percent(size: u64, free: u64) -> i64 {
    if size == 0 {
        0
    } else {
        (size.wrapping_sub(free) as f64 / size as f64 * 100.0) as i64
    }
}

/// One `dog node info` row for node `id` with `store_size`/`store_free` bytes.
pub fn node_info_row(id: usize, size: u64, free: u64, raw: bool) -> String {
    let used = size.wrapping_sub(free);
    let pct = use_percent(size, free);
    let (s, u, a) = (
        strnumber(size, raw),
        strnumber(used, raw),
        strnumber(free, raw),
    );
    if raw {
        format!("{id} {s} {u} {a} {pct}%\n")
    } else {
        format!("{id:2}\t{s}\t{u}\t{a}\t{pct:3}%\n")
    }
}

/// The `dog node info` total lines (sizes summed over the answering nodes,
/// `vdi_size` = total virtual size of the non-snapshot VDIs).
pub fn node_info_total(size: u64, free: u64, vdi_size: u64, raw: bool) -> String {
    let used = size.wrapping_sub(free);
    let pct = use_percent(size, free);
    let (s, u, a, v) = (
        strnumber(size, raw),
        strnumber(used, raw),
        strnumber(free, raw),
        strnumber(vdi_size, raw),
    );
    if raw {
        format!("Total {s} {u} {a} {pct}% {v}\n")
    } else {
        format!("Total\t{s}\t{u}\t{a}\t{pct:3}%\n\nTotal virtual image size\t{v}\n")
    }
}

/// `dog vdi list` header (empty when raw).
pub fn vdi_list_header(raw: bool) -> &'static str {
    if raw {
        ""
    } else {
        "  Name        Id    Size    Used  Shared    Creation time   VDI id  Copies  Tag   Block Size Shift\n"
    }
}

/// Objects of a VDI that it owns (`my`) and shares with another VDI (`cow`),
/// counted from its `data_vdi_id` array (`sd_inode_stat`).
pub fn inode_stat(vdi_id: u32, data_vdi_ids: &[u32]) -> (u64, u64) {
    let mut my = 0;
    let mut cow = 0;
    for &v in data_vdi_ids {
        if v == vdi_id {
            my += 1;
        } else if v != 0 {
            cow += 1;
        }
    }
    (my, cow)
}

/// Escapes a VDI name for raw output: whitespace and `\` get a backslash.
pub fn escape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One `dog vdi list` row. `my_objs`/`cow_objs` come from [`inode_stat`].
pub fn vdi_list_row<Tz: TimeZone>(
    tz: &Tz,
    inode: &InodeHeader,
    my_objs: u64,
    cow_objs: u64,
    raw: bool,
) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let object_size = 1u64 << (inode.block_size_shift & 63);
    let snapshot = inode.snap_ctime != 0;
    let clone = inode.snap_id == 1 && inode.parent_vdi_id != 0;
    let snapid = if snapshot { inode.snap_id as i32 } else { 0 };
    let secs = inode.create_time >> 32;
    let size = strnumber(inode.vdi_size, raw);
    let used = strnumber(my_objs.wrapping_mul(object_size), raw);
    let shared = strnumber(cow_objs.wrapping_mul(object_size), raw);
    let copies = redundancy_scheme(inode.nr_copies, inode.copy_policy);
    if raw {
        let flag = if snapshot {
            's'
        } else if clone {
            'c'
        } else {
            '='
        };
        format!(
            "{flag} {} {snapid} {size} {used} {shared} {secs} {:x} {copies} {} {}\n",
            escape_name(&inode.name),
            inode.vdi_id,
            inode.tag,
            inode.block_size_shift
        )
    } else {
        let flag = if snapshot {
            's'
        } else if clone {
            'c'
        } else {
            ' '
        };
        format!(
            "{flag} {} {snapid:5} {} {} {} {}  {:7x} {} {} {:3}\n",
            left(&inode.name, 8),
            right(&size, 7),
            right(&used, 7),
            right(&shared, 7),
            format_time(tz, secs, "%Y-%m-%d %H:%M"),
            inode.vdi_id,
            right(&copies, 6),
            right(&inode.tag, 13),
            inode.block_size_shift
        )
    }
}

/// Options of `dog cluster info` that change the output.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterInfoOpts {
    /// `-r`
    pub raw: bool,
    /// `-v`
    pub verbose: bool,
    /// `-d`
    pub diff: bool,
}

/// `addr:port:vnodes` of every node of an epoch, joined by `", "`.
fn epoch_nodes(log: &EpochLog) -> String {
    log.nodes
        .iter()
        .map(|n| format!("{}:{}", host_port(n), n.nr_vnodes))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `do_print_nodes_diff`: nodes of `a` missing from `b`, each prefixed by `act`.
fn nodes_missing(a: &EpochLog, b: &EpochLog, act: char) -> String {
    a.nodes
        .iter()
        .filter(|n| {
            !b.nodes
                .iter()
                .any(|m| m.nid.addr == n.nid.addr && m.nid.port == n.nid.port)
        })
        .map(|n| format!("{act}{}", host_port(n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The whole `dog cluster info` output for a STAT_CLUSTER reply with result
/// `result` and epoch records `logs` (newest first; empty if none came back).
pub fn cluster_info<Tz: TimeZone>(
    tz: &Tz,
    result: SdResult,
    logs: &[EpochLog],
    opts: ClusterInfoOpts,
) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let raw = opts.raw;
    let first = logs.first();
    let flags = first.map_or(0, |l| l.flags);
    let mut out = String::new();
    if !raw {
        out.push_str("Cluster status: ");
    }
    if result == SdResult::SUCCESS {
        let disabled = first.is_some_and(|l| l.disable_recovery);
        out.push_str(&format!(
            "running, auto-recovery {}\n",
            if disabled { "disabled" } else { "enabled" }
        ));
    } else {
        out.push_str(&format!("{}\n", result.message()));
    }

    if opts.verbose {
        if !raw {
            out.push_str("Cluster store: ");
        }
        if result == SdResult::SUCCESS {
            let (copies, policy, store) =
                first.map_or((0, 0, ""), |l| (l.nr_copies, l.copy_policy, &l.drv_name));
            out.push_str(&format!(
                "{store} with {} redundancy policy\n",
                redundancy_scheme(copies, policy)
            ));
            if !raw {
                out.push_str("Cluster vnodes strategy: ");
            }
            out.push_str(if flags & CLUSTER_FLAG_AUTO_VNODES != 0 {
                "auto\n"
            } else {
                "fixed\n"
            });
        } else {
            out.push_str(&format!("{}\n", result.message()));
        }
        if !raw {
            out.push_str("Cluster vnode mode: ");
        }
        out.push_str(if flags & CLUSTER_FLAG_DISKMODE != 0 {
            "disk\n"
        } else {
            "node\n"
        });
    } else {
        out.push('\n');
    }

    if !raw {
        if let Some(l) = first {
            out.push_str(&format!(
                "Cluster created at {}\n",
                ctime(tz, l.ctime >> 32)
            ));
            out.push_str("Epoch Time           Version [Host:Port:V-Nodes,,,]\n");
        }
    }

    for (i, log) in logs.iter().enumerate() {
        if raw {
            out.push_str(&format!("{} {}", log.time, log.epoch));
        } else {
            out.push_str(&format!(
                "{} {:6}",
                format_time(tz, log.time, "%Y-%m-%d %H:%M:%S"),
                log.epoch
            ));
        }
        out.push_str(" [");
        if opts.diff {
            match logs.get(i + 1) {
                None => out.push_str("formated"),
                Some(older) => {
                    out.push_str(&nodes_missing(log, older, '+'));
                    out.push_str(&nodes_missing(older, log, '-'));
                }
            }
        } else {
            out.push_str(&epoch_nodes(log));
        }
        out.push_str("]\n");
    }
    out
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
