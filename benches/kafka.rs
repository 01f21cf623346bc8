//! Kafka clients against Runnel and against Apache Kafka, side by side in one run.
//!
//! ```text
//! cargo bench --bench kafka
//! RUNNEL_BENCH_KAFKA_SCALE=0.1 cargo bench --bench kafka    # a tenth of the records
//! ```
//! `benches/kafka/tools.sh` first fetches Apache Kafka 4.4.0 (broker and tools, from Maven
//! Central) and builds librdkafka 2.12.0's `rdkafka_performance` (from the npm package
//! node-rdkafka), once, under Cargo's target directory. Then three brokers run in turn on
//! this machine, each on a fresh data directory under `RUNNEL_BENCH_DIR` (default: the
//! system temp directory), each driven by the same `rdkafka_performance`:
//!
//! - Apache Kafka, KRaft, single node, the settings of its own `config/server.properties`
//!   (no fsync before acknowledging: the OS flushes when it likes), 1 GiB heap as
//!   `kafka-server-start.sh` gives it;
//! - Runnel with `--flush-policy always` (the default: fsync before acknowledging);
//! - Runnel with `--flush-policy interval` (fsync every second, like for like with Kafka).
//!
//! Figures: produce 100 B and 1 KiB records with acks=all (`-a -1`, linger.ms=5,
//! batch.size=1 MiB) to 1 and 4 partitions — records/s, MB/s, and the broker's CPU seconds
//! (user + system, from `/proc`) per million records; consume 10 M × 100 B from the
//! beginning — records/s; end-to-end latency (producer to consumer, librdkafka's `-l`) at
//! 1,000 and 10,000 records/s, linger.ms=0 — p50, p99, p99.9. Topics are created with
//! Kafka's own `kafka-topics` tool for both. Before the brokers, the disk's own fsync
//! latency (2 KiB appended and `fdatasync`ed in a loop for 3 s), with the other vCPUs idle
//! and with each of them kept busy, since that is the floor under latency with fsync.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{cpu_seconds, free_port, start_runnel_with};

const RECORDS_100B: u64 = 2_000_000;
const RECORDS_1K: u64 = 500_000;
const RECORDS_CONSUME: u64 = 10_000_000;
const LATENCY_SECONDS: u64 = 10;

fn scaled(n: u64) -> u64 {
    let scale: f64 = std::env::var("RUNNEL_BENCH_KAFKA_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * scale) as u64).max(1000)
}

/// Where the tools are: fetched and built on first use.
fn tools() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kafka-bench-tools");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/kafka/tools.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .status()
        .expect("run benches/kafka/tools.sh");
    assert!(status.success(), "benches/kafka/tools.sh failed");
    dir
}

/// A broker under test: its Kafka address and the process whose CPU time is its cost.
struct Broker {
    name: &'static str,
    bootstrap: String,
    pid: u32,
    /// Keeps the process (killed when dropped).
    _process: Box<dyn std::any::Any>,
}

struct KafkaProcess(Child);

impl Drop for KafkaProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn java_classpath(tools: &Path) -> String {
    format!("{}/libs/*", tools.display())
}

/// Apache Kafka in KRaft mode, one node, with the settings of its shipped
/// `config/server.properties`.
fn start_kafka(tools: &Path, dir: &Path) -> Broker {
    let port = free_port();
    let controller = free_port();
    let config = dir.join("server.properties");
    std::fs::write(
        &config,
        format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
             log.dirs={}\n\
             num.partitions=1\n\
             offsets.topic.replication.factor=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n",
            dir.join("logs").display()
        ),
    )
    .unwrap();
    let classpath = java_classpath(tools);
    let uuid = Command::new("java")
        .args(["-cp", &classpath, "kafka.tools.StorageTool", "random-uuid"])
        .output()
        .expect("run java");
    assert!(uuid.status.success(), "StorageTool random-uuid failed");
    let uuid = String::from_utf8(uuid.stdout).unwrap().trim().to_string();
    let format = Command::new("java")
        .args(["-cp", &classpath, "kafka.tools.StorageTool", "format"])
        .args(["--standalone", "-t", &uuid, "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .status()
        .expect("run java");
    assert!(format.success(), "StorageTool format failed");
    let child = Command::new("java")
        .args(["-Xmx1G", "-Xms1G", "-cp", &classpath, "kafka.Kafka"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kafka");
    let pid = child.id();
    let process = KafkaProcess(child);
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "Kafka did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Broker {
        name: "Apache Kafka 4.4.0",
        bootstrap: format!("127.0.0.1:{port}"),
        pid,
        _process: Box::new(process),
    }
}

fn start_runnel_broker(dir: &Path, name: &'static str, flags: &[&str]) -> Broker {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut all = vec!["--kafka-addr", &addr];
    all.extend_from_slice(flags);
    let runnel = start_runnel_with(dir, &all);
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "no Kafka port");
        std::thread::sleep(Duration::from_millis(50));
    }
    Broker {
        name,
        bootstrap: addr,
        pid: runnel.pid(),
        _process: Box::new(runnel),
    }
}

fn create_topic(tools: &Path, broker: &Broker, topic: &str, partitions: u32) {
    let output = Command::new("java")
        .args(["-cp", &java_classpath(tools)])
        .arg("org.apache.kafka.tools.TopicCommand")
        .args(["--bootstrap-server", &broker.bootstrap, "--create"])
        .args(["--topic", topic, "--replication-factor", "1"])
        .args(["--partitions", &partitions.to_string()])
        .output()
        .expect("run kafka-topics");
    assert!(
        output.status.success(),
        "{}: creating {topic}: {}{}",
        broker.name,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `rdkafka_performance` and returns its output; fails on a failed run.
fn perf(tools: &Path, args: &[String]) -> String {
    let output = Command::new(tools.join("rdkafka_performance"))
        .args(args)
        .output()
        .expect("run rdkafka_performance");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "rdkafka_performance {args:?}:\n{text}"
    );
    text
}

/// The figure before " msgs/s" in the tool's final summary line.
fn rate(output: &str) -> f64 {
    let line = output
        .lines()
        .rfind(|l| l.contains(" msgs/s") && !l.contains("INTERVAL"))
        .unwrap_or_else(|| panic!("no summary in:\n{output}"));
    let before = line.split(" msgs/s").next().unwrap();
    before
        .rsplit([' ', ':'])
        .find(|s| !s.is_empty())
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no rate in {line:?}"))
}

/// `rdkafka_performance`'s arguments for `mode` (`-P`, `-C`) on partition 0 of `topic`.
fn partition_0(mode: &str, topic: &str, broker: &Broker) -> Vec<String> {
    strings(&[mode, "-t", topic, "-p", "0", "-b", &broker.bootstrap])
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

struct Produced {
    records_per_s: f64,
    mb_per_s: f64,
    cpu_s_per_million: f64,
}

fn produce(
    tools: &Path,
    broker: &Broker,
    topic: &str,
    size: usize,
    count: u64,
    partition: Option<u32>,
) -> Produced {
    let mut args = strings(&["-P", "-t", topic, "-b", &broker.bootstrap, "-a", "-1"]);
    args.extend(strings(&["-X", "linger.ms=5", "-X", "batch.size=1048576"]));
    args.extend([
        "-s".into(),
        size.to_string(),
        "-c".into(),
        count.to_string(),
    ]);
    if let Some(p) = partition {
        args.extend(["-p".into(), p.to_string()]);
    }
    let cpu = cpu_seconds(broker.pid);
    let output = perf(tools, &args);
    let cpu = cpu_seconds(broker.pid) - cpu;
    let records_per_s = rate(&output);
    Produced {
        records_per_s,
        mb_per_s: records_per_s * size as f64 / 1e6,
        cpu_s_per_million: cpu / (count as f64 / 1e6),
    }
}

fn consume(tools: &Path, broker: &Broker, topic: &str, count: u64) -> f64 {
    let mut args = partition_0("-C", topic, broker);
    args.extend(strings(&["-o", "beginning", "-c", &count.to_string()]));
    rate(&perf(tools, &args))
}

/// p50, p99 and p99.9 of the producer-to-consumer latency (ms) at `rate` records/s.
fn latency(tools: &Path, broker: &Broker, topic: &str, rate: u64, dir: &Path) -> [f64; 3] {
    let count = rate * LATENCY_SECONDS;
    let file = dir.join(format!("latency-{topic}.txt"));
    // Line-buffered: its output is read as it comes.
    let mut consumer = Command::new("stdbuf")
        .arg("-oL")
        .arg(tools.join("rdkafka_performance"))
        .args(partition_0("-C", topic, broker))
        .args(["-o", "end", "-X", "enable.partition.eof=true", "-l", "-A"])
        .arg(&file)
        .args(["-c", &count.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the latency consumer");
    // The first record is sent once the consumer is at the end of the partition (it says so
    // with partition EOF on); its output is read to the end meanwhile.
    let stdout = consumer
        .stdout
        .take()
        .expect("the consumer's stdout is piped");
    let (at_end_tx, at_end) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("reached end of") {
                let _ = at_end_tx.send(());
            }
        }
    });
    at_end
        .recv_timeout(Duration::from_secs(60))
        .expect("the latency consumer reaches the end of its partition");
    let mut args = partition_0("-P", topic, broker);
    args.extend(strings(&[
        "-a",
        "-1",
        "-l",
        "-X",
        "linger.ms=0",
        "-s",
        "100",
    ]));
    args.extend(strings(&[
        "-r",
        &rate.to_string(),
        "-c",
        &count.to_string(),
    ]));
    perf(tools, &args);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = consumer.try_wait().unwrap() {
            assert!(status.success(), "latency consumer failed");
            break;
        }
        assert!(Instant::now() < deadline, "latency consumer did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut micros: Vec<u64> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(
        micros.len() as u64 >= count * 99 / 100,
        "{}: {} latencies for {count} records",
        broker.name,
        micros.len()
    );
    micros.sort_unstable();
    let at = |q: f64| micros[((micros.len() as f64 * q) as usize).min(micros.len() - 1)] as f64;
    [at(0.50) / 1e3, at(0.99) / 1e3, at(0.999) / 1e3]
}

/// Every figure of one broker.
struct Figures {
    name: &'static str,
    produce: Vec<(String, Produced)>,
    consume: f64,
    latency: Vec<(u64, [f64; 3])>,
}

fn measure(tools: &Path, broker: &Broker, dir: &Path) -> Figures {
    eprintln!("== {} on {}", broker.name, broker.bootstrap);
    let mut produced = vec![];
    for (size, count) in [(100, scaled(RECORDS_100B)), (1024, scaled(RECORDS_1K))] {
        for partitions in [1u32, 4] {
            let topic = format!("produce-{size}-{partitions}");
            create_topic(tools, broker, &topic, partitions);
            let p = produce(tools, broker, &topic, size, count, None);
            let label = format!("{size} B × {count}, {partitions} partition(s)");
            eprintln!(
                "{label}: {:.0} records/s, {:.1} MB/s, {:.2} CPU-s per M",
                p.records_per_s, p.mb_per_s, p.cpu_s_per_million
            );
            produced.push((label, p));
        }
    }
    let count = scaled(RECORDS_CONSUME);
    create_topic(tools, broker, "consume", 1);
    produce(tools, broker, "consume", 100, count, Some(0));
    let consumed = consume(tools, broker, "consume", count);
    eprintln!("consume {count} × 100 B: {consumed:.0} records/s");
    let mut latencies = vec![];
    for rate in [1000, 10_000] {
        let topic = format!("latency-{rate}");
        create_topic(tools, broker, &topic, 1);
        let l = latency(tools, broker, &topic, rate, dir);
        eprintln!(
            "latency at {rate}/s: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
            l[0], l[1], l[2]
        );
        latencies.push((rate, l));
    }
    Figures {
        name: broker.name,
        produce: produced,
        consume: consumed,
        latency: latencies,
    }
}

/// p50, p99, p99.9 and the largest (ms) of appending 2 KiB to a file in `dir` and
/// `fdatasync`ing it, for 3 s, while `busy` threads spin.
fn fsync_latency(dir: &Path, busy: usize) -> [f64; 4] {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..busy {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
        }
        let mut file = std::fs::File::create(dir.join("fsync-probe")).unwrap();
        let mut micros = vec![];
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            file.write_all(&[7u8; 2048]).unwrap();
            let started = Instant::now();
            file.sync_data().unwrap();
            micros.push(started.elapsed().as_micros() as u64);
        }
        stop.store(true, Ordering::Relaxed);
        micros.sort_unstable();
        let at = |q: f64| micros[((micros.len() as f64 * q) as usize).min(micros.len() - 1)];
        [at(0.5), at(0.99), at(0.999), micros[micros.len() - 1]].map(|us| us as f64 / 1e3)
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks harness-less benches for nothing
    }
    let tools = tools();
    let base = std::env::var_os("RUNNEL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let vcpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let probe = tempfile::tempdir_in(&base).unwrap();
    let fsyncs: Vec<(usize, [f64; 4])> = std::collections::BTreeSet::from([0, vcpus - 1])
        .into_iter()
        .map(|busy| (busy, fsync_latency(probe.path(), busy)))
        .collect();
    drop(probe);
    let mut all = vec![];
    {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let broker = start_kafka(&tools, dir.path());
        all.push(measure(&tools, &broker, dir.path()));
    }
    for (name, flags) in [
        ("Runnel, flush always (fsync)", &[][..]),
        (
            "Runnel, flush interval 1 s",
            &["--flush-policy", "interval", "--flush-interval-ms", "1000"][..],
        ),
    ] {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let broker = start_runnel_broker(&dir.path().join("data"), name, flags);
        all.push(measure(&tools, &broker, dir.path()));
    }

    println!();
    let row = |label: String, cell: &dyn Fn(&Figures) -> String| {
        let cells: Vec<String> = all.iter().map(cell).collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    row(String::new(), &|f| f.name.to_string());
    println!("|---|{}", "---:|".repeat(all.len()));
    for (i, (label, _)) in all[0].produce.iter().enumerate() {
        row(format!("produce {label}"), &|f| {
            let p = &f.produce[i].1;
            format!(
                "{:.0} rec/s, {:.1} MB/s, {:.2} CPU-s/M",
                p.records_per_s, p.mb_per_s, p.cpu_s_per_million
            )
        });
    }
    row(
        format!("consume {} × 100 B", scaled(RECORDS_CONSUME)),
        &|f| format!("{:.0} rec/s", f.consume),
    );
    for (i, (rate, _)) in all[0].latency.iter().enumerate() {
        row(format!("latency p50 / p99 / p99.9 at {rate}/s"), &|f| {
            let l = f.latency[i].1;
            format!("{:.2} / {:.2} / {:.2} ms", l[0], l[1], l[2])
        });
    }
    println!();
    for (busy, [p50, p99, p999, max]) in fsyncs {
        println!(
            "fsync of 2 KiB appended, {busy} of {vcpus} vCPUs busy: \
             p50 {p50:.2} / p99 {p99:.2} / p99.9 {p999:.2} / max {max:.2} ms"
        );
    }
}
