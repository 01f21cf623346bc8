//! Event time on the real server: windowed views and streams over input that arrives out of
//! order, in random epochs, equal the bounded query over the input minus the rows each query
//! recorded as late (restricted, when emitting on close, to the windows its watermark has
//! closed); across restarts and SIGKILL every closed window is emitted once and every late
//! row recorded once; a quiet partition stops holding the watermark back; a second stage over
//! a stream of closed windows closes its own by that stream's query's watermark.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use common::{Rng, rows};

type Rows = Vec<Vec<Option<String>>>;

async fn sorted(client: &tokio_postgres::Client, sql: &str) -> Rows {
    let mut r = rows(client, sql).await;
    r.sort();
    r
}

const STREAM: &str = "CREATE STREAM events (
        k BIGINT KEY, g TEXT, v BIGINT, ts TIMESTAMP,
        WATERMARK FOR ts AS ts - INTERVAL '20 seconds'
    ) WITH (partitions = 3, late_data_topic = 'events_late', watermark_idle_timeout = '1 second')";

/// How a windowed query reads its input, with `{input}` for the relation.
struct Windowed {
    name: &'static str,
    /// `view` or `stream`.
    kind: &'static str,
    /// Emits on close: compared only over the windows its watermark closed.
    on_close: bool,
    sql: &'static str,
    /// Its column holding the window's end, for that restriction.
    end: &'static str,
    /// A stream emitting on close: the columns that identify a window's row.
    key: &'static str,
}

const QUERIES: [Windowed; 10] = [
    Windowed {
        name: "tumbling",
        kind: "view",
        on_close: false,
        sql: "SELECT window_start, window_end, g, count(*) AS n, sum(v) AS s, max(ts) AS hi, \
              count(DISTINCT k) AS keys \
              FROM TUMBLE({input}, ts, INTERVAL '1 minute') GROUP BY window_start, window_end, g",
        end: "window_end",
        key: "",
    },
    Windowed {
        name: "hopping",
        kind: "view",
        on_close: false,
        sql: "SELECT window_start, count(*) AS n, sum(v) AS s \
              FROM HOP({input}, ts, INTERVAL '20 seconds', INTERVAL '1 minute') GROUP BY window_start",
        end: "window_start + INTERVAL '1 minute'",
        key: "",
    },
    Windowed {
        name: "closed_tumbling",
        kind: "stream",
        on_close: true,
        sql: "SELECT window_start, window_end, g, count(*) AS n, sum(v) AS s, min(ts) AS lo, \
              count(DISTINCT v) FILTER (WHERE v % 2 = 0) AS even \
              FROM TUMBLE({input}, ts, INTERVAL '30 seconds') GROUP BY window_start, window_end, g",
        end: "window_end",
        key: "window_start, g",
    },
    Windowed {
        name: "closed_hopping",
        kind: "view",
        on_close: true,
        sql: "SELECT window_end, count(*) AS n, sum(v) AS s \
              FROM HOP({input}, ts, INTERVAL '15 seconds', INTERVAL '45 seconds', INTERVAL '5 seconds') \
              GROUP BY window_end HAVING count(*) > 2",
        end: "window_end",
        key: "",
    },
    Windowed {
        name: "busy_keys",
        kind: "stream",
        on_close: true,
        sql: "SELECT window_end, k, count(*) AS n \
              FROM TUMBLE({input}, ts, INTERVAL '1 minute') GROUP BY window_end, k",
        end: "window_end",
        key: "window_end, k",
    },
    // Chains of aggregates in one query: busy_windows below as one query, and three stages
    // over hopping windows.
    Windowed {
        name: "busy_chain",
        kind: "stream",
        on_close: true,
        sql: "SELECT window_end, count(*) AS keys, sum(n) AS n, count(DISTINCT vs) AS spreads FROM \
              (SELECT window_end, k, count(*) AS n, count(DISTINCT v) AS vs \
               FROM TUMBLE({input}, ts, INTERVAL '1 minute') GROUP BY window_end, k) AS b \
              GROUP BY window_end",
        end: "window_end",
        key: "window_end",
    },
    Windowed {
        name: "chain_view",
        kind: "view",
        on_close: true,
        sql: "SELECT window_start, max(keys) AS most, count(*) AS gs FROM \
              (SELECT window_start, g, count(*) AS keys, sum(n) AS n FROM \
               (SELECT window_start, g, k, count(*) AS n \
                FROM HOP({input}, ts, INTERVAL '20 seconds', INTERVAL '1 minute') \
                GROUP BY window_start, g, k) AS a \
               GROUP BY window_start, g) AS b \
              GROUP BY window_start",
        end: "window_start + INTERVAL '1 minute'",
        key: "",
    },
    // Sessions per key: out-of-order rows extend sessions backwards and bridge them.
    Windowed {
        name: "sessions",
        kind: "stream",
        on_close: true,
        sql: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s, \
              count(DISTINCT v) AS vs \
              FROM SESSION({input}, ts, INTERVAL '5 seconds') GROUP BY k, window_start, window_end",
        end: "window_end",
        key: "k, window_start",
    },
    // Joins of aggregates whose windows close together (Nexmark q5's shape): per hopping
    // window the keys with the most rows, and per window and group the rows with a large
    // value, if any.
    Windowed {
        name: "top_keys",
        kind: "stream",
        on_close: true,
        sql: "SELECT c.window_start, c.k, c.n FROM \
              (SELECT window_start, k, count(*) AS n \
               FROM HOP({input}, ts, INTERVAL '20 seconds', INTERVAL '1 minute') \
               GROUP BY window_start, k) AS c \
              JOIN (SELECT window_start, max(n) AS most FROM \
                    (SELECT window_start, k, count(*) AS n \
                     FROM HOP({input}, ts, INTERVAL '20 seconds', INTERVAL '1 minute') \
                     GROUP BY window_start, k) AS d \
                    GROUP BY window_start) AS m \
              ON c.window_start = m.window_start AND c.n >= m.most",
        end: "window_start + INTERVAL '1 minute'",
        key: "window_start, k",
    },
    Windowed {
        name: "large_values",
        kind: "view",
        on_close: true,
        sql: "SELECT a.window_end, a.g, a.n, b.large FROM \
              (SELECT window_end, g, count(*) AS n \
               FROM TUMBLE({input}, ts, INTERVAL '30 seconds') GROUP BY window_end, g) AS a \
              LEFT JOIN (SELECT window_end, g, count(*) AS large \
                         FROM TUMBLE({input}, ts, INTERVAL '30 seconds') WHERE v >= 90 \
                         GROUP BY window_end, g) AS b \
              ON a.window_end = b.window_end AND a.g = b.g",
        end: "window_end",
        key: "",
    },
];

async fn create_queries(client: &tokio_postgres::Client) {
    for q in &QUERIES {
        let sql = q.sql.replace("{input}", "events");
        let emit = if q.on_close {
            " EMIT ON WINDOW CLOSE"
        } else {
            ""
        };
        let create = match q.kind {
            "view" => format!("CREATE MATERIALIZED VIEW {} AS {sql}{emit}", q.name),
            _ => format!("CREATE STREAM {} AS {sql}{emit}", q.name),
        };
        client
            .batch_execute(&create)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", q.name));
    }
    // Without windows nothing is late: every row reaches this one.
    client
        .batch_execute("CREATE STREAM all_rows AS SELECT k, v, ts FROM events")
        .await
        .unwrap();
    // A second stage over the final rows of `busy_keys`, closed by its watermark.
    client.batch_execute(BUSY_WINDOWS).await.unwrap();
}

const BUSY_WINDOWS: &str = "CREATE STREAM busy_windows AS \
     SELECT window_end, count(*) AS keys, sum(n) AS n FROM busy_keys \
     GROUP BY window_end EMIT ON WINDOW CLOSE";

/// The second stage holds, once each, the bounded query's rows over the first stage's for
/// the windows its watermark (`busy_keys`'s, 1 µs on) passed; nothing is late to it.
async fn check_pipeline(client: &tokio_postgres::Client, context: &str) {
    let (w, result) = settled(client, "busy_windows").await;
    let bounded = match &w {
        None => vec![],
        Some(w) => {
            sorted(
                client,
                &format!(
                    "SELECT window_end, count(*), sum(n) FROM busy_keys \
                     WHERE window_end < TIMESTAMP '{w}' GROUP BY window_end"
                ),
            )
            .await
        }
    };
    assert_eq!(
        result, bounded,
        "busy_windows {context}: differs from the bounded query over busy_keys"
    );
    let late = rows(
        client,
        "SELECT late_rows FROM sys.queries WHERE name = 'busy_windows'",
    )
    .await;
    assert_eq!(late[0][0].as_deref(), Some("0"), "busy_windows {context}");
}

/// A row `id` of a mostly advancing clock: `at` seconds in, up to 30 s early (the watermark
/// allows 20), now and then minutes early or without a time.
fn row(rng: &mut Rng, id: u64, at: u64) -> String {
    let k = rng.below(7);
    let g = ["a", "b", "c"][rng.below(3) as usize];
    let v = rng.below(100);
    let early = match rng.below(40) {
        0 => 300,
        1..=3 => 0,
        _ => rng.below(30),
    };
    let ts = match rng.below(60) {
        0 => "NULL".to_string(),
        _ => format!(
            "TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{} seconds'",
            (at + 400).saturating_sub(early)
        ),
    };
    format!("({k}, '{g}', {v}, {ts})  /* {id} */")
}

/// The query's watermark, as text.
async fn watermark(client: &tokio_postgres::Client, query: &str) -> Option<String> {
    rows(
        client,
        &format!("SELECT watermark FROM sys.queries WHERE name = '{query}'"),
    )
    .await[0][0]
        .clone()
}

/// The rows of query `name` and its watermark as they were at one moment: read until the
/// watermark is the same before and after the rows.
async fn settled(client: &tokio_postgres::Client, name: &str) -> (Option<String>, Rows) {
    for _ in 0..100 {
        let w = watermark(client, name).await;
        let result = sorted(client, &format!("SELECT * FROM {name}")).await;
        if watermark(client, name).await == w {
            return (w, result);
        }
    }
    panic!("{name}: its watermark never held still");
}

async fn check_all(client: &tokio_postgres::Client, context: &str) {
    for q in &QUERIES {
        // The input this query kept: every row but the ones it recorded as late.
        let kept = format!(
            "(SELECT e.* FROM events e LEFT JOIN \
              (SELECT partition, \"offset\" FROM events_late WHERE query = '{}') l \
              ON e._partition = l.partition AND e._offset = l.\"offset\" \
              WHERE l.\"offset\" IS NULL)",
            q.name
        );
        let bounded_sql = format!("WITH kept AS {kept} {}", q.sql.replace("{input}", "kept"));
        let (result, bounded) = if q.on_close {
            // Windows close without input too (a partition turning idle): the query's rows
            // are compared as of a watermark that held still while they were read.
            let (w, result) = settled(client, q.name).await;
            let Some(w) = w else {
                assert!(result.is_empty(), "{} emitted before any watermark", q.name);
                continue;
            };
            let closed = |sql: String| {
                format!(
                    "SELECT * FROM ({sql}) AS r WHERE {} <= TIMESTAMP '{w}'",
                    q.end
                        .replace("window_start", "r.window_start")
                        .replace("window_end", "r.window_end")
                )
            };
            (result, sorted(client, &closed(bounded_sql)).await)
        } else {
            (
                sorted(client, &format!("SELECT * FROM {}", q.name)).await,
                sorted(client, &bounded_sql).await,
            )
        };
        assert_eq!(
            result, bounded,
            "{} {context}: differs from the bounded query over its kept input",
            q.name
        );
        if q.on_close && q.kind == "stream" {
            let twice = rows(
                client,
                &format!(
                    "SELECT * FROM (SELECT *, count(*) OVER (PARTITION BY {}) AS c FROM {}) WHERE c > 1",
                    q.key, q.name
                ),
            )
            .await;
            assert!(
                twice.is_empty(),
                "{} {context}: a window emitted twice: {twice:?}",
                q.name
            );
        }
    }
    let late_twice = rows(
        client,
        "SELECT query, partition, \"offset\", count(*) FROM events_late \
         GROUP BY query, partition, \"offset\" HAVING count(*) > 1",
    )
    .await;
    assert!(
        late_twice.is_empty(),
        "{context}: late rows recorded twice: {late_twice:?}"
    );
    let all = rows(
        client,
        "SELECT (SELECT count(*) FROM all_rows) AS a, (SELECT count(*) FROM events) AS b",
    )
    .await;
    assert_eq!(
        all[0][0], all[0][1],
        "{context}: a stateless query kept every row"
    );
    let counted = rows(
        client,
        "SELECT q.name, q.late_rows, (SELECT count(*) FROM events_late l WHERE l.query = q.name) \
         FROM sys.queries q WHERE q.late_rows > 0",
    )
    .await;
    for r in &counted {
        assert_eq!(r[1], r[2], "{context}: late_rows of {:?}", r[0]);
    }
    check_pipeline(client, context).await;
    let failed = rows(
        client,
        "SELECT name, error FROM sys.queries WHERE state <> 'running'",
    )
    .await;
    assert!(failed.is_empty(), "{context}: {failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_results_equal_bounded_queries_over_rows_not_late() {
    let mut rng = Rng::seeded("event time differential");
    for round in 0..2 {
        let max_records = (1 + rng.below(60)).to_string();
        let interval = rng.below(15).to_string();
        eprintln!("round {round}: epochs of at most {max_records} records, every {interval} ms");
        let dir = tempfile::tempdir().unwrap();
        let flags = [
            "--epoch-max-records",
            max_records.as_str(),
            "--epoch-interval-ms",
            interval.as_str(),
        ];
        let server = common::start_with(dir.path(), &flags);
        let client = server.connect().await;
        client.batch_execute(STREAM).await.unwrap();
        let mut id = 0;
        let mut at = 0;
        let mut insert = async |client: &tokio_postgres::Client, rng: &mut Rng, n: u64| {
            let values: Vec<String> = (0..n)
                .map(|_| {
                    id += 1;
                    at += rng.below(3);
                    row(rng, id, at)
                })
                .collect();
            client
                .batch_execute(&format!("INSERT INTO events VALUES {}", values.join(", ")))
                .await
                .unwrap();
        };
        let before = 1 + rng.below(100);
        insert(&client, &mut rng, before).await;
        create_queries(&client).await;
        for step in 0..20 {
            let n = 1 + rng.below(40);
            insert(&client, &mut rng, n).await;
            if rng.below(4) == 0 {
                client.batch_execute("FLUSH").await.unwrap();
                check_all(&client, &format!("(round {round}, step {step})")).await;
            }
        }
        client.batch_execute("FLUSH").await.unwrap();
        check_all(&client, &format!("(round {round}, end)")).await;
        let counts = rows(
            &client,
            "SELECT (SELECT count(*) FROM events) AS a, (SELECT count(*) FROM events_late) AS b, \
             (SELECT count(*) FROM busy_windows) AS c, (SELECT count(*) FROM busy_chain) AS d, \
             (SELECT count(*) FROM chain_view) AS e, (SELECT count(*) FROM sessions) AS f, \
             (SELECT count(*) FROM top_keys) AS g",
        )
        .await;
        eprintln!(
            "round {round}: rows, late rows recorded, second-stage windows, chained windows \
             (two and three stages), sessions, joined windows' top keys {:?}",
            counts[0]
        );
        assert_ne!(
            counts[0][4].as_deref(),
            Some("0"),
            "the chains emitted nothing"
        );

        // A restart restores state and watermarks; appended rows carry on from them.
        drop(client);
        server.stop();
        let server = common::start_with(dir.path(), &flags);
        let client = server.connect().await;
        check_all(&client, &format!("(round {round}, after restart)")).await;
        let n = 1 + rng.below(60);
        insert(&client, &mut rng, n).await;
        client.batch_execute("FLUSH").await.unwrap();
        check_all(&client, &format!("(round {round}, restarted and appended)")).await;

        // Quiet for longer than the idle timeout: the partitions stop holding the
        // watermark back, and it reaches the last row read less the delay, with no input.
        let expected = rows(
            &client,
            "SELECT max(ts) - INTERVAL '20 seconds' FROM events",
        )
        .await[0][0]
            .clone();
        let mut reached = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if watermark(&client, "closed_tumbling").await == expected {
                reached = true;
                break;
            }
        }
        assert!(
            reached,
            "round {round}: the watermark did not reach {expected:?}"
        );
        check_all(&client, &format!("(round {round}, all partitions idle)")).await;
        server.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_partition_stops_holding_windows_back_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    // Two keys that land in different partitions, found on a stream partitioned alike.
    client
        .batch_execute(
            "CREATE STREAM probe (p TEXT KEY) WITH (partitions = 2);
             INSERT INTO probe VALUES ('a'), ('b'), ('c'), ('d'), ('e'), ('f');",
        )
        .await
        .unwrap();
    let key_in = |rows: &Rows, partition: &str| -> String {
        rows.iter()
            .find(|r| r[1].as_deref() == Some(partition))
            .and_then(|r| r[0].clone())
            .expect("six keys reach both partitions")
    };
    let probed = rows(&client, "SELECT p, _partition FROM probe").await;
    let (k0, k1) = (key_in(&probed, "0"), key_in(&probed, "1"));
    client
        .batch_execute(&format!(
            "CREATE STREAM s (p TEXT KEY, ts TIMESTAMP, WATERMARK FOR ts AS ts)
                 WITH (partitions = 2, watermark_idle_timeout = '2 seconds');
             CREATE STREAM per_10s AS
                 SELECT window_end, count(*) AS n FROM TUMBLE(s, ts, INTERVAL '10 seconds')
                 GROUP BY window_end EMIT ON WINDOW CLOSE;
             INSERT INTO s VALUES ('{k0}', '2026-01-01 00:00:01'), ('{k1}', '2026-01-01 00:00:02');
             FLUSH;
             INSERT INTO s VALUES ('{k0}', '2026-01-01 00:00:31');
             FLUSH;"
        ))
        .await
        .unwrap();
    // Partition 1 is at 00:00:02 and holds the watermark there.
    let held = rows(
        &client,
        "SELECT partition, idle, watermark FROM sys.watermarks ORDER BY partition",
    )
    .await;
    let at = |t: &str| Some(format!("2026-01-01 00:00:{t}"));
    assert_eq!(
        held,
        vec![
            vec![Some("0".into()), Some("f".into()), at("02")],
            vec![Some("1".into()), Some("f".into()), at("02")],
        ]
    );
    assert!(rows(&client, "SELECT * FROM per_10s").await.is_empty());
    // After its timeout it is idle: with no new rows the watermark moves to 00:00:31 and
    // the window before it closes.
    let mut closed = vec![];
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        closed = sorted(&client, "SELECT window_end, n FROM per_10s").await;
        if !closed.is_empty() {
            break;
        }
    }
    assert_eq!(closed, vec![vec![at("10"), Some("2".into())]]);
    let idle = rows(
        &client,
        "SELECT partition, idle, watermark FROM sys.watermarks ORDER BY partition",
    )
    .await;
    assert_eq!(idle[1], vec![Some("1".into()), Some("t".into()), at("31")]);
    // A row in the quiet partition below the watermark is late once it wakes.
    client
        .batch_execute(&format!(
            "INSERT INTO s VALUES ('{k1}', '2026-01-01 00:00:05'), ('{k1}', '2026-01-01 00:00:45'); FLUSH"
        ))
        .await
        .unwrap();
    let late = rows(&client, "SELECT late_rows FROM sys.queries").await;
    assert_eq!(late[0][0].as_deref(), Some("1"));
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_emits_each_closed_window_and_records_each_late_row_once() {
    let mut rng = Rng::seeded("event time crash");
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--epoch-max-records", "40"];
    {
        let server = common::start_with(dir.path(), &flags);
        let client = server.connect().await;
        client.batch_execute(STREAM).await.unwrap();
        create_queries(&client).await;
        server.stop();
    }
    // The writers' clock: every insert moves it on a little.
    let clock = Arc::new(AtomicI64::new(0));
    let mut acked_total = 0u64;
    for round in 0..4 {
        let server = common::start_with(dir.path(), &flags);
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = vec![];
        for writer in 0..2u64 {
            let client = server.connect().await;
            let stop = stop.clone();
            let clock = clock.clone();
            let mut rng = Rng(rng.next() | 1);
            writers.push(tokio::spawn(async move {
                let mut acked = 0u64;
                let mut id = writer * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    let at = clock.fetch_add(1 + rng.below(3) as i64, Ordering::Relaxed) as u64;
                    let values: Vec<String> = (0..10)
                        .map(|_| {
                            id += 1;
                            row(&mut rng, id, at)
                        })
                        .collect();
                    let sql = format!("INSERT INTO events VALUES {}", values.join(", "));
                    match client.simple_query(&sql).await {
                        Ok(_) => acked += 1,
                        Err(_) => return acked,
                    }
                }
                acked
            }));
        }
        let wait = 200 + rng.below(1200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        eprintln!("round {round}: SIGKILL after {wait} ms");
        server.kill();
        for handle in writers {
            acked_total += handle.await.unwrap();
        }
        let server = common::start_with(dir.path(), &flags);
        let client = server.connect().await;
        client.batch_execute("FLUSH").await.unwrap();
        check_all(&client, &format!("(round {round})")).await;
        drop(client);
        server.stop();
    }
    assert!(acked_total > 10, "the writers made progress");
    // Nothing the writers were told was stored is missing (ids are unique per row).
    let server = common::start_with(dir.path(), &flags);
    let client = server.connect().await;
    let stored: BTreeSet<Option<String>> = rows(&client, "SELECT count(*) FROM events")
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    eprintln!("{acked_total} inserts acknowledged; events holds {stored:?} rows");
    server.stop();
}
