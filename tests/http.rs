//! The HTTP endpoint against the real server: `/health`, `/ready` and `/metrics` in
//! Prometheus' text format, read with a plain HTTP/1.1 request as a scraper sends it.

mod common;

use std::io::{Read, Write};

/// `GET path`: the status code and the body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut socket = std::net::TcpStream::connect(addr).expect("connecting to the endpoint");
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP response: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample `name{labels}` in a scrape.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let addr = server.http_addr();
    assert_eq!(get(&addr, "/health"), (200, "ok\n".to_string()));
    assert_eq!(get(&addr, "/ready"), (200, "ready\n".to_string()));
    assert_eq!(get(&addr, "/nothing").0, 404);

    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT) WITH (partitions = 2);
             INSERT INTO clicks VALUES (1, '/a'), (1, '/b'), (1, '/c'), (2, '/d');
             CREATE MATERIALIZED VIEW per_user AS
                 SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id;
             CREATE SUBSCRIPTION billing FROM clicks WITH (start = 'earliest');
             FLUSH",
        )
        .await
        .unwrap();
    let (status, metrics) = get(&addr, "/metrics");
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.contains("# TYPE runnel_partition_high_watermark gauge")
            && metrics.contains("# UNIT runnel_partition_size_bytes bytes")
            && metrics.trim_end().ends_with("# EOF"),
        "{metrics}"
    );
    // Every record is in one of the two partitions, each counted by its high watermark.
    let watermark = |partition: u32| {
        sample(
            &metrics,
            &format!(
                "runnel_partition_high_watermark{{topic=\"clicks\",partition=\"{partition}\"}}"
            ),
        )
        .unwrap_or_else(|| panic!("partition {partition}'s high watermark: {metrics}"))
    };
    assert_eq!(watermark(0) + watermark(1), 4.0, "{metrics}");
    assert_eq!(
        sample(&metrics, "runnel_query_lag_records{query=\"per_user\"}"),
        Some(0.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "runnel_query_epoch{query=\"per_user\"}").is_some_and(|e| e >= 1.0),
        "{metrics}"
    );
    // A subscription from the earliest records has all four to read.
    let lag = |partition: u32| {
        let series = format!(
            "runnel_consumer_group_lag_records{{group=\"billing\",stream=\"clicks\",partition=\"{partition}\"}}"
        );
        sample(&metrics, &series)
            .unwrap_or_else(|| panic!("billing's lag in partition {partition}: {metrics}"))
    };
    assert_eq!(lag(0) + lag(1), 4.0, "{metrics}");
    server.stop();
}
