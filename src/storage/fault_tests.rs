//! The log under faults beyond `kill -9`, through the [`Disk`] seam: failed fsyncs, a full
//! disk, power cuts that drop what was not fsynced, and more partitions than open files.

use std::collections::HashMap;

use super::tests::{append, open, read_ids, records, spec, try_open_flushing, try_open_on};
use super::*;

fn batch(s: &TopicSpec, partition: u32, from: i64, to: i64) -> PartitionBatch {
    PartitionBatch {
        topic: s.id,
        partition: PartitionId(partition),
        records: records(s, from, to, 1_000),
    }
}

fn ids(from: i64, to: i64) -> Vec<i64> {
    (from..to).collect()
}

#[tokio::test]
async fn a_failed_fsync_stops_acknowledgements_until_a_restart() {
    // A failed fsync of a segment, and of the commit log: after either, whether the write
    // reached the disk is unknown, and (PostgreSQL's lesson) a later fsync that succeeds
    // proves nothing. The log refuses every later write instead of carrying on.
    for failing in ["topics", "commit.log"] {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(1, 1);
        let faults = Faults::new();
        let log = try_open_on(dir.path(), vec![], Disk::with_faults(64, faults.clone())).unwrap();
        log.create_topic(s.clone()).await.unwrap();
        append(&log, &s, 0, 0, 10).await;

        faults.fail_syncs(Some(failing));
        let error = log.append(vec![batch(&s, 0, 10, 20)]).await.unwrap_err();
        assert!(
            matches!(error, StorageError::Failed(_)),
            "{failing}: {error}"
        );
        faults.fail_syncs(None);
        let error = log.append(vec![batch(&s, 0, 20, 30)]).await.unwrap_err();
        assert!(
            error.to_string().contains("restart the server"),
            "{failing}: {error}"
        );
        assert_eq!(read_ids(&log, &s, 0).unwrap(), ids(0, 10), "{failing}");
        log.shutdown();
        drop(log);

        // Recovery decides what the unknown write left; what was acknowledged is all there,
        // and writing goes on after it.
        let log = open(dir.path(), vec![s.clone()]);
        let recovered = read_ids(&log, &s, 0).unwrap();
        assert!(
            recovered == ids(0, 10) || recovered == ids(0, 20),
            "{failing}: {recovered:?}"
        );
        let next = recovered.len() as i64;
        let range = append(&log, &s, 0, next, next + 5).await;
        assert_eq!(range.base_offset, Offset(next as u64));
        assert_eq!(read_ids(&log, &s, 0).unwrap(), ids(0, next + 5));
    }
}

#[tokio::test]
async fn a_full_disk_fails_writes_loses_nothing_and_writing_resumes() {
    // Full where the frames go, where the commit record goes, and everywhere. A write that
    // finds no space takes half of its bytes and fails, as on a real disk.
    for full in ["topics", "commit.log", ""] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(1, 2);
        s.segment_bytes_max = 4 * 1024;
        let faults = Faults::new();
        let log = try_open_on(dir.path(), vec![], Disk::with_faults(64, faults.clone())).unwrap();
        log.create_topic(s.clone()).await.unwrap();
        append(&log, &s, 0, 0, 100).await;
        append(&log, &s, 1, 0, 100).await;

        faults.fill_disk(Some(full));
        for round in 0..3 {
            let error = log
                .append(vec![batch(&s, 0, 100, 200), batch(&s, 1, 100, 200)])
                .await
                .unwrap_err();
            let StorageError::Io { source, .. } = &error else {
                panic!("{full:?} round {round}: {error}");
            };
            assert_eq!(
                source.kind(),
                std::io::ErrorKind::StorageFull,
                "{full:?}: {error}"
            );
            assert_eq!(
                crate::error::Error::from(error).sqlstate(),
                "53100",
                "{full:?}"
            );
        }
        assert_eq!(read_ids(&log, &s, 0).unwrap(), ids(0, 100));

        // Space returns: the same log takes writes again, at the offsets after the last
        // acknowledged ones, across segment rolls.
        faults.fill_disk(None);
        for i in 1..=20 {
            let ranges = log
                .append(vec![
                    batch(&s, 0, i * 100, (i + 1) * 100),
                    batch(&s, 1, i * 100, (i + 1) * 100),
                ])
                .await
                .unwrap();
            assert_eq!(ranges[0].base_offset, Offset(i as u64 * 100), "{full:?}");
        }
        assert!(log.topic(s.id).unwrap().partitions[0].segments().len() > 1);
        log.shutdown();
        drop(log);
        let log = open(dir.path(), vec![s.clone()]);
        for p in 0..2 {
            assert_eq!(read_ids(&log, &s, p).unwrap(), ids(0, 2100), "{full:?}");
        }
    }
}

/// One append of a power-cut round: what it wrote, and whether it was acknowledged.
struct Attempt {
    parts: Vec<(u32, i64, i64)>,
    acknowledged: bool,
}

#[tokio::test]
async fn a_power_cut_loses_nothing_acknowledged() {
    power_cut_rounds(FlushPolicy::Always).await;
}

#[tokio::test]
async fn a_power_cut_under_the_interval_policy_keeps_a_prefix_of_commits_and_every_flush() {
    // Flushes come only from `Log::flush`, at random points between appends.
    power_cut_rounds(FlushPolicy::Interval(std::time::Duration::from_secs(3600))).await;
}

/// Rounds of appends across two topics (multi-partition, small segments so rolls and seals
/// happen, fewer open handles than files so closing written handles happens), each ended by
/// a power cut after a random number of disk operations; then what was not fsynced is
/// dropped (all of it or a torn prefix, maybe zeroed) and the log is recovered. What the log
/// holds must be the appends of a prefix of the attempts, each whole, that includes every
/// append made durable: under `always` every acknowledged one, under `interval` every one
/// acknowledged before the last flush.
async fn power_cut_rounds(flush: FlushPolicy) {
    let seed = std::env::var("RUNNEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() as u64);
    println!("power cut seed: {seed} (replay with RUNNEL_SEED={seed}), {flush:?}");
    let mut rng = seed | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let dir = tempfile::tempdir().unwrap();
    let mut specs = vec![spec(1, 3), spec(2, 3)];
    for s in &mut specs {
        s.segment_bytes_max = 2048;
    }
    {
        let log = open(dir.path(), vec![]);
        for s in &specs {
            log.create_topic(s.clone()).await.unwrap();
        }
        log.shutdown();
    }
    // Per (topic, partition), the ids the log holds, in order.
    let mut expected: HashMap<(usize, u32), Vec<i64>> = HashMap::new();
    let mut next_id = 0;
    let mut tally = HashMap::<&str, usize>::new();
    for round in 0..30 {
        let faults = Faults::new();
        let log = try_open_flushing(
            dir.path(),
            specs.clone(),
            Disk::with_faults(16, faults.clone()),
            flush,
        )
        .unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"));
        faults.cut_power_after(next(400));
        let mut attempts: Vec<(usize, Attempt)> = vec![];
        // The acknowledged attempts are all before `acknowledged`; those made durable, all
        // before `durable`.
        let mut acknowledged_to = 0;
        let mut durable = 0;
        while !faults.power_is_off() {
            let t = next(2) as usize;
            let mut parts = vec![];
            for p in 0..3 {
                if p == 0 || next(2) == 0 {
                    let n = 1 + next(30) as i64;
                    parts.push((p, next_id, next_id + n));
                    next_id += n;
                }
            }
            let batches = parts
                .iter()
                .map(|&(p, from, to)| batch(&specs[t], p, from, to))
                .collect();
            let acknowledged = log.append(batches).await.is_ok();
            attempts.push((
                t,
                Attempt {
                    parts,
                    acknowledged,
                },
            ));
            if acknowledged {
                acknowledged_to = attempts.len();
            }
            let flushed = match flush {
                FlushPolicy::Always => true,
                FlushPolicy::Interval(_) => next(6) == 0 && log.flush().await.is_ok(),
            };
            if flushed {
                durable = acknowledged_to;
            }
        }
        log.shutdown();
        drop(log);
        faults.lose_unsynced(seed ^ round).unwrap();

        let log = open(dir.path(), specs.clone());
        let mut found: HashMap<(usize, u32), Vec<i64>> = HashMap::new();
        for (t, s) in specs.iter().enumerate() {
            for p in 0..3 {
                let ids = read_ids(&log, s, p)
                    .unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"));
                found.insert((t, p), ids);
            }
        }
        // Replay the attempts over what the log held: each whole or absent, the present
        // ones a prefix, and every durable one present.
        let mut kept = 0;
        for (i, (t, attempt)) in attempts.iter().enumerate() {
            let present: Vec<bool> = attempt
                .parts
                .iter()
                .map(|&(p, from, _)| found[&(*t, p)].contains(&from))
                .collect();
            let whole = present.iter().all(|&b| b) || present.iter().all(|&b| !b);
            assert!(whole, "seed {seed} round {round}: an append was split");
            if present[0] {
                assert_eq!(
                    kept, i,
                    "seed {seed} round {round}: attempt {i} kept after a lost one"
                );
                kept += 1;
            }
            *tally
                .entry(match (attempt.acknowledged, present[0]) {
                    (true, true) => "acknowledged",
                    (true, false) => "acknowledged, unflushed and gone",
                    (false, true) => "failed but recovered",
                    (false, false) => "failed and gone",
                })
                .or_default() += 1;
            // Expected: the kept ones. A durable append that was lost makes `found` differ
            // below, or `kept` fall short.
            if present[0] {
                for &(p, from, to) in &attempt.parts {
                    expected.entry((*t, p)).or_default().extend(from..to);
                }
            }
        }
        assert!(
            kept >= durable,
            "seed {seed} round {round}: {kept} appends kept, {durable} were durable"
        );
        for (key, ids) in &found {
            assert_eq!(
                ids,
                expected.get(key).map_or(&vec![], |v| v),
                "seed {seed} round {round}: partition {key:?}"
            );
        }
        log.shutdown();
    }
    println!("power cut appends: {tally:?}");
    assert!(tally["acknowledged"] > 30 && tally["failed and gone"] > 0);
    if flush != FlushPolicy::Always {
        // The interval policy's loss window was exercised, not only its happy path.
        assert!(
            tally.contains_key("acknowledged, unflushed and gone"),
            "{tally:?}"
        );
    }
}

#[tokio::test]
async fn many_partitions_need_no_more_open_files_than_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(1, 200);
    s.segment_bytes_max = 4096;
    let disk = Disk::new(32);
    let log = try_open_on(dir.path(), vec![], disk.clone()).unwrap();
    log.create_topic(s.clone()).await.unwrap();
    for round in 0..4 {
        let batches = (0..200)
            .map(|p| batch(&s, p, round * 50, (round + 1) * 50))
            .collect();
        log.append(batches).await.unwrap();
        assert!(disk.open_files() <= 32, "{}", disk.open_files());
    }
    for p in (0..200).step_by(7) {
        assert_eq!(read_ids(&log, &s, p).unwrap(), ids(0, 200));
    }
    assert!(disk.open_files() <= 32, "{}", disk.open_files());
    log.shutdown();
    drop(log);
    let log = try_open_on(dir.path(), vec![s.clone()], Disk::new(32)).unwrap();
    assert_eq!(read_ids(&log, &s, 199).unwrap(), ids(0, 200));
}
