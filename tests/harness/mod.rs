//! Harness for Sheepfold's multi-node integration tests.
//!
//! The tests drive real `sheep` daemons and the real `dog` CLI as child processes, exactly as an
//! operator would, following the contract in the repository's spec (sheep and dog command lines,
//! store layout, readiness rule).
//!
//! # Layout
//!
//! - [`api`]: a client of the HTTP storage API and a checker of answers against
//!   `docs/openapi.json`.
//! - [`bins`]: finds `target/<profile>/{sheep,dog}` next to the test executable and builds them
//!   once per test process.
//! - [`process`]: [`KillOnDrop`] guards, signals and `run_with_timeout` for short-lived clients.
//! - [`ports`]: free, never-reused TCP/UDP ports on 127.0.0.1.
//! - [`wait`]: bounded polling; every wait in the suite goes through it.
//! - [`dog`]: building and running `dog` commands against one node, with `TZ=UTC`.
//! - [`cluster`]: the [`Cluster`] builder: N sheep in one temp dir, `-c local:<tmp>/local`, plus
//!   kill, stop, restart, add-node and object-counting helpers.
//! - [`data`]: seeded random data, on-disk object listings and byte comparisons.
//! - [`text`]: expected output lines of `dog` (reference section 5.3), UTC time formatting,
//!   masking and the VDI name hash.
//! - [`tools`]: external clients (qemu-img, qemu-io, nbdinfo, nbdcopy, fio) run with a timeout,
//!   and a parser for `qemu-img map --output=json`. Every node also serves NBD on its own port
//!   ([`Cluster::nbd_port`], [`Cluster::nbd_uri`]).
//! - [`net`]: bounded reads for raw-protocol tests (answer, close or silence).
//! - [`nbd_raw`]: a raw NBD client (handshake, options, requests, replies laid out by hand) for
//!   malformed input and for connections held open across other clients' writes.
//! - [`qemu_client`]: a Sheepdog-protocol client that sends exactly what QEMU 5.2's
//!   `block/sheepdog.c` sends (QEMU 5.2 itself is no longer packaged).
//! - [`recovery`]: for the failure and recovery tests: a model of acknowledged writes,
//!   `dog node recovery` progress and counters, replicas on disk, an NBD client that reports
//!   errors instead of panicking.
//! - [`netns`]: a private network namespace per test and nftables partitions inside it.
//!
//! # Environment knobs
//!
//! - `SHEEPFOLD_BIN_DIR`: use prebuilt `sheep` and `dog` from this directory; nothing is built.
//! - `SHEEPFOLD_KEEP_TMP=1`: keep every cluster's temp dir (stores and `sheep.log`) after the test.
//! - `SHEEPFOLD_TMPDIR`: parent directory for cluster temp dirs (default: the system temp dir).
//! - `SHEEPFOLD_SHEEP_LOG_LEVEL`: passed to every sheep as `-l level=<value>`.

pub mod api;
pub mod bins;
pub mod cluster;
pub mod data;
pub mod dog;
pub mod nbd_raw;
pub mod net;
pub mod netns;
pub mod ports;
pub mod process;
pub mod qemu_client;
pub mod recovery;
pub mod snapshots;
pub mod text;
pub mod tools;
pub mod wait;

pub use cluster::{Cluster, ClusterBuilder, Node};
pub use process::KillOnDrop;
