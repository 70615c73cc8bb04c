//! QEMU 5.2's Sheepdog snapshot sequences, byte for byte (issue 4, "Done when" 4).
//!
//! The harness's `qemu_client` has no snapshot operations and keeps its state private, so this
//! file carries its own small QEMU (`block/sheepdog.c` of QEMU 5.2; reference section 4.5):
//! [`Qemu`] opens an image by name, snapshot id or tag (LOCK_VDI + READ_OBJ of the 4,198,968-byte
//! inode), reads and writes objects one request at a time on its I/O socket (CREATE_AND_WRITE,
//! CREATE_AND_WRITE + COW, WRITE_OBJ, then one inode index update per write), and implements
//! `sd_snapshot_create`, `sd_snapshot_list`, `sd_snapshot_goto` (`reload_inode` +
//! `sd_create_branch`), `sd_snapshot_delete` (`remove_objects` + LOCK_VDI + DEL_VDI) and the
//! SD_RES_READONLY path of `aio_read_response` (`reload_inode(0, "")`, then the request is
//! re-sent to the new vid, as copy-on-write when the object belongs to another vid). Every
//! request is recorded with the connection it used (0 = the I/O socket, then one number per
//! short connection, in the order QEMU opens them), and the tests compare the recorded headers
//! and payloads with what QEMU sends.
//!
//! Tests:
//! - [`snapshot_create_list_goto_delete`]: create (WRITE_OBJ of the 4664-byte header carrying
//!   the tag, NEW_VDI snapid=1 base=current vid, READ_OBJ of the new header on the first short
//!   connection), copy-on-write writes afterwards, list (READ_VDIS of 2 MiB, then headers read
//!   upward from the name's hash until a clear bit), goto by tag (GET_VDI_INFO with the tag,
//!   header read, DEL_VDI of the working VDI by name only with base_vdi_id = the snapshot's vid,
//!   NEW_VDI snapid=0 base=snapshot, full inode read) and delete by id from an image opened on
//!   that snapshot (`qemu-img snapshot -d 2 sheepdog:NAME:2`: the index zeroed with WRITE_OBJs
//!   of at most 128 non-zero entries, LOCK_VDI, DEL_VDI with name + empty tag and snapid).
//!   Data is checked through NBD after every step, and the stores must hold exactly the objects
//!   the remaining VDIs reference.
//! - [`write_after_snapshot_gets_readonly_and_cows`]: `dog vdi snapshot` under an open image;
//!   the next write to an owned object gets SD_RES_READONLY (0x1a), the client reloads
//!   (GET_VDI_INFO, 4664-byte header) and re-sends CREATE_AND_WRITE_OBJ with SD_FLAG_CMD_COW
//!   and cow_oid; a create into an unallocated object under the old vid gets READONLY too.
//! - [`first_write_to_a_snapshot_branches`]: an image opened by snapshot tag branches on its
//!   first write (`sd_create_branch`), leaving the snapshot untouched.

mod client;
mod create_list_goto_delete;
mod readonly_and_branch;
mod support;
mod wire;
