//! Whether a commit's cost grows with metadata: single-row `INSERT` latency on a
//! 1,000-partition stream with no consumer groups, then the same with 1,000 groups each
//! holding committed offsets for all 1,000 partitions (a million offsets in the commit
//! log), in one run on one server.
//!
//! ```text
//! cargo bench --bench metadata                            # 2,000 INSERTs per case
//! RUNNEL_BENCH_ROWS=500 cargo bench --bench metadata      # fewer
//! ```
//!
//! Each case: one connection sends `INSERT INTO s VALUES (i)` one after another (each is
//! acknowledged after its fsync), after 100 untimed warm-up statements; latency is from
//! sending the statement to its acknowledgement. The groups are made with `CREATE
//! SUBSCRIPTION … WITH (start = 'earliest')`, which commits an offset for every partition.

use std::time::{Duration, Instant};

mod common;
use common::{bench_rows, start_runnel};

const PARTITIONS: u32 = 1_000;
const GROUPS: u32 = 1_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// `count` single-row INSERTs, one at a time; their latencies, sorted.
async fn inserts(client: &tokio_postgres::Client, first: u64, count: u64) -> Vec<Duration> {
    for i in 0..100 {
        client
            .batch_execute(&format!("INSERT INTO s VALUES ({})", first + i))
            .await
            .unwrap();
    }
    let mut latencies = Vec::with_capacity(count as usize);
    for i in 0..count {
        let started = Instant::now();
        client
            .batch_execute(&format!("INSERT INTO s VALUES ({})", first + 100 + i))
            .await
            .unwrap();
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies
}

fn report(case: &str, latencies: &[Duration]) {
    let total: Duration = latencies.iter().sum();
    println!(
        "{case:<34} {:>6} inserts  p50 {:>9}  p99 {:>9}  mean {:>9}  {:>7.0} inserts/s",
        latencies.len(),
        ms(percentile(latencies, 0.5)),
        ms(percentile(latencies, 0.99)),
        ms(total / latencies.len() as u32),
        latencies.len() as f64 / total.as_secs_f64()
    );
}

fn commit_log_bytes(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("commit.log"))
        .map(|m| m.len())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let count = bench_rows(2_000);
    let dir = tempfile::tempdir().unwrap();
    let runnel = start_runnel(dir.path());
    let client = common::connect(runnel.port, "bench", "runnel").await;
    client
        .batch_execute(&format!(
            "CREATE STREAM s (id BIGINT) WITH (partitions = {PARTITIONS})"
        ))
        .await
        .unwrap();

    println!(
        "single-row INSERT latency, {PARTITIONS}-partition stream (release build, fsync per statement)"
    );
    let none = inserts(&client, 0, count).await;
    report("no consumer groups", &none);
    println!(
        "  commit.log: {:.1} MiB",
        commit_log_bytes(dir.path()) as f64 / 1048576.0
    );

    let started = Instant::now();
    for g in 0..GROUPS {
        client
            .batch_execute(&format!(
                "CREATE SUBSCRIPTION g{g} FROM s WITH (start = 'earliest')"
            ))
            .await
            .unwrap();
    }
    let offsets: i64 = client
        .query_one("SELECT count(*) FROM sys.consumer_groups", &[])
        .await
        .unwrap()
        .get(0);
    println!(
        "  made {GROUPS} groups ({offsets} committed offsets) in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let grouped = inserts(&client, 1_000_000, count).await;
    report(
        &format!("{GROUPS} groups x {PARTITIONS} partitions"),
        &grouped,
    );
    println!(
        "  commit.log: {:.1} MiB",
        commit_log_bytes(dir.path()) as f64 / 1048576.0
    );
    drop(runnel);
}
