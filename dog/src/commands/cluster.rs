//! `dog cluster format` and `dog cluster info`.
//!
//! `format` sends MAKE_FS (asking for confirmation first when the cluster
//! holds VDIs or when there are fewer zones than copies); `info` prints the
//! cluster status and the epoch history from STAT_CLUSTER.

use std::io::{self, IsTerminal};
use std::time::{SystemTime, UNIX_EPOCH};

use qemu_proto::cluster::decode_epoch_logs;
use qemu_proto::consts::{
    CLUSTER_FLAG_AUTO_VNODES, CLUSTER_FLAG_AVOID_DISKFULL, CLUSTER_FLAG_RECYCLE_VID,
    CLUSTER_FLAG_STRICT, CLUSTER_FLAG_USE_LOCK, EPOCH_LOG_HEADER_SIZE, SD_DEFAULT_BLOCK_SIZE_SHIFT,
    SD_MAX_NODES, SD_NODE_SIZE, VDI_BITMAP_BYTES,
};
use qemu_proto::flags::CMD_WRITE;
use qemu_proto::inode::sd_time;
use qemu_proto::{ClusterArgs, Opcode, SdResult};

use crate::client::{request, Connection};
use crate::commands::{confirm, connect_with_nodes, print_out, warn, Ctx};
use crate::error::{exit, DogError};
use crate::options::Copies;
use crate::output::{self, ClusterInfoOpts};

/// Room for a store name including its NUL (`STORE_LEN`).
const STORE_LEN: usize = 16;

/// Bytes of one epoch record with room for `nodes_nr` nodes.
fn epoch_log_size(nodes_nr: usize) -> usize {
    EPOCH_LOG_HEADER_SIZE + nodes_nr * SD_NODE_SIZE
}

/// STAT_CLUSTER retries (buffer too small, epoch moved) before giving up.
const MAX_STAT_TRIES: usize = 16;

/// The "cluster is not empty" prompt (dog's FORMAT_PRINT).
const FORMAT_PRINT: &str = "    __\n   ()'`;\n   /\\|`\n  /  |   Caution! The cluster is not empty.\n(/_)_|_  Are you sure you want to continue? [yes/no]: ";

/// Options of `dog cluster format`.
#[derive(Debug, Clone, Default)]
pub struct FormatOpts {
    /// `-b`: backend store name (default "plain").
    pub store: Option<String>,
    /// `-c`: default redundancy (0 copies = server default).
    pub copies: Copies,
    /// `-z`: default object size shift (0 = 22).
    pub block_size_shift: u8,
    /// `-f`: do not ask before formatting a cluster that holds VDIs.
    pub force: bool,
    /// `-t`: strict mode.
    pub strict: bool,
    /// `-l`: VDI locking.
    pub use_lock: bool,
    /// `-R`: recycle vids.
    pub recycle_vid: bool,
    /// `-V`: fixed vnodes.
    pub fixed_vnodes: bool,
    /// `-F`: avoid disk-full during recovery.
    pub avoid_diskfull: bool,
}

impl FormatOpts {
    /// `cluster.flags` of the MAKE_FS request.
    pub fn flags(&self) -> u16 {
        let mut flags = 0;
        if self.strict {
            flags |= CLUSTER_FLAG_STRICT;
        }
        if self.use_lock {
            flags |= CLUSTER_FLAG_USE_LOCK;
        }
        if self.recycle_vid {
            flags |= CLUSTER_FLAG_RECYCLE_VID;
        }
        if !self.fixed_vnodes {
            flags |= CLUSTER_FLAG_AUTO_VNODES;
        }
        if self.avoid_diskfull {
            flags |= CLUSTER_FLAG_AVOID_DISKFULL;
        }
        flags
    }

    /// The store name sent, truncated like `pstrcpy(.., STORE_LEN, ..)`.
    pub fn store_name(&self) -> String {
        let mut name = self.store.clone().unwrap_or_default();
        if name.is_empty() {
            name = "plain".into();
        }
        let mut end = name.len().min(STORE_LEN - 1);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
        name
    }
}

/// `dog cluster format`.
pub fn format(ctx: &Ctx, opts: &FormatOpts) -> Result<(), DogError> {
    let (mut conn, nl) = connect_with_nodes(ctx)?;
    let zones = nl.zones();
    if usize::from(opts.copies.copies) > zones {
        let warning = format!(
            "Number of copies ({}) is larger than number of zones ({zones}).",
            opts.copies.copies
        );
        // Sheepdog always asks (and on end of input quietly does nothing).
        // Only a person can answer, so without a terminal we just warn.
        if io::stdin().is_terminal() {
            confirm(&format!(
                "{warning}\nAre you sure you want to continue? [yes/no]: "
            ))?;
        } else {
            warn(&warning);
        }
    }

    let mut req = request(Opcode::ReadVdis);
    req.data_length = VDI_BITMAP_BYTES as u32;
    let reply = conn.exec(req, &[])?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Err(DogError::failure(reply.rsp.result.message()));
    }
    if reply.data.iter().any(|&b| b != 0) && !opts.force {
        confirm(FORMAT_PRINT)?;
    }

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut req = request(Opcode::MakeFs);
    req.flags = CMD_WRITE;
    req.set_cluster(&ClusterArgs {
        copies: opts.copies.copies,
        copy_policy: opts.copies.policy,
        flags: opts.flags(),
        ctime: sd_time(now.as_secs(), now.subsec_micros() * 1000),
        block_size_shift: if opts.block_size_shift == 0 {
            SD_DEFAULT_BLOCK_SIZE_SHIFT
        } else {
            opts.block_size_shift
        },
        ..Default::default()
    });
    let store = opts.store_name();
    print_out(&format!("using backend {store} store\n"))?;
    let mut payload = store.into_bytes();
    payload.push(0);
    let reply = conn.exec(req, &payload)?;
    let result = reply.rsp.result;
    if result != SdResult::SUCCESS {
        let err = DogError::sysfail(format!("Format failed: {}", result.message()));
        if result == SdResult::NO_STORE {
            return Err(list_store(&mut conn, err));
        }
        return Err(err);
    }
    Ok(())
}

/// After "No store found": GET_STORE_LIST, printing the available stores;
/// dog then exits 2 (or 1 if the list cannot be read).
fn list_store(conn: &mut Connection, err: DogError) -> DogError {
    let mut req = request(Opcode::GetStoreList);
    req.data_length = 512;
    let reply = match conn.exec(req, &[]) {
        Ok(r) => r,
        Err(e) => return err.then(e.to_string(), exit::SYSFAIL),
    };
    if reply.rsp.result != SdResult::SUCCESS {
        return err.then(
            format!("Restore failed: {}", reply.rsp.result.message()),
            exit::FAILURE,
        );
    }
    let names = qemu_proto::name::decode_fixed(&reply.data);
    if let Err(e) = print_out(&format!(
        "Available stores:\n---------------------------------------\n{names}\n"
    )) {
        return err.then(e.to_string(), exit::SYSFAIL);
    }
    err
}

/// `dog cluster info [-v] [-r] [-d]`.
pub fn info(ctx: &Ctx, diff: bool) -> Result<(), DogError> {
    let (mut conn, nl) = connect_with_nodes(ctx)?;
    // Room for twice today's membership: older epochs may have been larger.
    let mut nodes_nr = (nl.nodes.len() * 2).clamp(1, SD_MAX_NODES);
    let mut nr_logs = nl.epoch.max(1) as usize;
    let mut tries = 0;
    let (result, logs) = loop {
        tries += 1;
        if tries > MAX_STAT_TRIES {
            return Err(DogError::sysfail(
                "Failed to get cluster information: the epoch log does not fit",
            ));
        }
        let mut req = request(Opcode::StatCluster);
        let len = nr_logs.saturating_mul(epoch_log_size(nodes_nr));
        req.data_length = u32::try_from(len).unwrap_or(u32::MAX);
        let mut args = req.cluster();
        args.nodes_nr = nodes_nr as u32;
        req.set_cluster(&args);
        let reply = conn.exec(req, &[])?;
        let result = reply.rsp.result;
        let can_grow = nodes_nr < SD_MAX_NODES;
        if result == SdResult::BUFFER_SMALL && can_grow {
            nodes_nr = (nodes_nr * 2).min(SD_MAX_NODES);
            continue;
        }
        // The epoch may have moved on since GET_NODE_LIST: ask again for all.
        if reply.data.len() >= len && reply.rsp.epoch as usize > nr_logs {
            nr_logs = reply.rsp.epoch as usize;
            continue;
        }
        let logs = decode_epoch_logs(&reply.data, nodes_nr)
            .map_err(|e| DogError::sysfail(format!("bad STAT_CLUSTER reply: {e}")))?;
        // A record filling every slot may have been cut short: look again
        // with more room.
        if can_grow && logs.iter().any(|l| l.nodes.len() >= nodes_nr) {
            nodes_nr = (nodes_nr * 2).min(SD_MAX_NODES);
            continue;
        }
        break (result, logs);
    };
    let opts = ClusterInfoOpts {
        raw: ctx.raw,
        verbose: ctx.verbose,
        diff,
    };
    print_out(&output::cluster_info(&chrono::Local, result, &logs, opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_flags() {
        let mut o = FormatOpts::default();
        assert_eq!(o.flags(), CLUSTER_FLAG_AUTO_VNODES);
        o.fixed_vnodes = true;
        o.strict = true;
        o.use_lock = true;
        o.recycle_vid = true;
        o.avoid_diskfull = true;
        assert_eq!(o.flags(), 0x1 | 0x8 | 0x10 | 0x20);
    }

    #[test]
    fn store_names() {
        let mut o = FormatOpts::default();
        assert_eq!(o.store_name(), "plain");
        o.store = Some("tree".into());
        assert_eq!(o.store_name(), "tree");
        o.store = Some("x".repeat(40));
        assert_eq!(o.store_name(), "x".repeat(15));
    }
}
