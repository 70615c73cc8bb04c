//! The data port's accept loop: peers announce themselves with
//! [`crate::peer::PREAMBLE`]; anything else is a Sheepdog-protocol client.

use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::node::Sheep;
use crate::peer::{serve_peer, PeerService, PREAMBLE};

/// Accepts connections until the task is dropped.
pub async fn serve(sheep: Arc<Sheep>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep going.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let sheep = sheep.clone();
        tokio::spawn(async move {
            if let Err(e) = route(sheep, stream).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

async fn route(sheep: Arc<Sheep>, mut stream: TcpStream) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 4];
    stream.read_exact(&mut first).await?;
    let (read, write) = stream.into_split();
    if first == PREAMBLE {
        let views = sheep.membership.subscribe();
        let service: Arc<dyn PeerService> = sheep;
        serve_peer(read, write, service, views).await;
        Ok(())
    } else {
        super::sheepdog::serve_client(sheep, first, read, write).await
    }
}
