//! Joins in continuous queries, against their oracles.
//!
//! A lookup join reads its table as it is when an epoch runs. The test makes that moment
//! known: each round changes the table, then appends the round's events, then waits for
//! every query to read them (`FLUSH`), and changes nothing until then. So the events of a
//! round were joined with the table as it is after the round's changes, which is what the
//! same join, run once as a bounded query over the round's events, returns at that point:
//! the oracle. The rounds change the table at random (inserts, upserts, updates, deletes),
//! and some end with `kill -9` before their events are read, so that the epochs reading
//! them run again after the restart, still exactly once.

mod common;

use std::collections::BTreeSet;

use common::{Rng, rows};

type Rows = Vec<Vec<Option<String>>>;

const KEYS: u64 = 40;

/// The join each query makes, as a bounded query over the events of `round`.
fn oracle(round: u64) -> String {
    format!(
        "SELECT e.round, e.seq, e.k, d.name, d.tier FROM ev e \
         LEFT JOIN dim d ON e.k = d.id WHERE e.round = {round} ORDER BY e.seq"
    )
}

/// The join with the table of composite keys, as a bounded query over `round`'s events.
fn pairs_oracle(round: u64) -> String {
    format!(
        "SELECT e.round, e.seq, p.w FROM ev e JOIN pairs p ON p.a = e.k AND p.b = e.tag \
         WHERE e.round = {round} ORDER BY e.seq"
    )
}

/// A random change of the dimension table.
async fn change_table(client: &tokio_postgres::Client, rng: &mut Rng) {
    let id = rng.below(KEYS);
    let tier = rng.below(3);
    let name = format!("n{}", rng.below(1000));
    let sql = match rng.below(4) {
        0 => format!(
            "INSERT INTO dim VALUES ({id}, '{name}', {tier}) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, tier = excluded.tier"
        ),
        1 => format!(
            "UPDATE dim SET tier = {tier}, name = '{name}' WHERE id % 7 = {}",
            id % 7
        ),
        2 => format!("DELETE FROM dim WHERE id = {id}"),
        _ => format!("INSERT INTO dim VALUES ({id}, '{name}', {tier}) ON CONFLICT DO NOTHING"),
    };
    client.batch_execute(&sql).await.unwrap();
    let tag = format!("t{}", rng.below(3));
    let sql = match rng.below(3) {
        0 => format!("DELETE FROM pairs WHERE a = {id} AND b = '{tag}'"),
        _ => format!(
            "INSERT INTO pairs VALUES ({id}, '{tag}', {}) ON CONFLICT (a, b) DO UPDATE SET w = excluded.w",
            rng.below(1000)
        ),
    };
    client.batch_execute(&sql).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_joins_read_the_table_as_of_each_epoch_exactly_once_across_kill_9() {
    let mut rng = Rng::seeded("lookup joins");
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE dim (id BIGINT PRIMARY KEY, name TEXT NOT NULL, tier INT NOT NULL) WITH (partitions = 2);
             CREATE TABLE pairs (a INT, b TEXT, w BIGINT, PRIMARY KEY (a, b)) WITH (partitions = 3);
             CREATE STREAM ev (k BIGINT, tag TEXT, round BIGINT, seq BIGINT) WITH (partitions = 3);
             CREATE STREAM enriched AS
                 SELECT e.round, e.seq, e.k, d.name, d.tier
                 FROM ev e LEFT JOIN dim FOR SYSTEM_TIME AS OF PROCTIME() d ON e.k = d.id;
             CREATE STREAM top_tier AS
                 SELECT e.round, e.seq FROM ev e JOIN dim d ON e.k = d.id WHERE d.tier = 2;
             CREATE MATERIALIZED VIEW per_tier AS
                 SELECT d.tier, count(*) AS n, sum(e.k) AS keys
                 FROM ev e JOIN dim d ON e.k = d.id GROUP BY d.tier;
             CREATE STREAM paired AS
                 SELECT e.round, e.seq, p.w FROM ev e JOIN pairs p ON p.a = e.k AND p.b = e.tag;",
        )
        .await
        .unwrap();
    let mut expected: Rows = vec![];
    let mut expected_pairs: Rows = vec![];
    let mut seq = 0u64;
    for round in 0..10u64 {
        let mut client = server.connect().await;
        for _ in 0..1 + rng.below(12) {
            change_table(&client, &mut rng).await;
        }
        let events: Vec<String> = (0..1 + rng.below(30))
            .map(|_| {
                seq += 1;
                format!(
                    "({}, 't{}', {round}, {seq})",
                    rng.below(KEYS + 5),
                    rng.below(4)
                )
            })
            .collect();
        client
            .batch_execute(&format!("INSERT INTO ev VALUES {}", events.join(", ")))
            .await
            .unwrap();
        if round % 3 == 1 {
            // The events are acknowledged, perhaps not read: the epochs that read them run
            // after the restart, over the table as it still is.
            drop(client);
            server.kill();
            server = common::start(dir.path());
            client = server.connect().await;
        }
        client.batch_execute("FLUSH").await.unwrap();
        expected.extend(rows(&client, &oracle(round)).await);
        expected_pairs.extend(rows(&client, &pairs_oracle(round)).await);
    }
    let client = server.connect().await;
    let got = rows(
        &client,
        "SELECT round, seq, k, name, tier FROM enriched ORDER BY round, seq",
    )
    .await;
    assert_eq!(got, expected, "the left join, each row once");

    let tier: Rows = expected
        .iter()
        .filter(|r| r[4].as_deref() == Some("2"))
        .map(|r| r[..2].to_vec())
        .collect();
    let got = rows(
        &client,
        "SELECT round, seq FROM top_tier ORDER BY round, seq",
    )
    .await;
    assert_eq!(got, tier, "the inner join, filtered on the table's column");

    let got = rows(
        &client,
        "SELECT round, seq, w FROM paired ORDER BY round, seq",
    )
    .await;
    assert_eq!(
        got, expected_pairs,
        "the join on a composite key, INT against BIGINT"
    );
    assert!(!expected_pairs.is_empty(), "some events found their pair");

    // The view aggregates the joined rows as they were joined.
    let got = rows(&client, "SELECT tier, n, keys FROM per_tier ORDER BY tier").await;
    let want = rows(
        &client,
        "SELECT tier, count(*), sum(k) FROM enriched WHERE tier IS NOT NULL GROUP BY tier ORDER BY tier",
    )
    .await;
    assert_eq!(got, want, "the view over the join");
    let matched: BTreeSet<&Option<String>> = expected.iter().map(|r| &r[4]).collect();
    assert!(
        matched.len() > 1,
        "the rounds joined rows both with and without a match: {matched:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_joins_refuse_what_an_epoch_cannot_finish() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE dim (id BIGINT PRIMARY KEY, name TEXT);
             CREATE STREAM ev (k BIGINT);
             CREATE STREAM other (k BIGINT);",
        )
        .await
        .unwrap();
    let refused = [
        (
            "CREATE STREAM a AS SELECT * FROM ev e RIGHT JOIN dim d ON e.k = d.id",
            "RIGHT join of the stream",
        ),
        (
            "CREATE STREAM a AS SELECT * FROM ev e FULL JOIN dim d ON e.k = d.id",
            "FULL join of the stream",
        ),
        (
            "CREATE STREAM a AS SELECT * FROM dim d WHERE d.id IN (SELECT k FROM ev)",
            "keeps the table's rows",
        ),
        (
            "CREATE STREAM a AS SELECT * FROM ev e JOIN dim FOR SYSTEM_TIME AS OF now() d ON e.k = d.id",
            "PROCTIME() only",
        ),
        (
            "CREATE STREAM a AS SELECT * FROM ev e JOIN other o ON e.k = o.k",
            "several streams (ev, other)",
        ),
        ("CREATE STREAM a AS SELECT * FROM dim", "is a table"),
    ];
    for (sql, why) in refused {
        let e = client.batch_execute(sql).await.unwrap_err();
        let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
        assert_eq!(db.code().code(), "0A000", "{sql}: {}", db.message());
        assert!(db.message().contains(why), "{sql}: {}", db.message());
    }
    // The connection carries on, and nothing was created.
    let names = rows(&client, "SELECT name FROM sys.queries").await;
    assert!(names.is_empty(), "{names:?}");
}
