//! The commit log: the single point at which appends become durable and visible, and the
//! home of every piece of metadata that must agree with the log (the catalog, continuous
//! queries' checkpoints, consumer groups' offsets).
//!
//! Frames are written and fsynced to their partitions first; then one commit record naming
//! the new end offset of every partition touched is appended here and fsynced. Only then are
//! the writers acknowledged and readers allowed to see the new records. A write that spans
//! partitions (a multi-row `INSERT`, a `COPY`) is therefore atomic across a crash: recovery
//! cuts every partition back to the end offset of its last commit record, so either the
//! record made it and all its frames are there, or it did not and none of them count.
//!
//! A commit record also carries metadata entries: values under a numeric key whose latest
//! value the log keeps (the catalog, a query's checkpoint, a group's offsets). Because they
//! share the record with the end offsets, an epoch's output and the checkpoint that says it
//! happened, or a DDL statement and the offsets it creates, commit together or not at all.
//! And it carries log start offsets: retention commits where a partition now starts before
//! it deletes segments, so that recovery can tell a deleted segment from a missing one.
//!
//! File layout (little-endian), a header record, then commit records:
//! ```text
//! record  := length u32 (whole record) | crc32 u32 (of the rest) | sequence u64 | kind u8 | body
//! header  := kind 1: magic "RUNNELCL" | format u32 (2) | data directory id [16] | created ms i64
//! commit  := kind 2: ends | starts | metas
//! unflushed commit := kind 3: as kind 2, written before its records were fsynced
//! ends, starts := count u32 | (topic id u64 | partition u32 | offset u64)*
//! metas   := count u32 | (key u64 | length u32 (0xFFFFFFFF: deleted) | bytes)*
//! ```
//! The file is rewritten (new file, fsync, rename, fsync the directory) as a header and a
//! snapshot of the live state in records of about [`SNAPSHOT_RECORD_BYTES`], once it has
//! grown to twice its size after the last rewrite (and past a floor): the cost of a commit
//! does not grow with the amount of metadata, and no record approaches [`RECORD_LEN_MAX`],
//! which every write is checked against.
//!
//! Under the `interval` flush policy ([`super::FlushPolicy`]) a commit record is written
//! without waiting for an fsync, as kind 3, and a timer fsyncs the records and then this file.
//! The log never fsyncs this file before the records its commits name (so every record
//! up to the last one fsynced names durable records), and each flush ends with an empty
//! kind 2 commit, fsynced, that marks the kind 3 records before it durable. A power cut may
//! keep a kind 3 record after the last kind 2 one whose records were lost: recovery keeps
//! the longest run of them whose records are all on disk ([`read`] returns them as
//! [`Unflushed`]), so it checks at most one interval's records.
//!
//! Files of the first format (no header; records `length | crc | sequence | count | ends
//! [| metas]`) are read and rewritten in this one ([`read`] reports them as legacy).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::StorageError;
use super::disk::Disk;
use super::types::{Offset, PartitionId, TopicId};

pub const COMMIT_LOG_FILE: &str = "commit.log";
const PREFIX_LEN: usize = 17;
const ENTRY_LEN: usize = 20;
/// No record is longer: a longer write is refused, and a longer claimed length is not a
/// record.
pub const RECORD_LEN_MAX: usize = 64 * 1024 * 1024;
/// No metadata value is longer (the rest of a record's budget is for end offsets).
pub const VALUE_LEN_MAX: usize = 32 * 1024 * 1024;
/// The size of the records a rewrite splits its snapshot into.
pub const SNAPSHOT_RECORD_BYTES: usize = 1024 * 1024;
const DELETED: u32 = u32::MAX;
const MAGIC: &[u8; 8] = b"RUNNELCL";
const FORMAT: u32 = 2;
const KIND_HEADER: u8 = 1;
const KIND_COMMIT: u8 = 2;
const KIND_UNFLUSHED: u8 = 3;
const HEADER_BODY_LEN: usize = 8 + 4 + 16 + 8;

pub type CommittedEnds = HashMap<(TopicId, PartitionId), Offset>;

/// The latest value of each metadata key.
pub type CommittedMeta = imbl::HashMap<u64, Arc<Vec<u8>>>;

/// A metadata change: a new value for a key, or `None` to delete it.
pub type MetaUpdate = (u64, Option<Vec<u8>>);

/// A partition and an offset in it, as a commit record names it.
pub type PartitionOffset = (TopicId, PartitionId, Offset);

/// Which data directory a commit log belongs to, written once when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub id: [u8; 16],
    pub created_at_ms: i64,
}

impl Identity {
    fn new() -> Identity {
        let mut id = [0u8; 16];
        // Time and process make it unique enough to tell directories apart.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970");
        id[..8].copy_from_slice(&(now.as_nanos() as u64).to_le_bytes());
        id[8..12].copy_from_slice(&std::process::id().to_le_bytes());
        id[12..].copy_from_slice(&(now.subsec_nanos() ^ 0x5eed_1e55).to_le_bytes());
        Identity {
            id,
            created_at_ms: now.as_millis() as i64,
        }
    }

    /// The id as hex, as `sys` tables and logs show it.
    pub fn hex(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What one commit record changes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Commit {
    pub ends: Vec<PartitionOffset>,
    pub starts: Vec<PartitionOffset>,
    pub meta: Vec<MetaUpdate>,
}

impl Commit {
    /// The encoded length of this commit's record.
    pub fn record_len(&self) -> usize {
        PREFIX_LEN
            + 4
            + self.ends.len() * ENTRY_LEN
            + 4
            + self.starts.len() * ENTRY_LEN
            + 4
            + self
                .meta
                .iter()
                .map(|(_, v)| 12 + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
    }
}

fn prefix(out: &mut Vec<u8>, length: usize, sequence: u64, kind: u8) {
    out.extend_from_slice(&(length as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&sequence.to_le_bytes());
    out.push(kind);
}

fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

fn encode_header(sequence: u64, identity: &Identity) -> Vec<u8> {
    let length = PREFIX_LEN + HEADER_BODY_LEN;
    let mut out = Vec::with_capacity(length);
    prefix(&mut out, length, sequence, KIND_HEADER);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&identity.id);
    out.extend_from_slice(&identity.created_at_ms.to_le_bytes());
    debug_assert_eq!(out.len(), length);
    seal(out)
}

fn encode_commit(sequence: u64, commit: &Commit, kind: u8) -> Vec<u8> {
    let length = commit.record_len();
    let mut out = Vec::with_capacity(length);
    prefix(&mut out, length, sequence, kind);
    for entries in [&commit.ends, &commit.starts] {
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for (topic, partition, offset) in entries {
            out.extend_from_slice(&topic.0.to_le_bytes());
            out.extend_from_slice(&partition.0.to_le_bytes());
            out.extend_from_slice(&offset.0.to_le_bytes());
        }
    }
    out.extend_from_slice(&(commit.meta.len() as u32).to_le_bytes());
    for (key, value) in &commit.meta {
        out.extend_from_slice(&key.to_le_bytes());
        match value {
            Some(v) => {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
            None => out.extend_from_slice(&DELETED.to_le_bytes()),
        }
    }
    debug_assert_eq!(out.len(), length);
    seal(out)
}

/// A record of either kind.
#[derive(Debug, PartialEq)]
enum Record {
    Header(Identity),
    Commit(Commit),
    /// A commit written before the records it names were fsynced.
    Unflushed(Commit),
}

/// One decoded record, or why the bytes at this position are not one.
enum Decoded {
    Record {
        length: usize,
        sequence: u64,
        record: Record,
    },
    /// Not a valid record. `claimed_length` is the record length the bytes claim, if it is
    /// plausible, to look past it for a valid record (which would make this corruption).
    Invalid { claimed_length: Option<usize> },
}

/// Reads little-endian integers from a checksummed record, `None` past its end.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn entries(&mut self) -> Option<Vec<PartitionOffset>> {
        let count = self.u32()? as usize;
        // The count must fit in what is left before anything is allocated for it.
        if count.checked_mul(ENTRY_LEN)? > self.bytes.len() - self.at {
            return None;
        }
        (0..count)
            .map(|_| {
                Some((
                    TopicId(self.u64()?),
                    PartitionId(self.u32()?),
                    Offset(self.u64()?),
                ))
            })
            .collect()
    }
}

fn decode_record(bytes: &[u8]) -> Decoded {
    let invalid = Decoded::Invalid {
        claimed_length: None,
    };
    if bytes.len() < PREFIX_LEN {
        return invalid;
    }
    let length = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    if !(PREFIX_LEN..=RECORD_LEN_MAX).contains(&length) || bytes.len() < length {
        return invalid;
    }
    let stored = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let claimed = Decoded::Invalid {
        claimed_length: Some(length),
    };
    if crc32fast::hash(&bytes[8..length]) != stored {
        return claimed;
    }
    let sequence = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let mut body = Cursor {
        bytes: &bytes[..length],
        at: PREFIX_LEN,
    };
    let record = match bytes[16] {
        KIND_HEADER => parse_header(&mut body).map(Record::Header),
        KIND_COMMIT => parse_commit(&mut body).map(Record::Commit),
        KIND_UNFLUSHED => parse_commit(&mut body).map(Record::Unflushed),
        _ => None,
    };
    match record {
        Some(record) if body.at == length => Decoded::Record {
            length,
            sequence,
            record,
        },
        _ => claimed,
    }
}

fn parse_header(body: &mut Cursor<'_>) -> Option<Identity> {
    if body.take(8)? != MAGIC || body.u32()? != FORMAT {
        return None;
    }
    let id = body.take(16)?.try_into().ok()?;
    let created_at_ms = body.u64()? as i64;
    Some(Identity { id, created_at_ms })
}

fn parse_commit(body: &mut Cursor<'_>) -> Option<Commit> {
    let ends = body.entries()?;
    let starts = body.entries()?;
    let count = body.u32()? as usize;
    // Each metadata entry takes at least 12 bytes.
    if count.checked_mul(12)? > body.bytes.len() - body.at {
        return None;
    }
    let mut meta = Vec::with_capacity(count);
    for _ in 0..count {
        let key = body.u64()?;
        let len = body.u32()?;
        if len == DELETED {
            meta.push((key, None));
        } else {
            meta.push((key, Some(body.take(len as usize)?.to_vec())));
        }
    }
    Some(Commit { ends, starts, meta })
}

/// The state a commit log describes.
#[derive(Debug, Default, Clone)]
pub struct Replayed {
    pub ends: CommittedEnds,
    /// Log start offsets committed by retention (partitions not named start at 0).
    pub starts: CommittedEnds,
    pub meta: CommittedMeta,
    /// Commit records read (a rewrite's snapshot records count too).
    pub commits: u64,
}

impl Replayed {
    pub(super) fn apply(&mut self, commit: Commit) {
        for (topic, partition, end) in commit.ends {
            self.ends.insert((topic, partition), end);
        }
        for (topic, partition, start) in commit.starts {
            self.starts.insert((topic, partition), start);
        }
        for (key, value) in commit.meta {
            match value {
                Some(v) => self.meta.insert(key, Arc::new(v)),
                None => self.meta.remove(&key),
            };
        }
        self.commits += 1;
    }
}

/// What is on disk where the commit log should be.
pub enum OnDisk {
    /// No commit log: a new data directory (or a damaged one; the caller decides).
    Missing,
    /// A commit log with no complete header: its creation was interrupted.
    Empty,
    /// A commit log in this format.
    Current {
        identity: Identity,
        replayed: Replayed,
        /// Bytes of whole records; a torn record after them is cut when the log is opened.
        valid_len: u64,
        /// The sequence number of the last record `replayed` holds.
        sequence: u64,
        /// Commit records after the last one known durable with its records, not in
        /// `replayed`: the caller keeps those whose records reached the disk.
        unflushed: Vec<Unflushed>,
    },
    /// A commit log of the first format: read, to be rewritten in this one.
    Legacy { replayed: Replayed },
}

/// A commit record written before its records were fsynced, after the last record known
/// durable with its records.
#[derive(Debug)]
pub struct Unflushed {
    /// Where the record starts in the file.
    pub position: u64,
    pub sequence: u64,
    pub commit: Commit,
}

/// Reads the commit log of `dir` without changing anything.
pub fn read(dir: &Path) -> Result<OnDisk, StorageError> {
    let path = dir.join(COMMIT_LOG_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OnDisk::Missing),
        Err(e) => return Err(StorageError::io(&path, e)),
    };
    let identity = match decode_record(&bytes) {
        Decoded::Record {
            record: Record::Header(identity),
            ..
        } => identity,
        _ => {
            if let Some(replayed) = legacy::replay(&path, &bytes)? {
                return Ok(OnDisk::Legacy { replayed });
            }
            if bytes.len() < PREFIX_LEN + HEADER_BODY_LEN {
                return Ok(OnDisk::Empty);
            }
            return Err(StorageError::corruption(
                &path,
                0,
                "the file does not start with a Runnel commit log header",
            ));
        }
    };
    let mut replayed = Replayed::default();
    let mut position = 0usize;
    let mut sequence: Option<u64> = None;
    let mut settled_sequence = 0;
    let mut unflushed: Vec<Unflushed> = vec![];
    while position < bytes.len() {
        match decode_record(&bytes[position..]) {
            Decoded::Record {
                length,
                sequence: s,
                record,
            } => {
                if sequence.is_some_and(|last| s <= last) {
                    return Err(StorageError::corruption(
                        &path,
                        position as u64,
                        format!("commit sequence {s} after {}", sequence.unwrap_or(0)),
                    ));
                }
                sequence = Some(s);
                match record {
                    Record::Commit(commit) => {
                        // The log fsyncs this file only after every record named before
                        // it: the unflushed commits before a durable one are durable too.
                        for earlier in unflushed.drain(..) {
                            replayed.apply(earlier.commit);
                        }
                        replayed.apply(commit);
                        settled_sequence = s;
                    }
                    Record::Unflushed(commit) => unflushed.push(Unflushed {
                        position: position as u64,
                        sequence: s,
                        commit,
                    }),
                    Record::Header(_) if position == 0 => settled_sequence = s,
                    Record::Header(_) => {
                        return Err(StorageError::corruption(
                            &path,
                            position as u64,
                            "a second header record",
                        ));
                    }
                }
                position += length;
            }
            Decoded::Invalid { claimed_length } => {
                check_torn_tail(&path, &bytes, position, claimed_length)?;
                break;
            }
        }
    }
    Ok(OnDisk::Current {
        identity,
        replayed,
        valid_len: position as u64,
        sequence: settled_sequence,
        unflushed,
    })
}

/// An invalid record at `position` may only be the torn last write: nothing valid after it,
/// and no longer than one record can be. Anything else is corruption.
fn check_torn_tail(
    path: &Path,
    bytes: &[u8],
    position: usize,
    claimed_length: Option<usize>,
) -> Result<(), StorageError> {
    let next = claimed_length.map(|l| position + l);
    let valid_after = next.is_some_and(|n| {
        n < bytes.len() && matches!(decode_record(&bytes[n..]), Decoded::Record { .. })
    });
    if valid_after {
        return Err(StorageError::corruption(
            path,
            position as u64,
            "invalid commit record followed by valid ones",
        ));
    }
    let tail = bytes.len() - position;
    if tail > RECORD_LEN_MAX {
        return Err(StorageError::corruption(
            path,
            position as u64,
            format!(
                "{tail} bytes that are not commit records (a torn write is at most one record)"
            ),
        ));
    }
    Ok(())
}

/// The commit log, open for appending. Owned by the log's writer thread.
#[derive(Debug)]
pub struct CommitLog {
    path: PathBuf,
    disk: Disk,
    identity: Identity,
    sequence: u64,
    size_bytes: u64,
    /// The size after the last rewrite: the file is rewritten when it doubles.
    rewritten_bytes: u64,
}

impl CommitLog {
    /// Creates the commit log of a new data directory: a header, fsynced with its directory.
    pub fn create(disk: &Disk, dir: &Path) -> Result<CommitLog, StorageError> {
        let path = dir.join(COMMIT_LOG_FILE);
        let identity = Identity::new();
        let header = encode_header(1, &identity);
        let tmp = dir.join(format!("{COMMIT_LOG_FILE}.new"));
        disk.write_file(&tmp, &[&header])?;
        disk.rename(&tmp, &path)?;
        disk.sync_dir(dir)?;
        tracing::info!(data_dir = %dir.display(), id = identity.hex(), "created a new data directory");
        Ok(CommitLog::append_to(
            disk,
            path,
            identity,
            1,
            header.len() as u64,
        ))
    }

    /// Opens the commit log [`read`] found, cutting a torn last record off.
    pub fn resume(
        disk: &Disk,
        dir: &Path,
        identity: Identity,
        valid_len: u64,
        sequence: u64,
    ) -> Result<CommitLog, StorageError> {
        let path = dir.join(COMMIT_LOG_FILE);
        let len = fs::metadata(&path)
            .map_err(|e| StorageError::io(&path, e))?
            .len();
        if len > valid_len {
            tracing::info!(path = %path.display(), position = valid_len, cut_bytes = len - valid_len, "truncating torn commit log tail");
            disk.set_len(&path, valid_len)?;
            disk.sync(&path)?;
        }
        Ok(CommitLog::append_to(
            disk, path, identity, sequence, valid_len,
        ))
    }

    /// Replaces a commit log of the first format with one in this format holding `state`.
    pub fn migrate(disk: &Disk, dir: &Path, state: &Replayed) -> Result<CommitLog, StorageError> {
        let path = dir.join(COMMIT_LOG_FILE);
        let mut log = CommitLog {
            disk: disk.clone(),
            path,
            identity: Identity::new(),
            sequence: 0,
            size_bytes: 0,
            rewritten_bytes: 0,
        };
        let meta: Vec<(u64, Arc<Vec<u8>>)> =
            state.meta.iter().map(|(k, v)| (*k, v.clone())).collect();
        log.rewrite(&state.ends, &state.starts, &meta)?;
        tracing::info!(path = %log.path.display(), "rewrote the commit log in format {FORMAT}");
        Ok(log)
    }

    fn append_to(
        disk: &Disk,
        path: PathBuf,
        identity: Identity,
        sequence: u64,
        size_bytes: u64,
    ) -> CommitLog {
        CommitLog {
            path,
            disk: disk.clone(),
            identity,
            sequence,
            size_bytes,
            rewritten_bytes: size_bytes,
        }
    }

    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// Appends a commit record and makes it durable. A record over [`RECORD_LEN_MAX`] is
    /// refused before anything is written. If the write fails, the file is cut back to where
    /// it was, and the log stays usable ([`CommitError::NotWritten`]); if the fsync fails,
    /// whether the record is on disk is unknown ([`CommitError::Unknown`]).
    pub fn commit(&mut self, commit: &Commit) -> Result<(), CommitError> {
        self.write_record(commit, KIND_COMMIT)?;
        self.disk.sync(&self.path).map_err(CommitError::Unknown)?;
        self.sequence += 1;
        Ok(())
    }

    /// Appends a commit record whose records are not fsynced yet, without fsyncing it: it
    /// is durable after the next [`CommitLog::sync`], which must follow the fsync of its
    /// records. If the write fails, the file is cut back ([`CommitError::NotWritten`]).
    pub fn commit_unflushed(&mut self, commit: &Commit) -> Result<(), CommitError> {
        self.write_record(commit, KIND_UNFLUSHED)?;
        self.sequence += 1;
        Ok(())
    }

    /// Makes every record written so far durable.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.disk.sync(&self.path)
    }

    /// Writes the next record (not yet counted in the sequence), cutting a failed write back.
    fn write_record(&mut self, commit: &Commit, kind: u8) -> Result<(), CommitError> {
        let length = commit.record_len();
        if length > RECORD_LEN_MAX {
            return Err(CommitError::NotWritten(StorageError::TooLarge(format!(
                "a commit record of {length} bytes is over the limit of {RECORD_LEN_MAX}"
            ))));
        }
        let record = encode_commit(self.sequence + 1, commit, kind);
        if let Err(error) = self.disk.write_at(&self.path, &record, self.size_bytes) {
            // A partial record must not stay in front of the next one.
            return match self.disk.set_len(&self.path, self.size_bytes) {
                Ok(()) => Err(CommitError::NotWritten(error)),
                Err(_) => Err(CommitError::Unknown(error)),
            };
        }
        self.size_bytes += record.len() as u64;
        Ok(())
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Whether the file has grown enough since its last rewrite to be rewritten: to twice
    /// that size, and past `floor_bytes`.
    pub fn rewrite_due(&self, floor_bytes: u64) -> bool {
        self.size_bytes > floor_bytes.max(2 * self.rewritten_bytes)
    }

    /// Replaces the log with a header and records holding `ends`, `starts` and `meta` (the
    /// live state), atomically: write a new file, fsync, rename over the old one, fsync the
    /// directory.
    pub fn rewrite(
        &mut self,
        ends: &CommittedEnds,
        starts: &CommittedEnds,
        meta: &[(u64, Arc<Vec<u8>>)],
    ) -> Result<(), StorageError> {
        let dir = self
            .path
            .parent()
            .expect("the commit log lives in a directory")
            .to_path_buf();
        let tmp = dir.join(format!("{COMMIT_LOG_FILE}.new"));
        let (records, sequence) =
            snapshot_records(self.sequence + 1, &self.identity, ends, starts, meta);
        let parts: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        self.disk.write_file(&tmp, &parts)?;
        self.disk.rename(&tmp, &self.path)?;
        self.disk.sync_dir(&dir)?;
        self.sequence = sequence;
        self.size_bytes = records.iter().map(|r| r.len() as u64).sum();
        self.rewritten_bytes = self.size_bytes;
        Ok(())
    }
}

/// A header and records holding the live state, numbered from `sequence`; and the last
/// sequence number used.
fn snapshot_records(
    mut sequence: u64,
    identity: &Identity,
    ends: &CommittedEnds,
    starts: &CommittedEnds,
    meta: &[(u64, Arc<Vec<u8>>)],
) -> (Vec<Vec<u8>>, u64) {
    let mut records = vec![encode_header(sequence, identity)];
    for commit in snapshot_commits(ends, starts, meta) {
        sequence += 1;
        records.push(encode_commit(sequence, &commit, KIND_COMMIT));
    }
    (records, sequence)
}

/// A whole commit log holding the live state (`ends`, `starts`, `meta`) of the data
/// directory `identity`: what a rewrite would leave, as bytes (a checkpoint in the object
/// store, from which a data directory is restored).
pub fn snapshot_file(
    identity: &Identity,
    ends: &CommittedEnds,
    starts: &CommittedEnds,
    meta: &[(u64, Arc<Vec<u8>>)],
) -> Vec<u8> {
    snapshot_records(1, identity, ends, starts, meta).0.concat()
}

/// Why a commit failed.
#[derive(Debug)]
pub enum CommitError {
    /// Nothing of the record is in the file; the log can go on.
    NotWritten(StorageError),
    /// The record may or may not be durable: only recovery can tell.
    Unknown(StorageError),
}

/// The live state as commit records of about [`SNAPSHOT_RECORD_BYTES`] each (a value longer
/// than that gets a record of its own).
fn snapshot_commits(
    ends: &CommittedEnds,
    starts: &CommittedEnds,
    meta: &[(u64, Arc<Vec<u8>>)],
) -> Vec<Commit> {
    let sorted = |map: &CommittedEnds| {
        let mut entries: Vec<PartitionOffset> =
            map.iter().map(|((t, p), o)| (*t, *p, *o)).collect();
        entries.sort();
        entries
    };
    let mut commits = vec![];
    let mut current = Commit::default();
    let flush = |current: &mut Commit, commits: &mut Vec<Commit>| {
        if current.record_len() > Commit::default().record_len() {
            commits.push(std::mem::take(current));
        }
    };
    for entry in sorted(ends) {
        current.ends.push(entry);
        if current.record_len() >= SNAPSHOT_RECORD_BYTES {
            flush(&mut current, &mut commits);
        }
    }
    for entry in sorted(starts) {
        current.starts.push(entry);
        if current.record_len() >= SNAPSHOT_RECORD_BYTES {
            flush(&mut current, &mut commits);
        }
    }
    let mut meta: Vec<&(u64, Arc<Vec<u8>>)> = meta.iter().collect();
    meta.sort_by_key(|(k, _)| *k);
    for (key, value) in meta {
        if current.record_len() + 12 + value.len() > SNAPSHOT_RECORD_BYTES {
            flush(&mut current, &mut commits);
        }
        current.meta.push((*key, Some(value.to_vec())));
    }
    flush(&mut current, &mut commits);
    commits
}

/// The first format: records without a header or a kind, and no log start offsets.
mod legacy {
    use super::*;

    /// Replays `bytes` as a first-format commit log; `None` if its first record is not one.
    pub(super) fn replay(path: &Path, bytes: &[u8]) -> Result<Option<Replayed>, StorageError> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let mut replayed = Replayed::default();
        let mut position = 0;
        while position < bytes.len() {
            match decode(&bytes[position..]) {
                Some((length, commit)) => {
                    replayed.apply(commit);
                    position += length;
                }
                None if position == 0 => return Ok(None),
                None => {
                    check_torn_tail(path, bytes, position, None)?;
                    break;
                }
            }
        }
        Ok(Some(replayed))
    }

    fn decode(bytes: &[u8]) -> Option<(usize, Commit)> {
        let length = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
        if !(20..=RECORD_LEN_MAX).contains(&length) || bytes.len() < length {
            return None;
        }
        let stored = u32::from_le_bytes(bytes[4..8].try_into().ok()?);
        if crc32fast::hash(&bytes[8..length]) != stored {
            return None;
        }
        let mut body = Cursor {
            bytes: &bytes[..length],
            at: 16,
        };
        let ends = body.entries()?;
        let mut meta = vec![];
        if body.at < length {
            let count = body.u32()?;
            for _ in 0..count {
                let key = body.u64()?;
                let len = body.u32()?;
                if len == DELETED {
                    meta.push((key, None));
                } else {
                    meta.push((key, Some(body.take(len as usize)?.to_vec())));
                }
            }
        }
        (body.at == length).then_some((
            length,
            Commit {
                ends,
                starts: vec![],
                meta,
            },
        ))
    }

    #[cfg(test)]
    pub(super) fn encode(sequence: u64, ends: &[PartitionOffset], meta: &[MetaUpdate]) -> Vec<u8> {
        let mut out = vec![0u8; 8];
        out.extend_from_slice(&sequence.to_le_bytes());
        out.extend_from_slice(&(ends.len() as u32).to_le_bytes());
        for (t, p, o) in ends {
            out.extend_from_slice(&t.0.to_le_bytes());
            out.extend_from_slice(&p.0.to_le_bytes());
            out.extend_from_slice(&o.0.to_le_bytes());
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
        let length = out.len() as u32;
        out[0..4].copy_from_slice(&length.to_le_bytes());
        seal(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn end(t: u64, p: u32, o: u64) -> PartitionOffset {
        (TopicId(t), PartitionId(p), Offset(o))
    }

    fn ends(entries: &[PartitionOffset]) -> Commit {
        Commit {
            ends: entries.to_vec(),
            ..Commit::default()
        }
    }

    fn reopen(dir: &Path) -> (CommitLog, Replayed) {
        match read(dir).unwrap() {
            OnDisk::Current {
                identity,
                replayed,
                valid_len,
                sequence,
                ..
            } => (
                CommitLog::resume(&Disk::default(), dir, identity, valid_len, sequence).unwrap(),
                replayed,
            ),
            _ => panic!("expected a current commit log"),
        }
    }

    #[test]
    fn a_new_log_is_a_header_and_replays_empty() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(read(d.path()).unwrap(), OnDisk::Missing));
        let created = CommitLog::create(&Disk::default(), d.path())
            .unwrap()
            .identity();
        let (log, replayed) = reopen(d.path());
        assert_eq!(log.identity(), created);
        assert_eq!(replayed.commits, 0);
        // A header cut short is an interrupted creation, not a log.
        let path = d.path().join(COMMIT_LOG_FILE);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..10]).unwrap();
        assert!(matches!(read(d.path()).unwrap(), OnDisk::Empty));
        fs::write(&path, b"").unwrap();
        assert!(matches!(read(d.path()).unwrap(), OnDisk::Empty));
    }

    #[test]
    fn replay_keeps_the_latest_end_start_and_value() {
        let d = tempfile::tempdir().unwrap();
        let mut log = CommitLog::create(&Disk::default(), d.path()).unwrap();
        log.commit(&Commit {
            ends: vec![end(1, 0, 10), end(1, 1, 5)],
            starts: vec![],
            meta: vec![(7, Some(b"epoch 1".to_vec())), (8, Some(b"x".to_vec()))],
        })
        .unwrap();
        log.commit(&Commit {
            ends: vec![end(1, 0, 12)],
            starts: vec![end(1, 0, 4)],
            meta: vec![(7, Some(b"epoch 2".to_vec())), (8, None)],
        })
        .unwrap();
        drop(log);
        let (mut log, replayed) = reopen(d.path());
        assert_eq!(replayed.ends[&(TopicId(1), PartitionId(0))], Offset(12));
        assert_eq!(replayed.ends[&(TopicId(1), PartitionId(1))], Offset(5));
        assert_eq!(replayed.starts[&(TopicId(1), PartitionId(0))], Offset(4));
        assert_eq!(replayed.meta[&7].as_slice(), b"epoch 2");
        assert!(!replayed.meta.contains_key(&8), "deleted");
        // A rewrite keeps all of it.
        let meta: Vec<_> = replayed.meta.iter().map(|(k, v)| (*k, v.clone())).collect();
        log.rewrite(&replayed.ends, &replayed.starts, &meta)
            .unwrap();
        drop(log);
        let (_, again) = reopen(d.path());
        assert_eq!(again.ends, replayed.ends);
        assert_eq!(again.starts, replayed.starts);
        assert_eq!(again.meta, replayed.meta);
    }

    #[test]
    fn unflushed_commits_are_left_to_the_caller_until_a_durable_one_follows() {
        let d = tempfile::tempdir().unwrap();
        let mut log = CommitLog::create(&Disk::default(), d.path()).unwrap();
        log.commit(&ends(&[end(1, 0, 10)])).unwrap();
        let first_unflushed = log.size_bytes();
        log.commit_unflushed(&ends(&[end(1, 0, 20)])).unwrap();
        log.commit_unflushed(&ends(&[end(1, 0, 30)])).unwrap();
        log.sync().unwrap();
        let OnDisk::Current {
            replayed,
            sequence,
            unflushed,
            ..
        } = read(d.path()).unwrap()
        else {
            panic!("expected a current commit log")
        };
        // Replayed holds the durable prefix; the rest is named with where it starts.
        assert_eq!(replayed.ends[&(TopicId(1), PartitionId(0))], Offset(10));
        assert_eq!(sequence, 2);
        let found: Vec<_> = unflushed
            .iter()
            .map(|u| (u.position, u.sequence, u.commit.ends.clone()))
            .collect();
        assert_eq!(
            found,
            vec![
                (first_unflushed, 3, vec![end(1, 0, 20)]),
                (
                    first_unflushed + ends(&[]).record_len() as u64 + ENTRY_LEN as u64,
                    4,
                    vec![end(1, 0, 30)]
                ),
            ]
        );
        // A durable commit after them says they were flushed before it.
        log.commit(&ends(&[end(2, 0, 5)])).unwrap();
        let (_, replayed) = reopen(d.path());
        assert_eq!(replayed.ends[&(TopicId(1), PartitionId(0))], Offset(30));
        assert_eq!(replayed.ends[&(TopicId(2), PartitionId(0))], Offset(5));
        assert_eq!(replayed.commits, 4);
    }

    #[test]
    fn torn_last_record_is_cut_off() {
        let d = tempfile::tempdir().unwrap();
        let mut log = CommitLog::create(&Disk::default(), d.path()).unwrap();
        log.commit(&ends(&[end(1, 0, 10)])).unwrap();
        let good = log.size_bytes();
        log.commit(&Commit {
            ends: vec![end(1, 0, 20)],
            starts: vec![],
            meta: vec![(3, Some(vec![1; 40]))],
        })
        .unwrap();
        drop(log);
        let path = d.path().join(COMMIT_LOG_FILE);
        let len = fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 7).unwrap();
        let (mut log, replayed) = reopen(d.path());
        assert_eq!(replayed.ends[&(TopicId(1), PartitionId(0))], Offset(10));
        assert!(replayed.meta.is_empty());
        assert_eq!(fs::metadata(&path).unwrap().len(), good);
        log.commit(&ends(&[end(1, 0, 11)])).unwrap();
        let (_, replayed) = reopen(d.path());
        assert_eq!(replayed.ends[&(TopicId(1), PartitionId(0))], Offset(11));
    }

    #[test]
    fn corruption_before_the_tail_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let mut log = CommitLog::create(&Disk::default(), d.path()).unwrap();
        let header = log.size_bytes() as usize;
        for e in 1..=3 {
            log.commit(&ends(&[end(1, 0, e)])).unwrap();
        }
        drop(log);
        let path = d.path().join(COMMIT_LOG_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[header + PREFIX_LEN + 6] ^= 1; // inside the first commit's entry
        fs::write(&path, &bytes).unwrap();
        let err = read(d.path()).err().expect("corruption");
        assert!(
            matches!(err, StorageError::Corruption { position, .. } if position == header as u64),
            "{err}"
        );
    }

    #[test]
    fn more_garbage_than_one_record_is_corruption_not_a_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        let mut log = CommitLog::create(&Disk::default(), d.path()).unwrap();
        log.commit(&ends(&[end(1, 0, 1)])).unwrap();
        drop(log);
        let path = d.path().join(COMMIT_LOG_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend(std::iter::repeat_n(0xab, RECORD_LEN_MAX + 1));
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read(d.path()).err(),
            Some(StorageError::Corruption { .. })
        ));
    }

    #[test]
    fn a_record_over_the_limit_is_refused_and_the_log_goes_on() {
        let d = tempfile::tempdir().unwrap();
        let mut log = CommitLog::create(&Disk::default(), d.path()).unwrap();
        let huge = Commit {
            meta: vec![(1, Some(vec![0; RECORD_LEN_MAX]))],
            ..Commit::default()
        };
        assert!(matches!(
            log.commit(&huge),
            Err(CommitError::NotWritten(StorageError::TooLarge(_)))
        ));
        log.commit(&ends(&[end(1, 0, 1)])).unwrap();
        let (_, replayed) = reopen(d.path());
        assert_eq!(replayed.ends[&(TopicId(1), PartitionId(0))], Offset(1));
    }

    #[test]
    fn malformed_records_are_not_records() {
        let commit = Commit {
            ends: vec![end(1, 0, 1)],
            starts: vec![end(1, 0, 0)],
            meta: vec![(9, Some(vec![7; 16])), (10, None)],
        };
        let record = encode_commit(1, &commit, KIND_COMMIT);
        match decode_record(&record) {
            Decoded::Record {
                record: Record::Commit(c),
                ..
            } => assert_eq!(c, commit),
            _ => panic!("a record"),
        }
        for cut in 0..record.len() {
            assert!(
                matches!(decode_record(&record[..cut]), Decoded::Invalid { .. }),
                "prefix {cut}"
            );
        }
        // A count that claims more than the record holds, with a correct checksum.
        let mut lying = record.clone();
        lying[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let lying = seal(lying);
        assert!(matches!(decode_record(&lying), Decoded::Invalid { .. }));
        // Every single flipped byte is caught.
        for i in 0..record.len() {
            let mut flipped = record.clone();
            flipped[i] ^= 0x10;
            assert!(
                !matches!(decode_record(&flipped), Decoded::Record { record: Record::Commit(ref c), .. } if *c == commit),
                "byte {i}"
            );
        }
    }

    #[test]
    fn rewrite_splits_the_snapshot_and_is_due_when_the_file_doubles() {
        let d = tempfile::tempdir().unwrap();
        let mut log = CommitLog::create(&Disk::default(), d.path()).unwrap();
        let mut ends_now = CommittedEnds::new();
        let mut meta = vec![];
        for g in 0..40u64 {
            meta.push((g, Arc::new(vec![g as u8; 100_000])));
        }
        for p in 0..1000 {
            ends_now.insert((TopicId(1), PartitionId(p)), Offset(p as u64));
        }
        log.rewrite(&ends_now, &CommittedEnds::new(), &meta)
            .unwrap();
        let size = log.size_bytes();
        assert!(size > 4_000_000);
        assert!(!log.rewrite_due(1024));
        while log.size_bytes() <= 2 * size {
            assert!(!log.rewrite_due(1024));
            log.commit(&Commit {
                meta: vec![(1000, Some(vec![1; 100_000]))],
                ..Commit::default()
            })
            .unwrap();
        }
        assert!(log.rewrite_due(1024));
        drop(log);
        let bytes = fs::read(d.path().join(COMMIT_LOG_FILE)).unwrap();
        let (_, replayed) = reopen(d.path());
        assert_eq!(replayed.meta.len(), 41);
        assert_eq!(replayed.ends.len(), 1000);
        // No snapshot record is much bigger than the chunk size.
        let mut position = 0;
        while position < bytes.len() {
            let length = u32::from_le_bytes(bytes[position..position + 4].try_into().unwrap());
            assert!((length as usize) < SNAPSHOT_RECORD_BYTES + 200_000);
            position += length as usize;
        }
    }

    #[test]
    fn a_first_format_log_is_read_and_migrated() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(COMMIT_LOG_FILE);
        let mut bytes = legacy::encode(1, &[end(1, 0, 10)], &[]);
        bytes.extend(legacy::encode(
            2,
            &[end(1, 0, 12)],
            &[(5, Some(b"v".to_vec()))],
        ));
        fs::write(&path, &bytes).unwrap();
        let OnDisk::Legacy { replayed } = read(d.path()).unwrap() else {
            panic!("a legacy log");
        };
        assert_eq!(replayed.ends[&(TopicId(1), PartitionId(0))], Offset(12));
        CommitLog::migrate(&Disk::default(), d.path(), &replayed).unwrap();
        let (_, again) = reopen(d.path());
        assert_eq!(again.ends, replayed.ends);
        assert_eq!(again.meta[&5].as_slice(), b"v");
    }
}
