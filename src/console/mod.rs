//! The web console, served by the HTTP endpoint at `/`: one page (HTML, script and style
//! compiled into the binary, nothing fetched from elsewhere) that reads the server through
//! two calls:
//!
//! - `POST /api/sql`: one read-only statement (a `SELECT`, `SHOW`, `EXPLAIN`), run in a
//!   session of the caller, its rows as JSON (at most [`MAX_ROWS`], within
//!   [`STATEMENT_TIMEOUT`]). The page's tables are `sys.*` and `information_schema` read
//!   this way, and so is its SQL box.
//! - `GET /api/history`: the last hour of the plotted series ([`history`]).
//!
//! Under `--auth password` both ask for HTTP Basic credentials (as `/metrics` does, see
//! [`Endpoint::caller`]), and the SQL runs with that user's privileges; under `--auth
//! trust` the name alone is taken (`runnel` without one), as pgwire takes it.

pub mod history;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::db::Output;
use crate::http::{CHALLENGE, Denied, Endpoint};
use crate::sql::parser::Statement;

/// Rows `/api/sql` returns at most (the rest are not read).
pub const MAX_ROWS: usize = 1000;
/// How long a console statement may run.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/console.js");
const STYLE: &str = include_str!("page/console.css");

/// The console's routes.
pub fn routes() -> Router<Arc<Endpoint>> {
    Router::new()
        .route("/", get(page))
        .route(
            "/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/console.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/api/history", get(history))
        .route("/api/sql", post(sql))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn json_response(status: StatusCode, value: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// A refused call: its status, SQLSTATE and message, sent as JSON
/// (`{"error": message, "code": SQLSTATE}`); a 401 also asks for credentials.
struct Refused {
    status: StatusCode,
    code: String,
    message: String,
}

impl Refused {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Refused {
        Refused {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }

    fn error(e: &crate::error::Error) -> Refused {
        Refused::new(StatusCode::BAD_REQUEST, e.sqlstate(), e.to_string())
    }

    fn starting() -> Refused {
        Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "57P03",
            "the server is starting",
        )
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = json_response(
            self.status,
            json!({"error": self.message, "code": self.code}),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(CHALLENGE),
            );
        }
        response
    }
}

/// Who is asking: the user their credentials name (see [`Endpoint::caller`]).
async fn caller(
    endpoint: &Endpoint,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<String, Refused> {
    endpoint
        .caller(headers, peer)
        .await
        .map_err(|denied| match denied {
            Denied::Starting => Refused::starting(),
            Denied::Unauthorized(message) => {
                Refused::new(StatusCode::UNAUTHORIZED, "28P01", message)
            }
        })
}

/// The page, for a caller who may read the server (the browser asks for credentials
/// here, and sends them with the page's calls after).
async fn page(
    State(endpoint): State<Arc<Endpoint>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    match caller(&endpoint, &headers, peer).await {
        Ok(_) => asset("text/html; charset=utf-8", PAGE),
        Err(refused) => refused.into_response(),
    }
}

async fn history(
    State(endpoint): State<Arc<Endpoint>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = caller(&endpoint, &headers, peer).await {
        return refused.into_response();
    }
    json_response(StatusCode::OK, endpoint.history().to_json())
}

/// Whether the console runs `statement`: one that reads and ends (a query, `SHOW`,
/// `EXPLAIN` of a query, `DESCRIBE`), never one that writes, sets the session or keeps
/// streaming. (`EXPLAIN ANALYZE` runs what it explains: only a query may be explained.)
fn reads_and_ends(statement: &Statement) -> bool {
    match statement {
        Statement::ShowStreams
        | Statement::ShowTopics
        | Statement::ShowQueries
        | Statement::ShowViews
        | Statement::Describe(_)
        | Statement::ShowVariable(_) => true,
        Statement::DataFusion(df) => datafusion_reads(df),
        _ => false,
    }
}

fn datafusion_reads(statement: &datafusion::sql::parser::Statement) -> bool {
    use datafusion::sql::parser::Statement as Df;
    match statement {
        Df::Statement(s) => sql_reads(s),
        Df::Explain(explain) => datafusion_reads(&explain.statement),
        _ => false,
    }
}

fn sql_reads(statement: &sqlparser::ast::Statement) -> bool {
    use sqlparser::ast::Statement as Sql;
    match statement {
        Sql::Query(_) => true,
        Sql::Explain { statement, .. } => sql_reads(statement),
        _ => false,
    }
}

async fn sql(
    State(endpoint): State<Arc<Endpoint>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: String,
) -> Response {
    match run_sql(&endpoint, &headers, peer, &body).await {
        Ok(result) => json_response(StatusCode::OK, result),
        Err(refused) => refused.into_response(),
    }
}

async fn run_sql(
    endpoint: &Endpoint,
    headers: &HeaderMap,
    peer: SocketAddr,
    body: &str,
) -> Result<Value, Refused> {
    let user = caller(endpoint, headers, peer).await?;
    let db = endpoint.database().ok_or_else(Refused::starting)?;
    let statements = crate::sql::parser::parse(body).map_err(|e| Refused::error(&e))?;
    let refuse = |code: &str, message: &str| Refused::new(StatusCode::BAD_REQUEST, code, message);
    match statements.as_slice() {
        [one] if reads_and_ends(one) => {}
        [Statement::Push(_) | Statement::Subscribe(_)] => {
            return Err(refuse(
                "0A000",
                "the console shows bounded results only: no EMIT CHANGES or SUBSCRIBE",
            ));
        }
        [_] => {
            return Err(refuse(
                "25006",
                "the console runs statements that only read: SELECT, SHOW, EXPLAIN",
            ));
        }
        _ => return Err(refuse("42601", "the console runs one statement at a time")),
    }
    let mut session = db.session();
    session.set_user(&user);
    // Read-only beneath the check above too: a write refused with 25006 by the session.
    if let Some(Err(e)) = session
        .execute("SET default_transaction_read_only = on")
        .await
        .pop()
    {
        return Err(Refused::error(&e));
    }
    let run = async {
        match session.execute(body).await.pop() {
            Some(Ok(Output::Rows(rows))) => rows_json(rows).await,
            Some(Ok(Output::Command { tag, .. })) => Ok(json!({"command": tag})),
            Some(Ok(_)) => Err(refuse(
                "0A000",
                "the console shows bounded results only (no push queries, cursors or COPY)",
            )),
            Some(Err(e)) => Err(Refused::error(&e)),
            None => Ok(json!({"command": "EMPTY"})),
        }
    };
    tokio::time::timeout(STATEMENT_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| {
            Err(refuse(
                "57014",
                &format!(
                    "canceling statement due to the console's timeout of {} s",
                    STATEMENT_TIMEOUT.as_secs()
                ),
            ))
        })
}

/// Up to [`MAX_ROWS`] rows as `{"columns": [...], "rows": [[text or null, ...]],
/// "truncated": bool}`.
async fn rows_json(
    mut rows: datafusion::execution::SendableRecordBatchStream,
) -> Result<Value, Refused> {
    let columns: Vec<String> = rows
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut out: Vec<Vec<Option<String>>> = vec![];
    let mut truncated = false;
    while let Some(batch) = rows.next().await {
        let batch = batch.map_err(|e| Refused::error(&crate::error::Error::from_datafusion(e)))?;
        if !append_rows(&batch, &mut out) {
            truncated = true;
            break;
        }
    }
    Ok(json!({"columns": columns, "rows": out, "truncated": truncated}))
}

/// Appends `batch`'s rows as text; false once [`MAX_ROWS`] are there and rows were left.
fn append_rows(batch: &RecordBatch, out: &mut Vec<Vec<Option<String>>>) -> bool {
    let options = FormatOptions::default();
    let formatters: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok())
        .collect();
    for row in 0..batch.num_rows() {
        if out.len() == MAX_ROWS {
            return false;
        }
        out.push(
            batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(column, formatter)| {
                    if column.is_null(row) {
                        return None;
                    }
                    Some(match formatter {
                        Some(f) => f.value(row).to_string(),
                        None => "?".to_string(),
                    })
                })
                .collect(),
        );
    }
    true
}
