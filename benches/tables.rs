//! Tables and lookup joins: `UPDATE` and `DELETE` on a table of a million rows, Runnel side
//! by side with PostgreSQL in the same run, and a stream enriched from that table by a
//! lookup join on its primary key.
//!
//! ```text
//! cargo bench --bench tables                   # 1,000,000-row table, 10,000,000 events
//! RUNNEL_BENCH_ROWS=1000000 RUNNEL_BENCH_TABLE_ROWS=100000 cargo bench --bench tables
//! ```
//!
//! 1. Loads `users (id BIGINT PRIMARY KEY, name TEXT, region TEXT, tier INT)` with `COPY`
//!    into both servers (each with its default durable settings; reported, not compared).
//! 2. Point writes: 4 connections, each running a prepared `UPDATE users SET tier = tier + 1
//!    WHERE id = $1` 1,000 times on random ids, then a prepared `DELETE FROM users WHERE id =
//!    $1` 1,000 times on ids of its own: statements per second, each its own durable commit.
//! 3. Bulk writes: `UPDATE … WHERE id % 100 = 7` and `DELETE … WHERE id % 100 = 8` (1 % of
//!    the rows each), timed.
//! 4. Enrichment (Runnel; PostgreSQL has no continuous queries): 10 M clicks of users in
//!    the table's id range are loaded (untimed), then `CREATE STREAM enriched AS SELECT …
//!    FROM clicks c LEFT JOIN users u ON c.user_id = u.id` is timed until `FLUSH` returns:
//!    events/s, events/s per core used (the server's CPU time over the wall time), and the
//!    server's peak RSS. The result is checked against the bounded join.
//! 5. Latency at 10,000 events/s (4 writers, 10-row `INSERT`s): a probe inserts a click
//!    every 20 ms and polls the derived stream until it is there.
//! 6. A materialized view over the table (Runnel): `SELECT region, count(*), sum(tier),
//!    avg(tier) FROM users GROUP BY region`, created over the table's records so far and
//!    timed until `FLUSH` returns (records/s, cores used, the memory it keeps); then an
//!    `UPDATE` moving 1 % of the rows to another region, timed until the view has followed
//!    it. Both checked against the bounded query.
//! 7. Compaction (Runnel): a compacted stream of 5 M records over 100 K keys (8 MiB
//!    segments), the server started again checking every half second, and the topic
//!    measured before and after its first pass, which is timed from start-up; each key's
//!    latest record checked to stay.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

mod common;
use common::clicks::{
    copy_csv, create_clicks, latency_line, load, probe, rate, run_for, write_clicks,
};
use common::{Postgres, cpu_seconds, scalar, start_runnel, start_runnel_with, status_kib};

const CONNECTIONS: u64 = 4;
/// Point statements per connection, of each kind.
const POINT_STATEMENTS: u64 = 1_000;
const INSERT_RATE: u64 = 10_000;
const ROWS_PER_INSERT: u64 = 10;
const LATENCY_SECONDS: u64 = 20;
const REGIONS: [&str; 5] = ["eu", "us", "apac", "latam", "africa"];
/// The compaction step's records, and the keys they update.
const COMPACTED_RECORDS: u64 = 5_000_000;
const COMPACTED_KEYS: u64 = 100_000;

fn table_rows() -> u64 {
    std::env::var("RUNNEL_BENCH_TABLE_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Loads `rows` users with `COPY`; returns how long it took.
async fn load_users(client: &Client, rows: u64) -> Duration {
    copy_csv(client, "users", rows, |from, to| {
        let mut chunk = String::with_capacity(((to - from) * 32) as usize);
        for id in from..to {
            use std::fmt::Write;
            let region = REGIONS[(id % REGIONS.len() as u64) as usize];
            let _ = writeln!(chunk, "{id},user-{id:08},{region},{}", id % 7);
        }
        chunk
    })
    .await
}

/// Runs `sql` (one `$1`, a `BIGINT`) `POINT_STATEMENTS` times from each connection,
/// connection `w` with the id `ids(w, n)` for its `n`-th statement; returns statements/s.
async fn point_writes(clients: &[Arc<Client>], sql: &str, ids: fn(u64, u64) -> i64) -> f64 {
    let start = Instant::now();
    let mut tasks = vec![];
    for (w, client) in clients.iter().enumerate() {
        let statement = client.prepare(sql).await.expect("prepare");
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..POINT_STATEMENTS {
                client
                    .execute(&statement, &[&ids(w as u64, n)])
                    .await
                    .expect("point write");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    (POINT_STATEMENTS * clients.len() as u64) as f64 / start.elapsed().as_secs_f64()
}

/// The table figures of one server.
struct Writes {
    load: Duration,
    updates_per_s: f64,
    deletes_per_s: f64,
    bulk_update: Duration,
    bulk_delete: Duration,
    bulk_rows: (u64, u64),
    left: String,
}

async fn writes(port: u16, user: &str, database: &str, ddl: &str, rows: u64) -> Writes {
    let client = common::connect(port, user, database).await;
    client.batch_execute(ddl).await.expect("create users");
    let load = load_users(&client, rows).await;
    let mut clients = vec![];
    for _ in 0..CONNECTIONS {
        clients.push(Arc::new(common::connect(port, user, database).await));
    }
    // Random ids: a xorshift of the connection and the statement's number.
    let updates_per_s = point_writes(
        &clients,
        "UPDATE users SET tier = tier + 1 WHERE id = $1",
        |w, n| {
            let mut x = (w << 40 | n) ^ 0x2545_f491_4f6c_dd1d;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % table_rows()) as i64
        },
    )
    .await;
    // Each connection its own ids, from the top down: every DELETE finds its row.
    let deletes_per_s = point_writes(&clients, "DELETE FROM users WHERE id = $1", |w, n| {
        (table_rows() - 1 - (n * CONNECTIONS + w)) as i64
    })
    .await;
    let start = Instant::now();
    let updated = client
        .execute("UPDATE users SET tier = tier + 1 WHERE id % 100 = 7", &[])
        .await
        .expect("bulk update");
    let bulk_update = start.elapsed();
    let start = Instant::now();
    let deleted = client
        .execute("DELETE FROM users WHERE id % 100 = 8", &[])
        .await
        .expect("bulk delete");
    let bulk_delete = start.elapsed();
    let left = scalar(&client, "SELECT count(*) FROM users").await;
    Writes {
        load,
        updates_per_s,
        deletes_per_s,
        bulk_update,
        bulk_delete,
        bulk_rows: (updated, deleted),
        left,
    }
}

/// How many rows the view `view` and its query `query` do not share.
async fn differences(client: &Client, view: &str, query: &str) -> String {
    scalar(
        client,
        &format!(
            "SELECT count(*) FROM ((SELECT * FROM {view} EXCEPT SELECT * FROM ({query}) q) \
             UNION ALL (SELECT * FROM ({query}) q EXCEPT SELECT * FROM {view})) d"
        ),
    )
    .await
}

fn print_writes(name: &str, w: &Writes, rows: u64) {
    println!(
        "  {name:<11} load {:>6.2} s ({})  UPDATE by key {:>7.0}/s  DELETE by key {:>7.0}/s  \
         UPDATE 1% ({} rows) {:.2} s  DELETE 1% ({} rows) {:.2} s  ({} rows left)",
        w.load.as_secs_f64(),
        rate(rows, w.load).replace("events", "rows"),
        w.updates_per_s,
        w.deletes_per_s,
        w.bulk_rows.0,
        w.bulk_update.as_secs_f64(),
        w.bulk_rows.1,
        w.bulk_delete.as_secs_f64(),
        w.left,
    );
}

fn main() {
    let events = common::bench_rows(10_000_000);
    let rows = table_rows();
    let dir = common::bench_dir();
    let runtime = common::runtime();
    println!(
        "tables: {rows}-row table, {events} events, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let ddl = "CREATE TABLE users (id BIGINT PRIMARY KEY, name TEXT, region TEXT, tier INT)";
    runtime.block_on(async {
        let mut runnel = start_runnel(&dir.path().join("runnel"));
        let ours = writes(
            runnel.port,
            "bench",
            "runnel",
            &format!("{ddl} WITH (partitions = 4)"),
            rows,
        )
        .await;
        let postgres = Postgres::start(dir.path());
        let theirs = match &postgres {
            Some(pg) => Some(writes(pg.port, "postgres", "postgres", ddl, rows).await),
            None => {
                println!("PostgreSQL: not found; its figures are left out");
                None
            }
        };
        drop(postgres);
        println!("table writes, 4 connections, every statement a durable commit:");
        print_writes("Runnel", &ours, rows);
        if let Some(theirs) = &theirs {
            print_writes("PostgreSQL", theirs, rows);
            assert_eq!(ours.left, theirs.left, "both tables keep the same rows");
        }

        let client = common::connect(runnel.port, "bench", "runnel").await;
        client.batch_execute(&create_clicks(4)).await.unwrap();
        let loaded = load(&client, events, rows).await;
        println!(
            "load of the clicks (COPY, not part of the figures): {:.1} s",
            loaded.as_secs_f64()
        );
        let pid = runnel.pid();
        let cpu = cpu_seconds(pid);
        let start = Instant::now();
        client
            .batch_execute(
                "CREATE STREAM enriched WITH (partitions = 4) AS
                     SELECT c.user_id, c.url, c.amount, u.name, u.region
                     FROM clicks c LEFT JOIN users u ON c.user_id = u.id;
                 FLUSH",
            )
            .await
            .expect("enrich");
        let took = start.elapsed();
        let cores = (cpu_seconds(pid) - cpu) / took.as_secs_f64();
        let per_core = events as f64 / took.as_secs_f64() / cores.max(1e-9);
        let peak = status_kib(pid, "VmHWM:") as f64 / 1024.0;
        let out = scalar(&client, "SELECT count(*) FROM enriched").await;
        assert_eq!(out, events.to_string(), "every click enriched once");
        let matched = scalar(
            &client,
            "SELECT count(*) FROM enriched WHERE name IS NOT NULL",
        )
        .await;
        let want = scalar(
            &client,
            "SELECT count(*) FROM clicks c JOIN users u ON c.user_id = u.id",
        )
        .await;
        assert_eq!(matched, want, "the lookups equal the bounded join");
        println!(
            "enrichment catch-up (LEFT JOIN users by key): {:.2} s  {}  {:.2} cores used  {:.0}K events/s per core  peak RSS {peak:.0} MiB  ({matched} of {out} matched)",
            took.as_secs_f64(),
            rate(events, took),
            cores,
            per_core / 1e3,
        );

        client
            .batch_execute(
                "CREATE STREAM enriched_now WITH (partitions = 2, start = 'latest') AS
                     SELECT c.user_id, c.url, u.name, u.region
                     FROM clicks c LEFT JOIN users u ON c.user_id = u.id",
            )
            .await
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let inserted = Arc::new(AtomicU64::new(0));
        let mut clients = vec![];
        for _ in 0..CONNECTIONS {
            clients.push(common::connect(runnel.port, "bench", "runnel").await);
        }
        let writers = write_clicks(
            clients,
            INSERT_RATE,
            ROWS_PER_INSERT,
            rows,
            stop.clone(),
            inserted.clone(),
        );
        let probed = tokio::spawn(probe(
            common::connect(runnel.port, "bench", "runnel").await,
            rows * 10,
            "/probe",
            |marker, since| {
                format!(
                    "SELECT count(*) FROM enriched_now WHERE _timestamp >= to_timestamp_millis({since}) AND user_id = {marker}"
                )
            },
            Duration::from_millis(20),
            stop.clone(),
        ));
        let elapsed = run_for(LATENCY_SECONDS, &stop, writers).await;
        let probed = probed.await.unwrap();
        println!(
            "enrichment latency at {:.0} events/s, INSERT acknowledged -> in the derived stream:",
            inserted.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
        );
        println!("{}", latency_line("lookup join", &probed));

        let view = "SELECT region, count(*) AS n, sum(tier) AS tiers, avg(tier) AS mean \
                    FROM users GROUP BY region";
        let records: u64 = scalar(
            &client,
            "SELECT sum(records) FROM sys.partitions WHERE stream = 'users'",
        )
        .await
        .parse()
        .unwrap();
        let cpu = cpu_seconds(pid);
        let start = Instant::now();
        client
            .batch_execute(&format!(
                "CREATE MATERIALIZED VIEW per_region AS {view}; FLUSH"
            ))
            .await
            .expect("view over the table");
        let took = start.elapsed();
        let cores = (cpu_seconds(pid) - cpu) / took.as_secs_f64();
        let kept = scalar(
            &client,
            "SELECT state_bytes FROM sys.queries WHERE name = 'per_region'",
        )
        .await;
        assert_eq!(
            differences(&client, "per_region", view).await,
            "0",
            "the view equals its bounded query"
        );
        println!(
            "view over the table (count, sum, avg by region): catch-up over {records} records {:.2} s  {}  {:.2} cores used  {:.0} MiB kept",
            took.as_secs_f64(),
            rate(records, took),
            cores,
            kept.parse::<f64>().unwrap_or(0.0) / (1024.0 * 1024.0),
        );
        let start = Instant::now();
        let moved = client
            .execute(
                "UPDATE users SET region = 'moved' WHERE id % 100 = 9",
                &[],
            )
            .await
            .unwrap();
        let written = start.elapsed();
        client.batch_execute("FLUSH").await.unwrap();
        let followed = start.elapsed();
        assert_eq!(
            differences(&client, "per_region", view).await,
            "0",
            "the view follows the update"
        );
        println!(
            "view over the table: UPDATE of {moved} rows {:.2} s, in the view {:.2} s after the UPDATE began",
            written.as_secs_f64(),
            followed.as_secs_f64(),
        );

        // Compaction: a compacted stream of 5 M records over 100 K keys, compacted by the
        // server started again checking every half second.
        client
            .batch_execute(&format!(
                "CREATE STREAM kv (id BIGINT KEY, v BIGINT)
                     WITH (cleanup_policy = 'compact', segment_bytes = 8388608);
                 INSERT INTO kv SELECT i % {COMPACTED_KEYS}, i
                     FROM generate_series(0, {COMPACTED_RECORDS} - 1) AS t(i)"
            ))
            .await
            .expect("the compacted stream");
        let latest = "SELECT count(*), sum(m) FROM (SELECT max(v) AS m FROM kv GROUP BY id) k";
        let want = scalar(&client, latest).await;
        drop(client);
        runnel.kill();
        let mut runnel =
            start_runnel_with(&dir.path().join("runnel"), &["--retention-check-interval-ms", "500"]);
        let client = common::connect(runnel.port, "bench", "runnel").await;
        let size = "SELECT sum(bytes) FROM sys.partitions WHERE stream = 'kv'";
        let segments = "SELECT sum(segments) FROM sys.partitions WHERE stream = 'kv'";
        let before = scalar(&client, size).await;
        let segments_before = scalar(&client, segments).await;
        // The pass installs a segment per group of segments: done once the size has stopped
        // changing for two seconds.
        let start = Instant::now();
        let (mut after, mut compacted) = (before.clone(), None);
        while start.elapsed() < Duration::from_secs(300) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = scalar(&client, size).await;
            if now != after {
                after = now;
                compacted = Some(start.elapsed());
            } else if compacted.is_some_and(|at| start.elapsed() - at > Duration::from_secs(2)) {
                break;
            }
        }
        let compacted = compacted.expect("the stream was compacted");
        let records = scalar(&client, "SELECT count(*) FROM kv").await;
        assert_eq!(scalar(&client, latest).await, want, "each key's latest record stays");
        let segments_after = scalar(&client, segments).await;
        let mib = |b: &str| b.parse::<f64>().unwrap() / (1024.0 * 1024.0);
        println!(
            "compaction of {COMPACTED_RECORDS} records over {COMPACTED_KEYS} keys: {:.0} MiB in {segments_before} segments -> {:.1} MiB in {segments_after} ({records} records left), done {:.2} s after start-up ({})",
            mib(&before),
            mib(&after),
            compacted.as_secs_f64(),
            rate(COMPACTED_RECORDS, compacted),
        );
        runnel.kill();
    });
}
