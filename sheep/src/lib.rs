//! Sheepfold's storage daemon: a peer-to-peer store of virtual disk images.
//!
//! Every sheep is equal: there is no master, no elected leader and no
//! external coordinator. Where operations need an order, the data's own
//! placement gives it (the primary replica of a VDI name's inode orders the
//! creates and deletes of that name), and every request between sheep says
//! which membership view it was made in.
//!
//! # Layout
//! Each layer knows only the ones below it:
//! - [`cluster`]: membership (SWIM gossip behind the [`cluster::Membership`]
//!   trait, with an in-memory version for tests) publishing [`cluster::View`]s.
//! - [`placement`]: the virtual-node ring; copies in distinct zones.
//! - [`store`]: this node's objects, one sparse file each.
//! - [`peer`]: multiplexed RPC between sheep, checking view ids.
//! - [`gateway`]: object I/O routed and replicated to the placement's nodes.
//! - [`vdi`] and [`format`]: the VDI namespace and the cluster format,
//!   agreed without a coordinator.
//! - [`frontend`]: the Sheepdog protocol for dog and QEMU, NBD, and the
//!   HTTP storage API for cloud panels (with attach locks).
//! - [`metrics`]: Prometheus metrics served by the HTTP API.
//! - [`node`]: a running sheep, all of the above wired together.

pub mod cluster;
pub mod config;
pub mod error;
pub mod format;
pub mod frontend;
pub mod gateway;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod placement;
pub mod recovery;
pub mod store;
pub mod util;
pub mod vdi;
