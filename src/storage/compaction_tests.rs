//! Tests of log compaction: what it keeps, where, and that readers and restarts never see
//! it half done.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};

use super::tests::{open, spec, try_open_on};
use super::*;

/// A compacted topic of small segments whose records delete their key by a null `url`.
fn compacted(delete_retention_ms: u64) -> TopicSpec {
    let mut s = spec(1, 1);
    s.segment_bytes_max = 8 * 1024;
    s.compaction = Some(Compaction {
        tombstone: Some(Tombstone::Null(1)),
        delete_retention_ms,
    });
    s
}

/// One record per `(id, key, deleted)`: id `id`, key `k<key>`, url null when deleted.
fn keyed(spec: &TopicSpec, rows: &[(i64, i64, bool)], ts0: i64) -> RecordBatch {
    let ids = Int64Array::from_iter_values(rows.iter().map(|r| r.0));
    let urls = StringArray::from_iter(rows.iter().map(|r| (!r.2).then(|| format!("/u/{}", r.0))));
    let ts = TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| ts0 + r.0));
    let keys = BinaryArray::from_iter(rows.iter().map(|r| Some(format!("k{}", r.1).into_bytes())));
    let mut columns: Vec<ArrayRef> = vec![Arc::new(ids), Arc::new(urls)];
    columns.extend(system_columns(Arc::new(ts), Arc::new(keys)));
    RecordBatch::try_new(spec.schema.clone(), columns).unwrap()
}

async fn append_keyed(log: &Log, spec: &TopicSpec, rows: &[(i64, i64, bool)], ts0: i64) {
    for chunk in rows.chunks(50) {
        log.append(vec![PartitionBatch {
            topic: spec.id,
            partition: PartitionId(0),
            records: keyed(spec, chunk, ts0),
        }])
        .await
        .unwrap();
    }
}

/// A read of the `id` column.
fn ids(spec: &TopicSpec) -> ReadOptions {
    ReadOptions {
        schema: spec.schema.clone(),
        projection: Some(vec![0]),
        min_timestamp_ms: None,
        max_timestamp_ms: None,
    }
}

/// (offset, id) of every record from `from`, as a reader of the partition sees them.
fn read_from(log: &Log, spec: &TopicSpec, from: Offset) -> Vec<(u64, i64)> {
    let topic = log.topic(spec.id).unwrap();
    let hw = log.snapshot().high_watermark(spec.id, PartitionId(0));
    let options = ids(spec);
    let mut out = vec![];
    for read in topic.partitions[0].reader(from..hw, options) {
        let read = read.unwrap();
        let ids = read
            .batch
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..read.batch.num_rows() {
            out.push((read.offset(i).0, ids.value(i)));
        }
    }
    out
}

/// What compacting everything before `horizon` leaves of `rows` (appended from offset 0):
/// the latest record of each key, deletions left as tombstones (`drop_tombstones`: gone
/// but for the last record before the horizon), and everything from the horizon on.
fn expected(rows: &[(i64, i64, bool)], horizon: u64, drop_tombstones: bool) -> Vec<(u64, i64)> {
    let mut latest: BTreeMap<i64, u64> = BTreeMap::new();
    for (offset, row) in rows[..horizon as usize].iter().enumerate() {
        latest.insert(row.1, offset as u64);
    }
    rows.iter()
        .enumerate()
        .filter(|(offset, row)| {
            let offset = *offset as u64;
            offset >= horizon
                || (latest[&row.1] == offset
                    && (!row.2 || !drop_tombstones || offset == horizon - 1))
        })
        .map(|(offset, row)| (offset as u64, row.0))
        .collect()
}

/// A new log in `dir` with the topic `spec`.
async fn create(dir: &std::path::Path, spec: &TopicSpec) -> Log {
    let log = open(dir, vec![]);
    log.create_topic(spec.clone()).await.unwrap();
    log
}

fn active_base(log: &Log, spec: &TopicSpec) -> Offset {
    let topic = log.topic(spec.id).unwrap();
    topic.partitions[0].segments().last().unwrap().base_offset
}

#[tokio::test]
async fn compaction_keeps_each_keys_latest_record_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let s = compacted(u64::MAX / 2);
    let log = create(dir.path(), &s).await;
    // 40 keys, each updated again and again; every seventh record deletes its key.
    let rows: Vec<(i64, i64, bool)> = (0..3000).map(|i| (i, i % 40, i % 7 == 3)).collect();
    append_keyed(&log, &s, &rows, 1_000).await;
    let before = log.topic(s.id).unwrap().partitions[0].stats();
    assert!(before.segments > 5, "{before:?}");
    log.compact().await.unwrap();
    let horizon = active_base(&log, &s);
    let want = expected(&rows, horizon.0, false);
    assert_eq!(read_from(&log, &s, Offset(0)), want);
    let after = log.topic(s.id).unwrap().partitions[0].stats();
    assert!(
        after.size_bytes < before.size_bytes / 4,
        "{before:?} → {after:?}"
    );
    assert!(after.segments < before.segments, "{before:?} → {after:?}");
    assert_eq!(after.log_start_offset, Offset(0));
    // From any offset, a reader gets the records from there on: nothing before, nothing
    // skipped, and always a record when there are offsets left to read.
    for from in (0..3000).step_by(37) {
        let read = read_from(&log, &s, Offset(from));
        let want: Vec<_> = want.iter().copied().filter(|(o, _)| *o >= from).collect();
        assert_eq!(read, want, "from {from}");
        assert!(!read.is_empty());
    }
    // A second pass changes nothing until new records dirty the log.
    log.compact().await.unwrap();
    assert_eq!(read_from(&log, &s, Offset(0)), want);
    // Restarted, the log is the compacted one, the replaced files gone.
    log.shutdown();
    drop(log);
    let log = open(dir.path(), vec![s.clone()]);
    assert_eq!(read_from(&log, &s, Offset(0)), want);
    let pdir = log.topic(s.id).unwrap().partitions[0].dir.clone();
    let files = segment::list_segments(&pdir).unwrap();
    assert!(
        files.iter().all(|f| f.generation > 0 || f.base >= horizon),
        "{files:?}"
    );
    // Appends go on at the offsets they would have had.
    append_keyed(&log, &s, &[(3000, 1, false)], 1_000).await;
    assert_eq!(
        read_from(&log, &s, Offset(2999)),
        vec![(2999, 2999), (3000, 3000)]
    );
}

#[tokio::test]
async fn tombstones_go_after_their_delay_and_a_second_pass() {
    let dir = tempfile::tempdir().unwrap();
    let s = compacted(0);
    let log = create(dir.path(), &s).await;
    let rows: Vec<(i64, i64, bool)> = (0..2000).map(|i| (i, i % 40, i % 7 == 3)).collect();
    append_keyed(&log, &s, &rows, 1_000).await;
    // The first pass keeps them: a reader has had no chance to see them compacted.
    log.compact().await.unwrap();
    let first = active_base(&log, &s);
    assert_eq!(
        read_from(&log, &s, Offset(0)),
        expected(&rows, first.0, false)
    );
    // The next pass, once there is as much new as compacted, removes them.
    let more: Vec<(i64, i64, bool)> = (2000..6000).map(|i| (i, 100 + i % 3, false)).collect();
    append_keyed(&log, &s, &more, 1_000).await;
    log.compact().await.unwrap();
    let all: Vec<_> = rows.iter().chain(&more).copied().collect();
    let second = active_base(&log, &s);
    let read = read_from(&log, &s, Offset(0));
    let deleted_before_first: Vec<_> = expected(&rows, first.0, false)
        .into_iter()
        .filter(|(o, _)| *o < first.0 && all[*o as usize].2)
        .collect();
    assert!(!deleted_before_first.is_empty());
    for tombstone in &deleted_before_first {
        assert!(!read.contains(tombstone), "{tombstone:?} is still there");
    }
    // Everything else is as one compaction up to the second horizon leaves it.
    let want: Vec<_> = expected(&all, second.0, false)
        .into_iter()
        .filter(|r| !deleted_before_first.contains(r))
        .collect();
    assert_eq!(read, want);
}

#[tokio::test]
async fn compaction_waits_for_readers_that_need_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let s = compacted(u64::MAX / 2);
    let log = create(dir.path(), &s).await;
    let rows: Vec<(i64, i64, bool)> = (0..3000).map(|i| (i, i % 40, false)).collect();
    append_keyed(&log, &s, &rows, 1_000).await;
    let hold = |offset: u64, waits: bool| {
        let topic = s.id;
        let source: HoldSource = Arc::new(move || {
            vec![Hold {
                topic,
                partition: PartitionId(0),
                offset: Offset(offset),
                holder: "query q".into(),
                waits,
            }]
        });
        source
    };
    // A consumer group's position does not hold compaction back.
    log.set_hold_source(hold(0, false));
    log.compact().await.unwrap();
    let horizon = active_base(&log, &s);
    assert!(horizon.0 > 2000);
    assert_eq!(
        read_from(&log, &s, Offset(0)),
        expected(&rows, horizon.0, false)
    );

    let dir = tempfile::tempdir().unwrap();
    let log = create(dir.path(), &s).await;
    append_keyed(&log, &s, &rows, 1_000).await;
    // A query that has read up to 1000 has its input from there left alone.
    log.set_hold_source(hold(1000, true));
    log.compact().await.unwrap();
    let read = read_from(&log, &s, Offset(0));
    assert!(read[0].0 > 0, "compacted before the hold");
    let tail: Vec<_> = read.iter().copied().filter(|(o, _)| *o >= 1000).collect();
    assert_eq!(tail.len(), 2000, "every record from the hold on");
    assert!(
        (1..=1000).any(|horizon| read == expected(&rows, horizon, false)),
        "compacted as up to a horizon at or before the hold: {:?}",
        &read[..50]
    );
}

#[tokio::test]
async fn a_reader_that_started_before_compaction_reads_the_log_it_started_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = compacted(u64::MAX / 2);
    let log = create(dir.path(), &s).await;
    let rows: Vec<(i64, i64, bool)> = (0..3000).map(|i| (i, i % 40, false)).collect();
    append_keyed(&log, &s, &rows, 1_000).await;
    let topic = log.topic(s.id).unwrap();
    let options = ids(&s);
    let mut reader = topic.partitions[0].reader(Offset(0)..Offset(3000), options);
    let first = reader.next().unwrap().unwrap();
    log.compact().await.unwrap();
    let pdir = topic.partitions[0].dir.clone();
    // The files it reads stay while it reads them.
    let during = segment::list_segments(&pdir).unwrap();
    assert!(
        during
            .iter()
            .any(|f| f.generation == 0 && f.base == Offset(0))
    );
    let mut ids: Vec<i64> = first
        .batch
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .values()
        .to_vec();
    for read in reader.by_ref() {
        let read = read.unwrap();
        assert!(
            read.offsets.is_none(),
            "read from the segments it started on"
        );
        let col = read
            .batch
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>();
        ids.extend(col.values().iter().copied());
    }
    assert_eq!(ids, (0..3000).collect::<Vec<_>>());
    drop(reader);
    drop(first);
    let after = segment::list_segments(&pdir).unwrap();
    assert!(
        !after
            .iter()
            .any(|f| f.generation == 0 && f.base == Offset(0)),
        "{after:?}"
    );
}

#[tokio::test]
async fn start_up_finishes_what_a_crashed_compaction_left() {
    let dir = tempfile::tempdir().unwrap();
    let s = compacted(u64::MAX / 2);
    let log = create(dir.path(), &s).await;
    let rows: Vec<(i64, i64, bool)> = (0..3000).map(|i| (i, i % 40, false)).collect();
    append_keyed(&log, &s, &rows, 1_000).await;
    let pdir = log.topic(s.id).unwrap().partitions[0].dir.clone();
    // The files as they were before compaction.
    let saved = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&pdir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, saved.path().join(path.file_name().unwrap())).unwrap();
    }
    log.compact().await.unwrap();
    let want = read_from(&log, &s, Offset(0));
    log.shutdown();
    drop(log);
    // As if it stopped after installing its segments but before deleting what they
    // replaced, with the output of another pass not yet finished in its scratch directory.
    let active = segment::list_segments(&pdir)
        .unwrap()
        .last()
        .unwrap()
        .log(&pdir);
    for entry in std::fs::read_dir(saved.path()).unwrap() {
        let path = entry.unwrap().path();
        let target = pdir.join(path.file_name().unwrap());
        if target != active && !target.exists() {
            std::fs::copy(&path, &target).unwrap();
        }
    }
    let scratch = dir.path().join(compaction::SCRATCH_DIR);
    std::fs::write(scratch.join("1-0-00000000000000000000-9.log"), b"half").unwrap();
    let log = try_open_on(dir.path(), vec![s.clone()], Disk::default()).unwrap();
    assert_eq!(read_from(&log, &s, Offset(0)), want);
    let files = segment::list_segments(&pdir).unwrap();
    let bases: Vec<Offset> = files.iter().map(|f| f.base).collect();
    let mut unique = bases.clone();
    unique.dedup();
    assert_eq!(bases, unique, "one segment per base: {files:?}");
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
}
