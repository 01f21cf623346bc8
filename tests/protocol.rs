//! The wire protocol with a real driver (tokio-postgres): prepared statements with typed
//! parameters and binary results, COPY, EXPLAIN, and malformed input from clients.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use futures::SinkExt;
use tokio_postgres::types::Type;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_take_typed_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute("CREATE STREAM clicks (user_id BIGINT KEY, url TEXT, amount DOUBLE PRECISION, ok BOOLEAN, ts TIMESTAMP) WITH (partitions = 2)")
        .await
        .unwrap();

    let insert = client
        .prepare("INSERT INTO clicks VALUES ($1, $2, $3, $4, $5)")
        .await
        .unwrap();
    assert_eq!(
        insert.params(),
        &[
            Type::INT8,
            Type::TEXT,
            Type::FLOAT8,
            Type::BOOL,
            Type::TIMESTAMP
        ]
    );
    let ts = chrono::NaiveDate::from_ymd_opt(2026, 1, 2)
        .unwrap()
        .and_hms_opt(3, 4, 5)
        .unwrap();
    for i in 0..10i64 {
        let n = client
            .execute(
                &insert,
                &[
                    &i,
                    &format!("/p/{}", i % 3),
                    &(i as f64 * 1.5),
                    &(i % 2 == 0),
                    &ts,
                ],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
    }

    let select = client
        .prepare("SELECT user_id, url, amount, ok, ts, _partition, _offset FROM clicks WHERE user_id >= $1 AND url = $2 ORDER BY user_id")
        .await
        .unwrap();
    assert_eq!(select.params(), &[Type::INT8, Type::TEXT]);
    let types: Vec<Type> = select.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(
        types,
        [
            Type::INT8,
            Type::TEXT,
            Type::FLOAT8,
            Type::BOOL,
            Type::TIMESTAMP,
            Type::INT4,
            Type::INT8
        ]
    );
    let rows = client.query(&select, &[&3i64, &"/p/0"]).await.unwrap();
    let got: Vec<(i64, String, f64, bool, chrono::NaiveDateTime)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        got,
        vec![
            (3, "/p/0".to_string(), 4.5, false, ts),
            (6, "/p/0".to_string(), 9.0, true, ts),
            (9, "/p/0".to_string(), 13.5, false, ts),
        ]
    );

    // An error in the extended protocol leaves the connection usable.
    let err = client
        .query("SELECT * FROM clicks WHERE user_id = $1", &[&"nine"])
        .await
        .unwrap_err();
    assert!(
        err.as_db_error().is_some() || err.to_string().contains("error"),
        "{err}"
    );
    let err = client.prepare("SELECT nope FROM clicks").await.unwrap_err();
    assert_eq!(common::sqlstate(&err), "42703");
    let count: i64 = client
        .query_one("SELECT count(*) FROM clicks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 10);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_ranges_a_scan_reads() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT, url TEXT) WITH (partitions = 3);
             INSERT INTO clicks SELECT value, 'u' FROM generate_series(1, 300) AS t(value);",
        )
        .await
        .unwrap();
    let explain = |sql: &'static str| {
        let client = &client;
        async move {
            let messages = client.simple_query(sql).await.unwrap();
            messages
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(1).map(str::to_string),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    // Unkeyed records are spread round-robin: 100 per partition.
    let plan = explain("EXPLAIN SELECT * FROM clicks").await;
    assert!(
        plan.contains("ranges=[0:0..100, 1:0..100, 2:0..100]"),
        "{plan}"
    );
    let plan = explain(
        "EXPLAIN SELECT * FROM clicks WHERE _partition = 1 AND _offset >= 40 AND _offset < 50",
    )
    .await;
    assert!(plan.contains("ranges=[1:40..50]"), "{plan}");
    let plan =
        explain("EXPLAIN SELECT * FROM clicks WHERE _timestamp >= now() - INTERVAL '1 hour'").await;
    assert!(plan.contains("timestamp_ms=["), "{plan}");
    server.stop();
}

async fn count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM s", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_is_atomic_and_larger_copies_commit_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    // The smallest chunk allowed, so that the chunked path is exercised with little data.
    let server = common::start_with(dir.path(), &["--copy-chunk-bytes", "1048576"]);
    let client = server.connect().await;
    client
        .batch_execute("CREATE STREAM s (id BIGINT KEY, pad TEXT) WITH (partitions = 4)")
        .await
        .unwrap();

    let send = |lines: Vec<String>| {
        let client = &client;
        async move {
            let sink = client
                .copy_in("COPY s FROM STDIN WITH (FORMAT csv)")
                .await?;
            futures::pin_mut!(sink);
            for chunk in lines.chunks(1000) {
                sink.send(bytes::Bytes::from(chunk.concat())).await?;
            }
            sink.finish().await
        }
    };
    let line = |i: usize| format!("{i},{}\n", "x".repeat(90));

    // Under the chunk size (~0.5 MB): all or nothing.
    let mut lines: Vec<String> = (0..5_000).map(line).collect();
    lines.push("oops,bad\n".into());
    let err = send(lines).await.unwrap_err();
    assert_eq!(common::sqlstate(&err), "22P02");
    assert!(
        err.as_db_error().unwrap().message().contains("line 5001"),
        "{err}"
    );

    assert_eq!(
        count(&client).await,
        0,
        "none of a failed COPY's rows are visible"
    );
    assert_eq!(send((0..5_000).map(line).collect()).await.unwrap(), 5_000);
    assert_eq!(count(&client).await, 5_000);

    // Over the chunk size (~2.8 MB): the chunks before the bad line are committed, as
    // documented; the rows after the last full chunk are not.
    let mut lines: Vec<String> = (0..30_000).map(line).collect();
    lines.push("oops,bad\n".into());
    let err = send(lines).await.unwrap_err();
    let visible = count(&client).await - 5_000;
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(
        message.contains(&format!("{visible} rows of this COPY were committed")),
        "the error says what was committed ({visible} rows): {message}"
    );
    assert!(
        visible > 0 && visible < 30_000,
        "{visible} rows of the chunked COPY are visible"
    );
    assert_eq!(
        visible % 1000,
        0,
        "whole CopyData messages are committed: {visible}"
    );
    server.stop();
}

/// A PostgreSQL message: its type byte, length and body.
fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads messages until ReadyForQuery; returns their type bytes and the text of any error.
fn until_ready(raw: &mut TcpStream) -> (Vec<u8>, String) {
    let (mut kinds, mut errors) = (vec![], String::new());
    loop {
        let mut head = [0u8; 5];
        raw.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize - 4;
        let mut body = vec![0u8; len];
        raw.read_exact(&mut body).unwrap();
        kinds.push(head[0]);
        if head[0] == b'E' {
            errors.push_str(&String::from_utf8_lossy(&body));
        }
        if head[0] == b'Z' {
            return (kinds, errors);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_must_supply_every_parameter_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let mut raw = TcpStream::connect(server.addr).unwrap();
    let params = b"user\0runnel\0database\0runnel\0\0";
    let mut startup = ((8 + params.len()) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(&196608u32.to_be_bytes());
    startup.extend_from_slice(params);
    raw.write_all(&startup).unwrap();
    until_ready(&mut raw);
    raw.write_all(
        &[
            frame(b'P', b"s1\0SELECT $1::BIGINT + 1 AS x\0\0\0"),
            frame(b'S', b""),
        ]
        .concat(),
    )
    .unwrap();
    let (kinds, errors) = until_ready(&mut raw);
    assert_eq!(kinds, b"1Z", "{errors}");
    let bind = |values: &[&[u8]]| {
        let mut body = b"\0s1\0\0\0".to_vec();
        body.extend_from_slice(&(values.len() as u16).to_be_bytes());
        for v in values {
            body.extend_from_slice(&(v.len() as u32).to_be_bytes());
            body.extend_from_slice(v);
        }
        body.extend_from_slice(&0u16.to_be_bytes());
        [
            frame(b'B', &body),
            frame(b'E', b"\0\0\0\0\0"),
            frame(b'S', b""),
        ]
        .concat()
    };
    for values in [&[][..], &[b"5".as_slice(), b"6".as_slice()][..]] {
        raw.write_all(&bind(values)).unwrap();
        let (kinds, errors) = until_ready(&mut raw);
        assert_eq!(kinds, b"EZ", "refused at Bind: {errors}");
        assert!(errors.contains("08P01"), "{errors}");
        assert!(
            errors.contains(&format!("supplies {} parameters", values.len())),
            "{errors}"
        );
    }
    raw.write_all(&bind(&[b"5"])).unwrap();
    let (kinds, errors) = until_ready(&mut raw);
    assert_eq!(kinds, b"2DCZ", "{errors}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_wire_frames_do_not_hurt_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute("CREATE STREAM s (a INT); INSERT INTO s VALUES (1)")
        .await
        .unwrap();

    // Garbage instead of a startup message.
    let mut raw = TcpStream::connect(server.addr).unwrap();
    raw.write_all(b"\x00\x00\x00\x08garbage!garbage!").unwrap();
    let mut buf = [0u8; 64];
    let _ = raw.read(&mut buf);
    drop(raw);

    // A message claiming to be huge, after a valid startup.
    let mut raw = TcpStream::connect(server.addr).unwrap();
    let mut startup = vec![];
    let params = b"user\0runnel\0database\0runnel\0\0";
    startup.extend_from_slice(&((8 + params.len()) as u32).to_be_bytes());
    startup.extend_from_slice(&196608u32.to_be_bytes());
    startup.extend_from_slice(params);
    raw.write_all(&startup).unwrap();
    let _ = raw.read(&mut buf);
    raw.write_all(b"Q\x7f\xff\xff\xffSELECT").unwrap();
    let _ = raw.read(&mut buf);
    drop(raw);

    // A client that disconnects in the middle of a COPY.
    {
        let (c, connection) =
            tokio_postgres::connect(&server.connection_string(), tokio_postgres::NoTls)
                .await
                .unwrap();
        let task = tokio::spawn(connection);
        let sink = c.copy_in("COPY s FROM STDIN").await.unwrap();
        futures::pin_mut!(sink);
        sink.send(bytes::Bytes::from_static(b"2\n3\n"))
            .await
            .unwrap();
        task.abort();
    }

    // The first connection and the server carry on; the abandoned COPY wrote nothing.
    let count: i64 = client
        .query_one("SELECT count(*) FROM s", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
    let fresh = server.connect().await;
    fresh
        .batch_execute("INSERT INTO s VALUES (4)")
        .await
        .unwrap();
    let sum: i64 = fresh
        .query_one("SELECT sum(a) FROM s", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, 5);
    server.stop();
}
