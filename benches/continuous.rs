//! Continuous queries: how fast a new query catches up with a stream, and how long a row
//! takes from `INSERT` acknowledged to visible in a view or derived stream. With pyspark
//! available, the same catch-up in Spark Structured Streaming, in the same run.
//!
//! ```text
//! cargo bench --bench continuous                       # 10,000,000 clicks, 100,000 users
//! RUNNEL_BENCH_ROWS=1000000 cargo bench --bench continuous
//! RUNNEL_BENCH_PYTHON=/opt/spark-venv/bin/python cargo bench --bench continuous
//! ```
//!
//! 1. Loads the clicks into a 4-partition stream with `COPY` (untimed).
//! 2. Catch-up: creates `CREATE STREAM … AS SELECT … WHERE url = '/cart'` and, separately,
//!    `CREATE MATERIALIZED VIEW … GROUP BY user_id` with count/sum/avg, and times each
//!    from `CREATE` until `FLUSH` returns: input events per second.
//! 3. Latency: writers insert 10,000 rows/s (4 connections, 10-row `INSERT`s); two probes
//!    insert a marked row every 20 ms and poll, one the view (a key lookup), one the derived
//!    stream, until it is there. Reports p50/p90/p99/max of acknowledged → visible.
//! 4. Spark (local[2], shuffle partitions 2): the same two queries as Structured Streaming
//!    over the same rows as Parquet files, `Trigger.AvailableNow`, noop sink; timed from
//!    `start()` to the end, session start-up and the Parquet conversion excluded. It runs if
//!    `RUNNEL_BENCH_PYTHON` (default `python3`) can import pyspark.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::SinkExt;
use tokio_postgres::Client;

mod common;
use common::{scalar, start_runnel};

const USERS: u64 = 100_000;
const URLS: [&str; 8] = [
    "/home",
    "/cart",
    "/search",
    "/products",
    "/checkout",
    "/account",
    "/help",
    "/products/item",
];
const INSERT_RATE: u64 = 10_000;
const WRITERS: u64 = 4;
const ROWS_PER_INSERT: u64 = 10;
const LATENCY_SECONDS: u64 = 20;
const PROBE_EVERY: Duration = Duration::from_millis(20);

/// Rows `from..to` of the click data as CSV: user_id, url, amount, ts.
fn csv_chunk(from: u64, to: u64) -> String {
    let mut out = String::with_capacity(((to - from) * 48) as usize);
    for i in from..to {
        let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef;
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 32;
        let user = x % USERS;
        let url = URLS[((x >> 20) % URLS.len() as u64) as usize];
        let cents = (x >> 40) % 10_000;
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "{user},{url},{}.{:02},2026-01-01 {:02}:{:02}:{:02}",
            cents / 100,
            cents % 100,
            (i / 3_600) % 24,
            (i / 60) % 60,
            i % 60
        );
    }
    out
}

async fn connect(port: u16) -> Client {
    common::connect(port, "bench", "runnel").await
}

async fn load(client: &Client, rows: u64) -> Duration {
    let start = Instant::now();
    let sink = client
        .copy_in("COPY clicks FROM STDIN WITH (FORMAT csv)")
        .await
        .expect("copy");
    futures::pin_mut!(sink);
    let step = 20_000;
    let mut at = 0;
    while at < rows {
        let to = (at + step).min(rows);
        sink.send(bytes::Bytes::from(csv_chunk(at, to)))
            .await
            .expect("copy data");
        at = to;
    }
    let copied = sink.finish().await.expect("copy done");
    assert_eq!(copied, rows);
    start.elapsed()
}

/// Creates a continuous query and waits until it has caught up; returns the elapsed time.
async fn catch_up(client: &Client, create: &str) -> Duration {
    let start = Instant::now();
    client
        .batch_execute(create)
        .await
        .unwrap_or_else(|e| panic!("{create}: {e}"));
    client.batch_execute("FLUSH").await.expect("flush");
    start.elapsed()
}

fn rate(rows: u64, time: Duration) -> String {
    let per_s = rows as f64 / time.as_secs_f64();
    if per_s >= 1e6 {
        format!("{:.2}M events/s", per_s / 1e6)
    } else {
        format!("{:.0}K events/s", per_s / 1e3)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Acknowledged → visible, measured by inserting a marked row and polling for it with the
/// query `visible(marker, since)` (`since`: ms since the Unix epoch, a second before the insert).
async fn probe(
    port: u16,
    marker_base: u64,
    url: &str,
    visible: fn(i64, u128) -> String,
    stop: Arc<AtomicBool>,
) -> (Vec<Duration>, Vec<Duration>) {
    let client = connect(port).await;
    let mut latencies = vec![];
    let mut polls = vec![];
    let mut i = 0u64;
    let mut tick = tokio::time::interval(PROBE_EVERY);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        i += 1;
        let marker = (marker_base + i) as i64;
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            - 1_000;
        let poll = visible(marker, since);
        client
            .batch_execute(&format!(
                "INSERT INTO clicks VALUES ({marker}, '{url}', 1.0, '2026-01-02 00:00:00')"
            ))
            .await
            .expect("probe insert");
        let acked = Instant::now();
        loop {
            let polled = Instant::now();
            let n: i64 = scalar(&client, &poll).await.parse().expect("a count");
            polls.push(polled.elapsed());
            if n > 0 {
                break;
            }
            if acked.elapsed() > Duration::from_secs(30) {
                panic!("marker {marker} not visible after 30 s");
            }
        }
        latencies.push(acked.elapsed());
    }
    latencies.sort();
    polls.sort();
    (latencies, polls)
}

type Probed = (Vec<Duration>, Vec<Duration>);

async fn latency(port: u16) -> (u64, Duration, Probed, Probed) {
    let stop = Arc::new(AtomicBool::new(false));
    let inserted = Arc::new(AtomicU64::new(0));
    let mut writers = vec![];
    let statements_per_writer = INSERT_RATE / ROWS_PER_INSERT / WRITERS;
    for w in 0..WRITERS {
        let client = connect(port).await;
        let stop = stop.clone();
        let inserted = inserted.clone();
        writers.push(tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_secs(1) / statements_per_writer as u32);
            let mut n = w * 1_000_000_000;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let sql = format!("INSERT INTO clicks VALUES {}", {
                    let rows: Vec<String> = (0..ROWS_PER_INSERT)
                        .map(|_| {
                            n += 1;
                            let url = URLS[(n % URLS.len() as u64) as usize];
                            format!("({}, '{url}', 2.5, '2026-01-02 00:00:00')", n % USERS)
                        })
                        .collect();
                    rows.join(", ")
                });
                client.batch_execute(&sql).await.expect("insert");
                inserted.fetch_add(ROWS_PER_INSERT, Ordering::Relaxed);
            }
        }));
    }
    let view = tokio::spawn(probe(
        port,
        10_000_000,
        "/probe",
        |marker, _| format!("SELECT count(*) FROM per_user WHERE user_id = {marker}"),
        stop.clone(),
    ));
    let stream = tokio::spawn(probe(
        port,
        20_000_000,
        "/cart",
        // Reads only the frames of the last second: the time index finds them.
        |marker, since| {
            format!(
                "SELECT count(*) FROM cart WHERE _timestamp >= to_timestamp_millis({since}) AND user_id = {marker}"
            )
        },
        stop.clone(),
    ));
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(LATENCY_SECONDS)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    for w in writers {
        w.await.unwrap();
    }
    (
        inserted.load(Ordering::Relaxed),
        elapsed,
        view.await.unwrap(),
        stream.await.unwrap(),
    )
}

const SPARK: &str = r#"
import json, sys, time
from pyspark.sql import SparkSession, functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType, TimestampType
csv, parquet, checkpoints = sys.argv[1], sys.argv[2], sys.argv[3]
spark = (SparkSession.builder.master("local[2]").appName("runnel-bench")
         .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
         .config("spark.sql.shuffle.partitions", "2").config("spark.driver.memory", "4g")
         .getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
schema = StructType([StructField("user_id", LongType()), StructField("url", StringType()),
                     StructField("amount", DoubleType()), StructField("ts", TimestampType())])
spark.read.schema(schema).csv(csv).write.mode("overwrite").parquet(parquet)
def run(name, query, mode):
    stream = spark.readStream.schema(schema).parquet(parquet)
    start = time.time()
    q = (query(stream).writeStream.format("noop").outputMode(mode)
         .option("checkpointLocation", f"{checkpoints}/{name}").trigger(availableNow=True).start())
    q.awaitTermination()
    seconds = time.time() - start
    rows = sum(p["numInputRows"] for p in q.recentProgress)
    print(json.dumps({"query": name, "seconds": seconds, "rows": rows}), flush=True)
run("filter", lambda s: s.where(F.col("url") == "/cart").select("user_id", "amount", "ts"), "append")
run("aggregate", lambda s: s.groupBy("user_id").agg(F.count("*").alias("n"), F.sum("amount").alias("total"),
                                                   F.avg("amount").alias("mean")), "update")
spark.stop()
"#;

/// Spark's seconds for the filter and the aggregation, if pyspark is there.
fn spark(dir: &Path, rows: u64) -> Option<(f64, f64)> {
    let python = common::spark_python()?;
    let csv = dir.join("csv");
    std::fs::create_dir_all(&csv).ok()?;
    let files = 10;
    for f in 0..files {
        let mut file = std::fs::File::create(csv.join(format!("part-{f:02}.csv"))).ok()?;
        let (from, to) = (rows * f / files, rows * (f + 1) / files);
        let mut at = from;
        while at < to {
            let next = (at + 100_000).min(to);
            file.write_all(csv_chunk(at, next).as_bytes()).ok()?;
            at = next;
        }
    }
    let out = common::run_spark(
        &python,
        dir,
        "spark_bench.py",
        SPARK,
        &[&csv, &dir.join("parquet"), &dir.join("checkpoints")],
    )?;
    match (
        out.seconds("query", "filter"),
        out.seconds("query", "aggregate"),
    ) {
        (Some(f), Some(a)) => Some((f, a)),
        _ => {
            println!("spark: failed: {}", out.text);
            None
        }
    }
}

fn main() {
    let rows = common::bench_rows(10_000_000);
    let dir = common::bench_dir();
    let runtime = common::runtime();
    println!(
        "continuous queries: {rows} clicks, {USERS} users, 4 partitions; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let (filter_time, aggregate_time) = runtime.block_on(async {
        let runnel = start_runnel(&dir.path().join("runnel"));
        let client = connect(runnel.port).await;
        client
            .batch_execute(
                "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT, amount DOUBLE PRECISION, ts TIMESTAMP) WITH (partitions = 4)",
            )
            .await
            .unwrap();
        let loaded = load(&client, rows).await;
        println!("load (COPY, not part of the figures): {:.1} s", loaded.as_secs_f64());

        let filter = catch_up(
            &client,
            "CREATE STREAM cart WITH (partitions = 2) AS SELECT user_id, amount, ts FROM clicks WHERE url = '/cart'",
        )
        .await;
        let out = scalar(&client, "SELECT count(*) FROM cart").await;
        println!("catch-up, filter stream:      {:.2} s  {}  ({out} rows out)", filter.as_secs_f64(), rate(rows, filter));
        let aggregate = catch_up(
            &client,
            "CREATE MATERIALIZED VIEW per_user AS SELECT user_id, count(*) AS n, sum(amount) AS total, avg(amount) AS mean FROM clicks GROUP BY user_id",
        )
        .await;
        let groups = scalar(&client, "SELECT count(*) FROM per_user").await;
        let counted = scalar(&client, "SELECT sum(n) FROM per_user").await;
        assert_eq!(counted, rows.to_string(), "the view counted every click");
        println!(
            "catch-up, aggregation view:   {:.2} s  {}  ({groups} groups)",
            aggregate.as_secs_f64(),
            rate(rows, aggregate)
        );

        // The derived stream again, from now on, for the latency run.
        client
            .batch_execute(
                "DROP STREAM cart; CREATE STREAM cart WITH (partitions = 2, start = 'latest') AS SELECT user_id, amount, ts FROM clicks WHERE url = '/cart'",
            )
            .await
            .unwrap();
        let (inserted, elapsed, view, stream) = latency(runnel.port).await;
        println!(
            "latency at {:.0} inserts/s ({} writers, {}-row INSERTs), INSERT acknowledged -> visible:",
            inserted as f64 / elapsed.as_secs_f64(),
            WRITERS,
            ROWS_PER_INSERT
        );
        for (name, (l, polls)) in [("view (key lookup)", &view), ("derived stream", &stream)] {
            println!(
                "  {name:<18} p50 {}  p90 {}  p99 {}  max {}  ({} probes; one poll takes {} p50)",
                ms(percentile(l, 0.5)),
                ms(percentile(l, 0.9)),
                ms(percentile(l, 0.99)),
                ms(*l.last().unwrap_or(&Duration::ZERO)),
                l.len(),
                ms(percentile(polls, 0.5)),
            );
        }
        (filter, aggregate)
    });
    if let Some((filter, aggregate)) = spark(dir.path(), rows) {
        println!(
            "spark structured streaming (local[2]), same rows from Parquet, availableNow:\n  filter      {filter:.2} s  {}  (Runnel {:.1}x)\n  aggregation {aggregate:.2} s  {}  (Runnel {:.1}x)",
            rate(rows, Duration::from_secs_f64(filter)),
            filter / filter_time.as_secs_f64(),
            rate(rows, Duration::from_secs_f64(aggregate)),
            aggregate / aggregate_time.as_secs_f64(),
        );
    }
}
