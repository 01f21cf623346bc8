//! Subscriptions and push queries: end-to-end latency from `INSERT` acknowledged to the row
//! arriving at a `SUBSCRIBE` client, at a low and a high insert rate; and how fast one
//! push client drains a long stream from its beginning, and how fast one consumer group
//! drains it with `FETCH`.
//!
//! ```text
//! cargo bench --bench push                            # 1,000 and 50,000 rows/s; 10,000,000 to drain
//! RUNNEL_BENCH_ROWS=1000000 cargo bench --bench push  # a smaller stream to drain
//! ```
//!
//! Latency: 4 connections insert at the given rate (multi-row `INSERT`s, 10 per second per
//! connection at 1,000 rows/s, 50 at 50,000) for 10 s while one client runs
//! `SUBSCRIBE events` (new records only). Each row's latency is its arrival at that client
//! minus the moment its `INSERT` was acknowledged to the writer (zero if it arrived first).
//! Drain: `COPY` loads the rows (untimed), then a new session with `auto_offset_reset =
//! 'earliest'` runs `SELECT * FROM events EMIT CHANGES LIMIT <rows>`; timed from sending the
//! query to the last row received, text format, decoded by tokio-postgres. Then a
//! subscription (`start = 'earliest'`) reads the same rows with `FETCH 10000 FROM c`,
//! committing every ten fetches; timed from the first `DECLARE` to the last `COMMIT`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_postgres::{Client, SimpleQueryMessage};

mod common;
use common::start_runnel;

const WRITERS: u64 = 4;
const SECONDS: u64 = 10;

async fn connect(port: u16) -> Client {
    common::connect(port, "bench", "runnel").await
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Inserts `rate` rows/s for `SECONDS` while a push query reads them; the latencies, sorted.
async fn latency(port: u16, rate: u64, first_id: u64) -> (u64, Vec<Duration>) {
    let reader = connect(port).await;
    let mut rows = Box::pin(
        reader
            .simple_query_raw("SUBSCRIBE events")
            .await
            .expect("subscription"),
    );
    match rows.next().await {
        Some(Ok(SimpleQueryMessage::RowDescription(_))) => {}
        other => panic!("expected the push query's columns, got {other:?}"),
    }
    let total = rate * SECONDS;
    let arrived: Arc<Mutex<Vec<Option<Instant>>>> =
        Arc::new(Mutex::new(vec![None; total as usize]));
    let acked: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; total as usize]));

    let statements_per_writer_per_s = if rate <= 1_000 { 10 } else { 50 };
    let rows_per_statement = rate / WRITERS / statements_per_writer_per_s;
    let mut writers = vec![];
    for w in 0..WRITERS {
        let client = connect(port).await;
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_secs(1) / statements_per_writer_per_s as u32);
            let statements = statements_per_writer_per_s * SECONDS;
            for s in 0..statements {
                tick.tick().await;
                let base = (s * WRITERS + w) * rows_per_statement;
                let values: Vec<String> = (base..base + rows_per_statement)
                    .map(|i| format!("({})", first_id + i))
                    .collect();
                client
                    .batch_execute(&format!("INSERT INTO events VALUES {}", values.join(", ")))
                    .await
                    .expect("insert");
                let now = Instant::now();
                let mut acked = acked.lock().unwrap();
                for i in base..base + rows_per_statement {
                    acked[i as usize] = Some(now);
                }
            }
        }));
    }
    let expected = rows_per_statement * statements_per_writer_per_s * SECONDS * WRITERS;
    let mut received = 0u64;
    while received < expected {
        let message = tokio::time::timeout(Duration::from_secs(30), rows.next())
            .await
            .expect("rows keep arriving")
            .expect("the push query goes on")
            .expect("no error");
        if let SimpleQueryMessage::Row(row) = message {
            let id: u64 = row.get(0).unwrap().parse().unwrap();
            arrived.lock().unwrap()[(id - first_id) as usize] = Some(Instant::now());
            received += 1;
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    drop(rows);
    let acked = acked.lock().unwrap();
    let arrived = arrived.lock().unwrap();
    let mut latencies: Vec<Duration> = acked
        .iter()
        .zip(arrived.iter())
        .filter_map(|(a, r)| Some(r.as_ref()?.saturating_duration_since(*a.as_ref()?)))
        .collect();
    latencies.sort();
    (received, latencies)
}

/// Loads `rows` rows with COPY, then times one push client reading them all.
async fn drain(port: u16, rows: u64) -> Duration {
    let client = connect(port).await;
    client
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT, amount DOUBLE PRECISION) WITH (partitions = 4)",
        )
        .await
        .unwrap();
    let sink = client
        .copy_in("COPY clicks FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    let mut at = 0;
    while at < rows {
        let to = (at + 50_000).min(rows);
        let mut chunk = String::with_capacity(((to - at) * 24) as usize);
        for i in at..to {
            use std::fmt::Write;
            let _ = writeln!(chunk, "{},/page/{},{}.5", i % 100_000, i % 50, i % 1000);
        }
        sink.send(bytes::Bytes::from(chunk)).await.unwrap();
        at = to;
    }
    assert_eq!(sink.finish().await.unwrap(), rows);

    let reader = connect(port).await;
    reader
        .batch_execute("SET auto_offset_reset = 'earliest'")
        .await
        .unwrap();
    let start = Instant::now();
    let mut stream = Box::pin(
        reader
            .simple_query_raw(&format!("SELECT * FROM clicks EMIT CHANGES LIMIT {rows}"))
            .await
            .unwrap(),
    );
    let mut received = 0u64;
    while let Some(message) = stream.next().await {
        if let SimpleQueryMessage::Row(_) = message.unwrap() {
            received += 1;
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(received, rows);
    elapsed
}

/// A consumer group reading the same stream with `FETCH`: `FETCH 10000` at a time in
/// transactions of ten fetches, each ended by `COMMIT` (which fsyncs the offsets).
async fn fetch_drain(port: u16, rows: u64) -> Duration {
    const FETCH: u64 = 10_000;
    let client = connect(port).await;
    client
        .batch_execute("CREATE SUBSCRIPTION drain FROM clicks WITH (start = 'earliest')")
        .await
        .unwrap();
    let start = Instant::now();
    let mut received = 0u64;
    while received < rows {
        client
            .batch_execute("BEGIN; DECLARE c SUBSCRIPTION CURSOR FOR drain")
            .await
            .unwrap();
        for _ in 0..10 {
            let mut stream = Box::pin(
                client
                    .simple_query_raw(&format!("FETCH {FETCH} FROM c"))
                    .await
                    .unwrap(),
            );
            while let Some(message) = stream.next().await {
                if let SimpleQueryMessage::Row(_) = message.unwrap() {
                    received += 1;
                }
            }
            if received >= rows {
                break;
            }
        }
        client.batch_execute("COMMIT").await.unwrap();
    }
    let elapsed = start.elapsed();
    assert_eq!(received, rows);
    elapsed
}

fn main() {
    let rows = common::bench_rows(10_000_000);
    let dir = tempfile::tempdir().expect("bench dir");
    let runtime = common::runtime();
    println!(
        "push queries; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    runtime.block_on(async {
        let runnel = start_runnel(&dir.path().join("runnel"));
        let client = connect(runnel.port).await;
        client
            .batch_execute("CREATE STREAM events (id BIGINT) WITH (partitions = 4)")
            .await
            .unwrap();
        let mut first_id = 0;
        for rate in [1_000, 50_000] {
            let (received, l) = latency(runnel.port, rate, first_id).await;
            first_id += rate * SECONDS;
            println!(
                "latency at {rate} rows/s ({WRITERS} writers), INSERT acknowledged -> row at the SUBSCRIBE client: p50 {}  p99 {}  p99.9 {}  max {}  ({received} rows)",
                ms(percentile(&l, 0.5)),
                ms(percentile(&l, 0.99)),
                ms(percentile(&l, 0.999)),
                ms(*l.last().unwrap_or(&Duration::ZERO)),
            );
        }
        let elapsed = drain(runnel.port, rows).await;
        println!(
            "drain: one push client read {rows} rows (3 columns, text) in {:.2} s: {:.2}M rows/s",
            elapsed.as_secs_f64(),
            rows as f64 / elapsed.as_secs_f64() / 1e6
        );
        let elapsed = fetch_drain(runnel.port, rows).await;
        println!(
            "drain: one consumer group read {rows} rows with FETCH 10000 (COMMIT every 10) in {:.2} s: {:.2}M rows/s",
            elapsed.as_secs_f64(),
            rows as f64 / elapsed.as_secs_f64() / 1e6
        );
    });
}
