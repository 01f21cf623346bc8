//! Long operations while they run.
//!
//! - Each `COPY … FROM STDIN` registers its progress in [`Copies`] and counts into it, for
//!   `sys.copies` (as PostgreSQL's `pg_stat_progress_copy`); the registry keeps it weakly,
//!   so a `COPY` that ends, however it ends, leaves it.
//! - Work at start-up (opening the log's partitions, replaying a query's state) reports
//!   itself in the server log through a [`Reporter`], every few seconds while it lasts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How often a [`Reporter`] logs.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Logs, at `INFO`, how far a long piece of work is: every [`REPORT_EVERY`] while it
/// runs, and when it ends if it took longer than that. Work that ends sooner logs
/// nothing.
pub struct Reporter {
    what: String,
    unit: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
}

impl Reporter {
    /// `what` is done in `total` `unit`s (`records`, `partitions`).
    pub fn new(what: impl Into<String>, total: u64, unit: &'static str) -> Reporter {
        let now = Instant::now();
        Reporter {
            what: what.into(),
            unit,
            total,
            done: 0,
            started: now,
            last: now,
        }
    }

    /// `n` more units are done.
    pub fn advance(&mut self, n: u64) {
        self.done += n;
        if self.last.elapsed() >= REPORT_EVERY {
            self.last = Instant::now();
            let elapsed = self.started.elapsed().as_secs_f64();
            let rate = self.done as f64 / elapsed.max(0.001);
            let left = self.total.saturating_sub(self.done);
            let eta = match rate > 0.0 {
                true => format!("{:.0} s", left as f64 / rate),
                false => "unknown".into(),
            };
            tracing::info!(
                "{}: {} of {} {} ({:.0}%) in {:.0} s, about {eta} left",
                self.what,
                self.done,
                self.total,
                self.unit,
                self.done as f64 * 100.0 / self.total.max(1) as f64,
                elapsed,
            );
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        if elapsed >= REPORT_EVERY {
            tracing::info!(
                "{}: {} {} in {:.0} s",
                self.what,
                self.done,
                self.unit,
                elapsed.as_secs_f64()
            );
        }
    }
}

/// The `COPY`s running now.
#[derive(Debug, Default)]
pub struct Copies {
    running: Mutex<Vec<Weak<CopyProgress>>>,
}

/// One running `COPY … FROM STDIN`.
#[derive(Debug)]
pub struct CopyProgress {
    /// The session's number (as `pid` in PostgreSQL's view).
    pub session: u32,
    pub user: String,
    pub relation: String,
    pub started_ms: i64,
    /// Input bytes taken from the client so far.
    pub bytes: AtomicU64,
    /// Rows parsed so far, and of those committed (earlier chunks of a large `COPY`).
    pub rows: AtomicU64,
    pub committed: AtomicU64,
}

impl CopyProgress {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl Copies {
    /// Registers a `COPY` starting now; it is listed while the result is held.
    pub fn start(&self, session: u32, user: &str, relation: &str) -> Arc<CopyProgress> {
        let progress = Arc::new(CopyProgress {
            session,
            user: user.to_string(),
            relation: relation.to_string(),
            started_ms: crate::storage::now_ms(),
            bytes: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            committed: AtomicU64::new(0),
        });
        let mut running = self.running.lock().expect("copies lock");
        running.retain(|c| c.strong_count() > 0);
        running.push(Arc::downgrade(&progress));
        progress
    }

    /// The `COPY`s running now, oldest first.
    pub fn running(&self) -> Vec<Arc<CopyProgress>> {
        let mut running = self.running.lock().expect("copies lock");
        running.retain(|c| c.strong_count() > 0);
        running.iter().filter_map(Weak::upgrade).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_listed_while_it_runs() {
        let copies = Copies::default();
        let first = copies.start(1, "ann", "clicks");
        let second = copies.start(2, "bob", "views");
        CopyProgress::add(&first.bytes, 10);
        let running = copies.running();
        assert_eq!(running.len(), 2);
        assert_eq!(CopyProgress::get(&running[0].bytes), 10);
        drop(first);
        drop(running);
        let running = copies.running();
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].relation, "views");
        drop(running);
        drop(second);
        assert!(copies.running().is_empty());
    }
}
