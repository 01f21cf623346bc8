//! Loading the benchmarks' click rows: as CSV through `COPY`, and as multi-row `INSERT`s
//! from concurrent connections.

use std::time::{Duration, Instant};

use futures::SinkExt;
use tokio_postgres::Client;

/// Rows per `INSERT` statement.
pub const INSERT_ROWS: usize = 1000;
/// Connections the `INSERT`s are spread over.
pub const INSERT_CONNECTIONS: usize = 4;

/// About 100 bytes per row: user_id, url, ts, amount, agent.
pub fn csv_rows(n: usize) -> Vec<String> {
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

pub fn median<T: PartialOrd + Copy>(mut runs: Vec<T>) -> T {
    runs.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    runs[runs.len() / 2]
}

pub async fn copy_into(client: &Client, table: &str, rows: &[String]) -> Duration {
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

pub async fn insert_into(port: u16, user: &str, table: &str, statements: &[String]) -> Duration {
    let mut connections = vec![];
    for _ in 0..INSERT_CONNECTIONS {
        connections.push(super::connect(port, user, "postgres").await);
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

/// The rows as `INSERT INTO {table} VALUES …` statements of [`INSERT_ROWS`] rows each.
pub fn insert_statements(rows: &[String]) -> Vec<String> {
    rows.chunks(INSERT_ROWS)
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
        .collect()
}
