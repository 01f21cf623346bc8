//! Wiring: open the database, listen for Postgres clients, shut down cleanly.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use pgwire::api::ConnectionManager;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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
    let db = Database::open(config.db_config()).await?;
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
    on_listening(addr);
    let manager = Arc::new(ConnectionManager::new());
    let slots = Arc::new(Semaphore::new(config.max_connections));
    tokio::pin!(shutdown);
    loop {
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
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, max = config.max_connections, "refusing connection: too many clients");
                    drop(socket);
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let watch = second_handle(&socket);
                let connection = Connection::new(db.session(), manager.clone(), watch, &auth);
                let tls = tls.clone();
                tokio::spawn(CONNECTION_PANIC.scope(RefCell::new(None), async move {
                    tracing::debug!(%peer, "connection opened");
                    let served = AssertUnwindSafe(pgwire::tokio::process_socket(socket, tls, connection))
                        .catch_unwind()
                        .await;
                    match served {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
                        Err(_) => {
                            let what = CONNECTION_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_default();
                            tracing::warn!(%peer, what, "closed a connection whose task failed (a malformed message can do this)");
                        }
                    }
                    drop(slot);
                }));
            }
        }
    }
    tracing::info!("shutting down: finishing queued writes");
    drop(listener);
    db.shutdown().await;
    tracing::info!("shut down");
    Ok(())
}

tokio::task_local! {
    /// Set while a connection's task runs: a panic there (pgwire's decoders panic on some
    /// malformed messages) ends that connection only, and is logged as one line.
    static CONNECTION_PANIC: RefCell<Option<String>>;
}

/// Installs the process's panic hook: a panic in a connection's task is recorded for the
/// connection to log when it closes; any other panic is reported as usual.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let what = || {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            match info.location() {
                Some(at) => format!("{message} (at {}:{})", at.file(), at.line()),
                None => message,
            }
        };
        let recorded = CONNECTION_PANIC.try_with(|slot| *slot.borrow_mut() = Some(what()));
        if recorded.is_err() {
            default(info);
        }
    }));
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
fn second_handle(socket: &tokio::net::TcpStream) -> Option<tokio::net::TcpStream> {
    use std::os::fd::AsFd;
    let fd = socket.as_fd().try_clone_to_owned().ok()?;
    // The clone shares the socket's open file description, non-blocking already.
    tokio::net::TcpStream::from_std(std::net::TcpStream::from(fd)).ok()
}
