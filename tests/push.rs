//! Push queries (`SELECT … EMIT CHANGES`) over the real server: rows reach the client as
//! they are inserted, not when the query ends; a cancel request ends the query with `57014`
//! and the connection carries on.

mod common;

use std::time::Duration;

use futures::StreamExt;
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// The next data row of a push query, within a generous bound (it should take milliseconds).
async fn next_row(
    stream: &mut (
             impl futures::Stream<Item = Result<SimpleQueryMessage, tokio_postgres::Error>> + Unpin
         ),
) -> Vec<Option<String>> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("a row within 20 s")
            .expect("the query goes on")
            .expect("no error");
        if let SimpleQueryMessage::Row(row) = message {
            return (0..row.len())
                .map(|i| row.get(i).map(str::to_string))
                .collect();
        }
    }
}

/// Sends a push query and waits until the server has started it (its columns arrive first):
/// rows inserted from then on are the query's.
async fn start_push(
    client: &tokio_postgres::Client,
    sql: &str,
    columns: &[&str],
) -> std::pin::Pin<Box<tokio_postgres::SimpleQueryStream>> {
    let mut rows = Box::pin(client.simple_query_raw(sql).await.unwrap());
    match rows.next().await.unwrap().unwrap() {
        SimpleQueryMessage::RowDescription(described) => {
            let names: Vec<&str> = described.iter().map(|c| c.name()).collect();
            assert_eq!(names, columns);
        }
        other => panic!("expected the columns first, got {other:?}"),
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_arrive_as_they_are_inserted_and_cancel_ends_the_query() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let reader = server.connect().await;
    let writer = server.connect().await;
    writer
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT) WITH (partitions = 3);
             INSERT INTO clicks VALUES (0, '/before');",
        )
        .await
        .unwrap();

    // From the end of the stream (the default): the row inserted before is not returned.
    let mut rows = start_push(
        &reader,
        "SELECT user_id, upper(url) AS url FROM clicks EMIT CHANGES",
        &["user_id", "url"],
    )
    .await;
    for i in 1..=3 {
        writer
            .batch_execute(&format!("INSERT INTO clicks VALUES ({i}, '/page/{i}')"))
            .await
            .unwrap();
        // Each row arrives while the query is still running.
        let row = next_row(&mut rows).await;
        assert_eq!(
            row,
            [Some(i.to_string()), Some(format!("/PAGE/{i}"))],
            "row {i}"
        );
    }

    // Cancel, as psql's Ctrl-C does: the query ends with 57014.
    reader.cancel_token().cancel_query(NoTls).await.unwrap();
    let error = loop {
        match tokio::time::timeout(Duration::from_secs(20), rows.next())
            .await
            .expect("the cancel takes effect")
        {
            Some(Ok(_)) => continue,
            Some(Err(e)) => break e,
            None => panic!("the query ended without an error"),
        }
    };
    assert_eq!(common::sqlstate(&error), "57014", "{error:?}");
    drop(rows);

    // The connection is still usable, and so is the server.
    let n = common::rows(&reader, "SELECT count(*) FROM clicks").await;
    assert_eq!(n[0][0].as_deref(), Some("4"));

    // An aggregate push query streams the groups that change.
    let mut groups = start_push(
        &reader,
        "SELECT url, count(*) AS n FROM clicks GROUP BY url EMIT CHANGES LIMIT 2",
        &["url", "n"],
    )
    .await;
    writer
        .batch_execute("INSERT INTO clicks VALUES (5, '/x'), (6, '/x')")
        .await
        .unwrap();
    assert_eq!(
        next_row(&mut groups).await,
        [Some("/x".to_string()), Some("2".to_string())]
    );
    writer
        .batch_execute("INSERT INTO clicks VALUES (7, '/x')")
        .await
        .unwrap();
    assert_eq!(
        next_row(&mut groups).await,
        [Some("/x".to_string()), Some("3".to_string())]
    );
    // LIMIT 2 reached: the query completes.
    let mut completed = false;
    while let Some(message) = groups.next().await {
        if let SimpleQueryMessage::CommandComplete(n) = message.unwrap() {
            assert_eq!(n, 2);
            completed = true;
        }
    }
    assert!(completed);

    // SUBSCRIBE: the stream's columns, every record with snapshot = true, then new ones.
    let mut subscription = start_push(
        &reader,
        "SUBSCRIBE clicks WITH (snapshot = true)",
        &["user_id", "url"],
    )
    .await;
    let mut seen = vec![];
    for _ in 0..7 {
        seen.push(next_row(&mut subscription).await[0].clone().unwrap());
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2", "3", "5", "6", "7"]);
    writer
        .batch_execute("INSERT INTO clicks VALUES (9, '/z')")
        .await
        .unwrap();
    assert_eq!(
        next_row(&mut subscription).await,
        [Some("9".to_string()), Some("/z".to_string())]
    );
    reader.cancel_token().cancel_query(NoTls).await.unwrap();
    while let Some(message) = subscription.next().await {
        if let Err(e) = message {
            assert_eq!(common::sqlstate(&e), "57014");
            break;
        }
    }
    drop(subscription);

    // Through the extended protocol (prepared, as drivers such as pgjdbc send it), from the
    // beginning of the stream.
    reader
        .batch_execute("SET auto_offset_reset = 'earliest'")
        .await
        .unwrap();
    let statement = reader
        .prepare("SELECT user_id FROM clicks WHERE url = '/x' EMIT CHANGES LIMIT 3")
        .await
        .unwrap();
    let ids: Vec<i64> = reader
        .query(&statement, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut ids = ids;
    ids.sort();
    assert_eq!(ids, [5, 6, 7]);
    server.stop();
}

/// A client that goes away while its push query waits for rows ends the query at once,
/// without waiting for a row to fail to send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_ends_its_push_query() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let setup = server.connect().await;
    setup
        .batch_execute("CREATE STREAM quiet (x BIGINT)")
        .await
        .unwrap();
    for _ in 0..2 {
        let (client, connection) = tokio_postgres::connect(&server.connection_string(), NoTls)
            .await
            .unwrap();
        let connection = tokio::spawn(connection);
        let rows = start_push(&client, "SELECT x FROM quiet EMIT CHANGES", &["x"]).await;
        // The client goes away as a killed process would: its socket closes, no Terminate.
        connection.abort();
        let _ = connection.await;
        drop(rows);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ended = server
            .log()
            .lines()
            .filter(|l| l.contains("client left during a push query"))
            .count();
        if ended == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "push queries still running after their clients left:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The server goes on.
    let n = common::rows(&setup, "SELECT count(*) FROM quiet").await;
    assert_eq!(n[0][0].as_deref(), Some("0"));
    server.stop();
}

/// `SUBSCRIBE view`: the view's rows with `_diff = 1`, then per epoch the changed rows as
/// `-1` (before) and `+1` (after). Adding up the diffs gives the view's contents at every
/// step, also when `HAVING` takes groups out and puts them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_subscription_adds_up_to_the_view() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with(dir.path(), &["--epoch-max-records", "7"]);
    let reader = server.connect().await;
    let writer = server.connect().await;
    writer
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT) WITH (partitions = 2);
             INSERT INTO clicks VALUES (1, '/a'), (2, '/b');
             CREATE MATERIALIZED VIEW few AS
                 SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id HAVING count(*) % 3 <> 0;
             FLUSH;",
        )
        .await
        .unwrap();
    let mut rows = start_push(&reader, "SUBSCRIBE few", &["_diff", "user_id", "n"]).await;
    let mut contents: std::collections::BTreeMap<(String, String), i64> = Default::default();
    let mut rng = common::Rng::seeded("view subscription");
    for round in 0..6 {
        let values: Vec<String> = (0..1 + rng.below(20))
            .map(|_| format!("({}, '/x')", rng.below(6)))
            .collect();
        writer
            .batch_execute(&format!(
                "INSERT INTO clicks VALUES {}; FLUSH",
                values.join(", ")
            ))
            .await
            .unwrap();
        let expected: std::collections::BTreeMap<(String, String), i64> =
            common::rows(&writer, "SELECT user_id, n FROM few")
                .await
                .into_iter()
                .map(|r| ((r[0].clone().unwrap(), r[1].clone().unwrap()), 1))
                .collect();
        while contents != expected {
            let row = next_row(&mut rows).await;
            let diff: i64 = row[0].as_deref().unwrap().parse().unwrap();
            assert!(diff == 1 || diff == -1, "{row:?}");
            let key = (row[1].clone().unwrap(), row[2].clone().unwrap());
            let count = contents.entry(key.clone()).or_default();
            *count += diff;
            assert!(
                *count == 0 || *count == 1,
                "round {round}: {key:?} counted {count}"
            );
            if *count == 0 {
                contents.remove(&key);
            }
        }
    }
    server.stop();
}
