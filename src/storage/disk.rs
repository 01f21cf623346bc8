//! The log's one way to its files.
//!
//! Every read, write, cut and fsync of segments, indexes and the commit log goes through a
//! [`Disk`], by path. It does two things no caller should do alone:
//!
//! - **It bounds open files.** Handles are kept in a cache of at most `max_open` files and
//!   reopened on demand, so a server with 10,000 partitions does not need 40,000 descriptors
//!   (a sealed segment is only read now and then). A file written since its last fsync is
//!   fsynced before its handle is closed, and a failure there is reported by the next
//!   [`Disk::sync`] of that file: closing a handle never hides an I/O error.
//! - **It is the seam tests fail.** [`Faults`] make writes fail as on a full disk, make
//!   fsyncs fail, or cut the power after a number of operations and then drop what was not
//!   fsynced, so the behaviour the log promises (a failed fsync stops acknowledgements, a
//!   full disk fails writes and loses nothing acknowledged, recovery keeps everything
//!   acknowledged after a power cut) is tested rather than assumed. Without faults the checks
//!   are a branch on `None`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arrow::buffer::MutableBuffer;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use super::StorageError;

/// Files the log keeps open when the process's limit is not known.
const DEFAULT_MAX_OPEN: usize = 1024;

/// The log's files, through a bounded set of open handles. Cheap to clone (shared).
#[derive(Clone)]
pub struct Disk {
    inner: Arc<Inner>,
}

struct Inner {
    open: RwLock<HashMap<PathBuf, Arc<Handle>>>,
    max_open: usize,
    clock: AtomicU64,
    /// fsync failures of handles closed to make room, by file: the next sync reports them.
    lost: Mutex<HashMap<PathBuf, String>>,
    faults: Option<Arc<Faults>>,
    /// How long each fsync of a file took, for `/metrics`.
    fsync_seconds: Histogram,
}

struct Handle {
    file: File,
    writable: bool,
    /// Written since its last fsync.
    dirty: AtomicBool,
    last_used: AtomicU64,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("max_open", &self.inner.max_open)
            .field("open", &self.open_files())
            .field("faults", &self.inner.faults.is_some())
            .finish()
    }
}

impl Default for Disk {
    fn default() -> Self {
        Disk::new(max_open_files())
    }
}

impl Disk {
    /// A disk that keeps at most `max_open` files open (at least 16).
    pub fn new(max_open: usize) -> Disk {
        Disk::build(max_open, None)
    }

    /// A disk whose operations `faults` can fail.
    pub fn with_faults(max_open: usize, faults: Arc<Faults>) -> Disk {
        Disk::build(max_open, Some(faults))
    }

    fn build(max_open: usize, faults: Option<Arc<Faults>>) -> Disk {
        Disk {
            inner: Arc::new(Inner {
                open: RwLock::new(HashMap::new()),
                max_open: max_open.max(16),
                clock: AtomicU64::new(0),
                lost: Mutex::new(HashMap::new()),
                faults,
                fsync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            }),
        }
    }

    /// The durations of the fsyncs of files (50 µs to about 1.6 s in doubling buckets).
    pub fn fsync_seconds(&self) -> &Histogram {
        &self.inner.fsync_seconds
    }

    /// Reads up to `len` bytes at `position` into a new buffer (aligned, as Arrow wants its
    /// buffers), without zeroing it first: frames are large and every scan reads them. The
    /// buffer holds the bytes read; fewer than `len` only at the end of the file. Every read
    /// of the log goes through here.
    pub fn read_buffer(&self, path: &Path, len: usize, position: u64) -> io::Result<MutableBuffer> {
        let handle = self.handle(path, false)?;
        let mut buf = MutableBuffer::with_capacity(len);
        let mut done = 0;
        while done < len {
            let at = libc::off_t::try_from(position + done as u64)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: the buffer's allocation holds at least `len` bytes, and pread writes
            // at most `len - done` of them, after the `done` it wrote before.
            let n = unsafe {
                libc::pread(
                    handle.file.as_raw_fd(),
                    buf.as_mut_ptr().add(done).cast(),
                    len - done,
                    at,
                )
            };
            match n {
                0 => break,
                n if n > 0 => done += n as usize,
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        // SAFETY: pread wrote the first `done` bytes.
        unsafe { buf.set_len(done) };
        Ok(buf)
    }

    /// Files open right now.
    pub fn open_files(&self) -> usize {
        self.inner.open.read().expect("disk lock").len()
    }

    /// Creates `path` empty (emptying it if it exists). Not durable until the file and its
    /// directory are synced.
    pub fn create(&self, path: &Path) -> Result<(), StorageError> {
        self.before_write(path, 0)
            .map_err(|e| StorageError::io(path, e))?;
        self.forget(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| StorageError::io(path, e))?;
        if let Some(faults) = &self.inner.faults {
            faults.created(path);
        }
        self.insert(path, file, true);
        Ok(())
    }

    /// Writes all of `bytes` at `position`. Not durable until [`Disk::sync`].
    pub fn write_at(&self, path: &Path, bytes: &[u8], position: u64) -> Result<(), StorageError> {
        let room = self
            .before_write(path, bytes.len())
            .map_err(|e| StorageError::io(path, e))?;
        let handle = self.to_write(path)?;
        // A disk that fills up mid-write takes part of it, as a real one does.
        handle
            .file
            .write_all_at(&bytes[..room], position)
            .map_err(|e| StorageError::io(path, e))?;
        if room < bytes.len() {
            return Err(StorageError::io(
                path,
                io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        }
        Ok(())
    }

    /// Cuts `path` to `len` bytes.
    pub fn set_len(&self, path: &Path, len: u64) -> Result<(), StorageError> {
        self.before().map_err(|e| StorageError::io(path, e))?;
        self.to_write(path)?
            .file
            .set_len(len)
            .map_err(|e| StorageError::io(path, e))
    }

    /// The file's length.
    pub fn len(&self, path: &Path) -> Result<u64, StorageError> {
        std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|e| StorageError::io(path, e))
    }

    /// Makes what was written to `path` durable (data and size). Also fails when a handle of
    /// the file closed since the last sync failed its fsync.
    pub fn sync(&self, path: &Path) -> Result<(), StorageError> {
        self.before_sync(path)
            .map_err(|e| StorageError::io(path, e))?;
        let handle = self
            .handle(path, false)
            .map_err(|e| StorageError::io(path, e))?;
        handle.dirty.store(false, Ordering::Release);
        let started = std::time::Instant::now();
        let synced = handle.file.sync_data();
        self.inner
            .fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Some(lost) = self.inner.lost.lock().expect("disk lock").remove(path) {
            return Err(StorageError::io(
                path,
                io::Error::other(format!("an earlier fsync failed: {lost}")),
            ));
        }
        if let Err(e) = synced {
            handle.dirty.store(true, Ordering::Release);
            return Err(StorageError::io(path, e));
        }
        if let Some(faults) = &self.inner.faults {
            faults.synced(path);
        }
        Ok(())
    }

    /// fsyncs a directory, making the creation, removal and renaming of its entries durable.
    pub fn sync_dir(&self, dir: &Path) -> Result<(), StorageError> {
        self.before_sync(dir)
            .map_err(|e| StorageError::io(dir, e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::io(dir, e))
    }

    /// Writes `path` whole from `parts` and fsyncs it (not its directory).
    pub fn write_file(&self, path: &Path, parts: &[&[u8]]) -> Result<(), StorageError> {
        self.create(path)?;
        let mut position = 0;
        for part in parts {
            self.write_at(path, part, position)?;
            position += part.len() as u64;
        }
        let synced = self.sync(path);
        self.forget(path);
        synced
    }

    /// Renames `from` over `to` (durable once their directory is synced).
    pub fn rename(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        self.before().map_err(|e| StorageError::io(from, e))?;
        self.forget(from);
        self.forget(to);
        std::fs::rename(from, to).map_err(|e| StorageError::io(to, e))?;
        if let Some(faults) = &self.inner.faults {
            faults.renamed(from, to);
        }
        Ok(())
    }

    /// Removes a file; a missing one is fine (a deletion may be resumed after a crash).
    pub fn remove(&self, path: &Path) -> Result<(), StorageError> {
        self.before().map_err(|e| StorageError::io(path, e))?;
        self.forget(path);
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(path, e)),
        }
    }

    /// Removes a directory and everything in it.
    pub fn remove_dir_all(&self, dir: &Path) -> Result<(), StorageError> {
        self.before().map_err(|e| StorageError::io(dir, e))?;
        self.forget_under(dir);
        std::fs::remove_dir_all(dir).map_err(|e| StorageError::io(dir, e))
    }

    /// Closes the handles of files under `dir` (before the directory is moved or removed, so
    /// no handle keeps a removed file's space in use).
    pub fn forget_under(&self, dir: &Path) {
        let mut open = self.inner.open.write().expect("disk lock");
        let gone: Vec<PathBuf> = open
            .keys()
            .filter(|p| p.starts_with(dir))
            .cloned()
            .collect();
        for path in gone {
            if let Some(handle) = open.remove(&path) {
                self.close(&path, &handle);
            }
        }
    }

    fn forget(&self, path: &Path) {
        let handle = self.inner.open.write().expect("disk lock").remove(path);
        if let Some(handle) = handle {
            self.close(path, &handle);
        }
    }

    /// A writable handle of `path`, marked as written since its last fsync.
    fn to_write(&self, path: &Path) -> Result<Arc<Handle>, StorageError> {
        let handle = self
            .handle(path, true)
            .map_err(|e| StorageError::io(path, e))?;
        handle.dirty.store(true, Ordering::Release);
        Ok(handle)
    }

    fn handle(&self, path: &Path, write: bool) -> io::Result<Arc<Handle>> {
        let tick = self.inner.clock.fetch_add(1, Ordering::Relaxed);
        if let Some(handle) = self.inner.open.read().expect("disk lock").get(path)
            && (handle.writable || !write)
        {
            handle.last_used.store(tick, Ordering::Relaxed);
            return Ok(handle.clone());
        }
        let file = OpenOptions::new().read(true).write(write).open(path)?;
        Ok(self.insert(path, file, write))
    }

    fn insert(&self, path: &Path, file: File, writable: bool) -> Arc<Handle> {
        let handle = Arc::new(Handle {
            file,
            writable,
            dirty: AtomicBool::new(false),
            last_used: AtomicU64::new(self.inner.clock.fetch_add(1, Ordering::Relaxed)),
        });
        let mut open = self.inner.open.write().expect("disk lock");
        // Another thread may have opened the file meanwhile: a handle that does as much
        // stays (it may have been written through), ours is closed unused.
        if let Some(existing) = open.get(path)
            && (existing.writable || !writable)
        {
            return existing.clone();
        }
        if let Some(old) = open.insert(path.to_path_buf(), handle.clone()) {
            self.close(path, &old);
        }
        if open.len() > self.inner.max_open {
            self.make_room(&mut open);
        }
        handle
    }

    /// Closes the least recently used eighth of the handles.
    fn make_room(&self, open: &mut HashMap<PathBuf, Arc<Handle>>) {
        let mut by_age: Vec<(u64, PathBuf)> = open
            .iter()
            .map(|(p, h)| (h.last_used.load(Ordering::Relaxed), p.clone()))
            .collect();
        by_age.sort_unstable();
        for (_, path) in by_age.into_iter().take(self.inner.max_open / 8 + 1) {
            if let Some(handle) = open.remove(&path) {
                self.close(&path, &handle);
            }
        }
    }

    /// Drops the cache's handle, fsyncing it first if it was written since its last sync. A
    /// handle still in use by a reader stays open until the reader is done.
    fn close(&self, path: &Path, handle: &Handle) {
        if !handle.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let synced = match self.before_sync(path) {
            Ok(()) => handle.file.sync_data(),
            Err(e) => Err(e),
        };
        match synced {
            Ok(()) => {
                if let Some(faults) = &self.inner.faults {
                    faults.synced(path);
                }
            }
            Err(e) => {
                self.inner
                    .lost
                    .lock()
                    .expect("disk lock")
                    .insert(path.to_path_buf(), e.to_string());
            }
        }
    }

    fn before(&self) -> io::Result<()> {
        self.inner.faults.as_ref().map_or(Ok(()), |f| f.before())
    }

    /// How much of a write of `len` bytes fits (all of it but with faults).
    fn before_write(&self, path: &Path, len: usize) -> io::Result<usize> {
        match &self.inner.faults {
            Some(faults) => faults.before_write(path, len),
            None => Ok(len),
        }
    }

    fn before_sync(&self, path: &Path) -> io::Result<()> {
        match &self.inner.faults {
            Some(faults) => faults.before_sync(path),
            None => Ok(()),
        }
    }
}

/// How many files the log may keep open: half of the process's limit on descriptors (the
/// rest is for connections, queries' spill files and the rest of the server).
pub fn max_open_files() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return DEFAULT_MAX_OPEN;
    }
    usize::try_from(limit.rlim_cur / 2)
        .unwrap_or(usize::MAX)
        .clamp(16, 65_536)
}

/// Raises the process's soft limit on open files to its hard limit (as the Go runtime and
/// most servers do); the hard limit is the operator's to set.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Failures a test makes the [`Disk`] have. Shared between the test and the disk.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    /// Writes to paths containing this find no space (the empty string: all).
    full: Option<String>,
    /// Syncs of paths containing this fail (the empty string: all).
    failing_syncs: Option<String>,
    /// Operations left before the power goes off.
    ops_before_power_cut: Option<u64>,
    power_off: bool,
    /// Written files and their length at their last fsync (or when first written).
    durable_len: HashMap<PathBuf, u64>,
}

impl Faults {
    pub fn new() -> Arc<Faults> {
        Arc::default()
    }

    /// Writes to files whose path contains `of` (`Some("")`: every file) write half of what
    /// they are given and fail with "no space left on device"; `None` frees the space.
    pub fn fill_disk(&self, of: Option<&str>) {
        self.state().full = of.map(str::to_string);
    }

    /// fsyncs of files whose path contains `of` fail with EIO (`Some("")`: every fsync);
    /// `None` stops failing them.
    pub fn fail_syncs(&self, of: Option<&str>) {
        self.state().failing_syncs = of.map(str::to_string);
    }

    /// After `ops` more writes, cuts and syncs, the power goes off: every later operation
    /// fails, and [`Faults::lose_unsynced`] drops what was not fsynced.
    pub fn cut_power_after(&self, ops: u64) {
        self.state().ops_before_power_cut = Some(ops);
    }

    pub fn power_is_off(&self) -> bool {
        self.state().power_off
    }

    /// What a power cut leaves of the files written: of what each had written since its
    /// last fsync, none, all, or a torn prefix that may have become zeros (`seed` chooses).
    /// Then the power is back on.
    pub fn lose_unsynced(&self, seed: u64) -> io::Result<()> {
        let mut state = self.state();
        let mut rng = seed | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for (path, durable) in &state.durable_len {
            let Ok(len) = std::fs::metadata(path).map(|m| m.len()) else {
                continue;
            };
            if len <= *durable {
                continue;
            }
            let kept = match next() % 3 {
                0 => *durable,
                1 => len,
                _ => durable + next() % (len - durable + 1),
            };
            let file = OpenOptions::new().write(true).open(path)?;
            file.set_len(kept)?;
            if kept > *durable && kept < len && next() % 2 == 0 {
                file.write_all_at(&vec![0; (kept - durable) as usize], *durable)?;
            }
            file.sync_all()?;
        }
        state.durable_len.clear();
        state.power_off = false;
        state.ops_before_power_cut = None;
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().expect("faults lock")
    }

    /// Counts one operation towards a power cut; fails once the power is off.
    fn before(&self) -> io::Result<()> {
        let mut state = self.state();
        if state.power_off {
            return Err(io::Error::other("the power is off"));
        }
        if let Some(ops) = &mut state.ops_before_power_cut {
            if *ops == 0 {
                state.power_off = true;
                return Err(io::Error::other("the power is off"));
            }
            *ops -= 1;
        }
        Ok(())
    }

    fn before_write(&self, path: &Path, len: usize) -> io::Result<usize> {
        self.before()?;
        let mut state = self.state();
        if !state.durable_len.contains_key(path) {
            let len = std::fs::metadata(path).map_or(0, |m| m.len());
            state.durable_len.insert(path.to_path_buf(), len);
        }
        let full = matches(&state.full, path);
        if full && len == 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(if full { len / 2 } else { len })
    }

    fn before_sync(&self, path: &Path) -> io::Result<()> {
        self.before()?;
        if matches(&self.state().failing_syncs, path) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }

    fn created(&self, path: &Path) {
        self.state().durable_len.insert(path.to_path_buf(), 0);
    }

    fn synced(&self, path: &Path) {
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        self.state().durable_len.insert(path.to_path_buf(), len);
    }

    fn renamed(&self, from: &Path, to: &Path) {
        let mut state = self.state();
        if let Some(len) = state.durable_len.remove(from) {
            state.durable_len.insert(to.to_path_buf(), len);
        }
    }
}

/// Whether a fault set for paths containing `of` applies to `path`.
fn matches(of: &Option<String>, path: &Path) -> bool {
    of.as_ref()
        .is_some_and(|of| path.to_string_lossy().contains(of.as_str()))
}
