//! The HTTP endpoint against the real server: `/health`, `/ready` and `/metrics` in
//! Prometheus' text format, read with a plain HTTP/1.1 request as a scraper sends it.

mod common;

fn get(addr: &str, path: &str) -> (u16, String) {
    common::http(addr, "GET", path, &[], "")
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
    // ... which retention keeps for it.
    let held = |partition: u32| {
        let series = format!(
            "runnel_retention_held_records{{topic=\"clicks\",partition=\"{partition}\",holder=\"subscription billing\"}}"
        );
        sample(&metrics, &series).unwrap_or_else(|| panic!("{series}: {metrics}"))
    };
    assert_eq!(held(0) + held(1), 4.0, "{metrics}");

    // Records in and out of the partitions: four appended, and read by the view's query.
    let per_partition = |name: &str| {
        (0..2)
            .map(|p| {
                let series = format!("{name}{{topic=\"clicks\",partition=\"{p}\"}}");
                sample(&metrics, &series).unwrap_or_else(|| panic!("{series}: {metrics}"))
            })
            .sum::<f64>()
    };
    assert_eq!(per_partition("runnel_partition_records_in_total"), 4.0);
    assert!(per_partition("runnel_partition_in_bytes_total") > 0.0);
    assert!(per_partition("runnel_partition_records_out_total") >= 4.0);
    assert!(per_partition("runnel_partition_out_bytes_total") > 0.0);
    assert!(
        metrics.contains("# TYPE runnel_partition_records_in counter"),
        "{metrics}"
    );

    // The log's fsyncs and group commits, as histograms.
    for count in [
        "runnel_log_fsync_seconds_count",
        "runnel_log_group_commit_appends_count",
        "runnel_log_group_commit_records_count",
    ] {
        assert!(
            sample(&metrics, count).is_some_and(|n| n >= 1.0),
            "{count}: {metrics}"
        );
    }
    assert!(
        metrics.contains("# TYPE runnel_log_fsync_seconds histogram")
            && metrics.contains("runnel_log_fsync_seconds_bucket{le=\"+Inf\"}"),
        "{metrics}"
    );

    // The view's query: its input and output, epochs, state, nothing late, no failure.
    let query = |name: &str| {
        let series = format!("{name}{{query=\"per_user\"}}");
        sample(&metrics, &series).unwrap_or_else(|| panic!("{series}: {metrics}"))
    };
    assert_eq!(query("runnel_query_rows_in_total"), 4.0);
    assert!(query("runnel_query_rows_out_total") >= 2.0);
    assert_eq!(query("runnel_query_lag_seconds"), 0.0);
    assert!(query("runnel_query_epoch_duration_seconds_count") >= 1.0);
    assert_eq!(query("runnel_query_state_rows"), 2.0);
    assert!(query("runnel_query_state_bytes") > 0.0);
    assert_eq!(query("runnel_query_late_rows_total"), 0.0);
    assert_eq!(query("runnel_query_failures_total"), 0.0);

    // This client's connection, and the memory pool.
    assert_eq!(
        sample(&metrics, "runnel_connections{front_end=\"postgres\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "runnel_connections_accepted_total{front_end=\"postgres\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "runnel_memory_pool_limit_bytes").is_some_and(|n| n > 0.0)
            && sample(&metrics, "runnel_memory_pool_reserved_bytes").is_some(),
        "{metrics}"
    );

    // Every sample line is a name, perhaps labels, and a number.
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf",
            "a sample with a number: {line}"
        );
    }
    server.stop();
}

/// Under `--auth password` a scraper logs in as a Postgres client would (Prometheus'
/// `basic_auth`); a load balancer's `/health` and `/ready` need no credentials.
#[test]
fn metrics_ask_for_a_login_under_password_auth() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with_password(
        dir.path(),
        "CREATE USER prometheus WITH PASSWORD 'scrape-pw';
         CREATE STREAM clicks (user_id BIGINT KEY, url TEXT);",
    );
    let addr = server.http_addr();
    assert_eq!(get(&addr, "/health"), (200, "ok\n".to_string()));
    assert_eq!(get(&addr, "/ready"), (200, "ready\n".to_string()));

    let scrape =
        |credentials: Option<&str>| common::http_as(&addr, "GET", "/metrics", credentials, "");

    for credentials in [None, Some("prometheus:wrong"), Some("nobody:scrape-pw")] {
        let (status, body) = scrape(credentials);
        assert_eq!(status, 401, "{credentials:?}: {body}");
        assert!(
            !body.contains("clicks"),
            "no stream's name without a login: {body}"
        );
    }
    let (status, metrics) = scrape(Some("prometheus:scrape-pw"));
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.contains("runnel_partition_high_watermark{topic=\"clicks\",partition=\"0\"}"),
        "{metrics}"
    );
    server.stop();
}

/// A recovering server is alive but not ready: from the moment its HTTP endpoint listens,
/// `/health` answers 200 and `/ready` 503, until the log is open and the continuous queries
/// have restarted (here a view replays 200,000 groups), when `/ready` turns 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_recovering() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM events (id BIGINT KEY, n BIGINT) WITH (partitions = 2);
             CREATE MATERIALIZED VIEW per_id AS
                 SELECT id, count(*) AS c, sum(n) AS total FROM events GROUP BY id;
             INSERT INTO events SELECT i AS id, i AS n FROM generate_series(1, 200000) AS t(i);
             FLUSH",
        )
        .await
        .unwrap();
    drop(client);
    server.kill();

    // While it starts: what the endpoint said when it first listened.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let watched = seen.clone();
    let watch: common::Watch = Box::new(move |line: &str| {
        if let Some(addr) = line.split("listening for HTTP on ").nth(1) {
            let addr = addr.trim();
            *watched.lock().unwrap() = Some((get(addr, "/health"), get(addr, "/ready")));
        }
    });
    let server = common::start_watching(dir.path(), &[], watch);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        Some(((200, "ok\n".to_string()), (503, "starting\n".to_string()))),
        "alive, not ready, while recovering; the log:\n{}",
        server.log()
    );
    // Ready once it serves clients, with every group back.
    assert_eq!(
        get(&server.http_addr(), "/ready"),
        (200, "ready\n".to_string())
    );
    let client = server.connect().await;
    let groups: i64 = client
        .query_one("SELECT count(*) FROM per_id", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(groups, 200_000);
    server.stop();
}
