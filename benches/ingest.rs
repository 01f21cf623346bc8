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

use tokio_postgres::Client;

mod common;
use common::load::{copy_into, csv_rows, insert_into, insert_statements, median};
use common::{Postgres, start_runnel};

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

/// Loads and queries one server, each load `RUNS` times into a fresh table (median
/// reported); `table_ddl` creates a table named `{table}`.
async fn run(port: u16, user: &str, table_ddl: &str, rows: &[String]) -> Figures {
    let client = connect(port, user).await;
    let statements = insert_statements(rows);
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
