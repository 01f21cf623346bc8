//! Tables against a model: random inserts, upserts, updates (moving keys too) and deletes,
//! each checked against a map of what PostgreSQL would hold — whole, and key by key through
//! the key index — across clean restarts, `kill -9` and the compaction of the table's topic,
//! with materialized views over the table (maintained as its rows change) equal to their
//! bounded queries throughout;
//! concurrent inserts of the same keys, each key won exactly once; reads of a key read that
//! key's records only.

mod common;

use std::collections::BTreeMap;

use common::{Rng, rows, sqlstate};

/// The table's rows as the model has them: id → (v, s).
type Model = BTreeMap<i64, (i64, String)>;

const KEYS: i64 = 60;

async fn check(client: &tokio_postgres::Client, model: &Model, when: &str) {
    let got = rows(client, "SELECT id, v, s FROM t ORDER BY id").await;
    let want: Vec<Vec<Option<String>>> = model
        .iter()
        .map(|(id, (v, s))| vec![Some(id.to_string()), Some(v.to_string()), Some(s.clone())])
        .collect();
    assert_eq!(got, want, "the table {when}");
    let count = rows(client, "SELECT count(*) FROM t").await;
    assert_eq!(
        count[0][0],
        Some(model.len().to_string()),
        "count(*) {when}"
    );
    // Reads of a few keys go by the key index (and the log it has not read yet).
    for id in [0, 7, KEYS / 2, KEYS - 1] {
        let got = rows(client, &format!("SELECT v, s FROM t WHERE id = {id}")).await;
        let want: Vec<Vec<Option<String>>> = model
            .get(&id)
            .map(|(v, s)| vec![Some(v.to_string()), Some(s.clone())])
            .into_iter()
            .collect();
        assert_eq!(got, want, "key {id} {when}");
    }
    let got = rows(
        client,
        "SELECT id FROM t WHERE id IN (1, 2, 3, 50) ORDER BY id",
    )
    .await;
    let want: Vec<Vec<Option<String>>> = [1, 2, 3, 50]
        .into_iter()
        .filter(|id| model.contains_key(id))
        .map(|id| vec![Some(id.to_string())])
        .collect();
    assert_eq!(got, want, "keys in a list {when}");
}

/// Materialized views over the table, each with its query (and the order its rows are
/// compared in): grouped and global, with filters, expressions and `FILTER` clauses, every
/// aggregate that is maintained under updates and deletes, and `SELECT DISTINCT`.
const VIEWS: [(&str, &str, &str); 4] = [
    (
        "by_bucket",
        "SELECT v % 5 AS b, count(*) AS n, count(s) AS ns, sum(v) AS total, avg(v) AS mean \
         FROM t GROUP BY v % 5",
        "b",
    ),
    (
        "everything",
        "SELECT count(*) AS n, sum(v) AS total, avg(v) AS mean FROM t",
        "n",
    ),
    (
        "pairs",
        "SELECT DISTINCT length(s) AS len, v % 3 AS m FROM t WHERE v > 100",
        "len, m",
    ),
    (
        "by_length",
        "SELECT length(s) AS len, count(*) AS n, sum(v) FILTER (WHERE v > 500) AS big, \
         count(*) FILTER (WHERE v > 500) AS nbig FROM (SELECT * FROM t WHERE id % 3 <> 1) AS x \
         GROUP BY length(s)",
        "len",
    ),
];

/// Each view created so far holds what its query returns over the table now.
async fn check_views(client: &tokio_postgres::Client, created: usize, when: &str) {
    client.batch_execute("FLUSH").await.unwrap();
    for (name, query, order) in &VIEWS[..created] {
        let got = rows(client, &format!("SELECT * FROM {name} ORDER BY {order}")).await;
        let want = rows(
            client,
            &format!("SELECT * FROM ({query}) AS q ORDER BY {order}"),
        )
        .await;
        assert_eq!(got, want, "view {name} {when}");
    }
}

/// Runs `sql`, expecting success or the SQLSTATE `fails`; returns the command's row count.
async fn run(client: &tokio_postgres::Client, sql: &str, fails: Option<&str>) -> u64 {
    match (client.execute(sql, &[]).await, fails) {
        (Ok(n), None) => n,
        (Err(e), Some(code)) if sqlstate(&e) == code => 0,
        (result, expected) => panic!("{sql}: {result:?}, expected {expected:?}"),
    }
}

/// One random statement, applied to the model as PostgreSQL would apply it.
async fn random_statement(client: &tokio_postgres::Client, model: &mut Model, rng: &mut Rng) {
    let key = rng.below(KEYS as u64) as i64;
    let value = rng.below(1000) as i64;
    let text = format!("s{}", rng.below(100));
    match rng.below(8) {
        0 | 1 => {
            // INSERT of one or two rows: any key the table has, or a repeated one, fails all.
            let other = rng.below(KEYS as u64) as i64;
            let two = rng.below(2) == 0;
            let sql = if two {
                format!(
                    "INSERT INTO t VALUES ({key}, {value}, '{text}'), ({other}, {value}, '{text}')"
                )
            } else {
                format!("INSERT INTO t VALUES ({key}, {value}, '{text}')")
            };
            let clash =
                model.contains_key(&key) || (two && (model.contains_key(&other) || other == key));
            let n = run(client, &sql, clash.then_some("23505")).await;
            if !clash {
                model.insert(key, (value, text.clone()));
                if two {
                    model.insert(other, (value, text));
                }
                assert_eq!(n, if two { 2 } else { 1 });
            }
        }
        2 => {
            let sql = format!(
                "INSERT INTO t VALUES ({key}, {value}, '{text}') ON CONFLICT (id) DO UPDATE SET v = t.v + excluded.v"
            );
            assert_eq!(run(client, &sql, None).await, 1);
            model
                .entry(key)
                .and_modify(|(v, _)| *v += value)
                .or_insert((value, text));
        }
        3 => {
            let sql =
                format!("INSERT INTO t VALUES ({key}, {value}, '{text}') ON CONFLICT DO NOTHING");
            let inserted = !model.contains_key(&key);
            assert_eq!(run(client, &sql, None).await, inserted as u64);
            model.entry(key).or_insert((value, text));
        }
        4 => {
            let high = key + rng.below(10) as i64;
            let sql = format!(
                "UPDATE t SET v = v + {value}, s = s || 'u' WHERE id BETWEEN {key} AND {high}"
            );
            let mut n = 0;
            for (_, (v, s)) in model.range_mut(key..=high) {
                *v += value;
                s.push('u');
                n += 1;
            }
            assert_eq!(run(client, &sql, None).await, n);
        }
        5 => {
            // Moves a key: refused if the new key is taken (and not vacated).
            let to = rng.below(KEYS as u64) as i64;
            let sql = format!("UPDATE t SET id = {to} WHERE id = {key}");
            let moves = model.contains_key(&key);
            let clash = moves && to != key && model.contains_key(&to);
            let n = run(client, &sql, clash.then_some("23505")).await;
            if moves && !clash {
                let row = model.remove(&key).unwrap();
                model.insert(to, row);
                assert_eq!(n, 1);
            }
        }
        6 => {
            // Keys trade places in one statement.
            let other = (key + 1) % KEYS;
            let sql = format!(
                "UPDATE t SET id = CASE WHEN id = {key} THEN {other} ELSE {key} END WHERE id IN ({key}, {other})"
            );
            let a = model.remove(&key);
            let b = model.remove(&other);
            let n = a.is_some() as u64 + b.is_some() as u64;
            if let Some(row) = a {
                model.insert(other, row);
            }
            if let Some(row) = b {
                model.insert(key, row);
            }
            assert_eq!(run(client, &sql, None).await, n);
        }
        _ => {
            let modulus = 2 + rng.below(5) as i64;
            let rest = rng.below(modulus as u64) as i64;
            let sql = format!("DELETE FROM t WHERE id % {modulus} = {rest} AND v < {value}");
            let doomed: Vec<i64> = model
                .iter()
                .filter(|(id, (v, _))| *id % modulus == rest && *v < value)
                .map(|(id, _)| *id)
                .collect();
            for id in &doomed {
                model.remove(id);
            }
            assert_eq!(run(client, &sql, None).await, doomed.len() as u64);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_writes_match_the_model_across_restarts_and_kill_9() {
    let mut rng = Rng::seeded("tables");
    let dir = tempfile::tempdir().unwrap();
    // Compaction runs all along, over segments of a few records.
    let flags = ["--retention-check-interval-ms", "50"];
    let mut server = common::start_with(dir.path(), &flags);
    let mut compactions = 0;
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL, s TEXT)
                 WITH (partitions = 3, segment_bytes = 4096)",
        )
        .await
        .unwrap();
    // Three views follow the table from its start; the last is created over rows written
    // already, and catches up with them.
    for (name, query, _) in &VIEWS[..3] {
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await
            .unwrap();
    }
    let mut model = Model::new();
    let mut created = 3;
    for round in 0..6 {
        let client = server.connect().await;
        for _ in 0..40 {
            random_statement(&client, &mut model, &mut rng).await;
        }
        if round == 1 {
            let (name, query, _) = VIEWS[3];
            client
                .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
                .await
                .unwrap();
            created = 4;
        }
        check(&client, &model, &format!("after round {round}")).await;
        check_views(&client, created, &format!("after round {round}")).await;
        drop(client);
        // Every statement above was acknowledged: a restart, clean or not, keeps them all,
        // and the key index is rebuilt from the log.
        compactions += server.log().matches("records_removed").count();
        if round % 2 == 0 {
            server.kill();
        } else {
            server.stop();
        }
        server = common::start_with(dir.path(), &flags);
        let client = server.connect().await;
        check(&client, &model, &format!("after restart {round}")).await;
        check_views(&client, created, &format!("after restart {round}")).await;
    }
    assert!(compactions > 0, "the table's topic was compacted");
    // The views were written as the table changed, not recomputed: every group came and
    // went through the changes (an emptied group is gone, not shown with a count of 0).
    let client = server.connect().await;
    client.batch_execute("DELETE FROM t; FLUSH").await.unwrap();
    assert!(rows(&client, "SELECT * FROM by_bucket").await.is_empty());
    assert!(rows(&client, "SELECT * FROM by_length").await.is_empty());
    assert!(rows(&client, "SELECT * FROM pairs").await.is_empty());
    assert_eq!(
        rows(&client, "SELECT n, total, mean FROM everything").await,
        vec![vec![Some("0".into()), None, None]]
    );
    let groups = rows(
        &client,
        "SELECT name, groups FROM sys.queries ORDER BY name",
    )
    .await;
    assert_eq!(
        groups,
        vec![
            vec![Some("by_bucket".into()), Some("0".into())],
            vec![Some("by_length".into()), Some("0".into())],
            vec![Some("everything".into()), Some("1".into())],
            vec![Some("pairs".into()), Some("0".into())],
        ],
        "emptied groups leave the state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_of_one_key_succeed_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    server
        .connect()
        .await
        .batch_execute("CREATE TABLE claims (id INT PRIMARY KEY, who INT) WITH (partitions = 2)")
        .await
        .unwrap();
    let writers = 4;
    let keys = 50;
    let mut tasks = vec![];
    for who in 0..writers {
        let client = server.connect().await;
        tasks.push(tokio::spawn(async move {
            let mut won = 0;
            for id in 0..keys {
                match client
                    .execute(&format!("INSERT INTO claims VALUES ({id}, {who})"), &[])
                    .await
                {
                    Ok(1) => won += 1,
                    Err(e) if sqlstate(&e) == "23505" => {}
                    other => panic!("INSERT {id}: {other:?}"),
                }
            }
            won
        }));
    }
    let mut won = 0;
    for task in tasks {
        won += task.await.unwrap();
    }
    assert_eq!(won, keys, "each key is won by exactly one writer");
    let client = server.connect().await;
    let count = rows(&client, "SELECT count(*), count(DISTINCT id) FROM claims").await;
    assert_eq!(
        count[0],
        vec![Some(keys.to_string()), Some(keys.to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_a_key_reads_its_latest_record_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE kv (k INT PRIMARY KEY, v TEXT) WITH (partitions = 1);
             INSERT INTO kv VALUES (1, 'a'), (2, 'b'), (3, 'c');
             UPDATE kv SET v = 'b2' WHERE k = 2;
             DELETE FROM kv WHERE k = 3;",
        )
        .await
        .unwrap();
    // Offsets: 0..3 the inserts, 3 key 2's update, 4 key 3's tombstone.
    let explain = |sql: &'static str| {
        let client = &client;
        async move { format!("{:?}", rows(client, &format!("EXPLAIN {sql}")).await) }
    };
    let plan = explain("SELECT v FROM kv WHERE k = 2").await;
    assert!(plan.contains("ranges=[0:3..4]"), "{plan}");
    assert_eq!(
        rows(&client, "SELECT v FROM kv WHERE k = 2").await,
        [vec![Some("b2".to_string())]]
    );
    let plan = explain("SELECT v FROM kv WHERE k IN (1, 3)").await;
    assert!(plan.contains("ranges=[0:0..1]"), "{plan}");
    assert_eq!(
        rows(&client, "SELECT k, v FROM kv WHERE k IN (1, 3)").await,
        [vec![Some("1".to_string()), Some("a".to_string())]]
    );
    // After a restart there is no index until the next write: every record is read.
    drop(client);
    server.stop();
    let server = common::start(dir.path());
    let client = server.connect().await;
    let plan = format!(
        "{:?}",
        rows(&client, "EXPLAIN SELECT v FROM kv WHERE k = 2").await
    );
    assert!(plan.contains("ranges=[0:0..5]"), "{plan}");
    assert_eq!(
        rows(&client, "SELECT v FROM kv WHERE k = 2").await,
        [vec![Some("b2".to_string())]]
    );
    // A write builds it; then a read of a key is a read of its record again.
    client
        .batch_execute("INSERT INTO kv VALUES (4, 'd')")
        .await
        .unwrap();
    let plan = format!(
        "{:?}",
        rows(&client, "EXPLAIN SELECT v FROM kv WHERE k = 2").await
    );
    assert!(plan.contains("ranges=[0:3..4]"), "{plan}");
}
