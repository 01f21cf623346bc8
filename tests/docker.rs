//! What can be checked of `docker/` without a Docker engine: the binary the image runs
//! starts with the Dockerfile's environment and passes its health check, and every
//! `RUNNEL_…` variable the Dockerfile and the compose file set is one the binary reads.

use std::path::PathBuf;
use std::process::Command;

fn docker_file(name: &str) -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("docker")
            .join(name),
    )
    .unwrap()
}

/// The Dockerfile's `ENV` assignments.
fn dockerfile_env() -> Vec<(String, String)> {
    let text = docker_file("Dockerfile");
    let mut env = vec![];
    let mut in_env = false;
    for line in text.lines() {
        let line = line.trim();
        let rest = match line.strip_prefix("ENV ") {
            Some(rest) => rest,
            None if in_env => line,
            None => continue,
        };
        in_env = rest.ends_with('\\');
        for assignment in rest.trim_end_matches('\\').split_whitespace() {
            let (key, value) = assignment.split_once('=').expect("KEY=value");
            env.push((key.to_string(), value.to_string()));
        }
    }
    env
}

#[test]
fn every_runnel_variable_of_the_docker_files_is_one_the_binary_reads() {
    let help = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let compose = docker_file("compose.yaml");
    let mut names: Vec<String> = dockerfile_env().into_iter().map(|(k, _)| k).collect();
    names.extend(
        compose
            .lines()
            .filter_map(|l| l.trim().split_once(':'))
            .map(|(k, _)| k.trim().to_string())
            .filter(|k| k.starts_with("RUNNEL_")),
    );
    assert!(names.len() >= 6, "{names:?}");
    for name in names.iter().filter(|n| n.starts_with("RUNNEL_")) {
        assert!(
            help.contains(&format!("env: {name}")),
            "{name} is not read: {help}"
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn health(http: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_runnel"))
        .arg("health")
        .env("RUNNEL_HTTP_ADDR", http)
        .output()
        .unwrap()
}

#[test]
fn the_image_environment_starts_a_server_that_passes_its_health_check() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log_path = logs.path().join("server.log");
    // The image's environment, on free ports and a temporary data directory.
    let env: Vec<(String, String)> = dockerfile_env()
        .into_iter()
        .map(|(key, value)| match key.as_str() {
            "RUNNEL_DATA_DIR" => (key, dir.path().display().to_string()),
            k if k.ends_with("_ADDR") && value.starts_with("0.0.0.0:") => {
                (key, format!("0.0.0.0:{}", free_port()))
            }
            _ => (key, value),
        })
        .collect();
    let http = env
        .iter()
        .find(|(k, _)| k == "RUNNEL_HTTP_ADDR")
        .map(|(_, v)| v.clone())
        .expect("the image sets RUNNEL_HTTP_ADDR");
    // No flags: everything from the environment, as in the container.
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .env_remove("RUNNEL_LOG")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stderr(log)
        .spawn()
        .unwrap();
    // Alive first (the health check passes while the log opens), then serving clients.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut wait_until = |what: &str, done: &dyn Fn() -> bool| {
        while !done() {
            assert!(
                std::time::Instant::now() < deadline && server.try_wait().unwrap().is_none(),
                "the server never {what}: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    wait_until("passed its health check", &|| {
        health(&http).status.success()
    });
    wait_until("served Postgres clients", &|| {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("listening for Postgres clients on 0.0.0.0:")
    });
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());
    // Nothing listens any more: the check fails.
    let output = health(&http);
    assert!(!output.status.success());
    assert!(!String::from_utf8_lossy(&output.stderr).is_empty());
}
