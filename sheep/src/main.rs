//! `sheep`: parses the command line, starts a node and runs it until SIGINT
//! or SIGTERM, then leaves the cluster cleanly.

use anyhow::Context;
use clap::Parser;
use sheep::config::Options;
use sheep::frontend::attach::AttachCatalog;
use sheep::frontend::{http, listener, nbd};
use sheep::node::{ClientPorts, Sheep};
use tokio::signal::unix::{signal, SignalKind};

fn main() -> anyhow::Result<()> {
    let opts = Options::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.workers())
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(opts))
}

async fn run(opts: Options) -> anyhow::Result<()> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| opts.log_filter());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    // Before anything records: the instruments bind to the recorder once.
    let metrics = match sheep::metrics::install() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!("metrics disabled: {e}");
            None
        }
    };

    let addr = std::net::SocketAddr::new(opts.bind, opts.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    // Bind every port before joining the cluster, so a clash fails fast.
    let nbd_listener = if opts.nbd_port != 0 {
        let addr = std::net::SocketAddr::new(opts.bind, opts.nbd_port);
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for NBD on {addr}"))?;
        tracing::info!(%addr, "serving VDIs over NBD");
        Some(l)
    } else {
        None
    };
    let http_port = opts.http_port().map_err(anyhow::Error::msg)?;
    let http_listener = if http_port != 0 {
        let addr = std::net::SocketAddr::new(opts.bind, http_port);
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for HTTP on {addr}"))?;
        tracing::info!(%addr, "serving the storage API and /metrics over HTTP");
        Some(l)
    } else {
        None
    };
    let sheep = Sheep::start(&opts)
        .await
        .with_context(|| format!("cannot start sheep in {}", opts.store_dir.display()))?;
    tracing::info!(
        addr = %sheep.local.addr,
        zone = sheep.local.zone,
        vnodes = sheep.local.vnodes,
        "sheep is serving"
    );
    sheep.set_client_ports(ClientPorts {
        nbd: opts.nbd_port,
        http: http_port,
    });
    sheep.set_lock_grace(std::time::Duration::from_secs(opts.lock_grace));
    let catalog = AttachCatalog::new(sheep.volumes.clone(), sheep.local.addr);
    let server = tokio::spawn(listener::serve(sheep.clone(), listener));
    let nbd = nbd_listener.map(|l| tokio::spawn(nbd::serve(catalog.clone(), l)));
    let api = http::Api::new(sheep.clone(), catalog, metrics);
    let http = http_listener.map(|l| tokio::spawn(http::serve(api, l)));

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = sheep.stop_requested() => {}
    }
    tracing::info!("leaving the cluster");
    server.abort();
    for task in [nbd, http].into_iter().flatten() {
        task.abort();
    }
    sheep.shutdown().await;
    Ok(())
}
