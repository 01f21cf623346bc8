//! Wiring: open the database, listen for Postgres clients, shut down cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use pgwire::api::ConnectionManager;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admission::{self, Slots};
use crate::auth::{Auth, AuthMode, SUPERUSER};
use crate::config::ServerConfig;
use crate::db::Database;
use crate::error::{Error, Result};
use crate::pgwire::Connection;

/// Runs the server until `shutdown` completes. `on_listening` is told the bound address
/// (useful with port 0).
pub async fn run(
    config: ServerConfig,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            Some(crate::tls::acceptor(cert, key).map_err(|e| Error::plan("F0000", e))?)
        }
        _ => None,
    };
    // Served while the database recovers (alive, not ready), once its directory is ours.
    let (closing, closed) = watch::channel(false);
    let endpoint = Arc::new(crate::http::Endpoint::default());
    let mut http = None;
    let db = Database::open_then(config.db_config(), || {
        if let Some(listener) = crate::http::listen(&config.http_addr)? {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!("listening for HTTP on {addr}");
            }
            http = Some(crate::http::serve(
                listener,
                endpoint.clone(),
                closed.clone(),
            ));
        }
        Ok(())
    })
    .await?;
    if config.auth == AuthMode::Password {
        ensure_superuser(&db).await?;
    }
    let auth = Auth::new(config.auth, config.tls_required, db.catalog().clone())?;
    let listener = TcpListener::bind(config.pg_addr)
        .await
        .map_err(|e| Error::plan("58000", format!("cannot listen on {}: {e}", config.pg_addr)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::plan("58000", format!("cannot listen on {}: {e}", config.pg_addr)))?;
    let kafka = listen_for_kafka(&config, &db, closed.clone()).await?;
    // Ready (as `/ready` says) before anyone is told where to connect.
    endpoint.ready(db.clone(), auth.clone());
    on_listening(addr);
    let manager = Arc::new(ConnectionManager::new());
    let slots = Slots::new(
        config.max_connections,
        config.superuser_reserved_connections,
    );
    let startup_timeout = Duration::from_millis(config.startup_timeout_ms);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection");
                        continue;
                    }
                };
                let Some(ticket) = slots.arrive() else {
                    tracing::warn!(%peer, max = config.max_connections, "refusing a connection: too many clients starting up");
                    connections.spawn(refuse(socket, admission::TOO_MANY));
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let watch = second_handle(&socket).map(Arc::new);
                let connection = Connection::new(db.session(), manager.clone(), watch.clone(), &auth, ticket.clone());
                let tls = tls.clone();
                let mut closed = closed.clone();
                let db = db.clone();
                connections.spawn(async move {
                    let _open = db.connections().open(crate::metrics::FrontEnd::Postgres);
                    tracing::debug!(%peer, "connection opened");
                    let served = crate::panics::contain(pgwire::tokio::process_socket(socket, tls.clone(), connection));
                    let late = async {
                        if tokio::time::timeout(startup_timeout, ticket.admitted()).await.is_ok() {
                            std::future::pending::<()>().await;
                        }
                    };
                    tokio::select! {
                        served = served => match served {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
                            Err(what) => tracing::warn!(%peer, what, "closed a connection whose task failed (a malformed message can do this)"),
                        },
                        _ = late => tracing::info!(%peer, ms = startup_timeout.as_millis() as u64, "closed a connection that did not finish start-up in time"),
                        _ = async { let _ = closed.wait_for(|c| *c).await; } => {
                            // A client on plain TCP is told why (TLS connections just close).
                            if let (Some(socket), None) = (&watch, &tls) {
                                write_all(socket, &admission::fatal_response("57P01", "terminating connection due to administrator command")).await;
                            }
                        }
                    }
                    drop(ticket);
                });
            }
        }
    }
    // Every client is told, and its connection closed, before the writes drain.
    drop(listener);
    closing.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if let Some(kafka) = kafka {
        let _ = kafka.await;
    }
    if let Some(http) = http {
        let _ = http.await;
    }
    tracing::info!("shutting down: finishing queued writes");
    db.shutdown().await;
    tracing::info!("shut down");
    Ok(())
}

/// Starts serving Kafka clients on --kafka-addr, unless it is `off`.
async fn listen_for_kafka(
    config: &ServerConfig,
    db: &Arc<Database>,
    closed: watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    if config.kafka_addr == "off" {
        return Ok(None);
    }
    if config.auth == AuthMode::Password {
        // Kafka clients would come in without a password: not until SASL is served.
        tracing::warn!(
            "not serving Kafka clients: with --auth password they would need SASL, which is not supported yet (--kafka-addr off silences this)"
        );
        return Ok(None);
    }
    let cannot = |e: std::io::Error| {
        Error::plan(
            "58000",
            format!(
                "cannot listen for Kafka clients on {}: {e}",
                config.kafka_addr
            ),
        )
    };
    let (listeners, port) = crate::kafka::bind(&config.kafka_addr)
        .await
        .map_err(cannot)?;
    let at = config
        .kafka_advertised
        .as_ref()
        .unwrap_or(&config.kafka_addr);
    let advertised = parse_host_port(at, port).ok_or_else(|| {
        Error::plan(
            "22023",
            format!("Kafka clients cannot be told to connect to {at}: expected host:port"),
        )
    })?;
    let bound: Vec<String> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();
    tracing::info!(
        "listening for Kafka clients on {} (advertised as {}:{})",
        bound.join(", "),
        advertised.host,
        advertised.port
    );
    let settings = crate::kafka::Settings {
        advertised,
        auto_create_topics: config.kafka_auto_create_topics,
        num_partitions: config.kafka_num_partitions,
    };
    Ok(Some(tokio::spawn(crate::kafka::serve(
        listeners,
        db.clone(),
        settings,
        closed,
    ))))
}

/// `host:port` (`[v6]:port` too) as advertised, with `bound` for port 0.
fn parse_host_port(at: &str, bound: u16) -> Option<crate::kafka::Advertised> {
    let (host, port) = at.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().ok()?;
    (!host.is_empty()).then(|| crate::kafka::Advertised {
        host: host.to_string(),
        port: if port == 0 { bound } else { port },
    })
}

/// In password mode the superuser must exist: made from `RUNNEL_PASSWORD` the first time.
async fn ensure_superuser(db: &Database) -> Result<()> {
    let catalog = db.catalog();
    let _ddl = catalog.ddl_lock().await;
    let mut data = (*catalog.snapshot()).clone();
    if data.users.contains_key(SUPERUSER) {
        return Ok(());
    }
    let password = std::env::var("RUNNEL_PASSWORD").unwrap_or_default();
    if password.is_empty() {
        return Err(Error::plan(
            "28P01",
            format!(
                "--auth password: set RUNNEL_PASSWORD to the password of the superuser \"{SUPERUSER}\" for this first start in password mode"
            ),
        ));
    }
    let mut superuser = crate::auth::user(SUPERUSER, Some(&password))?;
    superuser.superuser = true;
    data.users.insert(SUPERUSER.into(), superuser);
    catalog.commit(data, vec![]).await?;
    tracing::info!(
        user = SUPERUSER,
        "created the superuser from RUNNEL_PASSWORD"
    );
    Ok(())
}

/// A second handle on a connection's socket. pgwire reads the socket only between
/// statements; while a push query waits for rows, this one notices the client leaving.
/// Refuses a socket before start-up, as PostgreSQL does when it is full: its start-up message
/// is read (after answering "no" to a TLS or GSS request, so that the client shows the
/// message), then a FATAL 53300 is sent, and the socket closed once the client has read it.
async fn refuse(mut socket: tokio::net::TcpStream, message: &'static str) {
    use tokio::io::AsyncReadExt;
    const ENCRYPTION_REQUESTS: [u32; 2] = [80877103, 80877104];
    let mut first = [0u8; 1024];
    for _ in 0..2 {
        let read = tokio::time::timeout(Duration::from_secs(1), socket.read(&mut first)).await;
        let Ok(Ok(n)) = read else { return };
        let code = (n == 8).then(|| u32::from_be_bytes([first[4], first[5], first[6], first[7]]));
        if !code.is_some_and(|c| ENCRYPTION_REQUESTS.contains(&c)) {
            break;
        }
        write_all(&socket, b"N").await;
    }
    write_all(&socket, &admission::fatal_response("53300", message)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.read(&mut first)).await;
}

/// Writes `bytes` to a socket someone else may also hold, for at most a second.
async fn write_all(socket: &tokio::net::TcpStream, mut bytes: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while !bytes.is_empty() {
            if socket.writable().await.is_err() {
                return;
            }
            match socket.try_write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

fn second_handle(socket: &tokio::net::TcpStream) -> Option<tokio::net::TcpStream> {
    use std::os::fd::AsFd;
    let fd = socket.as_fd().try_clone_to_owned().ok()?;
    // The clone shares the socket's open file description, non-blocking already.
    tokio::net::TcpStream::from_std(std::net::TcpStream::from(fd)).ok()
}
