//! The server's memory limit, and the DataFusion runtime that keeps queries inside it.
//!
//! Every query (bounded statements, and each epoch of a continuous query) reserves the memory
//! its sorts, aggregations and joins hold from one pool of `--memory-limit` bytes. An operator
//! that cannot get more spills to files under `<data dir>/tmp` when it can (sorts, grouped
//! aggregations, sort-merge joins); one that cannot spill fails its query with SQLSTATE 53200,
//! naming the largest consumers, and every other query and connection carries on.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};

use crate::error::{Error, Result};

/// Spill files live here, inside the data directory (emptied at every start: nothing in it
/// outlives the query that wrote it).
pub const SPILL_DIR: &str = "tmp";

/// The smallest limit the server accepts.
pub const MIN_MEMORY_LIMIT: u64 = 32 << 20;

/// The limit when none is given: half of the memory the machine (or the container's cgroup)
/// has, leaving the rest for what the pool does not count (see `docs/operations.md`).
pub fn default_memory_limit() -> u64 {
    let physical = physical_memory().unwrap_or(4 << 30);
    let available = cgroup_memory_limit().map_or(physical, |c| c.min(physical));
    (available / 2).max(MIN_MEMORY_LIMIT)
}

fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads system constants.
    let (pages, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages > 0 && page_size > 0).then(|| pages as u64 * page_size as u64)
}

/// A container's memory limit (cgroup v2, then v1), if one is set.
fn cgroup_memory_limit() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok()?.trim().parse().ok())
}

/// Parses a size such as `512MiB`, `2GB`, `4g` or `1073741824` into bytes (K, M, G and T are
/// powers of 1024, as in PostgreSQL's settings).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("\"{text}\" is not a size (e.g. 512MiB, 4GiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "\"{text}\" has an unknown unit (use KiB, MiB, GiB or TiB)"
            ));
        }
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("\"{text}\" is too large"))
}

/// The runtime every query runs in: a pool of `limit` bytes, shared fairly among the
/// operators that can spill, and spill files under `data_dir`'s [`SPILL_DIR`], which is
/// emptied first.
pub fn runtime(data_dir: &Path, limit: u64) -> Result<Arc<RuntimeEnv>> {
    let spill_dir = spill_dir(data_dir)?;
    let pool = TrackConsumersPool::new(
        FairSpillPool::new(usize::try_from(limit).unwrap_or(usize::MAX)),
        NonZeroUsize::new(3).expect("non-zero"),
    );
    RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Directories(vec![spill_dir])),
        )
        .build_arc()
        .map_err(Error::from_datafusion)
}

/// Creates the spill directory empty: files a crashed server left there belong to no query.
fn spill_dir(data_dir: &Path) -> Result<PathBuf> {
    let dir = data_dir.join(SPILL_DIR);
    let io = |e: std::io::Error| Error::Internal(format!("preparing {}: {e}", dir.display()));
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    std::fs::create_dir_all(&dir).map_err(io)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2GB"), Ok(2 << 30));
        assert_eq!(parse_size("4g"), Ok(4 << 30));
        assert_eq!(parse_size(" 1 TiB "), Ok(1 << 40));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn the_default_limit_is_half_the_machine() {
        let limit = default_memory_limit();
        assert!(limit >= MIN_MEMORY_LIMIT);
        assert!(limit <= physical_memory().unwrap());
    }
}
