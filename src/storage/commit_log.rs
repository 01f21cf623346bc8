//! The commit log: the single point at which appends become durable and visible.
//!
//! Frames are written and fsynced to their partitions first; then one commit record naming
//! the new end offset of every partition touched is appended here and fsynced. Only then are
//! the writers acknowledged and readers allowed to see the new records. A write that spans
//! partitions (a multi-row `INSERT`, a `COPY`) is therefore atomic across a crash: recovery
//! cuts every partition back to the end offset of its last commit record, so either the
//! record made it and all its frames are there, or it did not and none of them count.
//!
//! Record layout (little-endian):
//! ```text
//! length u32 (whole record) | crc32 u32 of the rest | sequence u64 | entry count u32 |
//! entries: topic id u64, partition u32, end offset u64 (20 bytes each)
//! ```
//! The file is rewritten as a single snapshot record once it grows past a bound, so its
//! size stays proportional to the number of partitions, not the number of writes.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::StorageError;
use super::segment::sync_dir;
use super::types::{Offset, PartitionId, TopicId};

const HEADER_LEN: usize = 20;
const ENTRY_LEN: usize = 20;
const RECORD_LEN_MAX: usize = 64 * 1024 * 1024;

pub type CommittedEnds = HashMap<(TopicId, PartitionId), Offset>;

#[derive(Debug)]
pub struct CommitLog {
    path: PathBuf,
    file: File,
    sequence: u64,
    size_bytes: u64,
}

fn encode_record(sequence: u64, entries: &[(TopicId, PartitionId, Offset)]) -> Vec<u8> {
    let length = HEADER_LEN + entries.len() * ENTRY_LEN;
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
    let crc = crc32fast::hash(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// One decoded record, or why the bytes at this position are not one.
enum Decoded {
    Record {
        length: usize,
        sequence: u64,
        entries: Vec<(TopicId, PartitionId, Offset)>,
    },
    /// Not a valid record. `claimed_length` is the record length the bytes claim, if it is
    /// plausible, to look past it for a valid record (which would make this corruption).
    Invalid { claimed_length: Option<usize> },
}

fn decode_record(bytes: &[u8]) -> Decoded {
    if bytes.len() < HEADER_LEN {
        return Decoded::Invalid {
            claimed_length: None,
        };
    }
    let length = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    let plausible = (HEADER_LEN..=RECORD_LEN_MAX).contains(&length)
        && (length - HEADER_LEN).is_multiple_of(ENTRY_LEN);
    if !plausible {
        return Decoded::Invalid {
            claimed_length: None,
        };
    }
    if bytes.len() < length {
        return Decoded::Invalid {
            claimed_length: None,
        };
    }
    let stored = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let count = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize;
    if crc32fast::hash(&bytes[8..length]) != stored || HEADER_LEN + count * ENTRY_LEN != length {
        return Decoded::Invalid {
            claimed_length: Some(length),
        };
    }
    let sequence = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let entries = bytes[HEADER_LEN..length]
        .chunks_exact(ENTRY_LEN)
        .map(|c| {
            (
                TopicId(u64::from_le_bytes(c[0..8].try_into().expect("8 bytes"))),
                PartitionId(u32::from_le_bytes(c[8..12].try_into().expect("4 bytes"))),
                Offset(u64::from_le_bytes(c[12..20].try_into().expect("8 bytes"))),
            )
        })
        .collect();
    Decoded::Record {
        length,
        sequence,
        entries,
    }
}

impl CommitLog {
    /// Opens (or creates) the commit log in `dir` and replays it. A torn last record is cut
    /// off; an invalid record followed by a valid one is corruption and an error.
    pub fn open(dir: &Path) -> Result<(CommitLog, CommittedEnds), StorageError> {
        let path = dir.join("commit.log");
        // A crash during a rewrite can leave the new snapshot beside the old log; the old
        // log is still complete (the rename is what switches), so the leftover goes.
        let _ = fs::remove_file(dir.join("commit.log.new"));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => return Err(StorageError::io(&path, e)),
        };
        let mut ends = CommittedEnds::new();
        let mut position = 0usize;
        let mut sequence = 0u64;
        while position < bytes.len() {
            match decode_record(&bytes[position..]) {
                Decoded::Record {
                    length,
                    sequence: s,
                    entries,
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
                        ends.insert((topic, partition), end);
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
            ends,
        ))
    }

    /// Appends a commit record and makes it durable.
    pub fn commit(
        &mut self,
        entries: &[(TopicId, PartitionId, Offset)],
    ) -> Result<(), StorageError> {
        let record = encode_record(self.sequence + 1, entries);
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
    pub fn rewrite(&mut self, ends: &CommittedEnds) -> Result<(), StorageError> {
        let dir = self
            .path
            .parent()
            .expect("commit log lives in a directory")
            .to_path_buf();
        let tmp = dir.join("commit.log.new");
        let mut entries: Vec<_> = ends.iter().map(|((t, p), o)| (*t, *p, *o)).collect();
        entries.sort();
        let record = encode_record(self.sequence + 1, &entries);
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

    #[test]
    fn replay_keeps_the_latest_end_per_partition() {
        let d = dir();
        let (mut log, ends) = CommitLog::open(d.path()).unwrap();
        assert!(ends.is_empty());
        log.commit(&[
            (TopicId(1), PartitionId(0), Offset(10)),
            (TopicId(1), PartitionId(1), Offset(5)),
        ])
        .unwrap();
        log.commit(&[(TopicId(1), PartitionId(0), Offset(12))])
            .unwrap();
        drop(log);
        let (_, ends) = CommitLog::open(d.path()).unwrap();
        assert_eq!(ends[&(TopicId(1), PartitionId(0))], Offset(12));
        assert_eq!(ends[&(TopicId(1), PartitionId(1))], Offset(5));
    }

    #[test]
    fn torn_last_record_is_cut_off() {
        let d = dir();
        let (mut log, _) = CommitLog::open(d.path()).unwrap();
        log.commit(&[(TopicId(1), PartitionId(0), Offset(10))])
            .unwrap();
        log.commit(&[(TopicId(1), PartitionId(0), Offset(20))])
            .unwrap();
        drop(log);
        let path = d.path().join("commit.log");
        let len = fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 7).unwrap();
        let (mut log, ends) = CommitLog::open(d.path()).unwrap();
        assert_eq!(ends[&(TopicId(1), PartitionId(0))], Offset(10));
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            (HEADER_LEN + ENTRY_LEN) as u64
        );
        log.commit(&[(TopicId(1), PartitionId(0), Offset(11))])
            .unwrap();
        let (_, ends) = CommitLog::open(d.path()).unwrap();
        assert_eq!(ends[&(TopicId(1), PartitionId(0))], Offset(11));
    }

    #[test]
    fn corruption_before_the_tail_is_an_error() {
        let d = dir();
        let (mut log, _) = CommitLog::open(d.path()).unwrap();
        for end in 1..=3 {
            log.commit(&[(TopicId(1), PartitionId(0), Offset(end))])
                .unwrap();
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
    fn rewrite_compacts_to_one_snapshot() {
        let d = dir();
        let (mut log, _) = CommitLog::open(d.path()).unwrap();
        for end in 1..=100 {
            log.commit(&[
                (TopicId(1), PartitionId(0), Offset(end)),
                (TopicId(2), PartitionId(3), Offset(end * 2)),
            ])
            .unwrap();
        }
        let mut ends = CommittedEnds::new();
        ends.insert((TopicId(1), PartitionId(0)), Offset(100));
        ends.insert((TopicId(2), PartitionId(3)), Offset(200));
        log.rewrite(&ends).unwrap();
        assert_eq!(log.size_bytes(), (HEADER_LEN + 2 * ENTRY_LEN) as u64);
        log.commit(&[(TopicId(1), PartitionId(0), Offset(101))])
            .unwrap();
        drop(log);
        let (_, replayed) = CommitLog::open(d.path()).unwrap();
        assert_eq!(replayed[&(TopicId(1), PartitionId(0))], Offset(101));
        assert_eq!(replayed[&(TopicId(2), PartitionId(3))], Offset(200));
    }
}
