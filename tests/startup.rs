//! What start-up refuses, and what it never deletes: the real binary on data directories
//! that are in use, incomplete or damaged.

mod common;

use common::rows;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_a_data_directory_exits_at_once_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT) WITH (partitions = 2);
             INSERT INTO clicks VALUES (1, '/a'), (2, '/b'), (3, '/c');",
        )
        .await
        .unwrap();
    let before = common::files(dir.path());
    for flags in [
        vec![],
        // The same port as the first: it must not get as far as binding.
        vec!["--pg-addr".to_string(), server.addr.to_string()],
    ] {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let (status, stderr) = common::start_refused(dir.path(), &flags);
        assert!(
            !status.success(),
            "the second server must exit with an error"
        );
        let canonical = std::fs::canonicalize(dir.path()).unwrap();
        assert!(
            stderr.contains(&format!("data directory {} is in use", canonical.display()))
                && stderr.contains(&format!("PID {}", server.pid())),
            "the refusal names the directory and the holder: {stderr}"
        );
        assert!(
            !stderr.contains("recover") && !stderr.contains("listening"),
            "it stops before recovery or listening: {stderr}"
        );
    }
    assert_eq!(
        common::files(dir.path()),
        before,
        "the data directory is untouched"
    );
    client
        .batch_execute("INSERT INTO clicks VALUES (4, '/d')")
        .await
        .unwrap();
    assert_eq!(
        rows(&client, "SELECT count(*) FROM clicks").await,
        vec![vec![Some("4".to_string())]]
    );
    drop(client);
    server.stop();
    // Once the first has stopped, the directory is free again.
    let server = common::start(dir.path());
    let client = server.connect().await;
    assert_eq!(
        rows(&client, "SELECT count(*) FROM clicks").await,
        vec![vec![Some("4".to_string())]]
    );
}

/// A server with a stream of 3 partitions and 300 records, stopped.
async fn stopped_with_data(dir: &std::path::Path) {
    let server = common::start_with(dir, &[]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT) WITH (partitions = 3);
             INSERT INTO clicks SELECT v, '/p' FROM generate_series(1, 300) AS t(v);",
        )
        .await
        .unwrap();
    drop(client);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_empty_commit_log_with_data_present_is_refused_and_nothing_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    stopped_with_data(dir.path()).await;
    let commit_log = dir.path().join("commit.log");
    let saved = std::fs::read(&commit_log).unwrap();
    for (damage, what) in [("remove", "is missing"), ("empty", "is empty")] {
        match damage {
            "remove" => std::fs::remove_file(&commit_log).unwrap(),
            _ => std::fs::write(&commit_log, b"").unwrap(),
        }
        let before = common::files(dir.path());
        let (status, stderr) = common::start_refused(dir.path(), &[]);
        assert!(!status.success());
        assert!(
            stderr.contains(&format!("commit.log {what}"))
                && stderr.contains("topics/")
                && stderr.contains("backup"),
            "the refusal names the file and what to do: {stderr}"
        );
        assert_eq!(
            common::files(dir.path()),
            before,
            "{damage}: nothing touched"
        );
    }
    std::fs::write(&commit_log, &saved).unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    assert_eq!(
        rows(&client, "SELECT count(*) FROM clicks").await,
        vec![vec![Some("300".to_string())]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_the_catalog_does_not_name_are_quarantined_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    stopped_with_data(dir.path()).await;
    let stray = dir
        .path()
        .join("topics")
        .join("restored-from-elsewhere-999");
    std::fs::create_dir_all(stray.join("0")).unwrap();
    std::fs::write(
        stray.join("0").join("00000000000000000000.log"),
        b"precious",
    )
    .unwrap();
    let server = common::start(dir.path());
    assert!(!stray.exists());
    let log = server.log();
    assert!(
        log.contains("WARN")
            && log.contains("quarantine")
            && log.contains("restored-from-elsewhere-999"),
        "logged at WARN: {log}"
    );
    let kept: Vec<_> = common::files(&dir.path().join("quarantine"))
        .into_iter()
        .filter(|(p, _, _)| p.ends_with("restored-from-elsewhere-999/0/00000000000000000000.log"))
        .collect();
    assert_eq!(kept.len(), 1, "moved whole");
    assert_eq!(std::fs::read(&kept[0].0).unwrap(), b"precious");
    let client = server.connect().await;
    assert_eq!(
        rows(&client, "SELECT count(*) FROM clicks").await,
        vec![vec![Some("300".to_string())]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_sealed_segment_refuses_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    // Small segments, so that the partition has several.
    client
        .batch_execute(
            "CREATE STREAM s (v BIGINT, pad TEXT) WITH (segment_bytes = 16384);
             INSERT INTO s SELECT v, repeat('x', 100) FROM generate_series(1, 1000) AS t(v);",
        )
        .await
        .unwrap();
    for _ in 0..4 {
        client
            .batch_execute(
                "INSERT INTO s SELECT v, repeat('x', 100) FROM generate_series(1, 250) AS t(v)",
            )
            .await
            .unwrap();
    }
    drop(client);
    server.stop();
    let partition = std::fs::read_dir(dir.path().join("topics"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("s-"))
        .unwrap()
        .join("0");
    let mut segments: Vec<_> = std::fs::read_dir(&partition)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    std::fs::remove_file(&segments[1]).unwrap();
    let (status, stderr) = common::start_refused(dir.path(), &[]);
    assert!(!status.success());
    assert!(
        stderr.contains(&segments[0].display().to_string()) && stderr.contains("missing"),
        "names the file and the missing offsets: {stderr}"
    );
}
