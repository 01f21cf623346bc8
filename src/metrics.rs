//! What `/metrics` serves, in Prometheus' text format (the `prometheus-client` crate).
//!
//! Nothing is registered up front: a scrape reads each value from where it is kept — the
//! log's partitions (positions, sizes, records and bytes in and out), its disk (fsync
//! durations) and writer (group-commit sizes), the engine's queries, the consumer groups'
//! offsets, the connections and the memory pool — as `sys.partitions` and `sys.queries`
//! read them. The paths that write and read records only add to atomic counters and, once
//! per fsync, group commit or epoch, to a histogram.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::db::Database;
use crate::tables::system::{GroupRow, PartitionRow};

/// The protocols clients connect with.
#[derive(Debug, Clone, Copy)]
pub enum FrontEnd {
    Postgres = 0,
    Kafka = 1,
}

impl FrontEnd {
    const ALL: [FrontEnd; 2] = [FrontEnd::Postgres, FrontEnd::Kafka];

    fn name(self) -> &'static str {
        match self {
            FrontEnd::Postgres => "postgres",
            FrontEnd::Kafka => "kafka",
        }
    }
}

/// Clients connected now and accepted so far, per front end.
#[derive(Debug, Default)]
pub struct Connections {
    open: [AtomicU64; 2],
    accepted: [AtomicU64; 2],
}

impl Connections {
    /// Counts a connection accepted; it is open until the result is dropped.
    pub fn open(&self, front_end: FrontEnd) -> Open<'_> {
        self.accepted[front_end as usize].fetch_add(1, Ordering::Relaxed);
        self.open[front_end as usize].fetch_add(1, Ordering::Relaxed);
        Open {
            connections: self,
            front_end,
        }
    }
}

/// An open connection, counted until dropped.
pub struct Open<'a> {
    connections: &'a Connections,
    front_end: FrontEnd,
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.connections.open[self.front_end as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Durations of something done again and again: a histogram for `/metrics`, and their
/// total and count (which the histogram does not give back) for the console's means.
#[derive(Debug)]
pub struct Durations {
    histogram: Histogram,
    total_us: AtomicU64,
    count: AtomicU64,
}

impl Durations {
    /// Buckets from `first` seconds, doubling, `buckets` of them.
    pub fn new(first: f64, buckets: u16) -> Durations {
        Durations {
            histogram: Histogram::new(exponential_buckets(first, 2.0, buckets)),
            total_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, took: std::time::Duration) {
        self.histogram.observe(took.as_secs_f64());
        self.total_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn histogram(&self) -> &Histogram {
        &self.histogram
    }

    /// Seconds taken in all, and how many times.
    pub fn total(&self) -> (f64, u64) {
        (
            self.total_us.load(Ordering::Relaxed) as f64 / 1e6,
            self.count.load(Ordering::Relaxed),
        )
    }
}

/// The metrics of `database` now, as Prometheus' text format.
pub fn encode(database: &Arc<Database>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("runnel");
    registry.register_collector(Box::new(Scrape(database.clone())));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// The metrics read at a scrape.
struct Scrape(Arc<Database>);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

type Labels = Vec<(&'static str, String)>;

/// One family of metrics: its name, help, unit and type, and each labelled value.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    (name, help, unit, kind): (&str, &str, Option<Unit>, MetricType),
    values: impl IntoIterator<Item = (Labels, M)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, unit.as_ref(), kind)?;
    for (labels, value) in values {
        value.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A metric without labels.
fn single<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    (name, help, unit, kind): (&str, &str, Option<Unit>, MetricType),
    value: M,
) -> std::fmt::Result {
    value.encode(encoder.encode_descriptor(name, help, unit.as_ref(), kind)?)
}

fn gauge(
    name: &'static str,
    help: &'static str,
) -> (&'static str, &'static str, Option<Unit>, MetricType) {
    (name, help, None, MetricType::Gauge)
}

fn counter(
    name: &'static str,
    help: &'static str,
) -> (&'static str, &'static str, Option<Unit>, MetricType) {
    (name, help, None, MetricType::Counter)
}

fn histogram(
    name: &'static str,
    help: &'static str,
) -> (&'static str, &'static str, Option<Unit>, MetricType) {
    (name, help, None, MetricType::Histogram)
}

fn in_unit(
    (name, help, _, kind): (&'static str, &'static str, Option<Unit>, MetricType),
    unit: Unit,
) -> (&'static str, &'static str, Option<Unit>, MetricType) {
    (name, help, Some(unit), kind)
}

fn partition_labels(row: &PartitionRow) -> Labels {
    vec![
        ("topic", row.topic.clone()),
        ("partition", row.partition.to_string()),
    ]
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let db = &self.0;
        self.partitions(&mut encoder)?;
        let log = db.log();
        single(
            &mut encoder,
            in_unit(
                histogram("log_fsync", "How long each fsync of a log file took."),
                Unit::Seconds,
            ),
            log.disk().fsync_seconds().clone(),
        )?;
        let group_commits = log.group_commits();
        single(
            &mut encoder,
            histogram(
                "log_group_commit_appends",
                "Appends (producer requests, INSERTs, COPY chunks, query outputs) that shared one group commit.",
            ),
            group_commits.appends.clone(),
        )?;
        single(
            &mut encoder,
            histogram(
                "log_group_commit_records",
                "Records written by one group commit.",
            ),
            group_commits.records.clone(),
        )?;
        self.queries(&mut encoder)?;
        self.groups(&mut encoder)?;
        let connections = db.connections();
        let per_front_end = |counts: &[AtomicU64; 2]| {
            FrontEnd::ALL.map(|f| {
                (
                    vec![("front_end", f.name().to_string())],
                    counts[f as usize].load(Ordering::Relaxed),
                )
            })
        };
        family(
            &mut encoder,
            gauge("connections", "Clients connected now."),
            per_front_end(&connections.open).map(|(l, n)| (l, ConstGauge::new(n as i64))),
        )?;
        family(
            &mut encoder,
            counter("connections_accepted", "Client connections accepted."),
            per_front_end(&connections.accepted).map(|(l, n)| (l, ConstCounter::new(n))),
        )?;
        let (reserved, limit) = db.memory_pool_use();
        single(
            &mut encoder,
            in_unit(
                gauge(
                    "memory_pool_reserved",
                    "Memory queries hold now (query state, sorts, joins), of the pool --memory-limit sets.",
                ),
                Unit::Bytes,
            ),
            ConstGauge::new(reserved as i64),
        )?;
        single(
            &mut encoder,
            in_unit(
                gauge(
                    "memory_pool_limit",
                    "The memory queries may hold (--memory-limit).",
                ),
                Unit::Bytes,
            ),
            ConstGauge::new(limit as i64),
        )?;
        Ok(())
    }
}

impl Scrape {
    fn partitions(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let tables = self.0.tables();
        let holds = tables.log.holds();
        let rows = crate::tables::system::partition_rows(tables, Some(&holds));
        let positions = |value: fn(&PartitionRow) -> i64| {
            rows.iter()
                .map(move |r| (partition_labels(r), ConstGauge::new(value(r))))
        };
        family(
            encoder,
            gauge(
                "partition_high_watermark",
                "The offset the next record appended to the partition gets.",
            ),
            positions(|r| r.high_watermark),
        )?;
        family(
            encoder,
            gauge(
                "partition_log_start_offset",
                "The first offset the partition still holds.",
            ),
            positions(|r| r.log_start_offset),
        )?;
        family(
            encoder,
            in_unit(
                gauge(
                    "partition_size",
                    "The bytes of the partition's segments on disk.",
                ),
                Unit::Bytes,
            ),
            positions(|r| r.bytes),
        )?;
        let traffic = |value: fn(&crate::storage::partition::Traffic) -> &AtomicU64| {
            rows.iter().map(move |r| {
                (
                    partition_labels(r),
                    ConstCounter::new(value(&r.traffic).load(Ordering::Relaxed)),
                )
            })
        };
        family(
            encoder,
            counter(
                "partition_records_in",
                "Records appended to the partition since the server started.",
            ),
            traffic(|t| &t.records_in),
        )?;
        family(
            encoder,
            in_unit(
                counter(
                    "partition_in",
                    "Bytes of frames appended to the partition (compressed, as on disk).",
                ),
                Unit::Bytes,
            ),
            traffic(|t| &t.bytes_in),
        )?;
        family(
            encoder,
            counter(
                "partition_records_out",
                "Records read from the partition for scans, queries, subscriptions and Kafka fetches.",
            ),
            traffic(|t| &t.records_out),
        )?;
        family(
            encoder,
            in_unit(
                counter(
                    "partition_out",
                    "Bytes of frames read from the partition for those readers.",
                ),
                Unit::Bytes,
            ),
            traffic(|t| &t.bytes_out),
        )?;
        family(
            encoder,
            gauge(
                "retention_held_records",
                "Records of the partition a reader has not read yet, which retention keeps for it (up to --max-retention-hold-bytes).",
            ),
            rows.iter().flat_map(|r| {
                holds
                    .of(r.topic_id, crate::storage::PartitionId(r.partition as u32))
                    .iter()
                    .map(|hold| {
                        let mut labels = partition_labels(r);
                        labels.push(("holder", hold.holder.clone()));
                        let held = r.high_watermark.saturating_sub(hold.offset.0 as i64);
                        (labels, ConstGauge::new(held.max(0)))
                    })
            }),
        )
    }

    fn queries(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let queries = self.0.query_statuses();
        let labels = |name: &str| vec![("query", name.to_string())];
        let gauges = |value: fn(&crate::tables::QueryStatus) -> i64| {
            queries
                .iter()
                .map(move |q| (labels(&q.name), ConstGauge::new(value(q))))
        };
        let counters = |value: fn(&crate::tables::QueryStatus) -> u64| {
            queries
                .iter()
                .map(move |q| (labels(&q.name), ConstCounter::new(value(q))))
        };
        family(
            encoder,
            gauge(
                "query_epoch",
                "The continuous query's last committed epoch.",
            ),
            gauges(|q| q.epoch as i64),
        )?;
        family(
            encoder,
            gauge(
                "query_lag_records",
                "Input records the continuous query has not processed yet.",
            ),
            gauges(|q| q.lag as i64),
        )?;
        family(
            encoder,
            in_unit(
                gauge(
                    "query_lag",
                    "How far the output is behind the input: 0 with nothing left to read, otherwise the time since the output last reflected everything committed.",
                ),
                Unit::Seconds,
            ),
            queries
                .iter()
                .map(|q| (labels(&q.name), ConstGauge::new(q.lag_secs))),
        )?;
        family(
            encoder,
            counter("query_rows_in", "Input records the query has processed."),
            counters(|q| q.rows_in),
        )?;
        family(
            encoder,
            counter("query_rows_out", "Rows the query has written."),
            counters(|q| q.rows_out),
        )?;
        family(
            encoder,
            in_unit(
                histogram(
                    "query_epoch_duration",
                    "How long each epoch took, from planning to commit.",
                ),
                Unit::Seconds,
            ),
            queries
                .iter()
                .map(|q| (labels(&q.name), q.epoch_seconds.histogram().clone())),
        )?;
        family(
            encoder,
            gauge(
                "query_state_rows",
                "The groups an aggregation keeps (its state's rows).",
            ),
            queries
                .iter()
                .filter_map(|q| Some((labels(&q.name), ConstGauge::new(q.groups? as i64)))),
        )?;
        family(
            encoder,
            in_unit(
                gauge("query_state", "Memory the query's state holds."),
                Unit::Bytes,
            ),
            gauges(|q| q.state_bytes as i64),
        )?;
        family(
            encoder,
            counter(
                "query_late_rows",
                "Input rows dropped (or sent to the late-data stream) as later than the watermark.",
            ),
            counters(|q| q.late_rows),
        )?;
        family(
            encoder,
            counter(
                "query_failures",
                "Times the query failed since the server started.",
            ),
            counters(|q| q.failures),
        )
    }

    fn groups(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let groups = crate::tables::system::group_rows(self.0.tables()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading consumer groups' offsets for /metrics");
            vec![]
        });
        let committed = |value: fn(&GroupRow, i64, i64) -> i64| {
            groups.iter().filter_map(move |g| {
                let labels = vec![
                    ("group", g.group.clone()),
                    ("stream", g.stream.clone()),
                    ("partition", g.partition.to_string()),
                ];
                Some((labels, ConstGauge::new(value(g, g.committed?, g.lag()?))))
            })
        };
        family(
            encoder,
            gauge(
                "consumer_group_committed_offset",
                "The offset the group committed in the partition: the next it reads.",
            ),
            committed(|_, offset, _| offset),
        )?;
        family(
            encoder,
            gauge(
                "consumer_group_lag_records",
                "Records of the partition after the group's committed offset.",
            ),
            committed(|_, _, lag| lag),
        )
    }
}
