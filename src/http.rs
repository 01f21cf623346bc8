//! The HTTP endpoint (`--http-addr`): `/health` (the process serves), `/ready` (recovery
//! and the continuous queries' restarts are done) and `/metrics` (Prometheus' text format,
//! from the `prometheus-client` crate). It listens before the database opens, so that a
//! recovering server is seen alive but not ready.
//!
//! Under `--auth password`, `/metrics` and the console ask for HTTP Basic credentials,
//! checked against the same SCRAM verifiers as a Postgres login ([`Endpoint::caller`]);
//! `/health` and `/ready` answer anyone, as a load balancer or orchestrator asks them.
//!
//! Metrics are read when scraped (see [`crate::metrics`]). The web console is served at `/`
//! (see [`crate::console`]).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{Auth, AuthMode, SUPERUSER};
use crate::console::history::{self, History};
use crate::db::Database;
use crate::error::{Error, Result};

/// What the endpoint serves from: the database and how clients log in, once it is open,
/// and the console's history.
pub struct Endpoint {
    database: OnceLock<Arc<Database>>,
    auth: OnceLock<Auth>,
    history: History,
    /// Password checks run at once: each derives a key (PBKDF2, thousands of rounds), off
    /// the runtime's workers, so that callers sending wrong passwords cannot take the CPU
    /// from the clients already in.
    password_checks: tokio::sync::Semaphore,
}

/// [`Endpoint::password_checks`].
const PASSWORD_CHECKS: usize = 1;

impl Default for Endpoint {
    fn default() -> Endpoint {
        Endpoint {
            database: OnceLock::new(),
            auth: OnceLock::new(),
            history: History::default(),
            password_checks: tokio::sync::Semaphore::new(PASSWORD_CHECKS),
        }
    }
}

impl Endpoint {
    /// From now on `/ready` says so, and `/metrics` and the console read `database`.
    pub fn ready(&self, database: Arc<Database>, auth: Auth) {
        let _ = self.auth.set(auth);
        let _ = self.database.set(database);
    }

    pub fn database(&self) -> Option<&Arc<Database>> {
        self.database.get()
    }

    pub fn auth(&self) -> Option<&Auth> {
        self.auth.get()
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// Who is asking: the user their HTTP Basic credentials name, once the database is
    /// open. Under `--auth password` the password is checked as a Postgres login's is
    /// (a failure is logged as one is); under `--auth trust` the name alone is taken, and
    /// `runnel` without one.
    pub async fn caller(&self, headers: &HeaderMap, peer: SocketAddr) -> Result<String, Denied> {
        let auth = self.auth().ok_or(Denied::Starting)?.clone();
        let credentials = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|v| BASE64.decode(v.trim()).ok())
            .and_then(|v| String::from_utf8(v).ok());
        let (user, password) = match credentials.as_deref().and_then(|c| c.split_once(':')) {
            Some((user, password)) if !user.is_empty() => (user, password),
            _ if auth.mode == AuthMode::Trust => return Ok(SUPERUSER.to_string()),
            _ => {
                return Err(Denied::Unauthorized(
                    "this server asks for a user name and password".into(),
                ));
            }
        };
        let matches = auth.mode == AuthMode::Trust || {
            let _turn = self
                .password_checks
                .acquire()
                .await
                .expect("the semaphore is never closed");
            let (user, password) = (user.to_string(), password.to_string());
            tokio::task::spawn_blocking(move || auth.check_password(&user, &password, peer))
                .await
                .unwrap_or(false)
        };
        if matches {
            Ok(user.to_string())
        } else {
            Err(Denied::Unauthorized(format!(
                "password authentication failed for user \"{user}\""
            )))
        }
    }
}

/// Why the endpoint does not serve a caller yet.
pub enum Denied {
    /// The database is still opening.
    Starting,
    /// No credentials, or wrong ones: the answer is a `401` with [`CHALLENGE`].
    Unauthorized(String),
}

/// The `WWW-Authenticate` header of a `401`: HTTP Basic, in UTF-8.
pub const CHALLENGE: &str = "Basic realm=\"Runnel\", charset=\"UTF-8\"";

/// Listens on `addr` (`host:port`), or nowhere for `off`. Called in the runtime.
pub fn listen(addr: &str) -> Result<Option<TcpListener>> {
    if addr == "off" {
        return Ok(None);
    }
    let cannot =
        |e: std::io::Error| Error::plan("58000", format!("cannot listen for HTTP on {addr}: {e}"));
    let listener = std::net::TcpListener::bind(addr).map_err(cannot)?;
    listener.set_nonblocking(true).map_err(cannot)?;
    TcpListener::from_std(listener).map(Some).map_err(cannot)
}

/// Serves `listener` until `closed` turns true, and samples the console's history.
pub fn serve(
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
    mut closed: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let router = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(crate::console::routes())
        .with_state(endpoint.clone());
    tokio::spawn(async move {
        let sampling = tokio::spawn(sample(endpoint, closed.clone()));
        let shutdown = async move {
            let _ = closed.wait_for(|c| *c).await;
        };
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, service)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "the HTTP endpoint stopped");
        }
        let _ = sampling.await;
    })
}

/// Samples the console's history every [`history::SAMPLE_EVERY`] once the database is
/// open, until `closed`.
async fn sample(endpoint: Arc<Endpoint>, mut closed: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(history::SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = closed.wait_for(|c| *c) => return,
        }
        if let Some(db) = endpoint.database().cloned() {
            let endpoint = endpoint.clone();
            // A walk over every partition, query and group: off the runtime's workers.
            let _ = tokio::task::spawn_blocking(move || endpoint.history().sample(&db)).await;
        }
    }
}

/// Asks the endpoint at `addr` (as `--http-addr` names it; an address it listens on for
/// every interface is asked on loopback) for `/health`; why not, if it does not answer ok.
pub fn check_health(addr: &str) -> std::result::Result<(), String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let timeout = std::time::Duration::from_secs(3);
    let mut target = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} names no address"))?;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let fail = |e: std::io::Error| format!("{target}: {e}");
    let mut socket = std::net::TcpStream::connect_timeout(&target, timeout).map_err(fail)?;
    socket.set_read_timeout(Some(timeout)).map_err(fail)?;
    write!(
        socket,
        "GET /health HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    )
    .map_err(fail)?;
    let mut response = String::new();
    socket.read_to_string(&mut response).map_err(fail)?;
    match response.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!(
            "{target}/health answered: {}",
            response.lines().next().unwrap_or("nothing")
        )),
    }
}

async fn ready(State(endpoint): State<Arc<Endpoint>>) -> Response {
    match endpoint.database.get() {
        Some(_) => "ready\n".into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response(),
    }
}

async fn metrics(
    State(endpoint): State<Arc<Endpoint>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    match endpoint.caller(&headers, peer).await {
        Ok(_) => {}
        Err(Denied::Starting) => {
            return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
        }
        Err(Denied::Unauthorized(message)) => {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, CHALLENGE)],
                format!("{message}\n"),
            )
                .into_response();
        }
    }
    let Some(database) = endpoint.database.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    };
    // A walk over every partition, query and group: off the runtime's workers.
    let database = database.clone();
    let encoded = tokio::task::spawn_blocking(move || crate::metrics::encode(&database)).await;
    match encoded
        .map_err(|e| e.to_string())
        .and_then(|e| e.map_err(|e| e.to_string()))
    {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
