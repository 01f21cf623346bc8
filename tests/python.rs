//! Python clients against the real server: tests/python/clients.py with psycopg 3,
//! SQLAlchemy's inspector and pandas. `RUNNEL_PYTHON` names an interpreter that has
//! tests/python/requirements.txt (`.ci/run` makes one); otherwise `python3` must.

mod common;

use std::path::PathBuf;
use std::process::Command;

#[test]
fn psycopg_sqlalchemy_and_pandas() {
    let python = common::python();
    let probe = Command::new(&python)
        .args(["-c", "import psycopg, sqlalchemy, pandas"])
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    assert!(
        probe.status.success(),
        "{python} lacks the test's packages (pip install -r tests/python/requirements.txt, or set RUNNEL_PYTHON): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/clients.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(server.addr.port().to_string())
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("python ok"),
        "{stdout}\n{stderr}\n--- server ---\n{}",
        server.log()
    );
    server.stop();
}
