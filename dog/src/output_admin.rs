//! Pure formatters of the operator commands: `node recovery` (info and
//! Sheepfold's `stat`), `node recovery get-throttle`, `cluster recover`,
//! `vdi check` and `cluster check`, byte for byte as Sheepdog prints them
//! (reference §5.3 and Sheepdog's `dog/node.c`, `dog/cluster.c`,
//! `dog/vdi.c`). Nothing here does I/O.

use qemu_proto::recovery::{RecoveryState, RecoveryStats, RecoveryThrottling};
use qemu_proto::{InodeHeader, SdNode};

use crate::output::host_port;
use crate::size::strnumber;

/// `dog node recovery` header (empty when raw).
pub fn recovery_info_header(raw: bool) -> &'static str {
    if raw {
        ""
    } else {
        "Nodes In Recovery:\n  Id   Host:Port         V-Nodes       Zone       Progress\n"
    }
}

/// `100 * (float)nr_finished / nr_total`, in single precision as dog
/// computes it. Sheepdog prints `nan` while the total is still 0 (the
/// object lists are being gathered); Sheepfold prints 0.0.
fn progress(state: &RecoveryState) -> f64 {
    if state.nr_total == 0 {
        return 0.0;
    }
    f64::from(100.0f32 * state.nr_finished as f32 / state.nr_total as f32)
}

/// One `dog node recovery` row for node `id`; empty unless it is in
/// recovery. Plain `"%4d   %-20s%5d%11d%11.1f%%\n"`, raw
/// `"%d %s %d %d %lu %lu\n"` (the zone is printed signed, as dog does).
pub fn recovery_info_row(id: usize, node: &SdNode, state: &RecoveryState, raw: bool) -> String {
    if !state.in_recovery {
        return String::new();
    }
    let host = host_port(node);
    let zone = node.zone as i32;
    if raw {
        format!(
            "{id} {host} {} {zone} {} {}\n",
            node.nr_vnodes, state.nr_finished, state.nr_total
        )
    } else {
        format!(
            "{id:4}   {host:<20}{:5}{zone:11}{:11.1}%\n",
            node.nr_vnodes,
            progress(state)
        )
    }
}

/// `dog node recovery stat` header (Sheepfold; empty when raw).
pub fn recovery_stat_header(raw: bool) -> &'static str {
    if raw {
        ""
    } else {
        "  Id   Host:Port              Objects  Received      Sent\n"
    }
}

/// One `dog node recovery stat` row: plain `"%4d   %-20s%10lu%10s%10s\n"`
/// with human sizes, raw `"%d %s %lu %lu %lu\n"` (objects received, bytes
/// received, bytes sent).
pub fn recovery_stat_row(id: usize, node: &SdNode, stats: &RecoveryStats, raw: bool) -> String {
    let host = host_port(node);
    let received = strnumber(stats.bytes_received, raw);
    let sent = strnumber(stats.bytes_sent, raw);
    if raw {
        format!("{id} {host} {} {received} {sent}\n", stats.objects_received)
    } else {
        format!(
            "{id:4}   {host:<20}{:10}{received:>10}{sent:>10}\n",
            stats.objects_received
        )
    }
}

/// `dog node recovery get-throttle`: `"max (%u), interval (%lu)\n"`.
pub fn throttle(t: &RecoveryThrottling) -> String {
    format!(
        "max ({}), interval ({})\n",
        t.max_exec_count, t.queue_work_interval
    )
}

/// `dog cluster recover enable|disable`: `"Cluster recovery: enable\n"`.
pub fn cluster_recover(enable: bool) -> &'static str {
    if enable {
        "Cluster recovery: enable\n"
    } else {
        "Cluster recovery: disable\n"
    }
}

/// `dog cluster check`, before each VDI: `"fix vdi %s\n"` or
/// `"fix snapshot %s (id: %d, tag: \"%s\")\n"`.
pub fn cluster_check_header(inode: &InodeHeader) -> String {
    if inode.is_snapshot() {
        format!(
            "fix snapshot {} (id: {}, tag: \"{}\")\n",
            inode.name, inode.snap_id as i32, inode.tag
        )
    } else {
        format!("fix vdi {}\n", inode.name)
    }
}

/// What `dog vdi check` prints for one VDI: `"fixed replica %016lx\n"` per
/// repaired object, then `"finish check&repair %s\n"`. With `-e` and
/// nothing repaired: `"%s is fine, no object is missing.\n"` instead.
pub fn vdi_check(name: &str, fixed: &[u64], exist_only: bool) -> String {
    if exist_only && fixed.is_empty() {
        return format!("{name} is fine, no object is missing.\n");
    }
    let mut out = String::new();
    for oid in fixed {
        out.push_str(&format!("fixed replica {oid:016x}\n"));
    }
    out.push_str(&format!("finish check&repair {name}\n"));
    out
}

#[cfg(test)]
#[path = "output_admin_tests.rs"]
mod tests;
