//! Tiered storage: the same stream on local disk and in an object store (moto's S3 server,
//! started here), side by side in one run.
//!
//! ```text
//! cargo bench --bench tiered                   # 10,000,000 records
//! RUNNEL_BENCH_ROWS=1000000 cargo bench --bench tiered
//! ```
//! Two servers: one with the stream on local disk only, one with `--object-store
//! s3://…` and `--local-retention-bytes 0` (every sealed segment is read from the store).
//! Each loads the records with `COPY` into a 4-partition stream of 64 MiB segments (the
//! tiered one copying sealed segments to the store meanwhile: the upload rate during and
//! after the `COPY` is reported), then runs a bounded scan-aggregate (`SELECT url,
//! count(*) … GROUP BY url`, best of three) and the catch-up of a new materialized view
//! (`count(*)`, `sum(amount)` per URL, to `FLUSH`). The store is moto's server from PyPI
//! (`RUNNEL_PYTHON`, else the test venv's `python`), in memory, on this machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::load::{copy_into, csv_rows};
use common::{scalar, start_runnel_env};

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python() -> String {
    std::env::var("RUNNEL_PYTHON").unwrap_or_else(|_| {
        let venv = std::env::var("HOME").unwrap_or_default() + "/.cache/runnel-venv/bin/python";
        if Path::new(&venv).exists() {
            venv
        } else {
            "python3".into()
        }
    })
}

/// moto's S3 server with a bucket `bench`; its endpoint.
fn start_moto() -> (Moto, String) {
    let port = common::free_port();
    let child = Command::new(python())
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto[server] (pip install 'moto[server]')");
    let moto = Moto(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    let created = Command::new(python())
        .args([
            "-c",
            "import sys, boto3; boto3.client('s3', endpoint_url=sys.argv[1], \
             aws_access_key_id='bench', aws_secret_access_key='bench', \
             region_name='us-east-1').create_bucket(Bucket='bench')",
            &endpoint,
        ])
        .status()
        .unwrap();
    assert!(created.success(), "creating the bucket");
    (moto, endpoint)
}

struct Figures {
    copy: Duration,
    /// From the COPY's start until every sealed segment was in the store (tiered only).
    uploaded: Option<Duration>,
    remote_bytes: i64,
    scan: Duration,
    catch_up: Duration,
}

async fn run(port: u16, rows: &[String], tiered: bool) -> Figures {
    let client = common::connect(port, "runnel", "runnel").await;
    client
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT, ts TIMESTAMP,
                 amount DOUBLE PRECISION, agent TEXT)
                 WITH (partitions = 4, segment_bytes = 67108864)",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let copy = copy_into(&client, "clicks", rows).await;
    let sealed_in_store =
        "SELECT coalesce(sum(segments - 1 - remote_segments), 0) FROM sys.partitions
                           WHERE topic = 'clicks'";
    let uploaded = match tiered {
        true => {
            let deadline = Instant::now() + Duration::from_secs(600);
            while scalar(&client, sealed_in_store).await != "0" {
                assert!(
                    Instant::now() < deadline,
                    "segments not copied in 10 minutes"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let uploaded = started.elapsed();
            // And their local copies gone (local retention 0): reads go to the store.
            let evicted = "SELECT count(*) FROM sys.partitions WHERE topic = 'clicks'
                           AND local_bytes > bytes - remote_bytes";
            while scalar(&client, evicted).await != "0" {
                assert!(
                    Instant::now() < deadline,
                    "local copies not removed in 10 minutes"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Some(uploaded)
        }
        false => None,
    };
    let remote_bytes = scalar(
        &client,
        "SELECT sum(remote_bytes) FROM sys.partitions WHERE topic = 'clicks'",
    )
    .await
    .parse()
    .unwrap_or(0);
    let sql = "SELECT url, count(*) FROM clicks GROUP BY url";
    let mut scan = Duration::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        client.simple_query(sql).await.unwrap();
        scan = scan.min(start.elapsed());
    }
    let start = Instant::now();
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW per_url AS
                 SELECT url, count(*) AS n, sum(amount) AS total FROM clicks GROUP BY url;
             FLUSH",
        )
        .await
        .unwrap();
    let catch_up = start.elapsed();
    assert_eq!(
        scalar(&client, "SELECT sum(n) FROM per_url").await,
        rows.len().to_string()
    );
    Figures {
        copy,
        uploaded,
        remote_bytes,
        scan,
        catch_up,
    }
}

fn main() {
    let n = common::bench_rows(10_000_000) as usize;
    let base = std::env::var("RUNNEL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let work = base.join(format!("runnel-bench-tiered-{}", std::process::id()));
    let rows = csv_rows(n);
    let bytes: usize = rows.iter().map(String::len).sum();
    println!(
        "tiered storage: {n} records ({:.0} MB of CSV), local disk vs moto's S3 server",
        bytes as f64 / 1e6
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let local_dir = work.join("local");
    std::fs::create_dir_all(&local_dir).unwrap();
    let local = {
        let server = start_runnel_env(&local_dir, &[], &[]);
        let figures = runtime.block_on(run(server.port, &rows, false));
        drop(server);
        figures
    };
    let _ = std::fs::remove_dir_all(&local_dir);

    let (moto, endpoint) = start_moto();
    let tiered_dir = work.join("tiered");
    std::fs::create_dir_all(&tiered_dir).unwrap();
    let tiered = {
        let env = [
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "bench"),
            ("AWS_SECRET_ACCESS_KEY", "bench"),
            ("AWS_REGION", "us-east-1"),
        ];
        let server = start_runnel_env(
            &tiered_dir,
            &[
                "--object-store",
                "s3://bench/runnel",
                "--local-retention-bytes",
                "0",
                "--upload-interval-ms",
                "200",
                "--checkpoint-interval-ms",
                "3600000",
            ],
            &env,
        );
        let figures = runtime.block_on(run(server.port, &rows, true));
        drop(server);
        figures
    };
    drop(moto);
    let _ = std::fs::remove_dir_all(&work);

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!();
    println!("{:<34} {:>16} {:>16}", "", "local disk", "object store");
    println!(
        "{:<34} {:>9.0} rows/s {:>9.0} rows/s",
        "COPY",
        rate(local.copy),
        rate(tiered.copy)
    );
    if let Some(uploaded) = tiered.uploaded {
        println!(
            "{:<34} {:>16} {:>11.1} MB/s   ({:.0} MB in the store {:.1} s after the COPY began)",
            "upload (COPY start → all sealed in)",
            "",
            tiered.remote_bytes as f64 / 1e6 / uploaded.as_secs_f64(),
            tiered.remote_bytes as f64 / 1e6,
            uploaded.as_secs_f64()
        );
    }
    println!(
        "{:<34} {:>9.3} s      {:>9.3} s      ({:.0} vs {:.0} rows/s)",
        "scan-aggregate (best of 3)",
        local.scan.as_secs_f64(),
        tiered.scan.as_secs_f64(),
        rate(local.scan),
        rate(tiered.scan)
    );
    println!(
        "{:<34} {:>9.3} s      {:>9.3} s      ({:.0} vs {:.0} rows/s)",
        "catch-up of a new view",
        local.catch_up.as_secs_f64(),
        tiered.catch_up.as_secs_f64(),
        rate(local.catch_up),
        rate(tiered.catch_up)
    );
}
