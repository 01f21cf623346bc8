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

use tokio_postgres::Client;

mod common;
use common::clicks::{
    Probed, create_clicks, csv_chunk, latency_line, load, probe, rate, run_for, write_clicks,
};
use common::{scalar, start_runnel};

const USERS: u64 = 100_000;
const INSERT_RATE: u64 = 10_000;
const WRITERS: u64 = 4;
const ROWS_PER_INSERT: u64 = 10;
const LATENCY_SECONDS: u64 = 20;
const PROBE_EVERY: Duration = Duration::from_millis(20);

async fn connect(port: u16) -> Client {
    common::connect(port, "bench", "runnel").await
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

async fn latency(port: u16) -> (u64, Duration, Probed, Probed) {
    let stop = Arc::new(AtomicBool::new(false));
    let inserted = Arc::new(AtomicU64::new(0));
    let mut clients = vec![];
    for _ in 0..WRITERS {
        clients.push(connect(port).await);
    }
    let writers = write_clicks(
        clients,
        INSERT_RATE,
        ROWS_PER_INSERT,
        USERS,
        stop.clone(),
        inserted.clone(),
    );
    let view = tokio::spawn(probe(
        connect(port).await,
        10_000_000,
        "/probe",
        |marker, _| format!("SELECT count(*) FROM per_user WHERE user_id = {marker}"),
        PROBE_EVERY,
        stop.clone(),
    ));
    let stream = tokio::spawn(probe(
        connect(port).await,
        20_000_000,
        "/cart",
        // Reads only the frames of the last second: the time index finds them.
        |marker, since| {
            format!(
                "SELECT count(*) FROM cart WHERE _timestamp >= to_timestamp_millis({since}) AND user_id = {marker}"
            )
        },
        PROBE_EVERY,
        stop.clone(),
    ));
    let elapsed = run_for(LATENCY_SECONDS, &stop, writers).await;
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
            file.write_all(csv_chunk(at, next, USERS).as_bytes()).ok()?;
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
                &create_clicks(4),
            )
            .await
            .unwrap();
        let loaded = load(&client, rows, USERS).await;
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
        println!("{}", latency_line("view (key lookup)", &view));
        println!("{}", latency_line("derived stream", &stream));
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
