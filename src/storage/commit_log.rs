//! The commit log: the single point at which appends become durable and visible.
//!
//! Frames are written and fsynced to their partitions first; then one commit record naming
//! the new end offset of every partition touched is appended here and fsynced. Only then are
//! the writers acknowledged and readers allowed to see the new records. A write that spans
//! partitions (a multi-row `INSERT`, a `COPY`) is therefore atomic across a crash: recovery
//! cuts every partition back to the end offset of its last commit record, so either the
//! record made it and all its frames are there, or it did not and none of them count.
//!
//! A commit record can also carry metadata entries: small values under a numeric key whose
//! latest value the log keeps (a continuous query's checkpoint: its input offsets and state
//! position). Because they are in the same record as the end offsets, output written by an
//! epoch and the checkpoint that says the epoch happened commit together or not at all.
//!
//! Record layout (little-endian):
//! ```text
//! length u32 (whole record) | crc32 u32 of the rest | sequence u64 | entry count u32 |
//! entries: topic id u64, partition u32, end offset u64 (20 bytes each)
//! [ meta count u32 | metas: key u64, length u32 (u32::MAX: deleted), bytes ]
//! ```
//! Records without metadata end after the entries (the first format, still read).
//! The file is rewritten as a single snapshot record once it grows past a bound, so its
//! size stays proportional to the number of partitions and keys, not the number of writes.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::StorageError;
use super::segment::sync_dir;
use super::types::{Offset, PartitionId, TopicId};

const HEADER_LEN: usize = 20;
const ENTRY_LEN: usize = 20;
const RECORD_LEN_MAX: usize = 64 * 1024 * 1024;
const DELETED: u32 = u32::MAX;

pub type CommittedEnds = HashMap<(TopicId, PartitionId), Offset>;

/// The latest value of each metadata key.
pub type CommittedMeta = HashMap<u64, Arc<Vec<u8>>>;

/// A metadata change: a new value for a key, or `None` to delete it.
pub type MetaUpdate = (u64, Option<Vec<u8>>);

/// A partition's committed end offset, as a commit record names it.
type EndEntry = (TopicId, PartitionId, Offset);

#[derive(Debug)]
pub struct CommitLog {
    path: PathBuf,
    file: File,
    sequence: u64,
    size_bytes: u64,
}

fn encode_record(
    sequence: u64,
    entries: &[(TopicId, PartitionId, Offset)],
    meta: &[MetaUpdate],
) -> Vec<u8> {
    let meta_len: usize = meta
        .iter()
        .map(|(_, v)| 12 + v.as_ref().map_or(0, Vec::len))
        .sum();
    let length =
        HEADER_LEN + entries.len() * ENTRY_LEN + if meta.is_empty() { 0 } else { 4 + meta_len };
    let mut out = Vec::with_capacity(length);
    out.extend_from_slice(&(length as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (topic, partition, end) in entries {
        out.extend_from_slice(&topic.0.to_le_bytes());
        out.extend_from_slice(&partition.0.to_le_bytes());
        out.extend_from_slice(&end.0.to_le_bytes());
    }
    if !meta.is_empty() {
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        for (key, value) in meta {
            out.extend_from_slice(&key.to_le_bytes());
            match value {
                Some(v) => {
                    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    out.extend_from_slice(v);
                }
                None => out.extend_from_slice(&DELETED.to_le_bytes()),
            }
        }
    }
    debug_assert_eq!(out.len(), length);
    let crc = crc32fast::hash(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// One decoded record, or why the bytes at this position are not one.
enum Decoded {
    Record {
        length: usize,
        sequence: u64,
        entries: Vec<EndEntry>,
        meta: Vec<MetaUpdate>,
    },
    /// Not a valid record. `claimed_length` is the record length the bytes claim, if it is
    /// plausible, to look past it for a valid record (which would make this corruption).
    Invalid { claimed_length: Option<usize> },
}

fn decode_record(bytes: &[u8]) -> Decoded {
    let invalid = Decoded::Invalid {
        claimed_length: None,
    };
    if bytes.len() < HEADER_LEN {
        return invalid;
    }
    let length = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    if !(HEADER_LEN..=RECORD_LEN_MAX).contains(&length) || bytes.len() < length {
        return invalid;
    }
    let stored = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[8..length]) != stored {
        return Decoded::Invalid {
            claimed_length: Some(length),
        };
    }
    match parse_body(&bytes[..length]) {
        Some((entries, meta)) => Decoded::Record {
            length,
            sequence: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
            entries,
            meta,
        },
        None => Decoded::Invalid {
            claimed_length: Some(length),
        },
    }
}

/// The entries and metadata of a checksummed record; `None` if its layout is inconsistent.
fn parse_body(record: &[u8]) -> Option<(Vec<EndEntry>, Vec<MetaUpdate>)> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(record.get(at..at + 4)?.try_into().ok()?))
    };
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(record.get(at..at + 8)?.try_into().ok()?))
    };
    let count = u32_at(16)? as usize;
    let entries_end = HEADER_LEN.checked_add(count.checked_mul(ENTRY_LEN)?)?;
    if entries_end > record.len() {
        return None;
    }
    let entries = record[HEADER_LEN..entries_end]
        .chunks_exact(ENTRY_LEN)
        .map(|c| {
            (
                TopicId(u64::from_le_bytes(c[0..8].try_into().expect("8 bytes"))),
                PartitionId(u32::from_le_bytes(c[8..12].try_into().expect("4 bytes"))),
                Offset(u64::from_le_bytes(c[12..20].try_into().expect("8 bytes"))),
            )
        })
        .collect();
    let mut meta = vec![];
    if entries_end < record.len() {
        let metas = u32_at(entries_end)? as usize;
        let mut at = entries_end + 4;
        for _ in 0..metas {
            let key = u64_at(at)?;
            let len = u32_at(at + 8)?;
            at += 12;
            if len == DELETED {
                meta.push((key, None));
            } else {
                let end = at.checked_add(len as usize)?;
                meta.push((key, Some(record.get(at..end)?.to_vec())));
                at = end;
            }
        }
        if at != record.len() {
            return None;
        }
    }
    Some((entries, meta))
}

/// What replaying the commit log yields.
#[derive(Debug, Default)]
pub struct Replayed {
    pub ends: CommittedEnds,
    pub meta: CommittedMeta,
}

impl CommitLog {
    /// Opens (or creates) the commit log in `dir` and replays it. A torn last record is cut
    /// off; an invalid record followed by a valid one is corruption and an error.
    pub fn open(dir: &Path) -> Result<(CommitLog, Replayed), StorageError> {
        let path = dir.join("commit.log");
        // A crash during a rewrite can leave the new snapshot beside the old log; the old
        // log is still complete (the rename is what switches), so the leftover goes.
        let _ = fs::remove_file(dir.join("commit.log.new"));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => return Err(StorageError::io(&path, e)),
        };
        let mut replayed = Replayed::default();
        let mut position = 0usize;
        let mut sequence = 0u64;
        while position < bytes.len() {
            match decode_record(&bytes[position..]) {
                Decoded::Record {
                    length,
                    sequence: s,
                    entries,
                    meta,
                } => {
                    if s <= sequence && position > 0 {
                        return Err(StorageError::corruption(
                            &path,
                            position as u64,
                            format!("commit sequence {s} after {sequence}"),
                        ));
                    }
                    sequence = s;
                    for (topic, partition, end) in entries {
                        replayed.ends.insert((topic, partition), end);
                    }
                    for (key, value) in meta {
                        match value {
                            Some(v) => replayed.meta.insert(key, Arc::new(v)),
                            None => replayed.meta.remove(&key),
                        };
                    }
                    position += length;
                }
                Decoded::Invalid { claimed_length } => {
                    let next = claimed_length.map(|l| position + l);
                    let valid_after = next.is_some_and(|n| {
                        n < bytes.len()
                            && matches!(decode_record(&bytes[n..]), Decoded::Record { .. })
                    });
                    if valid_after {
                        return Err(StorageError::corruption(
                            &path,
                            position as u64,
                            "invalid commit record followed by valid ones",
                        ));
                    }
                    tracing::info!(
                        path = %path.display(),
                        position,
                        cut_bytes = bytes.len() - position,
                        "truncating torn commit log tail"
                    );
                    break;
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        if (position as u64) < bytes.len() as u64 {
            file.set_len(position as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| StorageError::io(&path, e))?;
        }
        sync_dir(dir)?;
        Ok((
            CommitLog {
                path,
                file,
                sequence,
                size_bytes: position as u64,
            },
            replayed,
        ))
    }

    /// Appends a commit record and makes it durable.
    pub fn commit(
        &mut self,
        entries: &[(TopicId, PartitionId, Offset)],
        meta: &[MetaUpdate],
    ) -> Result<(), StorageError> {
        let record = encode_record(self.sequence + 1, entries, meta);
        self.file
            .write_all(&record)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| StorageError::io(&self.path, e))?;
        self.sequence += 1;
        self.size_bytes += record.len() as u64;
        Ok(())
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Replaces the log with one record holding `ends` (the end offsets of every live
    /// partition), atomically: write a new file, fsync, rename over the old one, fsync dir.
    pub fn rewrite(
        &mut self,
        ends: &CommittedEnds,
        meta: &CommittedMeta,
    ) -> Result<(), StorageError> {
        let dir = self
            .path
            .parent()
            .expect("commit log lives in a directory")
            .to_path_buf();
        let tmp = dir.join("commit.log.new");
        let mut entries: Vec<_> = ends.iter().map(|((t, p), o)| (*t, *p, *o)).collect();
        entries.sort();
        let mut metas: Vec<MetaUpdate> = meta.iter().map(|(k, v)| (*k, Some(v.to_vec()))).collect();
        metas.sort();
        let record = encode_record(self.sequence + 1, &entries, &metas);
        let mut file = File::create(&tmp).map_err(|e| StorageError::io(&tmp, e))?;
        file.write_all(&record)
            .and_then(|()| file.sync_all())
            .map_err(|e| StorageError::io(&tmp, e))?;
        fs::rename(&tmp, &self.path).map_err(|e| StorageError::io(&self.path, e))?;
        sync_dir(&dir)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| StorageError::io(&self.path, e))?;
        self.sequence += 1;
        self.size_bytes = record.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn end(t: u64, p: u32, o: u64) -> (TopicId, PartitionId, Offset) {
        (TopicId(t), PartitionId(p), Offset(o))
    }

    #[test]
    fn replay_keeps_the_latest_end_per_partition() {
        let d = dir();
        let (mut log, replayed) = CommitLog::open(d.path()).unwrap();
        assert!(replayed.ends.is_empty());
        log.commit(&[end(1, 0, 10), end(1, 1, 5)], &[]).unwrap();
        log.commit(&[end(1, 0, 12)], &[]).unwrap();
        drop(log);
        let (_, replayed) = CommitLog::open(d.path()).unwrap();
        assert_eq!(replayed.ends[&(TopicId(1), PartitionId(0))], Offset(12));
        assert_eq!(replayed.ends[&(TopicId(1), PartitionId(1))], Offset(5));
    }

    #[test]
    fn metadata_commits_with_the_offsets_and_keeps_the_latest_value() {
        let d = dir();
        let (mut log, _) = CommitLog::open(d.path()).unwrap();
        log.commit(
            &[end(1, 0, 10)],
            &[(7, Some(b"epoch 1".to_vec())), (8, Some(b"x".to_vec()))],
        )
        .unwrap();
        log.commit(&[], &[(7, Some(b"epoch 2".to_vec()))]).unwrap();
        log.commit(&[end(1, 0, 11)], &[(8, None)]).unwrap();
        drop(log);
        let (mut log, replayed) = CommitLog::open(d.path()).unwrap();
        assert_eq!(replayed.meta[&7].as_slice(), b"epoch 2");
        assert!(!replayed.meta.contains_key(&8), "deleted");
        assert_eq!(replayed.ends[&(TopicId(1), PartitionId(0))], Offset(11));
        // Compaction keeps them.
        log.rewrite(&replayed.ends, &replayed.meta).unwrap();
        drop(log);
        let (_, again) = CommitLog::open(d.path()).unwrap();
        assert_eq!(again.meta[&7].as_slice(), b"epoch 2");
        assert_eq!(again.meta.len(), 1);
    }

    #[test]
    fn torn_last_record_is_cut_off() {
        let d = dir();
        let (mut log, _) = CommitLog::open(d.path()).unwrap();
        log.commit(&[end(1, 0, 10)], &[]).unwrap();
        log.commit(&[end(1, 0, 20)], &[(3, Some(vec![1; 40]))])
            .unwrap();
        drop(log);
        let path = d.path().join("commit.log");
        let len = fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 7).unwrap();
        let (mut log, replayed) = CommitLog::open(d.path()).unwrap();
        assert_eq!(replayed.ends[&(TopicId(1), PartitionId(0))], Offset(10));
        assert!(replayed.meta.is_empty());
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            (HEADER_LEN + ENTRY_LEN) as u64
        );
        log.commit(&[end(1, 0, 11)], &[]).unwrap();
        let (_, replayed) = CommitLog::open(d.path()).unwrap();
        assert_eq!(replayed.ends[&(TopicId(1), PartitionId(0))], Offset(11));
    }

    #[test]
    fn corruption_before_the_tail_is_an_error() {
        let d = dir();
        let (mut log, _) = CommitLog::open(d.path()).unwrap();
        for e in 1..=3 {
            log.commit(&[end(1, 0, e)], &[]).unwrap();
        }
        drop(log);
        let path = d.path().join("commit.log");
        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER_LEN + 15] ^= 1; // inside the first record's entry
        fs::write(&path, &bytes).unwrap();
        let err = CommitLog::open(d.path()).unwrap_err();
        assert!(
            matches!(err, StorageError::Corruption { position: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn malformed_metadata_is_not_a_record() {
        let record = encode_record(1, &[end(1, 0, 1)], &[(9, Some(vec![7; 16]))]);
        assert!(matches!(decode_record(&record), Decoded::Record { .. }));
        for cut in 0..record.len() {
            assert!(
                matches!(decode_record(&record[..cut]), Decoded::Invalid { .. }),
                "prefix {cut}"
            );
        }
        let mut lying = record.clone();
        let meta_len_at = HEADER_LEN + ENTRY_LEN + 4 + 8;
        lying[meta_len_at] = 200; // claims more bytes than there are
        let crc = crc32fast::hash(&lying[8..]);
        lying[4..8].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode_record(&lying), Decoded::Invalid { .. }));
    }

    #[test]
    fn rewrite_compacts_to_one_snapshot() {
        let d = dir();
        let (mut log, _) = CommitLog::open(d.path()).unwrap();
        for e in 1..=100 {
            log.commit(&[end(1, 0, e), end(2, 3, e * 2)], &[]).unwrap();
        }
        let mut ends = CommittedEnds::new();
        ends.insert((TopicId(1), PartitionId(0)), Offset(100));
        ends.insert((TopicId(2), PartitionId(3)), Offset(200));
        log.rewrite(&ends, &CommittedMeta::new()).unwrap();
        assert_eq!(log.size_bytes(), (HEADER_LEN + 2 * ENTRY_LEN) as u64);
        log.commit(&[end(1, 0, 101)], &[]).unwrap();
        drop(log);
        let (_, replayed) = CommitLog::open(d.path()).unwrap();
        assert_eq!(replayed.ends[&(TopicId(1), PartitionId(0))], Offset(101));
        assert_eq!(replayed.ends[&(TopicId(2), PartitionId(3))], Offset(200));
    }
}
