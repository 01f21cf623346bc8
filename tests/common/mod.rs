//! Starts the real `runnel` binary on a port of its choosing and talks to it over pgwire.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

/// Extra flags for a server, e.g. `["--copy-chunk-bytes", "2000000"]`.
pub fn start(data_dir: &Path) -> Server {
    start_with(data_dir, &[])
}

pub fn start_with(data_dir: &Path, flags: &[&str]) -> Server {
    start_with_env(data_dir, flags, &[])
}

/// [`start_with`], with environment variables (e.g. `RUNNEL_PASSWORD`).
pub fn start_with_env(data_dir: &Path, flags: &[&str], env: &[(&str, &str)]) -> Server {
    start_in(data_dir, Path::new(env!("CARGO_MANIFEST_DIR")), flags, env)
}

/// The superuser's password on a server [`start_with_password`] starts.
pub const ADMIN_PASSWORD: &str = "admin-pw";

/// A server with `--auth password` (the superuser `runnel` with [`ADMIN_PASSWORD`]), on
/// which the superuser has run `setup` through psql.
pub fn start_with_password(data_dir: &Path, setup: &str) -> Server {
    let server = start_with_env(
        data_dir,
        &["--auth", "password"],
        &[("RUNNEL_PASSWORD", ADMIN_PASSWORD)],
    );
    let (ok, _, stderr) = psql_with_password(&server, ADMIN_PASSWORD, setup);
    assert!(ok, "{stderr}");
    server
}

/// [`start_with_env`] with `cwd` as the server's working directory (where relative file
/// paths in SQL point).
pub fn start_in(data_dir: &Path, cwd: &Path, flags: &[&str], env: &[(&str, &str)]) -> Server {
    start_wrapped(&[], data_dir, cwd, flags, env, None)
}

/// What a test does with each line the server logs, as it is logged (the server's next
/// lines wait in the pipe meanwhile).
pub type Watch = Box<dyn FnMut(&str) + Send>;

/// [`start_with`], calling `watch` with each line the server logs, from its first, while it
/// starts and after.
pub fn start_watching(data_dir: &Path, flags: &[&str], watch: Watch) -> Server {
    let cwd = Path::new(env!("CARGO_MANIFEST_DIR"));
    start_wrapped(&[], data_dir, cwd, flags, &[], Some(watch))
}

/// Starts the server through `wrapper`, a command that ends by exec-ing its arguments (the
/// server's path and flags follow it), so the server keeps the process and its PID: e.g.
/// `["sh", "-c", "ulimit -n 4096 && exec \"$@\"", "sh"]`.
pub fn start_through(wrapper: &[&str], data_dir: &Path, flags: &[&str]) -> Server {
    start_wrapped(
        wrapper,
        data_dir,
        Path::new(env!("CARGO_MANIFEST_DIR")),
        flags,
        &[],
        None,
    )
}

/// Starts `runnel` as the last argument of `wrapper` (which must exec it), or directly.
fn start_wrapped(
    wrapper: &[&str],
    data_dir: &Path,
    cwd: &Path,
    flags: &[&str],
    env: &[(&str, &str)],
    mut watch: Option<Watch>,
) -> Server {
    let runnel = env!("CARGO_BIN_EXE_runnel");
    let mut command = match wrapper {
        [] => Command::new(runnel),
        [program, args @ ..] => {
            let mut command = Command::new(program);
            command.args(args).arg(runnel);
            command
        }
    };
    let mut child = command
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--pg-addr", "127.0.0.1:0"])
        .args(
            match flags.contains(&"--log") {
                true => None,
                false => Some(["--log", "info"]),
            }
            .into_iter()
            .flatten(),
        )
        .args(kafka_port(flags))
        .args(flags)
        .envs(env.iter().copied())
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting runnel");
    let stderr = child.stderr.take().expect("stderr is piped");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(watch) = watch.as_mut() {
                watch(&line);
            }
            if let Some(rest) = line.split("listening for Postgres clients on ").nth(1) {
                let addr = rest
                    .split(',')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                let _ = tx.send(addr);
            }
            lines.lock().unwrap().push(line);
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => addr.parse().expect("a socket address"),
        Err(_) => {
            let _ = child.kill();
            panic!(
                "runnel did not start; its log:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
    };
    Server {
        child: Some(child),
        addr,
        data_dir: data_dir.to_path_buf(),
        log,
    }
}

/// Free ports for Kafka clients and HTTP, unless `flags` choose them: tests run servers
/// side by side, and the defaults (`localhost:9092`, `localhost:8080`) are one port each.
fn kafka_port(flags: &[&str]) -> Vec<&'static str> {
    let mut ports = vec![];
    if !flags.contains(&"--kafka-addr") {
        ports.extend(["--kafka-addr", "127.0.0.1:0"]);
    }
    if !flags.contains(&"--http-addr") {
        ports.extend(["--http-addr", "127.0.0.1:0"]);
    }
    ports
}

/// Starts `runnel` on `data_dir` expecting it to refuse: returns its exit status and what
/// it wrote to stderr. Panics if it is still running after 60 s.
pub fn start_refused(data_dir: &Path, flags: &[&str]) -> (std::process::ExitStatus, String) {
    let port: &[&str] = if flags.contains(&"--pg-addr") {
        &[]
    } else {
        &["--pg-addr", "127.0.0.1:0"]
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(port)
        .args(kafka_port(flags))
        .args(["--log", "info"])
        .args(flags)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting runnel");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for runnel") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("runnel kept running on {}", data_dir.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

/// Every file under `dir` with its size and modification time, to show a run changed
/// nothing (but the lock file, which a server that takes the lock writes its PID to).
pub fn files(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = vec![];
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                pending.push(entry.path());
            } else if entry.file_name() != "runnel.lock" {
                out.push((entry.path(), meta.len(), meta.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

impl Server {
    /// Whether the process is still running (it has not crashed or exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("waiting for runnel").is_none())
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn connection_string(&self) -> String {
        format!(
            "host={} port={} user=runnel dbname=runnel",
            self.addr.ip(),
            self.addr.port()
        )
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.connection_string(), tokio_postgres::NoTls)
                .await
                .expect("connecting to runnel");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits (at most 10 s) until the server has logged a line containing `text`: its log is
    /// read on a thread of its own, a moment behind what it sent the client.
    pub fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "the server never logged \"{text}\"; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where Kafka clients connect (`host:port`, as the server advertises it).
    pub fn kafka_bootstrap(&self) -> String {
        let marker = "(advertised as ";
        self.wait_for_log(marker);
        let log = self.log();
        let rest = log.split(marker).nth(1).expect("the advertised address");
        rest.split(')').next().unwrap().to_string()
    }

    /// Where the HTTP endpoint listens (`host:port`).
    pub fn http_addr(&self) -> String {
        let marker = "listening for HTTP on ";
        self.wait_for_log(marker);
        let log = self.log();
        let rest = log.split(marker).nth(1).expect("the HTTP address");
        rest.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// SIGKILL: the process gets no chance to flush or clean up.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("waiting for runnel") {
                assert!(
                    status.success(),
                    "runnel exited with {status}; log:\n{}",
                    self.log()
                );
                return;
            }
            assert!(Instant::now() < deadline, "runnel did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The Python interpreter with `tests/python/requirements.txt`: `RUNNEL_PYTHON`, else
/// `python3`.
pub fn python() -> String {
    std::env::var("RUNNEL_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The first row `sql` returns, its values joined by `|` (NULL as `NULL`).
pub async fn first_row(server: &Server, sql: &str) -> String {
    let rows = rows(&server.connect().await, sql).await;
    let row = rows.first().unwrap_or_else(|| panic!("no rows from {sql}"));
    row.iter()
        .map(|v| v.as_deref().unwrap_or("NULL"))
        .collect::<Vec<_>>()
        .join("|")
}

/// Runs `command`; its stdout, which must be a success that printed `marker`. A failure
/// shows the program's output and the server's log.
pub fn succeeded(server: &Server, command: &mut Command, marker: &str) -> String {
    let program = command.get_program().to_string_lossy().into_owned();
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed (.ci/run installs it): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains(marker),
        "{program} {:?} failed\n{stdout}\n{}\n--- server ---\n{}",
        command.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    stdout
}

/// Runs `command` with `input` on its stdin; its output. `what` names the program for the
/// error when it cannot start.
pub fn output_with_input(command: &mut Command, input: &str, what: &str) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} must be installed (.ci/run installs it): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// [`http`] with HTTP Basic `credentials` (`user:password`), if any.
pub fn http_as(
    addr: &str,
    method: &str,
    path: &str,
    credentials: Option<&str>,
    body: &str,
) -> (u16, String) {
    use base64::Engine as _;
    let authorization = credentials.map(|c| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(c)
        )
    });
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|a| ("Authorization", a.as_str()))
        .collect();
    http(addr, method, path, &headers, body)
}

/// An HTTP/1.1 request as a scraper or a browser sends it: the status code and the body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(addr).expect("connecting to the endpoint");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    socket.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP response: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Runs psql with `input` on stdin; returns (exit success, stdout, stderr).
pub fn psql(server: &Server, args: &[&str], input: &str) -> (bool, String, String) {
    psql_as(server, args, input, None)
}

/// [`psql`] as `runnel` with `password` (`--auth password`), stopping at the first error.
pub fn psql_with_password(server: &Server, password: &str, input: &str) -> (bool, String, String) {
    psql_as(server, &["-v", "ON_ERROR_STOP=1"], input, Some(password))
}

fn psql_as(
    server: &Server,
    args: &[&str],
    input: &str,
    password: Option<&str>,
) -> (bool, String, String) {
    let mut psql = Command::new("psql");
    if let Some(password) = password {
        psql.env("PGPASSWORD", password);
    }
    psql.args([
        "-h",
        &server.addr.ip().to_string(),
        "-p",
        &server.addr.port().to_string(),
    ])
    .args(["-U", "runnel", "-d", "runnel", "-X", "--no-psqlrc"])
    .args(args)
    .env("PGCONNECT_TIMEOUT", "10");
    let out = output_with_input(&mut psql, input, "psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// The rows of a simple-protocol query as text, NULL as `None`.
pub async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| {
            let detail = e
                .as_db_error()
                .map(|d| format!("{} {}", d.code().code(), d.message()));
            panic!("{sql}: {e} {}", detail.unwrap_or_default())
        })
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// A small deterministic generator (xorshift) for randomized tests.
pub struct Rng(pub u64);

impl Rng {
    /// Seeded from `RUNNEL_SEED`, or the clock; prints the seed so a failure can be replayed.
    pub fn seeded(test: &str) -> Rng {
        let seed = std::env::var("RUNNEL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{test} seed: {seed} (replay with RUNNEL_SEED={seed})");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Compiles `tests/jdbc/<class>.java` with the machine's `javac` against pgjdbc (Debian's
/// `libpostgresql-jdbc-java`, or the jar `RUNNEL_PGJDBC_JAR` names). Returns the classpath
/// to run it with, and the directory of the classes, which lives as long as it is held.
pub fn compile_java(class: &str) -> (String, tempfile::TempDir) {
    let jar = std::env::var("RUNNEL_PGJDBC_JAR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/share/java/postgresql.jar"));
    assert!(
        jar.exists(),
        "pgjdbc not found at {} (apt-get install libpostgresql-jdbc-java)",
        jar.display()
    );
    compile_java_with("tests/jdbc", class, &jar.display().to_string())
}

/// Compiles `<dir>/<class>.java` (`dir` relative to the crate) against `classpath`; the
/// classpath to run it with, and the directory of the classes, which lives as long as it is
/// held.
pub fn compile_java_with(dir: &str, class: &str, classpath: &str) -> (String, tempfile::TempDir) {
    let classes = tempfile::tempdir().unwrap();
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("{dir}/{class}.java"));
    let status = Command::new("javac")
        .arg("-d")
        .arg(classes.path())
        .arg("-cp")
        .arg(classpath)
        .arg(&source)
        .status()
        .expect("javac must be installed (apt-get install default-jdk-headless)");
    assert!(status.success(), "javac failed on {}", source.display());
    (format!("{classpath}:{}", classes.path().display()), classes)
}

/// The classpath of the jars `tests/kafka-java/pom.xml` names (Apache Kafka's Java client),
/// copied from Maven's local repository (which `.ci/run` fills).
pub fn kafka_java_classpath() -> String {
    let jars = installed("kafka-java", &["tests/kafka-java/pom.xml"], |dir| {
        let mut mvn = Command::new("mvn");
        mvn.args(["-q", "-B", "-f", "tests/kafka-java/pom.xml"])
            .arg("dependency:copy-dependencies")
            .arg(format!("-DoutputDirectory={}", dir.display()));
        mvn
    });
    format!("{}/*", jars.display())
}

/// Spark's Kafka source and sink and what they need beyond pyspark's own jars, as Spark's
/// `spark.jars` takes them (comma-separated), from `tests/spark/pom.xml`.
pub fn spark_kafka_jars() -> String {
    let dir = installed("spark-kafka", &["tests/spark/pom.xml"], |dir| {
        let mut mvn = Command::new("mvn");
        mvn.args(["-q", "-B", "-f", "tests/spark/pom.xml"])
            .arg("dependency:copy-dependencies")
            .arg("-DincludeScope=runtime")
            .arg(
                "-DincludeArtifactIds=spark-sql-kafka-0-10_2.13,\
                 spark-token-provider-kafka-0-10_2.13,kafka-clients,commons-pool2",
            )
            .arg(format!("-DoutputDirectory={}", dir.display()));
        mvn
    });
    let mut jars: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".jar"))
        .collect();
    jars.sort();
    assert_eq!(jars.len(), 4, "{jars:?}");
    jars.join(",")
}

/// The `node_modules` directory of `tests/node/package-lock.json` (kafkajs, node-postgres),
/// for `NODE_PATH`.
pub fn node_modules() -> PathBuf {
    let dir = installed(
        "node",
        &["tests/node/package.json", "tests/node/package-lock.json"],
        |dir| {
            for file in ["package.json", "package-lock.json"] {
                std::fs::copy(
                    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                        .join("tests/node")
                        .join(file),
                    dir.join(file),
                )
                .unwrap();
            }
            let mut npm = Command::new("npm");
            npm.args(["ci", "--silent", "--no-audit", "--no-fund"])
                .current_dir(dir);
            npm
        },
    );
    dir.join("node_modules")
}

/// A directory under the target directory that `install` (a command run from the crate's
/// root) filled from `manifests` (paths relative to the crate): made once, and again when a
/// manifest changes. The tests running in parallel take turns through a lock file.
pub fn installed(
    name: &str,
    manifests: &[&str],
    install: impl FnOnce(&Path) -> Command,
) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-installed"));
    std::fs::create_dir_all(&base).unwrap();
    let lock = std::fs::File::create(base.join(".lock")).unwrap();
    lock.lock().unwrap();
    let wanted: Vec<u8> = manifests
        .iter()
        .flat_map(|m| std::fs::read(root.join(m)).unwrap())
        .collect();
    let stamp = base.join("manifests");
    let dir = base.join("contents");
    if std::fs::read(&stamp).ok().as_deref() != Some(&wanted[..]) {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut command = install(&dir);
        let program = command.get_program().to_string_lossy().into_owned();
        if command.get_current_dir().is_none() {
            command.current_dir(&root);
        }
        let status = command
            .status()
            .unwrap_or_else(|e| panic!("{program} must be installed (.ci/run installs it): {e}"));
        assert!(status.success(), "{program} could not install {name}");
        std::fs::write(&stamp, &wanted).unwrap();
    }
    dir
}

/// Logs in to `server` as `user` with `password` (`--auth password`).
pub async fn login(
    server: &Server,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let conninfo = format!(
        "host={} port={} user={user} password='{password}' dbname=runnel connect_timeout=10",
        server.addr.ip(),
        server.addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Polls `check` until it gives `Some`, for at most 30 s; panics saying `what` did not
/// happen otherwise.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "{what} did not happen in 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until continuous query `name` has failed; its error.
pub async fn query_failure(client: &tokio_postgres::Client, name: &str) -> String {
    eventually(&format!("query {name} failing"), || async {
        let status = rows(
            client,
            &format!("SELECT state, error FROM sys.queries WHERE name = '{name}'"),
        )
        .await;
        (status[0][0].as_deref() == Some("failed"))
            .then(|| status[0][1].clone().unwrap_or_default())
    })
    .await
}
