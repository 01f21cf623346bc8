//! The click stream the continuous-query benchmarks read: `clicks (user_id BIGINT, url
//! TEXT, amount DOUBLE PRECISION, ts TIMESTAMP)`, loaded with `COPY` and written at a steady
//! rate, and probes that time a row from `INSERT` acknowledged to visible.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::SinkExt;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::scalar;

pub const URLS: [&str; 8] = [
    "/home",
    "/cart",
    "/search",
    "/products",
    "/checkout",
    "/account",
    "/help",
    "/products/item",
];

/// The `CREATE STREAM` of the clicks, in `partitions` partitions.
pub fn create_clicks(partitions: u32) -> String {
    format!(
        "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT, amount DOUBLE PRECISION, ts TIMESTAMP) WITH (partitions = {partitions})"
    )
}

/// Rows `from..to` of the click data as CSV (user_id, url, amount, ts), users below `users`.
pub fn csv_chunk(from: u64, to: u64, users: u64) -> String {
    let mut out = String::with_capacity(((to - from) * 48) as usize);
    for i in from..to {
        let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef;
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 32;
        let user = x % users;
        let url = URLS[((x >> 20) % URLS.len() as u64) as usize];
        let cents = (x >> 40) % 10_000;
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "{user},{url},{}.{:02},2026-01-01 {:02}:{:02}:{:02}",
            cents / 100,
            cents % 100,
            (i / 3_600) % 24,
            (i / 60) % 60,
            i % 60
        );
    }
    out
}

/// Loads `rows` clicks of `users` users with `COPY`; returns how long it took.
pub async fn load(client: &Client, rows: u64, users: u64) -> Duration {
    copy_csv(client, "clicks", rows, |from, to| {
        csv_chunk(from, to, users)
    })
    .await
}

/// `COPY`s `rows` rows into `table`, the CSV of rows `from..to` from `chunk(from, to)`, in
/// messages of 20,000 rows; returns how long it took.
pub async fn copy_csv(
    client: &Client,
    table: &str,
    rows: u64,
    chunk: impl Fn(u64, u64) -> String,
) -> Duration {
    let start = Instant::now();
    let sink = client
        .copy_in(&format!("COPY {table} FROM STDIN WITH (FORMAT csv)"))
        .await
        .expect("copy");
    futures::pin_mut!(sink);
    let step = 20_000;
    let mut at = 0;
    while at < rows {
        let to = (at + step).min(rows);
        sink.send(bytes::Bytes::from(chunk(at, to)))
            .await
            .expect("copy data");
        at = to;
    }
    let copied = sink.finish().await.expect("copy done");
    assert_eq!(copied, rows);
    start.elapsed()
}

/// Lets `writers` run for `seconds`, then stops them and waits for them; returns how long
/// they ran.
pub async fn run_for(seconds: u64, stop: &AtomicBool, writers: Vec<JoinHandle<()>>) -> Duration {
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    for w in writers {
        w.await.unwrap();
    }
    elapsed
}

/// Events per second, as text.
pub fn rate(rows: u64, time: Duration) -> String {
    let per_s = rows as f64 / time.as_secs_f64();
    if per_s >= 1e6 {
        format!("{:.2}M events/s", per_s / 1e6)
    } else {
        format!("{:.0}K events/s", per_s / 1e3)
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Latencies (sorted) and the time each poll took (sorted).
pub type Probed = (Vec<Duration>, Vec<Duration>);

/// p50/p90/p99/max of `probed`, as a line.
pub fn latency_line(name: &str, (latencies, polls): &Probed) -> String {
    format!(
        "  {name:<18} p50 {}  p90 {}  p99 {}  max {}  ({} probes; one poll takes {} p50)",
        ms(percentile(latencies, 0.5)),
        ms(percentile(latencies, 0.9)),
        ms(percentile(latencies, 0.99)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
        latencies.len(),
        ms(percentile(polls, 0.5)),
    )
}

/// Acknowledged → visible, measured every `every` by inserting a click of user `marker`
/// (counting up from `marker_base`) and polling for it with the query `visible(marker,
/// since)` (`since`: ms since the Unix epoch, a second before the insert), until `stop`.
pub async fn probe(
    client: Client,
    marker_base: u64,
    url: &str,
    visible: fn(i64, u128) -> String,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> Probed {
    let mut latencies = vec![];
    let mut polls = vec![];
    let mut i = 0u64;
    let mut tick = tokio::time::interval(every);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        i += 1;
        let marker = (marker_base + i) as i64;
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            - 1_000;
        let poll = visible(marker, since);
        client
            .batch_execute(&format!(
                "INSERT INTO clicks VALUES ({marker}, '{url}', 1.0, '2026-01-02 00:00:00')"
            ))
            .await
            .expect("probe insert");
        let acked = Instant::now();
        loop {
            let polled = Instant::now();
            let n: i64 = scalar(&client, &poll).await.parse().expect("a count");
            polls.push(polled.elapsed());
            if n > 0 {
                break;
            }
            if acked.elapsed() > Duration::from_secs(30) {
                panic!("marker {marker} not visible after 30 s");
            }
        }
        latencies.push(acked.elapsed());
    }
    latencies.sort();
    polls.sort();
    (latencies, polls)
}

/// Writers that insert `rate` clicks a second in all, each `INSERT` of `rows_per_insert`
/// rows, users below `users`, until `stop`; `inserted` counts them.
pub fn write_clicks(
    clients: Vec<Client>,
    rate: u64,
    rows_per_insert: u64,
    users: u64,
    stop: Arc<AtomicBool>,
    inserted: Arc<AtomicU64>,
) -> Vec<JoinHandle<()>> {
    let statements_per_writer = rate / rows_per_insert / clients.len() as u64;
    clients
        .into_iter()
        .enumerate()
        .map(|(w, client)| {
            let stop = stop.clone();
            let inserted = inserted.clone();
            tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval(Duration::from_secs(1) / statements_per_writer as u32);
                let mut n = w as u64 * 1_000_000_000;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let rows: Vec<String> = (0..rows_per_insert)
                        .map(|_| {
                            n += 1;
                            let url = URLS[(n % URLS.len() as u64) as usize];
                            format!("({}, '{url}', 2.5, '2026-01-02 00:00:00')", n % users)
                        })
                        .collect();
                    let sql = format!("INSERT INTO clicks VALUES {}", rows.join(", "));
                    client.batch_execute(&sql).await.expect("insert");
                    inserted.fetch_add(rows_per_insert, Ordering::Relaxed);
                }
            })
        })
        .collect()
}
