//! Durable ingest and scan-aggregate, Runnel side by side with PostgreSQL, in one run.
//!
//! ```text
//! cargo bench --bench ingest                  # 1,000,000 rows
//! RUNNEL_BENCH_ROWS=200000 cargo bench --bench ingest
//! ```
//! Both servers run on this machine with their default durable settings (Runnel: fsync
//! before acknowledging; PostgreSQL: fsync = on, synchronous_commit = on), on fresh data
//! directories under `RUNNEL_BENCH_DIR` (default: the system temp directory). The same
//! client code loads both: `COPY … FROM STDIN` (CSV) from one connection, and multi-row
//! `INSERT`s of 1,000 rows from 4 concurrent connections, each three times into a fresh
//! table (the median is reported); then `SELECT url, count(*) … GROUP BY url` (best of three
//! after a warm-up). PostgreSQL is found on `PATH` or under
//! `/usr/lib/postgresql/*/bin`; as root it runs as the `postgres` user. Without it, only
//! Runnel's figures are printed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::SinkExt;
use tokio_postgres::Client;

mod common;
use common::{Postgres, start_runnel};

const INSERT_ROWS: usize = 1000;
const INSERT_CONNECTIONS: usize = 4;

/// About 100 bytes per row: user_id, url, ts, amount, agent.
fn csv_rows(n: usize) -> Vec<String> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|i| {
            let user = next() % 100_000;
            let page = next() % 1_000;
            format!(
                "{user},/products/category-{:02}/item-{page:04},2026-01-01 {:02}:{:02}:{:02}.{:03},{}.{:02},Mozilla/5.0 (X11; Linux)\n",
                page % 50,
                (i / 3600) % 24,
                (i / 60) % 60,
                i % 60,
                i % 1000,
                next() % 500,
                next() % 100
            )
        })
        .collect()
}

async fn connect(port: u16, user: &str) -> Client {
    common::connect(port, user, "postgres").await
}

struct Figures {
    copy: Duration,
    insert: Duration,
    copy_runs: Vec<Duration>,
    insert_runs: Vec<Duration>,
    aggregate: Duration,
    groups: usize,
}

const RUNS: usize = 3;

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

async fn copy_into(client: &Client, table: &str, rows: &[String]) -> Duration {
    let start = Instant::now();
    let sink = client
        .copy_in(&format!("COPY {table} FROM STDIN WITH (FORMAT csv)"))
        .await
        .expect("copy");
    futures::pin_mut!(sink);
    let mut buf = String::with_capacity(1 << 20);
    for row in rows {
        buf.push_str(row);
        if buf.len() >= 1 << 16 {
            sink.send(bytes::Bytes::from(std::mem::take(&mut buf)))
                .await
                .expect("copy data");
        }
    }
    sink.send(bytes::Bytes::from(buf)).await.expect("copy data");
    let copied = sink.finish().await.expect("copy done");
    assert_eq!(copied as usize, rows.len());
    start.elapsed()
}

async fn insert_into(port: u16, user: &str, table: &str, statements: &[String]) -> Duration {
    let mut connections = vec![];
    for _ in 0..INSERT_CONNECTIONS {
        connections.push(connect(port, user).await);
    }
    let shares: Vec<Vec<String>> = (0..INSERT_CONNECTIONS)
        .map(|i| {
            statements
                .iter()
                .skip(i)
                .step_by(INSERT_CONNECTIONS)
                .map(|s| s.replacen("{table}", table, 1))
                .collect()
        })
        .collect();
    let start = Instant::now();
    let mut tasks = vec![];
    for (c, mine) in connections.into_iter().zip(shares) {
        tasks.push(tokio::spawn(async move {
            for s in mine {
                c.simple_query(&s).await.expect("insert");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// Loads and queries one server, each load `RUNS` times into a fresh table (median
/// reported); `table_ddl` creates a table named `{table}`.
async fn run(port: u16, user: &str, table_ddl: &str, rows: &[String]) -> Figures {
    let client = connect(port, user).await;
    let statements: Vec<String> = rows
        .chunks(INSERT_ROWS)
        .map(|chunk| {
            let values: Vec<String> = chunk
                .iter()
                .map(|r| {
                    let f: Vec<&str> = r.trim_end().splitn(5, ',').collect();
                    format!("({},'{}','{}',{},'{}')", f[0], f[1], f[2], f[3], f[4])
                })
                .collect();
            format!("INSERT INTO {{table}} VALUES {}", values.join(","))
        })
        .collect();
    let mut copies = vec![];
    let mut inserts = vec![];
    for run in 0..RUNS {
        let copy_table = format!("bench_copy_{run}");
        let insert_table = format!("bench_insert_{run}");
        for table in [&copy_table, &insert_table] {
            client
                .batch_execute(&table_ddl.replace("{table}", table))
                .await
                .expect("create table");
        }
        copies.push(copy_into(&client, &copy_table, rows).await);
        inserts.push(insert_into(port, user, &insert_table, &statements).await);
    }

    // Best of three, after one warm-up.
    let sql = "SELECT url, count(*) FROM bench_copy_0 GROUP BY url";
    client.simple_query(sql).await.expect("aggregate");
    let mut aggregate = Duration::MAX;
    let mut groups = 0;
    for _ in 0..3 {
        let start = Instant::now();
        let out = client.simple_query(sql).await.expect("aggregate");
        aggregate = aggregate.min(start.elapsed());
        groups = out
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count();
    }
    Figures {
        copy: median(copies.clone()),
        insert: median(inserts.clone()),
        copy_runs: copies,
        insert_runs: inserts,
        aggregate,
        groups,
    }
}

fn line(name: &str, rows: usize, bytes: usize, d: Duration) -> String {
    let s = d.as_secs_f64();
    format!(
        "{name:<28} {:>10.0} rows/s {:>8.1} MB/s {:>8.3} s",
        rows as f64 / s,
        bytes as f64 / s / 1e6,
        s
    )
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let n = common::bench_rows(1_000_000) as usize;
    let base = std::env::var("RUNNEL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let work = base.join(format!("runnel-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let rows = csv_rows(n);
    let bytes: usize = rows.iter().map(|r| r.len()).sum();
    println!(
        "{n} rows, {:.1} MB of CSV ({:.0} bytes/row)",
        bytes as f64 / 1e6,
        bytes as f64 / n as f64
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let runnel = start_runnel(&work.join("runnel"));
    let ddl = "CREATE STREAM {table} (user_id BIGINT KEY, url TEXT, ts TIMESTAMP, amount DOUBLE PRECISION, agent TEXT) WITH (partitions = 4)";
    let r = runtime.block_on(run(runnel.port, "runnel", ddl, &rows));
    drop(runnel);

    let pg = Postgres::start(&work);
    let p = pg.as_ref().map(|pg| {
        let ddl = "CREATE TABLE {table} (user_id BIGINT, url TEXT, ts TIMESTAMP, amount DOUBLE PRECISION, agent TEXT)";
        runtime.block_on(run(pg.port, "postgres", ddl, &rows))
    });
    drop(pg);

    println!();
    println!("{}", line("Runnel COPY", n, bytes, r.copy));
    println!("{}", line("Runnel INSERT x4", n, bytes, r.insert));
    println!("{}", line("Runnel scan-aggregate", n, bytes, r.aggregate));
    match &p {
        Some(p) => {
            println!("{}", line("PostgreSQL COPY", n, bytes, p.copy));
            println!("{}", line("PostgreSQL INSERT x4", n, bytes, p.insert));
            println!(
                "{}",
                line("PostgreSQL scan-aggregate", n, bytes, p.aggregate)
            );
            assert_eq!(r.groups, p.groups, "both aggregates find the same groups");
            println!();
            let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64();
            println!(
                "Runnel COPY / PostgreSQL COPY:                 {:.2}x",
                ratio(r.copy, p.copy)
            );
            println!(
                "Runnel INSERT x4 / PostgreSQL INSERT x4:       {:.2}x",
                ratio(r.insert, p.insert)
            );
            println!(
                "Runnel INSERT x4 / PostgreSQL COPY:            {:.2}x",
                ratio(r.insert, p.copy)
            );
            println!(
                "Runnel aggregate / PostgreSQL aggregate:       {:.2}x",
                ratio(r.aggregate, p.aggregate)
            );
        }
        None => println!("PostgreSQL not found: no side-by-side figures"),
    }
    let runs = |d: &[Duration]| {
        d.iter()
            .map(|d| format!("{:.3}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!();
    println!(
        "runs (s): Runnel COPY {} | INSERT {}",
        runs(&r.copy_runs),
        runs(&r.insert_runs)
    );
    if let Some(p) = &p {
        println!(
            "runs (s): PostgreSQL COPY {} | INSERT {}",
            runs(&p.copy_runs),
            runs(&p.insert_runs)
        );
    }
    println!("groups: {}", r.groups);
    let _ = std::fs::remove_dir_all(&work);
}
