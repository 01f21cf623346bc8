//! The HTTP endpoint (`--http-addr`): `/health` (the process serves), `/ready` (recovery
//! and the continuous queries' restarts are done) and `/metrics` (Prometheus' text format,
//! from the `prometheus-client` crate). It listens before the database opens, so that a
//! recovering server is seen alive but not ready.
//!
//! Metrics are read when scraped, from the log and the engine as `sys.partitions` and
//! `sys.queries` read them: a scrape costs a walk over partitions and queries, and nothing
//! is counted on the paths that write and read records.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::db::Database;
use crate::error::{Error, Result};

/// What the endpoint serves from: the database, once it is open.
#[derive(Default)]
pub struct Endpoint {
    database: OnceLock<Arc<Database>>,
}

impl Endpoint {
    /// From now on `/ready` says so and `/metrics` reads `database`.
    pub fn ready(&self, database: Arc<Database>) {
        let _ = self.database.set(database);
    }
}

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

/// Serves `listener` until `closed` turns true.
pub fn serve(
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
    mut closed: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let router = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(endpoint);
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = closed.wait_for(|c| *c).await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "the HTTP endpoint stopped");
        }
    })
}

async fn ready(State(endpoint): State<Arc<Endpoint>>) -> Response {
    match endpoint.database.get() {
        Some(_) => "ready\n".into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response(),
    }
}

async fn metrics(State(endpoint): State<Arc<Endpoint>>) -> Response {
    let Some(database) = endpoint.database.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    };
    let mut registry = Registry::with_prefix("runnel");
    registry.register_collector(Box::new(Scrape(database.clone())));
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => (
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

/// The metrics read at a scrape.
struct Scrape(Arc<Database>);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

/// One gauge family: its name, help, unit, and each labelled value.
fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    values: impl IntoIterator<Item = (Vec<(&'static str, String)>, i64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        unit.as_ref(),
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, value) in values {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let partitions = crate::tables::system::partition_rows(self.0.tables(), None);
        let partition = |row: &crate::tables::system::PartitionRow| {
            vec![
                ("topic", row.topic.clone()),
                ("partition", row.partition.to_string()),
            ]
        };
        gauges(
            &mut encoder,
            "partition_high_watermark",
            "The offset the next record appended to the partition gets.",
            None,
            partitions.iter().map(|r| (partition(r), r.high_watermark)),
        )?;
        gauges(
            &mut encoder,
            "partition_log_start_offset",
            "The first offset the partition still holds.",
            None,
            partitions
                .iter()
                .map(|r| (partition(r), r.log_start_offset)),
        )?;
        gauges(
            &mut encoder,
            "partition_size",
            "The bytes of the partition's segments on disk.",
            Some(Unit::Bytes),
            partitions.iter().map(|r| (partition(r), r.bytes)),
        )?;
        let queries = self.0.query_statuses();
        let query = |name: &str| vec![("query", name.to_string())];
        gauges(
            &mut encoder,
            "query_epoch",
            "The continuous query's last committed epoch.",
            None,
            queries.iter().map(|q| (query(&q.name), q.epoch as i64)),
        )?;
        gauges(
            &mut encoder,
            "query_lag_records",
            "Input records the continuous query has not processed yet.",
            None,
            queries.iter().map(|q| (query(&q.name), q.lag as i64)),
        )?;
        gauges(
            &mut encoder,
            "query_state",
            "The continuous query's memory for its state.",
            Some(Unit::Bytes),
            queries
                .iter()
                .map(|q| (query(&q.name), q.state_bytes as i64)),
        )?;
        let groups = crate::tables::system::group_rows(self.0.tables()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading consumer groups' offsets for /metrics");
            vec![]
        });
        let committed = || {
            groups.iter().filter_map(|g| {
                let labels = vec![
                    ("group", g.group.clone()),
                    ("stream", g.stream.clone()),
                    ("partition", g.partition.to_string()),
                ];
                Some((labels, g.committed?, g.lag()?))
            })
        };
        gauges(
            &mut encoder,
            "consumer_group_committed_offset",
            "The offset the group committed in the partition: the next it reads.",
            None,
            committed().map(|(labels, offset, _)| (labels, offset)),
        )?;
        gauges(
            &mut encoder,
            "consumer_group_lag_records",
            "Records of the partition after the group's committed offset.",
            None,
            committed().map(|(labels, _, lag)| (labels, lag)),
        )?;
        Ok(())
    }
}
