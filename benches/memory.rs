//! Memory under `--memory-limit`, in two cases:
//!
//! - `groupby`: a `GROUP BY` over 150 million distinct keys, in an order unrelated to the
//!   input's (`generate_series` is sorted, and a grouping by `value` itself would stream):
//!   whether it finishes by spilling or fails with 53200, how long it takes, and how far the
//!   server's resident memory goes past its idle size, for each limit.
//! - `view`: a materialized view with 10 million groups of 100-byte keys, built, restarted
//!   (state replayed), every group updated again (the state compacts), restarted again.
//!
//! ```text
//! cargo bench --bench memory                                   # both cases
//! RUNNEL_BENCH_CASES=groupby RUNNEL_BENCH_ROWS=20000000 RUNNEL_BENCH_LIMITS=512MiB \
//!     cargo bench --bench memory
//! RUNNEL_BENCH_CASES=view RUNNEL_BENCH_GROUPS=1000000 cargo bench --bench memory
//! ```
//!
//! Resident memory is read from `/proc/<pid>/status` (the peak is `VmHWM`); the spill
//! directory's size is sampled every 100 ms.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::{bench_rows, start_runnel_with};

fn status_mib(pid: u32, field: &str) -> u64 {
    common::status_kib(pid, field) / 1024
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[tokio::main]
async fn main() {
    let cases = std::env::var("RUNNEL_BENCH_CASES").unwrap_or_else(|_| "groupby,view".into());
    for case in cases.split(',') {
        match case {
            "groupby" => groupby_case(bench_rows(150_000_000)).await,
            "view" => {
                let groups = std::env::var("RUNNEL_BENCH_GROUPS")
                    .ok()
                    .and_then(|g| g.parse().ok())
                    .unwrap_or(10_000_000);
                view_case(groups).await
            }
            other => panic!("unknown case {other} (groupby, view)"),
        }
    }
}

async fn groupby_case(keys: u64) {
    let limits = std::env::var("RUNNEL_BENCH_LIMITS").unwrap_or_else(|_| "1GiB,4GiB".into());
    // 7919 is prime; with a modulus over `keys` that it does not divide, the keys are
    // distinct.
    let modulus = if (keys + 1).is_multiple_of(7919) {
        keys + 2
    } else {
        keys + 1
    };
    println!("GROUP BY over {keys} distinct keys (release build)");
    for limit in limits.split(',') {
        let dir = tempfile::tempdir().unwrap();
        let runnel = start_runnel_with(dir.path(), &["--memory-limit", limit]);
        let pid = runnel.pid();
        let client = common::connect(runnel.port, "bench", "runnel").await;
        client.batch_execute("SELECT 1").await.unwrap();
        let idle = status_mib(pid, "VmRSS:");

        let done = Arc::new(AtomicBool::new(false));
        let spill_peak = Arc::new(AtomicU64::new(0));
        let sampler = {
            let (done, spill_peak) = (done.clone(), spill_peak.clone());
            let tmp = dir.path().join("tmp");
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    spill_peak.fetch_max(dir_bytes(&tmp), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let sql = format!(
            "SELECT count(*) FROM (SELECT value * 7919 % {modulus} AS k, count(*) AS n \
             FROM generate_series(1, {keys}) AS g(value) GROUP BY 1)"
        );
        let started = Instant::now();
        let outcome = match client.query_one(&sql, &[]).await {
            Ok(row) => format!("finished, {} groups", row.get::<_, i64>(0)),
            Err(e) => format!(
                "failed {}: {}",
                e.code().map_or("?", |c| c.code()),
                e.as_db_error()
                    .map_or(String::new(), |d| d.message().chars().take(100).collect())
            ),
        };
        let elapsed = started.elapsed();
        done.store(true, Ordering::Relaxed);
        sampler.join().unwrap();
        let peak = status_mib(pid, "VmHWM:");
        println!(
            "--memory-limit {limit:<7} {:>7.1} s  {outcome}; resident MiB idle {idle}, peak {peak} \
             (+{} over idle); spill peak {} MiB",
            elapsed.as_secs_f64(),
            peak.saturating_sub(idle),
            spill_peak.load(Ordering::Relaxed) >> 20
        );
        let alive = client.query_one("SELECT 1", &[]).await.is_ok();
        assert!(alive, "the server answers after the query");
    }
}

/// A materialized view with `groups` groups of 100-byte keys: built, restarted (its state
/// replayed from the changelog), every group updated again (so the state compacts), and
/// restarted once more; the time and resident memory of each step.
async fn view_case(groups: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut runnel = start_runnel_with(dir.path(), &[]);
    let mut client = common::connect(runnel.port, "bench", "runnel").await;
    client
        .batch_execute(
            "CREATE STREAM words (w TEXT);
             CREATE MATERIALIZED VIEW every AS SELECT w, count(*) AS n FROM words GROUP BY w",
        )
        .await
        .unwrap();
    let insert = format!(
        "INSERT INTO words SELECT repeat('w', 92) || CAST(10000000 + value AS TEXT) \
         FROM generate_series(1, {groups}) AS g(value)"
    );
    println!("materialized view with {groups} groups of 100-byte keys (release build)");
    // Each step: whether the server is killed and started again first, whether every word
    // is inserted (again), and how often each word is then counted.
    let steps = [
        ("insert and build", false, true, 1),
        ("restart (state replayed)", true, false, 1),
        ("every group again (compaction)", false, true, 2),
        ("restart again", true, false, 2),
    ];
    for (what, restart, again, each) in steps {
        let started = Instant::now();
        if restart {
            runnel.kill();
            runnel = start_runnel_with(dir.path(), &[]);
            client = common::connect(runnel.port, "bench", "runnel").await;
        }
        if again {
            client.batch_execute(&insert).await.unwrap();
        }
        client.batch_execute("FLUSH").await.unwrap();
        println!(
            "  {what:<38} {:>7.1} s  resident {} MiB (peak {} MiB)",
            started.elapsed().as_secs_f64(),
            status_mib(runnel.pid(), "VmRSS:"),
            status_mib(runnel.pid(), "VmHWM:")
        );
        check_view(&client, groups, each).await;
    }
}

async fn check_view(client: &tokio_postgres::Client, groups: u64, each: i64) {
    let row = client
        .query_one("SELECT count(*), min(n), max(n) FROM every", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), groups as i64);
    assert_eq!((row.get::<_, i64>(1), row.get::<_, i64>(2)), (each, each));
}
