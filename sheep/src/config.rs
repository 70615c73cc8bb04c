//! The daemon's command line, with Sheepdog's option letters where they apply.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::cluster::LocalDirectory;
use crate::recovery::{RecoveryOptions, Throttle};

/// `sheep [OPTIONS] STORE_DIR`: one storage daemon; every node is equal.
#[derive(Debug, Clone, Parser)]
#[command(name = "sheep", about, disable_version_flag = true)]
pub struct Options {
    /// Directory holding this node's objects and state.
    pub store_dir: PathBuf,

    /// Port for clients and peers (the Sheepdog protocol).
    #[arg(short = 'p', long = "port", default_value_t = qemu_proto::consts::SD_LISTEN_PORT)]
    pub port: u16,

    /// Address to listen on.
    #[arg(short = 'b', long = "bindaddr", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind: IpAddr,

    /// Address advertised to peers and clients (default: the bind address,
    /// or 127.0.0.1 when binding to all addresses with `-c local`).
    #[arg(short = 'y', long = "myaddr")]
    pub advertise: Option<IpAddr>,

    /// Zone (failure domain); default: the advertised IPv4 address read as
    /// a little-endian integer, as in Sheepdog.
    #[arg(short = 'z', long = "zone")]
    pub zone: Option<u32>,

    /// Virtual nodes on the placement ring.
    #[arg(short = 'V', long = "vnodes", default_value_t = qemu_proto::consts::SD_DEFAULT_VNODES,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub vnodes: u16,

    /// Gateway only: serve clients, store nothing.
    #[arg(short = 'g', long = "gateway")]
    pub gateway: bool,

    /// Logging, e.g. `level=debug` (also `RUST_LOG`).
    #[arg(short = 'l', long = "log", default_value = "level=info")]
    pub log: String,

    /// Do not fsync (tests only: acknowledged writes may be lost on a crash).
    #[arg(short = 'n', long = "nosync")]
    pub nosync: bool,

    /// Run in the foreground (sheep always does; accepted for Sheepdog
    /// compatibility).
    #[arg(short = 'f', long = "foreground")]
    pub foreground: bool,

    /// Threads running the network side (clients and peers); disk I/O runs
    /// on its own pool. Default: half the CPUs, at least one.
    #[arg(long = "workers", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,

    /// Cluster driver: `local`, `local:DIR` or `gossip:HOST:PORT[,HOST:PORT...]`.
    #[arg(short = 'c', long = "cluster", default_value = "local")]
    pub cluster: String,

    /// NBD port (0 disables NBD); every node on one host needs its own.
    #[arg(long = "nbd-port", default_value_t = 10809)]
    pub nbd_port: u16,

    /// HTTP port for the storage API and `/metrics` (0 disables it);
    /// default: the data port + 80 (7080 for 7000), so every node on one
    /// host gets its own.
    #[arg(long = "http-port")]
    pub http_port: Option<u16>,

    /// Seconds a node may be out of the cluster before the attach locks
    /// of the VDIs attached through it are released.
    #[arg(long = "lock-grace", value_name = "SECS", default_value_t = 10)]
    pub lock_grace: u64,

    /// Gossip port (UDP and TCP); default: the data port + 10000.
    #[arg(long = "gossip-port")]
    pub gossip_port: Option<u16>,

    /// Failure detector: milliseconds between probes.
    #[arg(long = "probe-interval-ms", default_value_t = 200)]
    pub probe_interval_ms: u64,

    /// Failure detector: milliseconds a probe waits for its answer.
    #[arg(long = "probe-timeout-ms", default_value_t = 150)]
    pub probe_timeout_ms: u64,

    /// Failure detector: suspicion multiplier.
    #[arg(long = "suspicion-mult", default_value_t = 3)]
    pub suspicion_mult: usize,

    /// Seconds a node may be gone before the others restore full
    /// redundancy without it (0: at once). The default lets a rebooting
    /// server come back without every object it held moving twice.
    #[arg(long = "recovery-grace", value_name = "SECS", default_value_t = 300)]
    pub recovery_grace: u64,

    /// Recovery throttle, as Sheepdog's: at most `max` objects every
    /// `interval` milliseconds (`max=0,interval=0`: unthrottled).
    #[arg(short = 'R', long = "recovery", value_name = "max=N,interval=MS", value_parser = parse_throttle, default_value = "max=0,interval=0")]
    pub recovery_throttle: Throttle,

    /// Recovery pauses while the store's file system is fuller than this
    /// (percent).
    #[arg(long = "high-water", value_name = "PCT", default_value_t = 95, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub high_water: u8,
}

/// Parses `max=N,interval=MS`.
fn parse_throttle(s: &str) -> Result<Throttle, String> {
    let mut t = Throttle::UNTHROTTLED;
    for kv in s.split(',') {
        match kv.split_once('=') {
            Some(("max", v)) => t.max = v.parse().map_err(|_| format!("bad max '{v}'"))?,
            Some(("interval", v)) => {
                t.interval_ms = v.parse().map_err(|_| format!("bad interval '{v}'"))?
            }
            _ => return Err(format!("expected max=N,interval=MS, got '{kv}'")),
        }
    }
    if (t.max == 0) != (t.interval_ms == 0) {
        return Err("max and interval must both be zero or both non-zero".into());
    }
    Ok(t)
}

/// Where peers are found, parsed from `-c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterDriver {
    /// Peers on this host, through a runtime directory.
    Local(PathBuf),
    /// Seed peers' gossip addresses.
    Gossip(Vec<SocketAddr>),
}

impl Options {
    /// Parses `-c`.
    pub fn driver(&self) -> Result<ClusterDriver, String> {
        let spec = self.cluster.as_str();
        if spec == "local" {
            return Ok(ClusterDriver::Local(LocalDirectory::default_path()));
        }
        if let Some(dir) = spec.strip_prefix("local:") {
            return Ok(ClusterDriver::Local(PathBuf::from(dir)));
        }
        if let Some(list) = spec.strip_prefix("gossip:") {
            let seeds = list
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<SocketAddr>()
                        .map_err(|e| format!("bad seed address {s:?}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(ClusterDriver::Gossip(seeds));
        }
        Err(format!(
            "unknown cluster driver {spec:?} (use local, local:DIR or gossip:HOST:PORT,...)"
        ))
    }

    /// The address peers and clients reach this node at.
    pub fn advertised_ip(&self) -> IpAddr {
        match self.advertise {
            Some(a) => a,
            None if !self.bind.is_unspecified() => self.bind,
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// The gossip port.
    pub fn gossip_port(&self) -> Result<u16, String> {
        match self.gossip_port {
            Some(p) => Ok(p),
            None => self.port.checked_add(10000).ok_or_else(|| {
                format!(
                    "no default gossip port for port {}; use --gossip-port",
                    self.port
                )
            }),
        }
    }

    /// The HTTP port (0: no HTTP API).
    pub fn http_port(&self) -> Result<u16, String> {
        match self.http_port {
            Some(p) => Ok(p),
            None => self.port.checked_add(80).ok_or_else(|| {
                format!(
                    "no default HTTP port for port {}; use --http-port",
                    self.port
                )
            }),
        }
    }

    /// The zone.
    pub fn zone(&self) -> u32 {
        self.zone
            .unwrap_or_else(|| qemu_proto::node::default_zone(&self.advertised_ip()))
    }

    /// Recovery settings.
    pub fn recovery(&self) -> RecoveryOptions {
        RecoveryOptions {
            grace: Duration::from_secs(self.recovery_grace),
            throttle: self.recovery_throttle,
            high_water_pct: self.high_water,
        }
    }

    /// Failure-detector timings.
    pub fn probe(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.probe_interval_ms.max(10)),
            Duration::from_millis(self.probe_timeout_ms.max(5)),
        )
    }

    /// Threads for the async runtime. Every hand-off between threads costs
    /// a context switch, the largest cost of a small replicated write, so
    /// the network side gets few threads: half the CPUs leaves the rest to
    /// the disk pool, checksums and the other processes of the host.
    pub fn workers(&self) -> usize {
        match self.workers {
            Some(n) => usize::from(n),
            None => std::thread::available_parallelism()
                .map_or(1, |n| n.get() / 2)
                .max(1),
        }
    }

    /// The tracing filter from `-l level=...`.
    pub fn log_filter(&self) -> String {
        let level = self
            .log
            .split(',')
            .find_map(|kv| kv.strip_prefix("level="))
            .unwrap_or("info");
        // memberlist logs routine shutdown noise at ERROR.
        format!("{level},memberlist_net=off,memberlist_core=warn")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sheepdog_style_options() {
        let o = Options::parse_from([
            "sheep",
            "-p",
            "7001",
            "-z",
            "3",
            "-V",
            "64",
            "-n",
            "-c",
            "local:/tmp/x",
            "/store",
        ]);
        assert_eq!(o.port, 7001);
        assert_eq!(o.zone(), 3);
        assert_eq!(o.vnodes, 64);
        assert!(o.nosync);
        assert_eq!(o.driver().unwrap(), ClusterDriver::Local("/tmp/x".into()));
        assert_eq!(o.gossip_port().unwrap(), 17001);
        assert_eq!(o.http_port().unwrap(), 7081);
        assert_eq!(o.lock_grace, 10);
        let o = Options::parse_from(["sheep", "-c", "gossip:10.0.0.1:17000,10.0.0.2:17000", "/s"]);
        assert_eq!(
            o.driver().unwrap(),
            ClusterDriver::Gossip(vec![
                "10.0.0.1:17000".parse().unwrap(),
                "10.0.0.2:17000".parse().unwrap()
            ])
        );
        assert_eq!(o.zone(), 16777343);
        assert!(Options::parse_from(["sheep", "-c", "corosync", "/s"])
            .driver()
            .is_err());
    }
}
