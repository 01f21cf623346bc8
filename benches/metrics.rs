//! The cost of metrics: the same ingest and catch-up with the HTTP endpoint on and scraped
//! every second, and with it off, in one run.
//!
//! ```text
//! cargo bench --bench metrics                  # 1,000,000 rows, 5 rounds
//! RUNNEL_BENCH_DIR=/dev/shm RUNNEL_BENCH_ROWS=5000000 RUNNEL_BENCH_ROUNDS=9 cargo bench --bench metrics
//! ```
//! Each round starts a fresh server twice, once per setting (the order alternating from
//! round to round), and on each: `COPY`s the rows into a 4-partition stream, `INSERT`s them
//! again from 4 connections in statements of 1,000 rows, then creates a materialized view
//! over the stream (`count(*)`, `sum(amount)` per URL) and a derived stream copying it, and
//! times their catch-up to `FLUSH`.
//! With metrics on, a scraper reads `/metrics` every second all along, as Prometheus
//! would (fifteen times more often than its default). Five rounds (`RUNNEL_BENCH_ROUNDS`);
//! the median is reported and every run printed.
//!
//! Each phase is measured twice: its wall time, and the CPU seconds the server spent on it
//! (user and system, from `/proc`). The second is what metrics cost, and it stays steady
//! where the first swings with the disk's fsync times; on a tmpfs
//! (`RUNNEL_BENCH_DIR=/dev/shm`) the first steadies too.
//!
//! The counters on the write and read paths (per frame) and the histograms (per fsync,
//! group commit and epoch) are counted in both settings: they are not optional. What "off"
//! saves is the endpoint and its scrapes.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::load::{copy_into, csv_rows, insert_into, insert_statements, median};
use common::start_runnel_with;

#[derive(Clone, Copy, PartialEq)]
enum Metrics {
    On,
    Off,
}

struct Run {
    copy: Duration,
    insert: Duration,
    catch_up: Duration,
    /// The server's CPU seconds in each phase: COPY, INSERTs, catch-up.
    cpu: [f64; 3],
    scrapes: u64,
    scrape_max: Duration,
}

/// Scrapes `/metrics` at `addr` every second until `stop`; counts the scrapes and keeps
/// the slowest.
fn scrape_every_second(
    addr: String,
    stop: Arc<AtomicBool>,
    scrapes: Arc<AtomicU64>,
    slowest_us: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let mut socket = std::net::TcpStream::connect(&addr).expect("the HTTP endpoint");
            write!(
                socket,
                "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut response = String::new();
            socket.read_to_string(&mut response).unwrap();
            // 503 while the server finishes starting (its Postgres port is told first).
            if !response.starts_with("HTTP/1.1 503") {
                assert!(response.starts_with("HTTP/1.1 200"), "{response}");
                slowest_us.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                scrapes.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    })
}

fn run(dir: &std::path::Path, metrics: Metrics, rows: &[String], statements: &[String]) -> Run {
    let http_port = common::free_port().to_string();
    let http_addr = format!("127.0.0.1:{http_port}");
    let flags: Vec<&str> = match metrics {
        Metrics::On => vec!["--http-addr", &http_addr],
        Metrics::Off => vec!["--http-addr", "off"],
    };
    let server = start_runnel_with(dir, &flags);
    let port = server.port;
    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(AtomicU64::new(0));
    let slowest_us = Arc::new(AtomicU64::new(0));
    let scraper = (metrics == Metrics::On).then(|| {
        scrape_every_second(
            http_addr.clone(),
            stop.clone(),
            scrapes.clone(),
            slowest_us.clone(),
        )
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pid = server.pid();
    let mut cpu = [0.0; 3];
    let (copy, insert, catch_up) = runtime.block_on(async {
        let client = common::connect(port, "runnel", "runnel").await;
        client
            .batch_execute(
                "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT, ts TIMESTAMP,
                     amount DOUBLE PRECISION, agent TEXT) WITH (partitions = 4);
                 CREATE STREAM inserted (user_id BIGINT KEY, url TEXT, ts TIMESTAMP,
                     amount DOUBLE PRECISION, agent TEXT) WITH (partitions = 4)",
            )
            .await
            .expect("create streams");
        let before = common::cpu_seconds(pid);
        let copy = copy_into(&client, "clicks", rows).await;
        let after_copy = common::cpu_seconds(pid);
        let insert = insert_into(port, "runnel", "inserted", statements).await;
        let after_insert = common::cpu_seconds(pid);
        let started = Instant::now();
        client
            .batch_execute(
                "CREATE MATERIALIZED VIEW per_url AS
                     SELECT url, count(*) AS n, sum(amount) AS total FROM clicks GROUP BY url;
                 CREATE STREAM copied AS SELECT user_id, url, amount FROM clicks;
                 FLUSH",
            )
            .await
            .expect("catch up");
        let catch_up = started.elapsed();
        cpu = [
            after_copy - before,
            after_insert - after_copy,
            common::cpu_seconds(pid) - after_insert,
        ];
        for (sql, what) in [
            ("SELECT sum(n) FROM per_url", "the view counted every row"),
            (
                "SELECT count(*) FROM copied",
                "the derived stream copied every row",
            ),
        ] {
            assert_eq!(
                common::scalar(&client, sql).await,
                rows.len().to_string(),
                "{what}"
            );
        }
        (copy, insert, catch_up)
    });
    stop.store(true, Ordering::Relaxed);
    if let Some(scraper) = scraper {
        scraper.join().expect("the scraper");
    }
    drop(server);
    Run {
        copy,
        insert,
        catch_up,
        cpu,
        scrapes: scrapes.load(Ordering::Relaxed),
        scrape_max: Duration::from_micros(slowest_us.load(Ordering::Relaxed)),
    }
}

fn main() {
    let n = common::bench_rows(1_000_000) as usize;
    let rounds: usize = std::env::var("RUNNEL_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let base = std::env::var("RUNNEL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let work = base.join(format!("runnel-bench-metrics-{}", std::process::id()));
    let rows = csv_rows(n);
    let statements = insert_statements(&rows);
    let bytes: usize = rows.iter().map(String::len).sum();
    println!(
        "metrics on (scraped every second) vs off: {n} rows ({:.0} MB), {rounds} rounds",
        bytes as f64 / 1e6
    );
    let mut on = vec![];
    let mut off = vec![];
    for round in 0..rounds {
        let order = match round % 2 {
            0 => [Metrics::On, Metrics::Off],
            _ => [Metrics::Off, Metrics::On],
        };
        for metrics in order {
            let dir = work.join(format!("round-{round}-{}", metrics as u8));
            std::fs::create_dir_all(&dir).unwrap();
            let figures = run(&dir, metrics, &rows, &statements);
            let _ = std::fs::remove_dir_all(&dir);
            println!(
                "  round {round} metrics {:<3}  COPY {:>6.3} s ({:>5.2} s CPU)  INSERT x4 {:>6.3} s ({:>5.2} s CPU)  catch-up {:>6.3} s ({:>5.2} s CPU){}",
                if metrics == Metrics::On { "on" } else { "off" },
                figures.copy.as_secs_f64(),
                figures.cpu[0],
                figures.insert.as_secs_f64(),
                figures.cpu[1],
                figures.catch_up.as_secs_f64(),
                figures.cpu[2],
                if metrics == Metrics::On {
                    format!(
                        "  ({} scrapes, slowest {:.1} ms)",
                        figures.scrapes,
                        figures.scrape_max.as_secs_f64() * 1e3
                    )
                } else {
                    String::new()
                }
            );
            match metrics {
                Metrics::On => on.push(figures),
                Metrics::Off => off.push(figures),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    println!();
    println!(
        "{:<12} {:>16} {:>16} {:>10}   {:>12} {:>12} {:>10}",
        "median", "metrics on", "metrics off", "on vs off", "CPU on", "CPU off", "on vs off"
    );
    let figure = |name: &str, phase: usize, of: fn(&Run) -> Duration| {
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        let (on_rate, off_rate) = (
            rate(median(on.iter().map(of).collect())),
            rate(median(off.iter().map(of).collect())),
        );
        let cpu = |runs: &[Run]| median(runs.iter().map(|r| r.cpu[phase]).collect());
        let (on_cpu, off_cpu) = (cpu(&on), cpu(&off));
        println!(
            "{name:<12} {on_rate:>10.0} rows/s {off_rate:>10.0} rows/s {:>+9.1}%   {on_cpu:>10.2} s {off_cpu:>10.2} s {:>+9.1}%",
            (on_rate / off_rate - 1.0) * 100.0,
            (on_cpu / off_cpu - 1.0) * 100.0
        );
    };
    figure("COPY", 0, |r| r.copy);
    figure("INSERT x4", 1, |r| r.insert);
    figure("catch-up", 2, |r| r.catch_up);
}
