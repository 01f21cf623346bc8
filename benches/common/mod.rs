//! What the benchmarks share: the release `runnel` binary on a port of its choosing, and
//! client connections to a Postgres-protocol server.

#![allow(dead_code)] // each benchmark uses a different part of this module

pub mod clicks;
pub mod load;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tokio_postgres::{Client, NoTls};

/// A port no one listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `runnel` process; killed when dropped.
pub struct Runnel {
    child: Child,
    pub port: u16,
}

impl Runnel {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and wait for the process to be gone (before another server takes its
    /// data directory).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Runnel {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `runnel` on `dir` and waits until it listens. Its warnings and errors are
/// printed as they come.
pub fn start_runnel(dir: &Path) -> Runnel {
    start_runnel_with(dir, &[])
}

/// [`start_runnel`] with extra flags (Kafka clients and HTTP are served on free ports
/// unless they name `--kafka-addr` or `--http-addr`).
pub fn start_runnel_with(dir: &Path, flags: &[&str]) -> Runnel {
    start_runnel_env(dir, flags, &[])
}

/// [`start_runnel_with`] with extra environment variables.
pub fn start_runnel_env(dir: &Path, flags: &[&str], env: &[(&str, &str)]) -> Runnel {
    let mut kafka: Vec<&str> = vec![];
    if !flags.contains(&"--kafka-addr") {
        kafka.extend(["--kafka-addr", "127.0.0.1:0"]);
    }
    if !flags.contains(&"--http-addr") {
        kafka.extend(["--http-addr", "127.0.0.1:0"]);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .arg("--data-dir")
        .arg(dir)
        .args(["--pg-addr", "127.0.0.1:0", "--log", "warn,runnel=info"])
        .args(&kafka)
        .args(flags)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start runnel");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let port = loop {
        let line = lines.next().expect("runnel exited").unwrap();
        if let Some(rest) = line.split("listening for Postgres clients on ").nth(1) {
            let addr = rest.split(',').next().unwrap();
            break addr.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("runnel: {line}");
            }
        }
    });
    Runnel { child, port }
}

/// A connection to the server on `port` as `user`, driven on the current runtime.
pub async fn connect(port: u16, user: &str, database: &str) -> Client {
    let conn = format!("host=127.0.0.1 port={port} user={user} dbname={database}");
    let (client, connection) = tokio_postgres::connect(&conn, NoTls)
        .await
        .expect("connect");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The first column of the first row `sql` returns, as text (`NULL` for NULL; empty if
/// no row).
pub async fn scalar(client: &Client, sql: &str) -> String {
    let rows = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some(r.get(0).unwrap_or("NULL").to_string())
            }
            _ => None,
        })
        .unwrap_or_default()
}

/// CPU seconds (user + system) process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the command name (which may hold spaces) end with ')'; utime and stime
    // are the 14th and 15th of the line.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a stat line names its command in parentheses")
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields[i].parse::<u64>().expect("a tick count");
    (ticks(11) + ticks(12)) as f64 / clock_ticks_per_second()
}

/// `getconf CLK_TCK`, asked once.
fn clock_ticks_per_second() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), in KiB; 0 if it cannot be
/// read.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// How many rows a benchmark loads: `RUNNEL_BENCH_ROWS`, or `default`.
pub fn bench_rows(default: u64) -> u64 {
    std::env::var("RUNNEL_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a pyspark script printed: one JSON object per line, each with a name under some key
/// and its `seconds`.
pub struct SparkOutput {
    pub text: String,
}

impl SparkOutput {
    /// The seconds of the line whose `key` is `name`.
    pub fn seconds(&self, key: &str, name: &str) -> Option<f64> {
        let line = self
            .text
            .lines()
            .find(|l| l.contains(&format!("\"{key}\": \"{name}\"")))?;
        let rest = line.split("\"seconds\": ").nth(1)?;
        rest.split(',').next()?.trim().parse().ok()
    }
}

/// The Python to run Spark with: `RUNNEL_BENCH_PYTHON` (default `python3`), if it can
/// import pyspark; says so and gives `None` if not.
pub fn spark_python() -> Option<String> {
    let python = std::env::var("RUNNEL_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let has = Command::new(&python)
        .args(["-c", "import pyspark"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        println!("spark: skipped ({python} cannot import pyspark; set RUNNEL_BENCH_PYTHON)");
        return None;
    }
    Some(python)
}

/// Runs the pyspark `script` (written to `dir/file`) with `args` under `python`.
pub fn run_spark(
    python: &str,
    dir: &Path,
    file: &str,
    script: &str,
    args: &[&Path],
) -> Option<SparkOutput> {
    let path = dir.join(file);
    std::fs::write(&path, script).ok()?;
    let out = Command::new(python)
        .arg(&path)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    Some(SparkOutput {
        text: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

/// A fresh directory for a benchmark's data, under `RUNNEL_BENCH_DIR` (default: the system
/// temp directory); removed when dropped.
pub fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var("RUNNEL_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    tempfile::tempdir_in(base).expect("bench dir")
}

/// The clients' runtime: two workers, as many as the machine the figures are taken on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A PostgreSQL server of this machine's, on a fresh data directory, for figures side by
/// side; stopped when dropped.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

impl Postgres {
    fn find() -> Option<PathBuf> {
        let on_path = Command::new("sh")
            .args(["-c", "command -v initdb"])
            .output()
            .ok()?;
        if on_path.status.success() {
            let p = PathBuf::from(String::from_utf8_lossy(&on_path.stdout).trim());
            return std::fs::canonicalize(p)
                .ok()?
                .parent()
                .map(Path::to_path_buf);
        }
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .collect();
        dirs.sort();
        dirs.pop()
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    /// Starts one under `base` with its default durable settings, if PostgreSQL is found on
    /// `PATH` or under `/usr/lib/postgresql/*/bin` (as root, it runs as `postgres`).
    pub fn start(base: &Path) -> Option<Postgres> {
        let bin = Postgres::find()?;
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .ok()
            .is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let data = base.join("pg");
        std::fs::create_dir_all(&data).ok()?;
        if as_postgres {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(base)
                .status()
                .ok()?;
        }
        let pg = Postgres {
            bin,
            data,
            port: free_port(),
            as_postgres,
        };
        let ok = pg
            .command("initdb")
            .args(["-D"])
            .arg(&pg.data)
            .args(["-U", "postgres", "--auth=trust"])
            .stdout(Stdio::null())
            .status()
            .ok()?
            .success();
        if !ok {
            return None;
        }
        let log = pg.data.join("server.log");
        let ok = pg
            .command("pg_ctl")
            .args(["-D"])
            .arg(&pg.data)
            .args(["-l"])
            .arg(&log)
            .args([
                "-o",
                &format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1",
                    pg.port,
                    pg.data.display()
                ),
            ])
            .args(["-w", "start"])
            .stdout(Stdio::null())
            .status()
            .ok()?
            .success();
        ok.then_some(pg)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D"])
            .arg(&self.data)
            .args(["-m", "fast", "stop"])
            .stdout(Stdio::null())
            .status();
    }
}
