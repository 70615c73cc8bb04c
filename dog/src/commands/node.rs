//! `dog node list` and `dog node info`.
//!
//! `node list` prints GET_NODE_LIST. `node info` asks every node for its
//! store size and free space (STAT_SHEEP on the node's own address), then
//! adds the total virtual size of all non-snapshot VDIs.

use qemu_proto::{Opcode, SdResult};

use crate::client::{request, Connection};
use crate::commands::{connect_with_nodes, print_out, vdi, warn, Ctx};
use crate::error::DogError;
use crate::output;

/// `dog node list [-r]`.
pub fn list(ctx: &Ctx) -> Result<(), DogError> {
    let (_conn, nl) = connect_with_nodes(ctx)?;
    print_out(&output::node_list(&nl.nodes, ctx.raw))
}

/// `dog node info [-r]`.
pub fn info(ctx: &Ctx) -> Result<(), DogError> {
    let (mut conn, nl) = connect_with_nodes(ctx)?;
    print_out(output::node_info_header(ctx.raw))?;

    let mut success = 0usize;
    let (mut total_size, mut total_free) = (0u64, 0u64);
    for node in &nl.nodes {
        match stat_sheep(node.nid.addr, node.nid.port) {
            Ok(Ok((size, free))) => {
                print_out(&output::node_info_row(success, size, free, ctx.raw))?;
                success += 1;
                total_size = total_size.wrapping_add(size);
                total_free = total_free.wrapping_add(free);
            }
            Ok(Err(result)) => warn(&format!("Response's result: {}", result.message())),
            Err(e) => warn(&e.to_string()),
        }
    }
    if success == 0 {
        return Err(DogError::sysfail("Cannot get information from any nodes"));
    }

    let mut total_vdi_size = 0u64;
    vdi::walk_inodes(&mut conn, None, false, |inode, _| {
        if !inode.is_snapshot() {
            total_vdi_size = total_vdi_size.wrapping_add(inode.vdi_size);
        }
        Ok(())
    })?;
    print_out(&output::node_info_total(
        total_size,
        total_free,
        total_vdi_size,
        ctx.raw,
    ))
}

/// STAT_SHEEP on one node: `(store_size, store_free)` or the failed result.
fn stat_sheep(addr: std::net::IpAddr, port: u16) -> Result<Result<(u64, u64), SdResult>, DogError> {
    let mut conn = Connection::connect(addr, port)?;
    let reply = conn.exec(request(Opcode::StatSheep), &[])?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Ok(Err(reply.rsp.result));
    }
    let n = reply.rsp.node();
    Ok(Ok((n.store_size, n.store_free)))
}
