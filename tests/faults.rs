//! Faults beyond `kill -9`, against the real server: a disk that fills up (a small tmpfs the
//! server mounts in its own user and mount namespaces, so no privileges are needed), and more
//! partitions than the process may open files. Failed fsyncs and power cuts go through the
//! storage's I/O seam in its unit tests (`storage::fault_tests`).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::{Server, rows, sqlstate, start_through};

/// A server whose data directory is on a tmpfs of `megabytes`, mounted for it alone. Returns
/// the server and the mount point as the test reaches it (through `/proc/<pid>/root`).
fn start_on_small_disk(dir: &Path, megabytes: u32) -> (Server, PathBuf) {
    let mount_point = dir.join("disk");
    std::fs::create_dir(&mount_point).unwrap();
    let script = format!("mount -t tmpfs -o size={megabytes}m runnel-test \"$0\" && exec \"$@\"");
    let server = start_through(
        &[
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            &script,
            mount_point.to_str().unwrap(),
        ],
        &mount_point.join("data"),
        &[],
    );
    let seen = PathBuf::from(format!(
        "/proc/{}/root{}",
        server.pid(),
        mount_point.display()
    ));
    assert!(
        seen.join("data").join("commit.log").exists(),
        "the data directory is on the server's tmpfs"
    );
    (server, seen)
}

/// Writes a file of zeros until the filesystem is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
                return written;
            }
        }
    }
}

async fn count(client: &tokio_postgres::Client, stream: &str) -> i64 {
    rows(client, &format!("SELECT count(*) FROM {stream}")).await[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_full_disk_fails_writes_with_53100_and_they_resume_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (server, disk) = start_on_small_disk(dir.path(), 32);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM events (id bigint, body text) WITH (partitions = 2);
             INSERT INTO events SELECT value, repeat('x', 100) FROM generate_series(1, 1000) AS g(value)",
        )
        .await
        .unwrap();

    let filler = disk.join("filler");
    let filled = fill(&filler);
    assert!(filled < 32 << 20, "{filled}");
    let insert = "INSERT INTO events SELECT value, repeat('y', 1000) FROM generate_series(1, 5000) AS g(value)";
    for _ in 0..3 {
        let error = client.batch_execute(insert).await.unwrap_err();
        assert_eq!(sqlstate(&error), "53100", "{error:?}");
        let text = format!("{error:?}");
        assert!(text.contains("No space left on device"), "{text}");
    }
    // Reads go on, and nothing of the failed writes is visible.
    assert_eq!(count(&client, "events").await, 1000);

    // Space returns: the same server and connection write again, after the last
    // acknowledged offsets, nothing lost and nothing twice.
    std::fs::remove_file(&filler).unwrap();
    client.batch_execute(insert).await.unwrap();
    assert_eq!(count(&client, "events").await, 6000);
    let offsets = rows(
        &client,
        "SELECT _partition, count(*), min(_offset), max(_offset) FROM events GROUP BY _partition ORDER BY 1",
    )
    .await;
    for row in offsets {
        let n: i64 = row[1].as_deref().unwrap().parse().unwrap();
        assert_eq!(row[2].as_deref(), Some("0"), "{row:?}");
        assert_eq!(
            row[3].as_deref(),
            Some((n - 1).to_string().as_str()),
            "{row:?}"
        );
    }
    let other = server.connect().await;
    assert_eq!(count(&other, "events").await, 6000);
}

#[tokio::test]
async fn ten_thousand_partitions_work_under_ulimit_4096() {
    let dir = tempfile::tempdir().unwrap();
    let limited = ["sh", "-c", "ulimit -n 4096 && exec \"$@\"", "sh"];
    let server = start_through(&limited, dir.path(), &[]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM wide (id bigint) WITH (partitions = 10000);
             INSERT INTO wide SELECT value FROM generate_series(1, 30000) AS g(value)",
        )
        .await
        .unwrap();
    let counted = "SELECT count(*), count(DISTINCT _partition) FROM wide";
    let expected = vec![vec![Some("30000".to_string()), Some("10000".to_string())]];
    assert_eq!(rows(&client, counted).await, expected);
    let open = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .unwrap()
        .count();
    assert!(open < 4096, "{open} files open");
    drop(client);
    server.stop();

    // Recovery opens every partition too.
    let server = start_through(&limited, dir.path(), &[]);
    let client = server.connect().await;
    client
        .batch_execute("INSERT INTO wide SELECT value FROM generate_series(1, 10000) AS g(value)")
        .await
        .unwrap();
    assert_eq!(
        rows(&client, counted).await,
        vec![vec![Some("40000".to_string()), Some("10000".to_string())]]
    );
}
