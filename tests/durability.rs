//! Durability of the real server: clean restarts, SIGKILL during concurrent writes, and
//! corruption on disk reported rather than served.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::SinkExt;

use common::{Rng, rows};
use runnel::storage::frame;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_data_catalog_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT NOT NULL, ts TIMESTAMP) WITH (partitions = 4, timestamp = 'ts', compression = 'zstd');
             CREATE TOPIC raw WITH (partitions = 2);
             CREATE EXTERNAL TABLE lines STORED AS TEXT LOCATION 'sql-tests/data/book.txt';
             INSERT INTO clicks VALUES (1, '/a', '2026-01-01 00:00:00'), (2, '/b', '2026-01-01 00:00:01'), (3, '/c', '2026-01-01 00:00:02');
             INSERT INTO raw VALUES ('k', 'v');",
        )
        .await
        .unwrap();
    let queries = [
        "SELECT _partition, _offset, _timestamp, user_id, url FROM clicks ORDER BY user_id",
        "SELECT topic, partition, log_start_offset, high_watermark FROM sys.partitions ORDER BY topic, partition",
        "DESCRIBE clicks",
        "SHOW TOPICS",
        "SELECT count(*) FROM lines",
        "SELECT _key, _value FROM raw",
    ];
    let mut before = vec![];
    for q in queries {
        before.push(rows(&client, q).await);
    }
    drop(client);
    server.stop();

    let server = common::start(dir.path());
    let client = server.connect().await;
    for (q, expected) in queries.iter().zip(&before) {
        assert_eq!(&rows(&client, q).await, expected, "{q} after a restart");
    }
    // Offsets continue where they were.
    client
        .batch_execute("INSERT INTO clicks VALUES (1, '/d', NULL)")
        .await
        .unwrap();
    let offsets = rows(&client, "SELECT _offset FROM clicks WHERE url = '/d'").await;
    let earlier = rows(
        &client,
        "SELECT count(*) FROM clicks WHERE user_id IN (1, 2)",
    )
    .await;
    // Keys 1 and 2 share partition 0 of 4, so the new record follows the two before it.
    assert_eq!(earlier[0][0].as_deref(), Some("3"));
    assert_eq!(offsets[0][0].as_deref(), Some("2"));
    server.stop();
}

const ROWS_PER_INSERT: i64 = 16;
const ROWS_PER_COPY: i64 = 500;

/// What each writer knows: statements acknowledged, and the one in flight (if any).
#[derive(Default)]
struct Ledger {
    acked: BTreeSet<(i64, i64)>,
    in_flight: BTreeMap<i64, i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_concurrent_writes_loses_nothing_acknowledged() {
    sigkill_rounds("crash test", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_the_interval_flush_policy_loses_nothing_acknowledged() {
    // Acknowledged once written to the OS, never fsynced before the kill (the interval is
    // longer than a round): a crash of the process, unlike one of the machine, loses
    // nothing, and recovery keeps every commit written ahead of its fsync.
    let flags = [
        "--flush-policy",
        "interval",
        "--flush-interval-ms",
        "600000",
    ];
    sigkill_rounds("interval crash test", &flags).await;
}

/// Rounds of concurrent multi-partition INSERTs and COPYs ended by `kill -9`: after each
/// restart every acknowledged statement is there exactly once, and any statement there is
/// whole.
async fn sigkill_rounds(name: &str, flags: &[&str]) {
    let mut rng = Rng::seeded(name);
    let seed = rng.0;
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut seq_of = [0i64; 5];

    {
        let server = common::start_with(dir.path(), flags);
        let client = server.connect().await;
        client
            .batch_execute("CREATE STREAM events (writer INT, seq BIGINT, part INT, note TEXT) WITH (partitions = 4)")
            .await
            .unwrap();
        server.stop();
    }

    for round in 0..4 {
        let server = common::start_with(dir.path(), flags);
        let mut writers = vec![];
        for writer in 0..5i64 {
            let client = server.connect().await;
            let ledger = ledger.clone();
            let mut seq = seq_of[writer as usize];
            writers.push(tokio::spawn(async move {
                loop {
                    seq += 1;
                    ledger.lock().unwrap().in_flight.insert(writer, seq);
                    // Writer 4 uses COPY, the others multi-row INSERTs; both span partitions.
                    let result = if writer == 4 {
                        copy_batch(&client, writer, seq).await
                    } else {
                        let values: Vec<String> = (0..ROWS_PER_INSERT)
                            .map(|part| format!("({writer}, {seq}, {part}, 'round')"))
                            .collect();
                        client
                            .simple_query(&format!(
                                "INSERT INTO events VALUES {}",
                                values.join(", ")
                            ))
                            .await
                            .map(|_| ())
                    };
                    match result {
                        Ok(()) => {
                            let mut l = ledger.lock().unwrap();
                            l.acked.insert((writer, seq));
                            l.in_flight.remove(&writer);
                        }
                        Err(_) => return seq, // the server is gone
                    }
                }
            }));
        }
        let wait = 150 + rng.below(1200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        eprintln!("round {round}: SIGKILL after {wait} ms");
        server.kill();
        for (writer, handle) in writers.into_iter().enumerate() {
            seq_of[writer] = handle.await.unwrap();
        }

        // Restart and check: every acknowledged statement is there exactly once, and any
        // statement there is whole.
        let server = common::start_with(dir.path(), flags);
        let client = server.connect().await;
        let present = rows(
            &client,
            "SELECT writer, seq, count(*), count(DISTINCT part) FROM events GROUP BY writer, seq",
        )
        .await;
        let mut found = BTreeSet::new();
        for row in &present {
            let writer: i64 = row[0].as_ref().unwrap().parse().unwrap();
            let seq: i64 = row[1].as_ref().unwrap().parse().unwrap();
            let count: i64 = row[2].as_ref().unwrap().parse().unwrap();
            let distinct: i64 = row[3].as_ref().unwrap().parse().unwrap();
            let expected = if writer == 4 {
                ROWS_PER_COPY
            } else {
                ROWS_PER_INSERT
            };
            assert_eq!(
                count, expected,
                "statement ({writer}, {seq}) is partial or duplicated (seed {seed})"
            );
            assert_eq!(
                distinct, expected,
                "statement ({writer}, {seq}) has duplicated rows (seed {seed})"
            );
            found.insert((writer, seq));
        }
        let l = ledger.lock().unwrap();
        let missing: Vec<_> = l.acked.difference(&found).collect();
        assert!(
            missing.is_empty(),
            "acknowledged but lost: {missing:?} (seed {seed})"
        );
        for extra in found.difference(&l.acked) {
            assert_eq!(
                l.in_flight.get(&extra.0),
                Some(&extra.1),
                "statement {extra:?} present but never sent (seed {seed})"
            );
        }
        eprintln!(
            "round {round}: {} statements acknowledged, all present",
            l.acked.len()
        );
        drop(l);
        // Whatever was in flight is now decided: present or not, it is never re-sent.
        let mut l = ledger.lock().unwrap();
        let decided: Vec<(i64, i64)> = l.in_flight.iter().map(|(w, s)| (*w, *s)).collect();
        for (writer, seq) in decided {
            if found.contains(&(writer, seq)) {
                l.acked.insert((writer, seq));
            }
        }
        l.in_flight.clear();
        drop(l);
        drop(client);
        server.stop();
    }
    assert!(
        ledger.lock().unwrap().acked.len() > 20,
        "the writers made progress"
    );
}

async fn copy_batch(
    client: &tokio_postgres::Client,
    writer: i64,
    seq: i64,
) -> Result<(), tokio_postgres::Error> {
    let sink = client
        .copy_in("COPY events FROM STDIN WITH (FORMAT csv)")
        .await?;
    futures::pin_mut!(sink);
    let mut data = String::new();
    for part in 0..ROWS_PER_COPY {
        data.push_str(&format!("{writer},{seq},{part},copy\n"));
    }
    // Two messages, so a kill can land between them.
    let half = data.len() / 2;
    let cut = data[..half].rfind('\n').unwrap() + 1;
    sink.send(bytes::Bytes::from(data[..cut].to_string()))
        .await?;
    sink.send(bytes::Bytes::from(data[cut..].to_string()))
        .await?;
    sink.finish().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_on_disk_is_reported_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute("CREATE STREAM s (id BIGINT, pad TEXT) WITH (segment_bytes = 8192)")
        .await
        .unwrap();
    for i in 0..20 {
        let values: Vec<String> = (0..20)
            .map(|j| format!("({}, repeat('x', 40))", i * 20 + j))
            .collect();
        client
            .batch_execute(&format!("INSERT INTO s VALUES {}", values.join(",")))
            .await
            .unwrap();
    }
    drop(client);
    server.stop();

    let partition = std::fs::read_dir(dir.path().join("topics"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("0");
    let mut segments: Vec<_> = std::fs::read_dir(&partition)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    assert!(
        segments.len() > 2,
        "the stream rolled segments: {segments:?}"
    );
    let sealed = &segments[0];
    let mut bytes = std::fs::read(sealed).unwrap();
    // A byte in the first frame's `pad` column.
    let header = frame::decode_header(&bytes).unwrap();
    let pad = frame::decode_directory(&bytes, &header).unwrap()[1].range();
    bytes[pad.start + 40] ^= 0x40;
    std::fs::write(sealed, bytes).unwrap();

    let server = common::start(dir.path());
    let client = server.connect().await;
    // A count reads no column: the checksummed headers say how many records there are.
    let rows_now = rows(&client, "SELECT count(*), count(id) FROM s").await;
    assert_eq!(rows_now[0], [Some("400".into()), Some("400".into())]);
    let err = client
        .simple_query("SELECT count(pad) FROM s")
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&err), "XX001");
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(
        message.contains(&sealed.file_name().unwrap().to_string_lossy().to_string()),
        "{message}"
    );
    // The server and the connection carry on; data past the damaged frame is readable.
    let rows = rows(&client, "SELECT count(*) FROM s WHERE _offset >= 300").await;
    assert_eq!(rows[0][0].as_deref(), Some("100"));
    server.stop();
}
