//! Consumer groups (subscriptions) against the real server: a consumer that reads and
//! commits while a writer appends, through SIGKILLs of the server, gets every acknowledged
//! record, and none again once its commit was acknowledged.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Rng, rows};

/// What the consumer has seen.
#[derive(Default)]
struct Consumed {
    /// Records of transactions whose COMMIT was acknowledged, with how often each came.
    committed: BTreeMap<i64, u32>,
    /// Records of the transaction whose COMMIT was sent when the server died: committed or
    /// not, nobody knows yet.
    in_doubt: Vec<i64>,
}

/// Reads `billing` until the server goes away (`Err`) or, if `until_idle`, until a FETCH
/// finds nothing for a while.
async fn consume(
    client: &tokio_postgres::Client,
    rng: &mut Rng,
    consumed: &Mutex<Consumed>,
    until_idle: bool,
) -> Result<(), tokio_postgres::Error> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the consumer did not catch up in 2 minutes"
        );
        client
            .simple_query("BEGIN; DECLARE cur SUBSCRIPTION CURSOR FOR billing")
            .await?;
        let mut batch = vec![];
        for _ in 0..1 + rng.below(3) {
            let n = 1 + rng.below(40);
            let fetched = client
                .simple_query(&format!("FETCH {n} FROM cur WITH (timeout = '200ms')"))
                .await?;
            for message in fetched {
                if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
                    batch.push(row.get(0).unwrap().parse::<i64>().unwrap());
                }
            }
        }
        if rng.below(5) == 0 {
            // Changed its mind: these come again.
            client.simple_query("ROLLBACK").await?;
            continue;
        }
        consumed.lock().unwrap().in_doubt = batch.clone();
        client.simple_query("COMMIT").await?;
        let mut c = consumed.lock().unwrap();
        c.in_doubt.clear();
        for seq in &batch {
            *c.committed.entry(*seq).or_default() += 1;
        }
        if until_idle && batch.is_empty() {
            return Ok(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_resumes_after_sigkill_with_nothing_lost_or_repeated() {
    let mut rng = Rng::seeded("consumer group crash test");
    let dir = tempfile::tempdir().unwrap();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let consumed = Arc::new(Mutex::new(Consumed::default()));
    let mut next_seq = 0i64;
    {
        let server = common::start(dir.path());
        let client = server.connect().await;
        client
            .batch_execute(
                "CREATE STREAM events (seq BIGINT, note TEXT) WITH (partitions = 3);
                 CREATE SUBSCRIPTION billing FROM events WITH (start = 'earliest')",
            )
            .await
            .unwrap();
        server.stop();
    }
    // Batches whose COMMIT was cut by a kill, oldest first.
    let mut in_doubt = vec![];
    for round in 0..3 {
        let server = common::start(dir.path());

        let writer = {
            let client = server.connect().await;
            let acked = acked.clone();
            let mut seq = next_seq;
            tokio::spawn(async move {
                loop {
                    let values: Vec<String> =
                        (seq..seq + 5).map(|s| format!("({s}, 'x')")).collect();
                    let sql = format!("INSERT INTO events VALUES {}", values.join(", "));
                    if client.simple_query(&sql).await.is_err() {
                        return seq + 5;
                    }
                    acked.lock().unwrap().extend(seq..seq + 5);
                    seq += 5;
                }
            })
        };
        let consumer = {
            let client = server.connect().await;
            let consumed = consumed.clone();
            let mut rng = Rng(rng.next() | 1);
            tokio::spawn(async move {
                let _ = consume(&client, &mut rng, &consumed, false).await;
            })
        };
        let wait = 300 + rng.below(1200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        eprintln!("round {round}: SIGKILL after {wait} ms");
        server.kill();
        next_seq = writer.await.unwrap();
        consumer.await.unwrap();
        in_doubt.push(std::mem::take(&mut consumed.lock().unwrap().in_doubt));
    }

    // The last restart: drain what is left, then settle the in-doubt commits (latest first:
    // a batch whose commit did not happen came again later) and check everything.
    let server = common::start(dir.path());
    let client = server.connect().await;
    consume(&client, &mut rng, &consumed, true).await.unwrap();
    for (round, batch) in in_doubt.into_iter().enumerate().rev() {
        settle_in_doubt(&consumed, batch, round);
    }

    let total = rows(&client, "SELECT count(*) FROM events").await[0][0]
        .clone()
        .unwrap();
    let lag = rows(&client, "SELECT sum(lag) FROM sys.consumer_groups").await;
    assert_eq!(lag[0][0].as_deref(), Some("0"));
    let c = consumed.lock().unwrap();
    let repeated: Vec<_> = c.committed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "records delivered again after their commit: {repeated:?}"
    );
    let acked = acked.lock().unwrap();
    let lost: Vec<_> = acked
        .iter()
        .filter(|s| !c.committed.contains_key(s))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged records never consumed: {lost:?}"
    );
    assert_eq!(
        c.committed.len().to_string(),
        total,
        "every record in the stream consumed once"
    );
    eprintln!(
        "{} records written ({} acknowledged), all consumed exactly once",
        total,
        acked.len()
    );
}

/// An in-doubt commit either happened, and none of its records came again, or it did not,
/// and all of them did: counts it as committed in the first case.
fn settle_in_doubt(consumed: &Mutex<Consumed>, in_doubt: Vec<i64>, round: usize) {
    let mut c = consumed.lock().unwrap();
    let again = in_doubt
        .iter()
        .filter(|s| c.committed.contains_key(s))
        .count();
    assert!(
        again == 0 || again == in_doubt.len(),
        "round {round}: a commit cut by the kill took effect in part: {again} of {} records came again",
        in_doubt.len()
    );
    if again == 0 {
        for seq in in_doubt {
            *c.committed.entry(seq).or_default() += 1;
        }
    }
}
