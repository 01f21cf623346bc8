//! Nexmark: every continuous Nexmark query of `sql-tests/nexmark/` catching up with a
//! preloaded run, next to the same SELECT run once as a bounded query; Spark Structured
//! Streaming's tumbling-window count next to Runnel's in both emit modes; and how soon a
//! window's `EMIT ON WINDOW CLOSE` row is readable once the watermark passes its end.
//!
//! ```text
//! cargo bench --bench nexmark                          # 10,000,000 events
//! RUNNEL_BENCH_ROWS=1000000 cargo bench --bench nexmark
//! RUNNEL_BENCH_QUERIES=q0,q17 cargo bench --bench nexmark
//! RUNNEL_BENCH_REPEAT=5 RUNNEL_BENCH_QUERIES=q21 cargo bench --bench nexmark
//! RUNNEL_BENCH_PYTHON=/opt/spark-venv/bin/python cargo bench --bench nexmark
//! ```
//!
//! 1. Creates `person`, `auction` and `bid` (4 partitions, watermark 5 s behind `date_time`)
//!    and loads a run with `CALL nexmark(events)`; the load is timed but not a figure.
//! 2. Per query (the first `CREATE` of `nexmark_<file>` in each `.slt` file, so the benchmark
//!    runs exactly what the tests check): the bounded ceiling, `INSERT INTO` a stream of the
//!    query's columns `SELECT …`, then the continuous query, timed from `CREATE` until
//!    `FLUSH` returns, then dropped. For each: events/s (all events of the run, as Nexmark
//!    counts them), the server's CPU time over the wall time (cores used, from
//!    `/proc/<pid>/stat`), events/s per core used, and the server's peak RSS in the interval
//!    (reset through `/proc/<pid>/clear_refs`). With `RUNNEL_BENCH_REPEAT=n`, each query
//!    runs n times (bounded, then continuous, each time), a row per run, then the run with
//!    the median continuous events/s per core again as the query's `median` row: on a
//!    shared machine one run can land on a slow stretch.
//! 3. Spark (local[2], if `RUNNEL_BENCH_PYTHON`, default `python3`, imports pyspark): the bid
//!    times exported as Parquet (untimed), a 1-minute tumbling count with a 5-second
//!    watermark in append and update mode, `Trigger.AvailableNow`, noop sink; Runnel runs the
//!    same count as `EMIT ON WINDOW CLOSE` and as an upsert stream.
//! 4. Latency: 100,000 events/s appended (4 writers, 25 `COPY`s of 1,000 rows a second each)
//!    with their time of writing as event time into a one-partition stream whose watermark is
//!    200 ms behind; a query emits 100-ms tumbling windows on close. Per window, from the
//!    acknowledgement of the first `COPY` that moved the watermark past its end to its row
//!    arriving at a `SUBSCRIBE` client: p50/p90/p99/max. Spark runs each mode once more
//!    than it is measured (the first run of its session warms the JVM up); with
//!    `RUNNEL_BENCH_REPEAT=n`, Runnel's counts and Spark's warm runs are measured n times
//!    each and the medians compared.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use tokio_postgres::{Client, SimpleQueryMessage};

mod common;
use common::{scalar, start_runnel};

/// Flink 1.13's events/s per core used, from the nexmark/nexmark README's table (100 M
/// events, 3 × 8-core workers, RocksDB); DBSP's (Feldera's engine, Rust, 8 threads) where
/// published.
const PEERS: [(&str, &str, &str); 21] = [
    ("q0", "155.1K", "862.6K"),
    ("q1", "158.0K", "861K"),
    ("q2", "175.3K", "867K"),
    ("q3", "152.1K", "850K"),
    ("q4", "34.3K", "738K"),
    ("q7", "12.3K", "-"),
    ("q8", "146.1K", "-"),
    ("q9", "14.2K", "-"),
    ("q10", "57.8K", "-"),
    ("q11", "39.7K", "-"),
    ("q12", "75.6K", "-"),
    ("q13", "130.7K", "-"),
    ("q14", "161.3K", "-"),
    ("q15", "72.4K", "-"),
    ("q16", "18.6K", "-"),
    ("q17", "116.8K", "-"),
    ("q18", "53.7K", "-"),
    ("q19", "44.0K", "-"),
    ("q20", "19.0K", "-"),
    ("q21", "98.5K", "430K"),
    ("q22", "130.0K", "340K"),
];

const LATENCY_RATE: u64 = 100_000;
const LATENCY_WRITERS: u64 = 4;
const LATENCY_INSERTS_PER_S: u64 = 25;
const LATENCY_SECONDS: u64 = 30;
const LATENCY_WINDOW_MS: u64 = 100;
const LATENCY_LATENESS_MS: u64 = 200;

/// One benchmark query: its name, its `CREATE …` and the `SELECT` inside it.
struct Query {
    name: String,
    create: String,
    select: String,
    view: bool,
    /// What its file creates before it, for it to read: run once, before it, untimed.
    setup: Vec<String>,
}

/// The first `CREATE … nexmark_<stem> AS` statement of each `.slt` file under
/// `sql-tests/nexmark`, in query order (q0, q1, q2, q10, …, then the named stages).
fn queries() -> Vec<Query> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql-tests/nexmark");
    let mut found = vec![];
    for entry in std::fs::read_dir(&dir).expect("sql-tests/nexmark") {
        let path = entry.expect("a directory entry").path();
        let stem = path
            .file_stem()
            .expect("a file has a name")
            .to_string_lossy()
            .to_string();
        let name = format!("nexmark_{stem}");
        let text = std::fs::read_to_string(&path).expect("an slt file");
        // The statements of the file, comments left out.
        let statements: Vec<String> = text
            .split("\n\n")
            .filter_map(|record| {
                let record: Vec<&str> = record.lines().skip_while(|l| l.starts_with('#')).collect();
                let sql = record.join("\n");
                sql.strip_prefix("statement ok\n")
                    .map(|s| s.trim().to_string())
            })
            .collect();
        let is_query = |sql: &String| {
            let header = sql.lines().next().unwrap_or_default();
            header.starts_with("CREATE") && header.split_whitespace().any(|w| w == name)
        };
        let Some(at) = statements.iter().position(is_query) else {
            continue;
        };
        let create = statements[at].clone();
        // What the query reads besides the generator's streams (q13's side input).
        let setup = statements[..at]
            .iter()
            .filter(|s| s.starts_with("CREATE") || s.starts_with("INSERT"))
            .cloned()
            .collect();
        let select = create
            .split_once(" AS\n")
            .map(|(_, s)| s)
            .unwrap_or_else(|| panic!("{name}: CREATE … AS on a line of its own"));
        let select = select
            .trim()
            .trim_end_matches("EMIT ON WINDOW CLOSE")
            .trim()
            .to_string();
        let order = stem
            .strip_prefix('q')
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(u32::MAX);
        found.push((
            order,
            stem,
            Query {
                view: create.starts_with("CREATE MATERIALIZED VIEW"),
                name,
                create,
                select,
                setup,
            },
        ));
    }
    found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let only = std::env::var("RUNNEL_BENCH_QUERIES").ok();
    found
        .into_iter()
        .filter(|(_, stem, _)| {
            only.as_ref()
                .is_none_or(|o| o.split(',').any(|q| q.trim() == stem))
        })
        .map(|(_, _, q)| q)
        .collect()
}

/// The server's CPU seconds so far and a reset of its peak RSS, then what they became.
struct Usage {
    pid: u32,
}

impl Usage {
    fn cpu_seconds(&self) -> f64 {
        common::cpu_seconds(self.pid)
    }

    fn reset_peak(&self) {
        // "5" resets the peak resident set size (Linux ≥ 4.0).
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5");
    }

    fn peak_mib(&self) -> f64 {
        common::status_kib(self.pid, "VmHWM:") as f64 / 1024.0
    }
}

/// What one timed run cost.
struct Measured {
    seconds: f64,
    cores: f64,
    peak_mib: f64,
}

impl Measured {
    fn cpu(&self) -> f64 {
        self.seconds * self.cores
    }
}

async fn measure<F: std::future::Future<Output = ()>>(usage: &Usage, run: F) -> Measured {
    usage.reset_peak();
    let cpu = usage.cpu_seconds();
    let start = Instant::now();
    run.await;
    let seconds = start.elapsed().as_secs_f64();
    Measured {
        seconds,
        cores: (usage.cpu_seconds() - cpu) / seconds,
        peak_mib: usage.peak_mib(),
    }
}

async fn execute(client: &Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A stream with the columns of `select`'s result, for the bounded run to insert into.
async fn sink_for(client: &Client, name: &str, select: &str) {
    let statement = client
        .prepare(select)
        .await
        .unwrap_or_else(|e| panic!("{select}: {e}"));
    let columns: Vec<String> = statement
        .columns()
        .iter()
        .map(|c| {
            let ty = match c.type_().name() {
                "int2" => "SMALLINT",
                "int4" => "INTEGER",
                "int8" => "BIGINT",
                "float4" => "REAL",
                "float8" => "DOUBLE PRECISION",
                "numeric" => "NUMERIC(38, 10)",
                "bool" => "BOOLEAN",
                "date" => "DATE",
                "timestamp" => "TIMESTAMP",
                "timestamptz" => "TIMESTAMPTZ",
                _ => "TEXT",
            };
            format!("\"{}\" {ty}", c.name())
        })
        .collect();
    execute(
        client,
        &format!(
            "CREATE STREAM {name} ({}) WITH (partitions = 4)",
            columns.join(", ")
        ),
    )
    .await;
}

fn rate(events: f64) -> String {
    if events >= 1e6 {
        format!("{:.2}M", events / 1e6)
    } else {
        format!("{:.0}K", events / 1e3)
    }
}

/// `RUNNEL_BENCH_REPEAT`: how many times each figure is measured (at least once).
fn repeat() -> usize {
    std::env::var("RUNNEL_BENCH_REPEAT")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
        .max(1)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs every query, bounded then continuous; prints a row for each.
async fn nexmark(client: &Client, usage: &Usage, events: u64) {
    println!(
        "{:<20} {:>8} {:>9} {:>6} {:>9} {:>8} | {:>8} {:>9} {:>6} | {:>6} | {:>7} {:>7}",
        "query",
        "cont. s",
        "events/s",
        "cores",
        "per core",
        "peak MiB",
        "bound. s",
        "events/s",
        "cores",
        "cont/b",
        "Flink/c",
        "DBSP/c",
    );
    let repeat = repeat();
    for q in queries() {
        for statement in &q.setup {
            execute(client, statement).await;
        }
        if !q.setup.is_empty() {
            execute(client, "FLUSH").await;
        }
        let stem = q.name.trim_start_matches("nexmark_");
        let (flink, dbsp) = PEERS
            .iter()
            .find(|(s, _, _)| *s == stem)
            .map_or(("-", "-"), |(_, f, d)| (*f, *d));
        let row = |label: &str, run: &Run| {
            let (continuous, bounded) = (&run.continuous, &run.bounded);
            let per_s = events as f64 / continuous.seconds;
            println!(
                "{:<20} {:>8.2} {:>9} {:>6.2} {:>9} {:>8.0} | {:>8.2} {:>9} {:>6.2} | {:>5.2}x | {:>7} {:>7}   {}",
                label,
                continuous.seconds,
                rate(per_s),
                continuous.cores,
                rate(per_s / continuous.cores),
                continuous.peak_mib,
                bounded.seconds,
                rate(events as f64 / bounded.seconds),
                bounded.cores,
                bounded.seconds / continuous.seconds,
                flink,
                dbsp,
                run.state,
            );
        };
        let mut runs = vec![];
        for _ in 0..repeat {
            let run = run_query(client, usage, &q).await;
            row(&q.name, &run);
            runs.push(run);
        }
        if repeat > 1 {
            // Fewest CPU-seconds, most events per core.
            runs.sort_by(|a, b| a.continuous.cpu().total_cmp(&b.continuous.cpu()));
            row(&format!("{stem} median"), &runs[repeat / 2]);
        }
    }
}

/// One query's bounded and continuous runs, and the continuous query's state at the end.
struct Run {
    bounded: Measured,
    continuous: Measured,
    state: String,
}

async fn run_query(client: &Client, usage: &Usage, q: &Query) -> Run {
    let sink = format!("{}_bounded", q.name);
    sink_for(client, &sink, &q.select).await;
    let insert = format!("INSERT INTO {sink} {}", q.select);
    let bounded = measure(usage, execute(client, &insert)).await;
    execute(client, &format!("DROP STREAM {sink}")).await;

    let continuous = measure(usage, async {
        execute(client, &q.create).await;
        execute(client, "FLUSH").await;
    })
    .await;
    let state = scalar(
        client,
        &format!(
            "SELECT coalesce(groups, 0) || ' groups, ' || coalesce(state_bytes, 0) / 1048576 || ' MiB of state' FROM sys.queries WHERE name = '{}'",
            q.name
        ),
    )
    .await;
    let kind = if q.view {
        "MATERIALIZED VIEW"
    } else {
        "STREAM"
    };
    execute(client, &format!("DROP {kind} {}", q.name)).await;
    Run {
        bounded,
        continuous,
        state,
    }
}

const TUMBLE_COUNT: &str = "SELECT window_start, window_end, count(*) AS n \
     FROM TUMBLE(bid, date_time, INTERVAL '1 minute') GROUP BY window_start, window_end";

/// Runnel's side of the Spark comparison: seconds for EOWC and for EMIT CHANGES (the
/// median of [`repeat`] runs each).
async fn tumble_count(client: &Client, usage: &Usage, bids: u64) -> (f64, f64) {
    let mut out = vec![];
    for (name, emit) in [
        ("minute_counts_close", " EMIT ON WINDOW CLOSE"),
        ("minute_counts", ""),
    ] {
        let mut runs = vec![];
        for _ in 0..repeat() {
            runs.push(tumble_once(client, usage, bids, name, emit).await);
        }
        out.push(median(runs));
    }
    let changes = out.pop().expect("two modes measured");
    (out.pop().expect("two modes measured"), changes)
}

/// One run of the tumbling count as `name`, emitting as `emit` says: its seconds.
async fn tumble_once(client: &Client, usage: &Usage, bids: u64, name: &str, emit: &str) -> f64 {
    let measured = measure(usage, async {
        execute(
            client,
            &format!("CREATE STREAM {name} AS {TUMBLE_COUNT}{emit}"),
        )
        .await;
        execute(client, "FLUSH").await;
    })
    .await;
    let rows = scalar(client, &format!("SELECT count(*) FROM {name}")).await;
    println!(
        "tumbling 1-minute count, {:<20} {:.2} s  {} bids/s  {:.2} cores  ({rows} rows out)",
        if emit.is_empty() {
            "EMIT CHANGES:"
        } else {
            "EMIT ON WINDOW CLOSE:"
        },
        measured.seconds,
        rate(bids as f64 / measured.seconds),
        measured.cores,
    );
    execute(client, &format!("DROP STREAM {name}")).await;
    measured.seconds
}

const SPARK: &str = r#"
import json, sys, time
from pyspark.sql import SparkSession, functions as F
from pyspark.sql.types import LongType, StructField, StructType, TimestampType
parquet, checkpoints, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
spark = (SparkSession.builder.master("local[2]").appName("runnel-nexmark")
         .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
         .config("spark.sql.shuffle.partitions", "2").config("spark.driver.memory", "4g")
         .config("spark.sql.session.timeZone", "UTC")
         .getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
schema = StructType([StructField("auction", LongType()), StructField("price", LongType()),
                     StructField("date_time", TimestampType())])
def run(mode, turn):
    stream = spark.readStream.schema(schema).parquet(parquet)
    counts = (stream.withWatermark("date_time", "5 seconds")
              .groupBy(F.window("date_time", "1 minute")).count())
    start = time.time()
    q = (counts.writeStream.format("noop").outputMode(mode)
         .option("checkpointLocation", f"{checkpoints}/{mode}-{turn}").trigger(availableNow=True).start())
    q.awaitTermination()
    seconds = time.time() - start
    rows = sum(p["numInputRows"] for p in q.recentProgress)
    print(json.dumps({"mode": f"{mode}-{turn}", "seconds": seconds, "rows": rows}), flush=True)
# Each mode once more than measured, on fresh checkpoints: the first run of a session also
# warms the JVM.
for mode in ["append", "update"]:
    run(mode, "cold")
    for turn in range(repeat):
        run(mode, f"warm{turn}")
spark.stop()
"#;

/// Spark's seconds in append and update mode over `parquet` (the median of [`repeat`] warm
/// runs each), if pyspark is there.
fn spark(dir: &Path, parquet: &Path) -> Option<(f64, f64)> {
    let python = common::spark_python()?;
    let repeat = repeat();
    let out = common::run_spark(
        &python,
        dir,
        "spark_nexmark.py",
        SPARK,
        &[
            parquet,
            &dir.join("checkpoints"),
            Path::new(&repeat.to_string()),
        ],
    )?;
    let seconds = |mode: &str| out.seconds("mode", mode);
    let warm = |mode: &str| -> Option<Vec<f64>> {
        (0..repeat)
            .map(|turn| seconds(&format!("{mode}-warm{turn}")))
            .collect()
    };
    match (
        seconds("append-cold"),
        warm("append"),
        seconds("update-cold"),
        warm("update"),
    ) {
        (Some(ac), Some(a), Some(uc), Some(u)) => {
            println!("spark: first runs (JVM warming up) append {ac:.2} s, update {uc:.2} s");
            if repeat > 1 {
                println!("spark: warm runs append {a:.2?} s, update {u:.2?} s");
            }
            Some((median(a), median(u)))
        }
        _ => {
            println!("spark: failed: {}", out.text);
            None
        }
    }
}

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_micros() as u64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Inserts [`LATENCY_RATE`] events/s stamped with the time they are made, and measures, per
/// 100-ms window, how long after the watermark passed its end its EOWC row arrives at a
/// `SUBSCRIBE` client. Returns the latencies in ms, sorted.
async fn eowc_latency(port: u16) -> Vec<f64> {
    let client = common::connect(port, "bench", "runnel").await;
    execute(
        &client,
        &format!(
            "CREATE STREAM ticks (id BIGINT, ts TIMESTAMP, \
             WATERMARK FOR ts AS ts - INTERVAL '{LATENCY_LATENESS_MS} milliseconds');
             CREATE STREAM tick_windows AS SELECT window_end, count(*) AS n \
             FROM TUMBLE(ticks, ts, INTERVAL '{LATENCY_WINDOW_MS} milliseconds') \
             GROUP BY window_end EMIT ON WINDOW CLOSE"
        ),
    )
    .await;
    let reader = common::connect(port, "bench", "runnel").await;
    let mut rows = Box::pin(
        reader
            .simple_query_raw("SUBSCRIBE tick_windows")
            .await
            .expect("subscription"),
    );
    // (greatest event time of an insert, when it was acknowledged)
    let acked: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let rows_per_insert = LATENCY_RATE / LATENCY_WRITERS / LATENCY_INSERTS_PER_S;
    let mut writers = vec![];
    for w in 0..LATENCY_WRITERS {
        let client = common::connect(port, "bench", "runnel").await;
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_secs(1) / LATENCY_INSERTS_PER_S as u32);
            for s in 0..LATENCY_INSERTS_PER_S * LATENCY_SECONDS {
                tick.tick().await;
                let now = micros_now();
                let time = chrono::DateTime::from_timestamp_micros(now as i64)
                    .expect("now is a representable time")
                    .naive_utc()
                    .format("%Y-%m-%d %H:%M:%S%.6f")
                    .to_string();
                let mut csv = String::with_capacity(rows_per_insert as usize * 40);
                for i in 0..rows_per_insert {
                    let id = (s * LATENCY_WRITERS + w) * rows_per_insert + i;
                    csv.push_str(&format!("{id},{time}\n"));
                }
                let sink = client
                    .copy_in("COPY ticks FROM STDIN WITH (FORMAT csv)")
                    .await
                    .expect("copy");
                futures::pin_mut!(sink);
                sink.send(bytes::Bytes::from(csv)).await.expect("copy data");
                sink.finish().await.expect("copy done");
                acked.lock().expect("acks lock").push((now, Instant::now()));
            }
        }));
    }
    let started = Instant::now();
    let writing = async {
        futures::future::join_all(writers).await;
        started.elapsed()
    };
    let mut arrived: Vec<(u64, Instant)> = vec![];
    let reading = async {
        while let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_secs(5), rows.next()).await
        {
            if let Ok(SimpleQueryMessage::Row(row)) = message {
                let end = row.get(0).expect("a window's end").to_string();
                arrived.push((end_micros(&end), Instant::now()));
            }
        }
    };
    let (wrote_for, ()) = tokio::join!(writing, reading);
    let written = LATENCY_WRITERS * LATENCY_INSERTS_PER_S * LATENCY_SECONDS * rows_per_insert;
    println!(
        "  {written} events in {:.1} s: {} events/s (COPY, {rows_per_insert} rows each, {LATENCY_WRITERS} writers)",
        wrote_for.as_secs_f64(),
        rate(written as f64 / wrote_for.as_secs_f64())
    );
    let mut acked = acked.lock().expect("acks lock").clone();
    acked.sort_by_key(|(_, at)| *at);
    let mut latencies: Vec<f64> = arrived
        .iter()
        .filter_map(|(end, at)| {
            // The first acknowledged insert that put the watermark at or past the end.
            let passed = acked
                .iter()
                .find(|(time, _)| *time >= end + LATENCY_LATENESS_MS * 1000)?
                .1;
            Some(at.saturating_duration_since(passed).as_secs_f64() * 1e3)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let late = scalar(
        &client,
        "SELECT late_rows FROM sys.queries WHERE name = 'tick_windows'",
    )
    .await;
    println!(
        "  {} windows emitted, {} with a measured close; {late} late rows",
        arrived.len(),
        latencies.len()
    );
    latencies
}

/// Microseconds since the Unix epoch of a `timestamp` in the text format.
fn end_micros(text: &str) -> u64 {
    let parsed = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    parsed.and_utc().timestamp_micros() as u64
}

fn main() {
    let events = common::bench_rows(10_000_000);
    let dir = common::bench_dir();
    let runtime = common::runtime();
    println!(
        "nexmark: {events} events, 4 partitions; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // A directory: Spark's file stream source reads the files in one.
    let parquet = dir.path().join("bids");
    std::fs::create_dir_all(&parquet).expect("parquet directory");
    let (bids, runnel_counts) = runtime.block_on(async {
        let runnel = start_runnel(&dir.path().join("runnel"));
        let usage = Usage { pid: runnel.pid() };
        let client = common::connect(runnel.port, "bench", "runnel").await;
        // The streams CALL nexmark would make, with the 5-second watermark of the Spark
        // comparison.
        for (kind, columns) in runnel::tables::nexmark::STREAMS {
            execute(
                &client,
                &format!(
                    "CREATE STREAM {kind} ({columns}, \
                     WATERMARK FOR date_time AS date_time - INTERVAL '5 seconds') \
                     WITH (partitions = 4)"
                ),
            )
            .await;
        }
        let load = measure(
            &usage,
            execute(&client, &format!("CALL nexmark({events})")),
        )
        .await;
        let bids: u64 = scalar(&client, "SELECT count(*) FROM bid")
            .await
            .parse()
            .expect("a count");
        println!(
            "load (CALL nexmark, not part of the figures): {:.1} s, {} events/s, {bids} bids",
            load.seconds,
            rate(events as f64 / load.seconds)
        );
        nexmark(&client, &usage, events).await;
        let counts = tumble_count(&client, &usage, bids).await;
        execute(
            &client,
            &format!(
                "COPY (SELECT auction, price, date_time FROM bid) TO '{}'",
                parquet.join("bids.parquet").display()
            ),
        )
        .await;
        println!(
            "EOWC latency at {LATENCY_RATE} events/s ({LATENCY_WINDOW_MS}-ms windows, watermark {LATENCY_LATENESS_MS} ms behind), watermark past the end -> row at a SUBSCRIBE client:"
        );
        let latencies = eowc_latency(runnel.port).await;
        println!(
            "  p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.9),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(f64::NAN),
        );
        (bids, counts)
    });
    if let Some((append, update)) = spark(dir.path(), &parquet) {
        let (close, changes) = runnel_counts;
        println!(
            "spark structured streaming (local[2]), the same bids from Parquet, availableNow, warm runs (median of {}):\n  append {append:.2} s  {} bids/s  (Runnel EOWC {:.1}x)\n  update {update:.2} s  {} bids/s  (Runnel EMIT CHANGES {:.1}x)",
            repeat(),
            rate(bids as f64 / append),
            append / close,
            rate(bids as f64 / update),
            update / changes,
        );
    }
}
