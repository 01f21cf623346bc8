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
