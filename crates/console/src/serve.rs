//! Serving the console on its own socket (the service may instead mount the router in its
//! own server).

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Where [`serve`] binds unless told otherwise: loopback only, port 8080.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// A console served on its own socket; dropping it does not stop it, [`shutdown`](Self::shutdown) does.
pub struct Served {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl fmt::Debug for Served {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Served")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Served {
    /// The address it listens on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish, and waits for the server to end.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(io::Error::other(format!(
                "the console's server task failed: {e}"
            ))),
        }
    }
}

/// Serves `router` on `addr` (use [`DEFAULT_ADDR`], or port 0 for any free port).
///
/// An address that is not loopback exposes the console to the network: it is allowed (the
/// caller asked for it) and logged as a warning; secure it with
/// [`basic_auth`](crate::ConsoleBuilder::basic_auth) or
/// [`bearer_token`](crate::ConsoleBuilder::bearer_token) and TLS in front.
pub async fn serve(router: Router, addr: SocketAddr) -> io::Result<Served> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("could not bind the console to {addr}: {e}; pick a free port (0: any)"),
        )
    })?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the console listens beyond loopback: make sure it requires credentials");
    }
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(%addr, "console listening");
    Ok(Served {
        addr,
        stop: Some(tx),
        task,
    })
}
