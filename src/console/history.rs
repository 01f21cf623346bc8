//! The last hour of what the console plots, sampled every [`SAMPLE_EVERY`] from the same
//! sources as `/metrics`: per topic the records appended and read, per continuous query its
//! input and output rows, lag and epoch durations, per consumer group its lag. Counters are
//! kept as read; `/api/history` turns them into rates between samples.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use crate::db::Database;

/// How often the console's plots get a point.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How far back they reach: an hour.
const KEEP: usize = 3600 / SAMPLE_EVERY.as_secs() as usize;

/// One sample of everything plotted.
#[derive(Debug, Clone, Default)]
struct Sample {
    at_ms: i64,
    /// Per topic: records appended and read so far (over its partitions).
    topics: BTreeMap<String, (u64, u64)>,
    queries: BTreeMap<String, QuerySample>,
    /// Per consumer group: records not read yet (over its partitions).
    groups: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Default)]
struct QuerySample {
    rows_in: u64,
    rows_out: u64,
    lag: u64,
    lag_secs: f64,
    /// Seconds its epochs took so far, and how many.
    epoch_secs: f64,
    epochs: u64,
}

/// The samples of the last hour.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Takes a sample of `db` now.
    pub fn sample(&self, db: &Database) {
        let mut sample = Sample {
            at_ms: crate::storage::now_ms(),
            ..Sample::default()
        };
        for row in crate::tables::system::partition_rows(db.tables(), None) {
            let counts = sample.topics.entry(row.topic).or_default();
            counts.0 += row.traffic.records_in.load(Ordering::Relaxed);
            counts.1 += row.traffic.records_out.load(Ordering::Relaxed);
        }
        for query in db.query_statuses() {
            let (epoch_secs, epochs) = query.epoch_seconds.total();
            sample.queries.insert(
                query.name,
                QuerySample {
                    rows_in: query.rows_in,
                    rows_out: query.rows_out,
                    lag: query.lag,
                    lag_secs: query.lag_secs,
                    epoch_secs,
                    epochs,
                },
            );
        }
        match crate::tables::system::group_rows(db.tables()) {
            Ok(groups) => {
                for group in groups {
                    *sample.groups.entry(group.group.clone()).or_default() +=
                        group.lag().unwrap_or(0);
                }
            }
            Err(e) => tracing::warn!(error = %e, "sampling consumer groups for the console"),
        }
        let mut samples = self.samples.lock().expect("history lock");
        samples.push_back(sample);
        while samples.len() > KEEP {
            samples.pop_front();
        }
    }

    /// The plots' series as JSON: the sample times (ms since the epoch) and, per topic,
    /// query and group, one value per time (`null` where it did not exist, and for the first
    /// sample of a rate; what appeared since the sample before counts from 0).
    pub fn to_json(&self) -> Value {
        let samples = self.samples.lock().expect("history lock");
        let times: Vec<i64> = samples.iter().map(|s| s.at_ms).collect();
        // Every name seen in the hour, each series one value per sample.
        let names = |of: &dyn Fn(&Sample) -> Vec<String>| {
            let mut all: Vec<String> = samples.iter().flat_map(of).collect();
            all.sort();
            all.dedup();
            all
        };
        // Per second between a sample and the one before.
        let rate = |i: usize, value: &dyn Fn(&Sample) -> Option<u64>| -> Value {
            let (Some(prev), Some(now)) = (
                i.checked_sub(1).and_then(|p| samples.get(p)),
                samples.get(i),
            ) else {
                return Value::Null;
            };
            // What was not there before (a new topic or query) counted from 0.
            match (value(prev).or(Some(0)), value(now)) {
                (Some(a), Some(b)) if b >= a && now.at_ms > prev.at_ms => {
                    json!((b - a) as f64 * 1000.0 / (now.at_ms - prev.at_ms) as f64)
                }
                _ => Value::Null,
            }
        };
        let series = |value: &dyn Fn(usize) -> Value| -> Vec<Value> {
            (0..samples.len()).map(value).collect()
        };
        let mut topics = serde_json::Map::new();
        for name in names(&|s| s.topics.keys().cloned().collect()) {
            let counts = |s: &Sample| s.topics.get(&name).copied();
            topics.insert(
                name.clone(),
                json!({
                    "records_in_per_sec": series(&|i| rate(i, &|s| counts(s).map(|c| c.0))),
                    "records_out_per_sec": series(&|i| rate(i, &|s| counts(s).map(|c| c.1))),
                }),
            );
        }
        let mut queries = serde_json::Map::new();
        for name in names(&|s| s.queries.keys().cloned().collect()) {
            let query = |s: &Sample| s.queries.get(&name).cloned();
            let at = |i: usize| samples.get(i).and_then(query);
            queries.insert(
                name.clone(),
                json!({
                    "rows_in_per_sec": series(&|i| rate(i, &|s| query(s).map(|q| q.rows_in))),
                    "rows_out_per_sec": series(&|i| rate(i, &|s| query(s).map(|q| q.rows_out))),
                    "lag_records": series(&|i| at(i).map_or(Value::Null, |q| json!(q.lag))),
                    "lag_secs": series(&|i| at(i).map_or(Value::Null, |q| json!(q.lag_secs))),
                    // The mean epoch between two samples, in milliseconds.
                    "epoch_ms": series(&|i| {
                        match (i.checked_sub(1).and_then(at), at(i)) {
                            (Some(a), Some(b)) if b.epochs > a.epochs => {
                                json!((b.epoch_secs - a.epoch_secs) * 1000.0 / (b.epochs - a.epochs) as f64)
                            }
                            _ => Value::Null,
                        }
                    }),
                }),
            );
        }
        let mut groups = serde_json::Map::new();
        for name in names(&|s| s.groups.keys().cloned().collect()) {
            groups.insert(
                name.clone(),
                json!({
                    "lag_records": series(&|i| {
                        samples[i].groups.get(&name).map_or(Value::Null, |lag| json!(lag))
                    }),
                }),
            );
        }
        json!({
            "every_ms": SAMPLE_EVERY.as_millis() as u64,
            "times": times,
            "topics": topics,
            "queries": queries,
            "groups": groups,
        })
    }
}
