//! Tiered storage through a `file://` object store: sealed segments copied, local logs
//! removed past the local retention, every record read back from the store, also after a
//! restart; a restart without the store refused; retention deleting the store's copies.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::tests::{append, read_ids, spec};
use super::tiered::{MANIFEST_FILE, Manifest, Tier, TierConfig};
use super::*;

fn tier(store: &Path, local_retention_bytes: u64) -> Arc<Tier> {
    Tier::connect(TierConfig {
        url: format!("file://{}", store.display()),
        local_retention_bytes,
        upload_interval: Duration::from_secs(3600),
        retired_grace: Duration::ZERO,
        checkpoint_interval: Duration::from_secs(3600),
    })
    .unwrap()
}

fn open_tiered(
    dir: &Path,
    specs: Vec<TopicSpec>,
    tier: Option<Arc<Tier>>,
) -> Result<Log, StorageError> {
    let mut config = LogConfig::new(dir);
    config.frame_bytes_target = 4096;
    config.tier = tier;
    let issued = TopicId(specs.iter().map(|s| s.id.0 + 1).max().unwrap_or(1));
    Log::begin_open(config)?.open(specs, issued)
}

/// The uploader as its thread runs it (which, here, waits an hour before its first pass).
fn uploader(log: &Log) -> upload::Uploader {
    let tiered = log.shared.config.tiered().unwrap();
    let commands = log.commands.lock().unwrap().clone().unwrap();
    upload::Uploader::new(log.shared.clone(), tiered, commands)
}

/// One pass of the uploader, as its thread makes every interval.
fn upload_pass(log: &Log) {
    uploader(log).pass().unwrap();
}

fn local_logs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_segments_go_to_the_store_and_are_read_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let mut s = spec(1, 1);
    s.segment_bytes_max = 16 * 1024;
    let partition_dir = dir.path().join("topics/t1-1/0");
    {
        let log = open_tiered(dir.path(), vec![], Some(tier(store.path(), 0))).unwrap();
        log.create_topic(s.clone()).await.unwrap();
        for i in 0..20 {
            append(&log, &s, 0, i * 500, (i + 1) * 500).await;
        }
        let segments = log.topic(s.id).unwrap().partitions[0].segments().len();
        assert!(segments > 3, "several segments: {segments}");
        upload_pass(&log);

        // Every sealed segment is in the store and named by the manifest; only the active
        // segment's log is left on disk.
        let manifest = Manifest::read(&partition_dir).unwrap();
        assert_eq!(manifest.segments.len(), segments - 1);
        assert_eq!(
            local_logs(&partition_dir).len(),
            1,
            "only the active log is local"
        );
        for copy in &manifest.segments {
            let object = store
                .path()
                .join("topics/t1-1/0")
                .join(copy.file().log(Path::new("")));
            assert_eq!(std::fs::metadata(&object).unwrap().len(), copy.size);
        }
        let stats = log.topic(s.id).unwrap().partitions[0].stats();
        assert_eq!(stats.remote_segments, segments - 1);
        assert!(stats.local_bytes < stats.size_bytes);
        assert_eq!(
            read_ids(&log, &s, 0).unwrap(),
            (0..10_000).collect::<Vec<_>>(),
            "every record, from the store and the disk"
        );
        // Appends go on; a second pass copies what sealed since.
        append(&log, &s, 0, 10_000, 12_000).await;
        upload_pass(&log);
        assert_eq!(
            read_ids(&log, &s, 0).unwrap(),
            (0..12_000).collect::<Vec<_>>()
        );
        log.shutdown();
    }
    // Without the store, the partition's records cannot all be found: refused, naming it.
    let refused = open_tiered(dir.path(), vec![s.clone()], None).unwrap_err();
    assert!(
        refused.to_string().contains(MANIFEST_FILE)
            && refused.to_string().contains("--object-store"),
        "{refused}"
    );
    // With it, everything is there after a restart.
    let log = open_tiered(dir.path(), vec![s.clone()], Some(tier(store.path(), 0))).unwrap();
    assert_eq!(
        read_ids(&log, &s, 0).unwrap(),
        (0..12_000).collect::<Vec<_>>()
    );
    append(&log, &s, 0, 12_000, 12_010).await;
    assert_eq!(read_ids(&log, &s, 0).unwrap().len(), 12_010);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_retention_keeps_the_newest_segments_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let mut s = spec(1, 1);
    s.segment_bytes_max = 16 * 1024;
    let log = open_tiered(dir.path(), vec![], Some(tier(store.path(), 40 * 1024))).unwrap();
    log.create_topic(s.clone()).await.unwrap();
    for i in 0..20 {
        append(&log, &s, 0, i * 500, (i + 1) * 500).await;
    }
    upload_pass(&log);
    let partition = log.topic(s.id).unwrap().partitions[0].clone();
    let segments = partition.segments();
    let sealed = &segments[..segments.len() - 1];
    assert!(sealed.iter().all(|s| s.remote().is_some()));
    let local: u64 = sealed
        .iter()
        .filter(|s| s.is_local())
        .map(|s| s.size_bytes())
        .sum();
    assert!(local <= 40 * 1024, "{local}");
    assert!(sealed.iter().any(|s| !s.is_local()), "the oldest went");
    assert!(sealed.last().unwrap().is_local(), "the newest stayed");
    assert_eq!(
        read_ids(&log, &s, 0).unwrap(),
        (0..10_000).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_keeps_everything_local() {
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let mut s = spec(1, 1);
    s.segment_bytes_max = 16 * 1024;
    // A store that cannot be written: a file where its directory should be.
    let blocked = store.path().join("blocked");
    let log = open_tiered(dir.path(), vec![], Some(tier(&blocked, 0))).unwrap();
    log.create_topic(s.clone()).await.unwrap();
    for i in 0..10 {
        append(&log, &s, 0, i * 500, (i + 1) * 500).await;
    }
    std::fs::remove_dir_all(&blocked).unwrap();
    std::fs::write(&blocked, b"not a directory").unwrap();
    assert!(uploader(&log).pass().is_err());
    let partition_dir = dir.path().join("topics/t1-1/0");
    assert!(Manifest::read(&partition_dir).unwrap().segments.is_empty());
    let segments = log.topic(s.id).unwrap().partitions[0].segments();
    assert!(
        segments
            .iter()
            .all(|s| s.is_local() && s.remote().is_none())
    );
    assert_eq!(
        read_ids(&log, &s, 0).unwrap(),
        (0..5_000).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_the_stores_copies_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let mut s = spec(1, 1);
    s.segment_bytes_max = 16 * 1024;
    s.retention_bytes = Some(32 * 1024);
    let log = open_tiered(dir.path(), vec![], Some(tier(store.path(), 0))).unwrap();
    log.create_topic(s.clone()).await.unwrap();
    for i in 0..20 {
        append(&log, &s, 0, i * 500, (i + 1) * 500).await;
    }
    upload_pass(&log);
    let objects = |store: &Path| {
        let mut n = 0;
        for entry in std::fs::read_dir(store.join("topics/t1-1/0")).unwrap() {
            n += entry
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log") as usize;
        }
        n
    };
    let before = objects(store.path());
    assert!(log.enforce_retention().await.unwrap() > 0);
    // The partition no longer lists them: their copies are retired, then (no grace here)
    // deleted by a pass after the next checkpoint (which does not name them).
    let mut uploader = uploader(&log);
    uploader.pass().unwrap();
    tokio::task::block_in_place(|| uploader.checkpoint()).unwrap();
    uploader.pass().unwrap();
    let partition_dir = dir.path().join("topics/t1-1/0");
    let manifest = Manifest::read(&partition_dir).unwrap();
    let start = log.log_start(s.id, PartitionId(0));
    assert!(
        manifest.segments.iter().all(|c| c.base >= start.0),
        "{manifest:?}"
    );
    assert!(manifest.retired.is_empty());
    assert!(objects(store.path()) < before);
    let ids = read_ids(&log, &s, 0).unwrap();
    assert_eq!(ids, (start.0 as i64..10_000).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_machine_restores_from_the_last_checkpoint() {
    let first = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let mut s = spec(1, 2);
    s.segment_bytes_max = 16 * 1024;
    let empty = spec(2, 1);
    let identity;
    {
        let log = open_tiered(first.path(), vec![], Some(tier(store.path(), 1 << 30))).unwrap();
        identity = log.identity();
        log.create_topic(s.clone()).await.unwrap();
        log.create_topic(empty.clone()).await.unwrap();
        for i in 0..10 {
            append(&log, &s, (i % 2) as u32, i * 500, (i + 1) * 500).await;
        }
        log.commit(vec![], vec![(7, Some(b"the catalog".to_vec()))])
            .await
            .unwrap();
        // A clean stop checkpoints: active segments sealed, copied, the state stored.
        log.shutdown();
    }
    std::fs::remove_dir_all(first.path()).unwrap();

    let second = tempfile::tempdir().unwrap();
    let specs = vec![s.clone(), empty.clone()];
    {
        let opening = {
            let mut config = LogConfig::new(second.path());
            config.tier = Some(tier(store.path(), 1 << 30));
            Log::begin_open(config).unwrap()
        };
        assert!(!opening.is_new(), "restored, not new");
        // Every segment's indexes came with the manifests (fetched side by side).
        let mut segments = 0;
        for topic in std::fs::read_dir(second.path().join("topics")).unwrap() {
            for partition in std::fs::read_dir(topic.unwrap().path()).unwrap() {
                let dir = partition.unwrap().path();
                for segment in Manifest::read(&dir).unwrap().segments {
                    let file = segment.file();
                    assert!(file.offset_index(&dir).exists() && file.time_index(&dir).exists());
                    segments += 1;
                }
            }
        }
        assert!(segments > 2, "{segments} segments restored");
        assert_eq!(
            opening.meta(7).map(|v| v.as_slice().to_vec()),
            Some(b"the catalog".to_vec())
        );
        let log = opening.open(specs.clone(), TopicId(3)).unwrap();
        assert_eq!(log.identity(), identity, "the same data directory");
        let ids = |p| read_ids(&log, &s, p).unwrap();
        let mut all = [ids(0), ids(1)].concat();
        all.sort();
        assert_eq!(all, (0..5_000).collect::<Vec<_>>());
        assert_eq!(read_ids(&log, &empty, 0).unwrap(), Vec::<i64>::new());
        // It goes on: appends, and a restart of the restored directory.
        append(&log, &s, 0, 5_000, 5_100).await;
        log.shutdown();
    }
    let log = open_tiered(second.path(), specs, Some(tier(store.path(), 1 << 30))).unwrap();
    let mut all = [
        read_ids(&log, &s, 0).unwrap(),
        read_ids(&log, &s, 1).unwrap(),
    ]
    .concat();
    all.sort();
    assert_eq!(all, (0..5_100).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_data_directory_cannot_take_a_prefix() {
    let store = tempfile::tempdir().unwrap();
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    let log = open_tiered(first.path(), vec![], Some(tier(store.path(), 0))).unwrap();
    // (An empty directory would be restored from the store's checkpoint; one that is a data
    // directory of its own is refused.)
    drop(open_tiered(second.path(), vec![], None).unwrap());
    let refused = open_tiered(second.path(), vec![], Some(tier(store.path(), 0))).unwrap_err();
    assert!(
        refused.to_string().contains("another data directory"),
        "{refused}"
    );
    drop(log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_lease_was_taken_writes_nothing_more_to_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let mut s = spec(1, 1);
    s.segment_bytes_max = 16 * 1024;
    let log = open_tiered(dir.path(), vec![], Some(tier(store.path(), 0))).unwrap();
    log.create_topic(s.clone()).await.unwrap();
    for i in 0..10 {
        append(&log, &s, 0, i * 500, (i + 1) * 500).await;
    }
    let mut uploader = uploader(&log);
    uploader.pass().unwrap();
    let copied = Manifest::read(&dir.path().join("topics/t1-1/0")).unwrap();
    assert!(!copied.segments.is_empty());

    // Another server (this data directory restored elsewhere) takes the prefix over.
    tier(store.path(), 0).take_lease("elsewhere").unwrap();
    for i in 10..20 {
        append(&log, &s, 0, i * 500, (i + 1) * 500).await;
    }
    let refused = uploader.pass().unwrap_err();
    assert!(refused.to_string().contains("took over"), "{refused}");
    assert!(uploader.pass().is_err(), "and stays refused");
    let partition = log.topic(s.id).unwrap().partitions[0].clone();
    let segments = partition.segments();
    let new: Vec<_> = segments
        .iter()
        .filter(|seg| copied.find(seg.file).is_none())
        .collect();
    assert!(new.len() > 1, "segments sealed since");
    assert!(
        new.iter()
            .all(|seg| seg.remote().is_none() && seg.is_local()),
        "nothing more copied, nothing more removed locally"
    );
    assert_eq!(
        Manifest::read(&dir.path().join("topics/t1-1/0")).unwrap(),
        copied
    );
    assert_eq!(
        read_ids(&log, &s, 0).unwrap(),
        (0..10_000).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_with_data_but_no_commit_log_is_refused_not_restored_over() {
    let first = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let s = spec(1, 1);
    {
        let log = open_tiered(first.path(), vec![], Some(tier(store.path(), 0))).unwrap();
        log.create_topic(s.clone()).await.unwrap();
        append(&log, &s, 0, 0, 100).await;
        log.shutdown(); // a checkpoint in the store
    }
    // Its commit log lost, its topics still there: restoring would write over them.
    std::fs::remove_file(first.path().join(COMMIT_LOG_FILE)).unwrap();
    let refused = open_tiered(first.path(), vec![s], Some(tier(store.path(), 0))).unwrap_err();
    assert!(refused.to_string().contains("will not start"), "{refused}");
    assert!(
        first.path().join("topics/t1-1/0").is_dir(),
        "nothing was touched"
    );
}
