//! The Kafka front end: Kafka clients reach the same topics and streams that SQL reads and
//! writes, as pgwire's clients do, through [`crate::db`] only.
//!
//! ```text
//!   socket ──▶ connection (bytes) ──▶ codec (frames, headers; sans-IO) ──▶ handler ──▶ db
//!          ◀──                    ◀──                                   ◀──
//! ```
//!
//! Each connection answers its requests in order, as Kafka does; its Produce requests are
//! pipelined (each queued for the log as it is read, answered once durable), so requests in
//! flight share an fsync; and where a Fetch answer leaves records behind, the next ones are
//! read ahead while the client parses it, so a consumer that is behind and the server work
//! at once instead of in turn. What is served is [`apis`]'s table; see `docs/kafka.md` for
//! what clients can do today.

pub mod apis;
pub mod codec;
mod connection;
pub mod coordinator;
mod handler;
pub mod records;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::db::Database;

/// Where Kafka clients are told to connect: this node's host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    pub host: String,
    pub port: u16,
}

/// How the Kafka front end behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    pub advertised: Advertised,
    /// Metadata requests for unknown topics create them (schemaless).
    pub auto_create_topics: bool,
    /// The partitions of a topic created without a count: auto-created, or by CreateTopics
    /// with -1 (Kafka's `num.partitions`).
    pub num_partitions: u32,
}

/// The node id of this single-node cluster.
pub const NODE_ID: i32 = 1;

/// Accepts Kafka clients on `listeners` until `closing` turns true.
pub async fn serve(
    listeners: Vec<TcpListener>,
    db: Arc<Database>,
    settings: Settings,
    mut closing: watch::Receiver<bool>,
) {
    let handler = Arc::new(handler::Handler::new(db, settings));
    let mut accepting = JoinSet::new();
    for listener in listeners {
        let handler = handler.clone();
        let closing = closing.clone();
        accepting.spawn(accept(listener, handler, closing));
    }
    let _ = closing.wait_for(|c| *c).await;
    accepting.shutdown().await;
}

async fn accept(
    listener: TcpListener,
    handler: Arc<handler::Handler>,
    mut closing: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        tokio::select! {
            _ = closing.wait_for(|c| *c) => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    connections.spawn(connection::run(socket, peer, handler.clone()));
                }
                Err(e) => tracing::warn!(error = %e, "accepting a Kafka connection"),
            },
        }
    }
    connections.shutdown().await;
}

/// Binds every address `host:port` resolves to (`localhost` is 127.0.0.1 and ::1, and
/// clients may try either first); the port actually bound is the first listener's.
pub async fn bind(addr: &str) -> std::io::Result<(Vec<TcpListener>, u16)> {
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr).await?.collect();
    addrs.dedup();
    let mut listeners: Vec<TcpListener> = vec![];
    let mut port = None;
    for mut at in addrs {
        if let Some(port) = port {
            at.set_port(port);
        }
        match TcpListener::bind(at).await {
            Ok(listener) => {
                port.get_or_insert(listener.local_addr()?.port());
                listeners.push(listener);
            }
            // One family missing (no IPv6 on this host) is fine if another listens.
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                tracing::debug!(%at, error = %e, "not listening for Kafka clients there");
            }
            Err(e) => return Err(e),
        }
    }
    match port {
        Some(port) => Ok((listeners, port)),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{addr} resolves to no address to listen on"),
        )),
    }
}
