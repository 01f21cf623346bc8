//! Tests of the log as a whole: appends, reads, restart, recovery, retention.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;

use arrow::array::{
    Array, BinaryArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Fields};

use super::*;

pub(super) fn value_fields() -> Fields {
    Fields::from(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("url", DataType::Utf8, true),
    ])
}

pub(super) fn spec(id: u64, partitions: u32) -> TopicSpec {
    TopicSpec {
        id: TopicId(id),
        name: format!("t{id}"),
        partitions,
        schema: storage_schema(&value_fields()),
        compression: Compression::None,
        retention_ms: None,
        retention_bytes: None,
        segment_bytes_max: 1 << 30,
        compaction: None,
    }
}

/// Rows `from..to`, with timestamps `ts0 + i`.
pub(super) fn records(spec: &TopicSpec, from: i64, to: i64, ts0: i64) -> RecordBatch {
    let ids = Int64Array::from_iter_values(from..to);
    let urls = StringArray::from_iter_values((from..to).map(|i| format!("/p/{}", i % 10)));
    let ts = TimestampMillisecondArray::from_iter_values((from..to).map(|i| ts0 + i));
    let keys = BinaryArray::from_iter((from..to).map(|_| None::<&[u8]>));
    let mut columns: Vec<ArrayRef> = vec![Arc::new(ids), Arc::new(urls)];
    columns.extend(system_columns(Arc::new(ts), Arc::new(keys)));
    RecordBatch::try_new(spec.schema.clone(), columns).unwrap()
}

pub(super) fn open(dir: &Path, specs: Vec<TopicSpec>) -> Log {
    try_open(dir, specs).unwrap()
}

/// Opens the log as the database does, with `specs` as the catalog's topics and every id
/// up to the largest of them issued.
fn try_open(dir: &Path, specs: Vec<TopicSpec>) -> Result<Log, StorageError> {
    try_open_on(dir, specs, Disk::default())
}

/// [`try_open`] with the files behind `disk`.
pub(super) fn try_open_on(
    dir: &Path,
    specs: Vec<TopicSpec>,
    disk: Disk,
) -> Result<Log, StorageError> {
    try_open_flushing(dir, specs, disk, FlushPolicy::Always)
}

/// [`try_open_on`] under the flush policy `flush`.
pub(super) fn try_open_flushing(
    dir: &Path,
    specs: Vec<TopicSpec>,
    disk: Disk,
    flush: FlushPolicy,
) -> Result<Log, StorageError> {
    let mut config = LogConfig::new(dir);
    config.frame_bytes_target = 4096;
    config.disk = disk;
    config.flush = flush;
    let issued = TopicId(specs.iter().map(|s| s.id.0 + 1).max().unwrap_or(1));
    Log::begin_open(config)?.open(specs, issued)
}

/// The ids of a partition's records, from its log start (as a bounded scan reads).
pub(super) fn read_ids(
    log: &Log,
    spec: &TopicSpec,
    partition: u32,
) -> Result<Vec<i64>, StorageError> {
    let start = log.log_start(spec.id, PartitionId(partition));
    read_ids_from(log, spec, partition, start)
}

pub(super) fn read_ids_from(
    log: &Log,
    spec: &TopicSpec,
    partition: u32,
    start: Offset,
) -> Result<Vec<i64>, StorageError> {
    let topic = log.topic(spec.id).unwrap();
    let hw = log
        .snapshot()
        .high_watermark(spec.id, PartitionId(partition));
    let reader = topic.partitions[partition as usize].reader(
        start..hw,
        ReadOptions {
            schema: spec.schema.clone(),
            projection: Some(vec![0]),
            min_timestamp_ms: None,
            max_timestamp_ms: None,
        },
    );
    let mut ids = vec![];
    for batch in reader {
        let batch = batch?;
        let col = batch
            .batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        ids.extend(col.values().iter().copied());
    }
    Ok(ids)
}

pub(super) async fn append(
    log: &Log,
    spec: &TopicSpec,
    partition: u32,
    from: i64,
    to: i64,
) -> AppendedRange {
    let ranges = log
        .append(vec![PartitionBatch {
            topic: spec.id,
            partition: PartitionId(partition),
            records: records(spec, from, to, 1_000),
        }])
        .await
        .unwrap();
    ranges[0]
}

/// The log file of the appended segment at `base`.
fn log_path(dir: &Path, base: Offset) -> PathBuf {
    segment::SegmentFile::appended(base).log(dir)
}

fn active_log_file(dir: &Path, spec: &TopicSpec, partition: u32) -> PathBuf {
    let pdir = topic_dir(dir, spec).join(partition.to_string());
    let files = segment::list_segments(&pdir).unwrap();
    files.last().unwrap().log(&pdir)
}

#[tokio::test]
async fn appended_records_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(1, 2);
    {
        let log = open(dir.path(), vec![]);
        log.create_topic(s.clone()).await.unwrap();
        let r = append(&log, &s, 0, 0, 1000).await;
        assert_eq!((r.base_offset, r.record_count), (Offset(0), 1000));
        let r = append(&log, &s, 0, 1000, 1500).await;
        assert_eq!(r.base_offset, Offset(1000));
        append(&log, &s, 1, 0, 10).await;
        log.shutdown();
    }
    let log = open(dir.path(), vec![s.clone()]);
    assert_eq!(
        log.snapshot().high_watermarks(s.id),
        vec![Offset(1500), Offset(10)]
    );
    assert_eq!(
        read_ids(&log, &s, 0).unwrap(),
        (0..1500).collect::<Vec<_>>()
    );
    assert_eq!(read_ids(&log, &s, 1).unwrap(), (0..10).collect::<Vec<_>>());
    let r = append(&log, &s, 0, 1500, 1501).await;
    assert_eq!(
        r.base_offset,
        Offset(1500),
        "offsets continue after a restart"
    );
}

#[tokio::test]
async fn torn_tail_is_truncated_to_last_good_frame() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(1, 1);
    {
        let log = open(dir.path(), vec![]);
        log.create_topic(s.clone()).await.unwrap();
        append(&log, &s, 0, 0, 100).await;
        log.shutdown();
    }
    let path = active_log_file(dir.path(), &s, 0);
    let good_len = std::fs::metadata(&path).unwrap().len();
    // Half a frame: a crash in the middle of a write.
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(&frame::FRAME_MAGIC).unwrap();
    file.write_all(&[0x55; 300]).unwrap();
    drop(file);

    let log = open(dir.path(), vec![s.clone()]);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
    assert_eq!(read_ids(&log, &s, 0).unwrap(), (0..100).collect::<Vec<_>>());
    append(&log, &s, 0, 100, 110).await;
    assert_eq!(read_ids(&log, &s, 0).unwrap(), (0..110).collect::<Vec<_>>());
}

#[tokio::test]
async fn frames_without_a_commit_record_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(1, 2);
    let commit_log = dir.path().join("commit.log");
    {
        let log = open(dir.path(), vec![]);
        log.create_topic(s.clone()).await.unwrap();
        append(&log, &s, 0, 0, 50).await;
        log.shutdown();
    }
    let committed = std::fs::read(&commit_log).unwrap();
    {
        // A multi-partition write whose frames are on disk but whose commit record is not.
        let log = open(dir.path(), vec![s.clone()]);
        log.append(vec![
            PartitionBatch {
                topic: s.id,
                partition: PartitionId(0),
                records: records(&s, 50, 80, 0),
            },
            PartitionBatch {
                topic: s.id,
                partition: PartitionId(1),
                records: records(&s, 0, 30, 0),
            },
        ])
        .await
        .unwrap();
        log.shutdown();
    }
    std::fs::write(&commit_log, committed).unwrap();
    let log = open(dir.path(), vec![s.clone()]);
    assert_eq!(
        log.snapshot().high_watermarks(s.id),
        vec![Offset(50), Offset(0)]
    );
    assert_eq!(read_ids(&log, &s, 0).unwrap(), (0..50).collect::<Vec<_>>());
    assert!(read_ids(&log, &s, 1).unwrap().is_empty());
}

/// A one-partition topic of 2,000 records in 20 appends, rolled into 16-KiB segments; the
/// log shut down. Its spec and the partition's directory.
async fn rolled(dir: &Path) -> (TopicSpec, PathBuf) {
    let mut s = spec(1, 1);
    s.segment_bytes_max = 16 * 1024;
    let log = open(dir, vec![]);
    log.create_topic(s.clone()).await.unwrap();
    for i in 0..20 {
        append(&log, &s, 0, i * 100, (i + 1) * 100).await;
    }
    log.shutdown();
    let pdir = topic_dir(dir, &s).join("0");
    (s, pdir)
}

#[tokio::test]
async fn flipped_byte_in_sealed_segment_is_reported_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (s, pdir) = rolled(dir.path()).await;
    let files = segment::list_segments(&pdir).unwrap();
    assert!(files.len() > 2, "segments rolled by size: {files:?}");
    let sealed = files[0].log(&pdir);
    let mut bytes = std::fs::read(&sealed).unwrap();
    bytes[200] ^= 0x01;
    std::fs::write(&sealed, &bytes).unwrap();

    // Recovery only walks the active segment, so the log opens; the read finds the damage.
    let log = open(dir.path(), vec![s.clone()]);
    let err = read_ids(&log, &s, 0).unwrap_err();
    match &err {
        StorageError::Corruption { path, position, .. } => {
            assert_eq!(path, &sealed);
            assert_eq!(*position, 0, "the frame holding byte 200 starts at 0");
        }
        other => panic!("expected corruption, got {other}"),
    }
    assert!(err.to_string().contains(&sealed.display().to_string()));
    // Reads past the damaged frame still work.
    let topic = log.topic(s.id).unwrap();
    let later: usize = topic.partitions[0]
        .reader(
            files[1].base..Offset(2000),
            ReadOptions {
                schema: s.schema.clone(),
                projection: None,
                min_timestamp_ms: None,
                max_timestamp_ms: None,
            },
        )
        .map(|b| b.unwrap().batch.num_rows())
        .sum();
    assert_eq!(later as u64, 2000 - files[1].base.0);
}

#[tokio::test]
async fn a_read_verifies_the_columns_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (s, pdir) = rolled(dir.path()).await;
    let sealed = segment::list_segments(&pdir).unwrap()[0].log(&pdir);
    let mut bytes = std::fs::read(&sealed).unwrap();
    let header = frame::decode_header(&bytes).unwrap();
    let sections = frame::decode_directory(&bytes, &header).unwrap();
    // The first frame's url column (value column 1) rots.
    bytes[sections[1].range().start + 20] ^= 0x01;
    std::fs::write(&sealed, &bytes).unwrap();

    let log = open(dir.path(), vec![s.clone()]);
    let read = |projection: Option<Vec<usize>>| -> Result<usize, StorageError> {
        let topic = log.topic(s.id).unwrap();
        let mut rows = 0;
        for batch in topic.partitions[0].reader(
            Offset(0)..Offset(2000),
            ReadOptions {
                schema: s.schema.clone(),
                projection,
                min_timestamp_ms: None,
                max_timestamp_ms: None,
            },
        ) {
            rows += batch?.batch.num_rows();
        }
        Ok(rows)
    };
    // Reads of other columns neither read nor need the damaged bytes...
    assert_eq!(read(Some(vec![0])).unwrap(), 2000);
    assert_eq!(read(Some(vec![2, 0])).unwrap(), 2000);
    assert_eq!(read(Some(vec![])).unwrap(), 2000);
    // ...and every read of the damaged column finds the damage, whatever else it reads.
    for projection in [Some(vec![1]), Some(vec![0, 1]), Some(vec![1, 4]), None] {
        match read(projection.clone()).unwrap_err() {
            StorageError::Corruption { path, position, .. } => {
                assert_eq!((path, position), (sealed.clone(), 0), "{projection:?}");
            }
            other => panic!("{projection:?}: expected corruption, got {other}"),
        }
    }
}

#[tokio::test]
async fn corruption_before_the_committed_end_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(1, 1);
    {
        let log = open(dir.path(), vec![]);
        log.create_topic(s.clone()).await.unwrap();
        append(&log, &s, 0, 0, 100).await;
        append(&log, &s, 0, 100, 200).await;
        log.shutdown();
    }
    let path = active_log_file(dir.path(), &s, 0);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    // Remove the index so recovery walks from the start of the segment.
    std::fs::remove_file(path.with_extension("index")).unwrap();
    let err = try_open(dir.path(), vec![s.clone()]).expect_err("refused");
    match err {
        StorageError::Corruption {
            path: p, position, ..
        } => {
            assert_eq!(p, path);
            assert_eq!(position, 0);
        }
        other => panic!("expected corruption, got {other}"),
    }
}

#[tokio::test]
async fn retention_deletes_whole_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut by_size = spec(1, 1);
    by_size.segment_bytes_max = 8 * 1024;
    by_size.retention_bytes = Some(20 * 1024);
    let mut by_time = spec(2, 1);
    by_time.segment_bytes_max = 8 * 1024;
    by_time.retention_ms = Some(60_000);
    let log = open(dir.path(), vec![]);
    log.create_topic(by_size.clone()).await.unwrap();
    log.create_topic(by_time.clone()).await.unwrap();
    for i in 0..40 {
        append(&log, &by_size, 0, i * 50, (i + 1) * 50).await;
        // Timestamps around 1970: far older than the retention period.
        append(&log, &by_time, 0, i * 50, (i + 1) * 50).await;
    }
    let size_topic = log.topic(by_size.id).unwrap();
    let before = size_topic.partitions[0].stats();
    assert!(before.segments > 4, "{before:?}");
    let deleted = log.enforce_retention().await.unwrap();
    assert!(deleted > 0);

    let after = size_topic.partitions[0].stats();
    assert!(
        after.size_bytes >= 20 * 1024,
        "keeps at least retention_bytes: {after:?}"
    );
    assert!(after.size_bytes < before.size_bytes);
    assert!(after.log_start_offset > Offset(0));
    let ids = read_ids(&log, &by_size, 0).unwrap();
    assert_eq!(
        ids.first().copied(),
        Some(after.log_start_offset.0 as i64),
        "reads start at the log start"
    );
    assert_eq!(ids.last().copied(), Some(1999));
    // A reader asking for what retention deleted is told so, not given the rest.
    match read_ids_from(&log, &by_size, 0, Offset(0)) {
        Err(StorageError::Removed { from, to, .. }) => {
            assert_eq!((from, to), (Offset(0), after.log_start_offset));
        }
        other => panic!("expected Removed, got {other:?}"),
    }

    let time_topic = log.topic(by_time.id).unwrap();
    let stats = time_topic.partitions[0].stats();
    assert_eq!(
        stats.segments, 1,
        "every sealed segment is past the retention time"
    );
    assert_eq!(
        read_ids(&log, &by_time, 0).unwrap().last().copied(),
        Some(1999)
    );
}

#[tokio::test]
async fn reads_by_timestamp_skip_older_frames() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(1, 1);
    let log = open(dir.path(), vec![]);
    log.create_topic(s.clone()).await.unwrap();
    for i in 0..100 {
        // Record i has timestamp 1000 + i.
        append(&log, &s, 0, i * 10, (i + 1) * 10).await;
    }
    let topic = log.topic(s.id).unwrap();
    let read = |min, max| -> Vec<i64> {
        topic.partitions[0]
            .reader(
                Offset(0)..Offset(1000),
                ReadOptions {
                    schema: s.schema.clone(),
                    projection: Some(vec![0]),
                    min_timestamp_ms: min,
                    max_timestamp_ms: max,
                },
            )
            .flat_map(|b| {
                let b = b.unwrap().batch;
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect()
    };
    // Frames hold 10 records each; a bound skips whole frames outside it.
    assert_eq!(read(Some(1_950), None), (950..1000).collect::<Vec<_>>());
    assert_eq!(read(None, Some(1_009)), (0..10).collect::<Vec<_>>());
    assert_eq!(
        read(Some(1_955), Some(1_965)),
        (950..970).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn concurrent_appends_share_commits_and_get_disjoint_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(1, 4);
    let log = Arc::new(open(dir.path(), vec![]));
    log.create_topic(s.clone()).await.unwrap();
    let mut tasks = vec![];
    for w in 0..8i64 {
        let log = log.clone();
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = vec![];
            for i in 0..50i64 {
                let base = (w * 50 + i) * 4;
                let batches = (0..4u32)
                    .map(|p| PartitionBatch {
                        topic: s.id,
                        partition: PartitionId(p),
                        records: records(&s, base + p as i64, base + p as i64 + 1, 0),
                    })
                    .collect();
                got.extend(log.append(batches).await.unwrap());
            }
            got
        }));
    }
    let mut ranges = vec![];
    for t in tasks {
        ranges.extend(t.await.unwrap());
    }
    for p in 0..4u32 {
        let mut offsets: Vec<u64> = ranges
            .iter()
            .filter(|r| r.partition == PartitionId(p))
            .map(|r| r.base_offset.0)
            .collect();
        offsets.sort();
        assert_eq!(offsets, (0..400).collect::<Vec<_>>(), "partition {p}");
        let mut ids = read_ids(&log, &s, p).unwrap();
        ids.sort();
        assert_eq!(ids.len(), 400);
        assert!(ids.iter().all(|id| id % 4 == p as i64));
    }
}

#[tokio::test]
async fn compressed_topics_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for (id, compression) in [(1, Compression::Lz4), (2, Compression::Zstd)] {
        let mut s = spec(id, 1);
        s.compression = compression;
        let log = open(dir.path(), vec![]);
        log.create_topic(s.clone()).await.unwrap();
        append(&log, &s, 0, 0, 5000).await;
        log.shutdown();
        drop(log);
        let log = open(dir.path(), vec![s.clone()]);
        assert_eq!(
            read_ids(&log, &s, 0).unwrap(),
            (0..5000).collect::<Vec<_>>()
        );
        log.shutdown();
        std::fs::remove_dir_all(dir.path().join("topics")).unwrap();
        std::fs::remove_file(dir.path().join("commit.log")).unwrap();
    }
}

#[tokio::test]
async fn dropped_topics_are_deleted_and_unknown_ones_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let a = spec(1, 1);
    let b = spec(2, 1);
    let c = spec(3, 1);
    {
        let log = open(dir.path(), vec![]);
        for s in [&a, &b, &c] {
            log.create_topic(s.clone()).await.unwrap();
        }
        append(&log, &c, 0, 0, 10).await;
        log.drop_topic(a.id).await.unwrap();
        assert!(!topic_dir(dir.path(), &a).exists());
        log.shutdown();
    }
    // The catalog issued ids up to 2 and names neither 1 nor 2: `b` was dropped, and its
    // files outlived the drop (a crash in between). It does not know `c` at all (as after a
    // crash before a CREATE committed, or with a catalog older than the data).
    let mut config = LogConfig::new(dir.path());
    config.frame_bytes_target = 4096;
    let log = Log::begin_open(config)
        .unwrap()
        .open(vec![], TopicId(3))
        .unwrap();
    assert!(!topic_dir(dir.path(), &b).exists(), "the drop is finished");
    assert!(!topic_dir(dir.path(), &c).exists());
    let quarantined: Vec<_> = std::fs::read_dir(dir.path().join(QUARANTINE_DIR))
        .unwrap()
        .map(|e| e.unwrap().path().join("topics").join("t3-3"))
        .collect();
    assert_eq!(quarantined.len(), 1);
    assert!(
        quarantined[0]
            .join("0")
            .join("00000000000000000000.log")
            .is_file(),
        "moved whole, not deleted: {quarantined:?}"
    );
    drop(log);
}

#[tokio::test]
async fn data_without_a_commit_log_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(1, 2);
    {
        let log = open(dir.path(), vec![]);
        log.create_topic(s.clone()).await.unwrap();
        append(&log, &s, 0, 0, 100).await;
        log.shutdown();
    }
    let commit_log = dir.path().join(COMMIT_LOG_FILE);
    for damage in ["missing", "empty"] {
        match damage {
            "missing" => std::fs::rename(&commit_log, dir.path().join("kept")).unwrap(),
            _ => std::fs::write(&commit_log, b"").unwrap(),
        }
        let segment = active_log_file(dir.path(), &s, 0);
        let before = std::fs::metadata(&segment).unwrap().len();
        let err = try_open(dir.path(), vec![s.clone()]).expect_err("refused");
        assert!(
            matches!(&err, StorageError::Refused(m) if m.contains(&format!("commit.log is {damage}")) && m.contains("topics/")),
            "{err}"
        );
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), before);
    }
    std::fs::rename(dir.path().join("kept"), &commit_log).unwrap();
    let log = open(dir.path(), vec![s.clone()]);
    assert_eq!(read_ids(&log, &s, 0).unwrap().len(), 100);
}

/// A topic of `segment_bytes` segments with 20 appends of 50 records; returns the bases of
/// its segments.
async fn segmented(dir: &Path, s: &TopicSpec) -> Vec<Offset> {
    let log = open(dir, vec![]);
    log.create_topic(s.clone()).await.unwrap();
    for i in 0..20 {
        append(&log, s, 0, i * 50, (i + 1) * 50).await;
    }
    let bases = log.topic(s.id).unwrap().partitions[0]
        .segments()
        .iter()
        .map(|s| s.base_offset)
        .collect();
    log.shutdown();
    bases
}

#[tokio::test]
async fn a_missing_or_short_sealed_segment_is_an_error_never_a_gap() {
    let mut s = spec(1, 1);
    s.segment_bytes_max = 8 * 1024;
    for damage in ["first missing", "middle missing", "middle cut short"] {
        let dir = tempfile::tempdir().unwrap();
        let bases = segmented(dir.path(), &s).await;
        assert!(bases.len() > 3, "{bases:?}");
        let partition = topic_dir(dir.path(), &s).join("0");
        let victim = match damage {
            "first missing" => bases[0],
            _ => bases[1],
        };
        let path = log_path(&partition, victim);
        match damage {
            "middle cut short" => {
                let len = std::fs::metadata(&path).unwrap().len();
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(len / 2)
                    .unwrap();
            }
            _ => std::fs::remove_file(&path).unwrap(),
        }
        let err = try_open(dir.path(), vec![s.clone()]).expect_err("refused");
        let StorageError::Corruption {
            path: named,
            reason,
            ..
        } = &err
        else {
            panic!("{damage}: expected corruption, got {err}");
        };
        assert!(
            ["missing", "cut short", "truncated"]
                .iter()
                .any(|w| reason.contains(w)),
            "{damage}: {err}"
        );
        let expected = match damage {
            "first missing" => log_path(&partition, bases[1]),
            "middle missing" => log_path(&partition, bases[0]),
            _ => path.clone(),
        };
        assert_eq!(named, &expected, "{damage}: {err}");
    }
}

#[tokio::test]
async fn a_sealed_segment_cut_short_while_running_fails_the_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(1, 1);
    s.segment_bytes_max = 8 * 1024;
    let log = open(dir.path(), vec![]);
    log.create_topic(s.clone()).await.unwrap();
    for i in 0..20 {
        append(&log, &s, 0, i * 50, (i + 1) * 50).await;
    }
    let partition = log.topic(s.id).unwrap().partitions[0].clone();
    let second = partition.segments()[1].clone();
    // Cut at a frame boundary: every frame left is intact, but records are missing.
    let cut = second.state.read().unwrap().index.offsets[0].position as u64;
    let cut = if cut == 0 {
        second.header_at(0).unwrap().unwrap().length as u64
    } else {
        cut
    };
    OpenOptions::new()
        .write(true)
        .open(&second.path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let err = read_ids(&log, &s, 0).expect_err("a read over the gap fails");
    assert!(
        matches!(&err, StorageError::Corruption { path, reason, .. } if *path == second.path && reason.contains("missing")),
        "{err}"
    );
}

#[tokio::test]
async fn retention_commits_the_log_start_before_deleting() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(1, 1);
    s.segment_bytes_max = 8 * 1024;
    s.retention_bytes = Some(16 * 1024);
    let bases = segmented(dir.path(), &s).await;
    let partition = topic_dir(dir.path(), &s).join("0");
    // Keep copies of what retention deletes.
    let saved = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&partition).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), saved.path().join(entry.file_name())).unwrap();
    }
    let log = open(dir.path(), vec![s.clone()]);
    assert!(log.enforce_retention().await.unwrap() > 0);
    let start = log.topic(s.id).unwrap().partitions[0].log_start_offset();
    assert!(start > bases[0]);
    log.shutdown();
    drop(log);
    // As if the deletion had not reached the disk before a crash: the files are back, and
    // the next start deletes them again, since the commit log says where the log starts.
    for entry in std::fs::read_dir(saved.path()).unwrap() {
        let entry = entry.unwrap();
        let target = partition.join(entry.file_name());
        if !target.exists() {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
    let log = open(dir.path(), vec![s.clone()]);
    let partition_now = log.topic(s.id).unwrap().partitions[0].clone();
    assert_eq!(partition_now.log_start_offset(), start);
    assert_eq!(
        read_ids(&log, &s, 0).unwrap().first().copied(),
        Some(start.0 as i64)
    );
    log.shutdown();
    drop(log);
    // And a segment missing after the committed start is an error.
    std::fs::remove_file(log_path(&partition, start)).unwrap();
    let err = try_open(dir.path(), vec![s.clone()]).expect_err("refused");
    assert!(matches!(err, StorageError::Corruption { .. }), "{err}");
}

#[tokio::test]
async fn wrong_schema_and_unknown_partitions_are_rejected_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(1, 2);
    let log = open(dir.path(), vec![]);
    log.create_topic(s.clone()).await.unwrap();
    let err = log
        .append(vec![PartitionBatch {
            topic: s.id,
            partition: PartitionId(7),
            records: records(&s, 0, 1, 0),
        }])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("partition 7 does not exist"),
        "{err}"
    );
    let other = storage_schema(&Fields::from(vec![Field::new("x", DataType::Int64, false)]));
    let wrong = RecordBatch::try_new(
        other,
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(TimestampMillisecondArray::from(vec![1])),
            Arc::new(BinaryArray::from(vec![None::<&[u8]>])),
            new_null_array(&headers_type(), 1),
        ],
    )
    .unwrap();
    assert!(
        log.append(vec![PartitionBatch {
            topic: s.id,
            partition: PartitionId(0),
            records: wrong
        }])
        .await
        .is_err()
    );
    append(&log, &s, 0, 0, 3).await;
    assert_eq!(read_ids(&log, &s, 0).unwrap(), vec![0, 1, 2]);
    assert!(log.topic(s.id).unwrap().partitions[0].stats().size_bytes > 0);
    let _ = BinaryArray::from(vec![None::<&[u8]>]).len();
}

#[tokio::test]
async fn metadata_commits_with_records_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(1, 2);
    {
        let log = open(dir.path(), vec![]);
        log.create_topic(s.clone()).await.unwrap();
        let batch = PartitionBatch {
            topic: s.id,
            partition: PartitionId(1),
            records: records(&s, 0, 5, 0),
        };
        log.commit(vec![batch], vec![(42, Some(b"checkpoint 1".to_vec()))])
            .await
            .unwrap();
        assert_eq!(log.snapshot().meta(42).unwrap().as_slice(), b"checkpoint 1");
        // Metadata alone commits too.
        log.commit(
            vec![],
            vec![(42, Some(b"checkpoint 2".to_vec())), (43, Some(vec![]))],
        )
        .await
        .unwrap();
        log.commit(vec![], vec![(43, None)]).await.unwrap();
        log.shutdown();
    }
    let log = open(dir.path(), vec![s.clone()]);
    let snapshot = log.snapshot();
    assert_eq!(snapshot.meta(42).unwrap().as_slice(), b"checkpoint 2");
    assert!(snapshot.meta(43).is_none());
    assert_eq!(snapshot.high_watermarks(s.id), vec![Offset(0), Offset(5)]);
}

#[tokio::test]
async fn truncation_deletes_only_whole_segments_before_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(1, 1);
    s.segment_bytes_max = 8 * 1024;
    let log = open(dir.path(), vec![]);
    log.create_topic(s.clone()).await.unwrap();
    for i in 0..20 {
        append(&log, &s, 0, i * 50, (i + 1) * 50).await;
    }
    let partition = log.topic(s.id).unwrap().partitions[0].clone();
    let bases: Vec<Offset> = partition.segments().iter().map(|s| s.base_offset).collect();
    assert!(bases.len() > 3, "{bases:?}");
    // An offset inside the third segment: the first two go, the third stays.
    let inside = bases[2].plus(1);
    assert_eq!(
        log.truncate_before(s.id, PartitionId(0), inside)
            .await
            .unwrap(),
        2
    );
    assert_eq!(partition.log_start_offset(), bases[2]);
    assert_eq!(
        read_ids(&log, &s, 0).unwrap().first().copied(),
        Some(bases[2].0 as i64)
    );
    // Never the active segment.
    log.truncate_before(s.id, PartitionId(0), Offset(u64::MAX))
        .await
        .unwrap();
    assert_eq!(partition.segments().len(), 1);
}

#[tokio::test]
async fn retention_keeps_what_a_reader_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(1, 1);
    s.segment_bytes_max = 8 * 1024;
    s.retention_bytes = Some(20 * 1024);
    let log = open(dir.path(), vec![]);
    log.create_topic(s.clone()).await.unwrap();
    for i in 0..40 {
        append(&log, &s, 0, i * 50, (i + 1) * 50).await;
    }
    let held = Arc::new(std::sync::Mutex::new(Offset(0)));
    let source = held.clone();
    let topic = s.id;
    log.set_hold_source(Arc::new(move || {
        vec![Hold {
            topic,
            partition: PartitionId(0),
            offset: *source.lock().unwrap(),
            holder: "query q".into(),
            waits: true,
        }]
    }));
    // A reader at offset 0: nothing goes, however far over the limit.
    assert_eq!(log.enforce_retention().await.unwrap(), 0);
    assert_eq!(log.log_start(topic, PartitionId(0)), Offset(0));
    let holds = log.holds();
    assert_eq!(
        holds.furthest_behind(topic, PartitionId(0)),
        Some((Offset(0), vec!["query q"]))
    );
    // It reads on: the segments wholly before it go, and what it needs stays readable.
    *held.lock().unwrap() = Offset(1000);
    assert!(log.enforce_retention().await.unwrap() > 0);
    let start = log.log_start(topic, PartitionId(0));
    assert!(start > Offset(0) && start <= Offset(1000), "{start:?}");
    let ids = read_ids_from(&log, &s, 0, Offset(1000)).unwrap();
    assert_eq!(ids.first().copied(), Some(1000));
}
