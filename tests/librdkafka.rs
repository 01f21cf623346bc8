//! librdkafka's own test suite against Runnel: the C tests of librdkafka 2.12.0 (as the npm
//! package node-rdkafka ships them, built once per target directory by
//! `tests/librdkafka/build.sh`), those `tests/librdkafka/tests.txt` lists, which also says why
//! the others are not run.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// The test numbers and names `tests.txt` lists to run: the slow ones too with
/// `RUNNEL_LIBRDKAFKA_SLOW=1`.
fn listed() -> Vec<(String, String)> {
    let list = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/librdkafka/tests.txt");
    let slow = std::env::var("RUNNEL_LIBRDKAFKA_SLOW").is_ok_and(|v| v == "1");
    std::fs::read_to_string(list)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| match l.strip_prefix("slow ") {
            Some(rest) => slow.then_some(rest),
            None => Some(l),
        })
        .map(|l| {
            let (number, name) = l.split_once(' ').expect("<number> <name>");
            (number.to_string(), name.to_string())
        })
        .collect()
}

#[test]
fn librdkafka_test_suite_passes_against_runnel() {
    let tests = listed();
    assert!(tests.len() >= 40, "{} tests listed", tests.len());
    let build = common::installed("librdkafka-tests", &["tests/librdkafka/build.sh"], |dir| {
        let mut bash = Command::new("bash");
        bash.arg("tests/librdkafka/build.sh").arg(dir);
        bash
    });
    let source = build.join("package/deps/librdkafka");

    // librdkafka's test clusters give auto-created topics four partitions; several tests
    // produce to partitions 0..3 of a topic they never created.
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with(dir.path(), &["--kafka-num-partitions", "4"]);
    let work = tempfile::tempdir().unwrap();
    let conf = work.path().join("test.conf");
    std::fs::write(
        &conf,
        format!(
            "bootstrap.servers={}\ntest.timeout.multiplier=3\n",
            server.kafka_bootstrap()
        ),
    )
    .unwrap();
    let numbers: Vec<&str> = tests.iter().map(|(n, _)| n.as_str()).collect();
    let out = Command::new(source.join("tests/test-runner"))
        // Broker tests only, every subtest, one at a time, as against Kafka 3.9.
        .args(["-L", "-p1", "-V", "3.9.0"])
        .env("TESTS", numbers.join(","))
        .env("RDKAFKA_TEST_CONF", &conf)
        .env(
            "LD_LIBRARY_PATH",
            format!(
                "{}:{}",
                source.join("src").display(),
                source.join("src-cpp").display()
            ),
        )
        // The runner writes statistics files where it runs.
        .current_dir(work.path())
        .output()
        .expect("the librdkafka test runner");
    let output = strip_colours(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ));
    // Its summary: a row per test, `| 0001_multiobj | PASSED | 1.2s |`.
    let summary: String = output
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| format!("{l}\n"))
        .collect();
    let passed: Vec<&str> = summary
        .lines()
        .filter(|l| l.contains("PASSED"))
        .filter_map(|l| l.trim_start_matches('|').split_whitespace().next())
        .filter(|name| name.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    let missing: Vec<String> = tests
        .iter()
        .map(|(number, _)| number)
        .filter(|number| !passed.iter().any(|p| p.starts_with(&format!("{number}_"))))
        .cloned()
        .collect();
    assert!(
        out.status.success() && missing.is_empty(),
        "not passed: {missing:?}\n{summary}\n{}\n--- server ---\n{}",
        output
            .lines()
            .filter(|l| l.contains("FAIL") || l.starts_with("###") || l.contains("assert"))
            .collect::<Vec<_>>()
            .join("\n"),
        server.log()
    );
    eprintln!("librdkafka: {} tests passed\n{summary}", passed.len());
    server.stop();
}

/// `text` without its ANSI colour sequences (`ESC [ … m`).
fn strip_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
