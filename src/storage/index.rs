//! A segment's sparse offset index and time index, in memory and as bytes.
//!
//! The offset index maps an offset to the byte position of a frame at or before it: one entry
//! per `index_interval_bytes` of log, so a lookup reads a few frame headers at most. The time
//! index records the running maximum of record timestamps at those same points; because the
//! running maximum never decreases, "the first frame that may hold a timestamp ≥ t" is a
//! binary search, as in Kafka's `offsetsForTimes`.
//!
//! On disk (`<base>.index`, `<base>.timeindex`) entries are fixed-size little-endian records
//! appended as frames are written. They are hints, not truth: recovery validates them against
//! the frames and rebuilds them when they disagree. Pure module: no I/O.

use super::types::Offset;

pub const OFFSET_ENTRY_LEN: usize = 8;
pub const TIME_ENTRY_LEN: usize = 16;

/// A frame that starts at `base + relative_offset`, at byte `position` of the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// Every record before the end of the frame at `position` (which starts at
/// `base + relative_offset`) has a timestamp ≤ `max_timestamp_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub max_timestamp_ms: i64,
    pub relative_offset: u32,
    pub position: u32,
}

impl OffsetEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
    }
}

impl TimeEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.max_timestamp_ms.to_le_bytes());
        out.extend_from_slice(&self.relative_offset.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
    }
}

/// Decodes an offset index file. `None` if the bytes are not a well-formed index: a partial
/// entry, or entries not strictly increasing.
pub fn decode_offset_index(bytes: &[u8]) -> Option<Vec<OffsetEntry>> {
    if !bytes.len().is_multiple_of(OFFSET_ENTRY_LEN) {
        return None;
    }
    let entries: Vec<OffsetEntry> = bytes
        .chunks_exact(OFFSET_ENTRY_LEN)
        .map(|c| OffsetEntry {
            relative_offset: u32::from_le_bytes(c[0..4].try_into().expect("4 bytes")),
            position: u32::from_le_bytes(c[4..8].try_into().expect("4 bytes")),
        })
        .collect();
    let increasing = entries
        .windows(2)
        .all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position);
    increasing.then_some(entries)
}

/// Decodes a time index file; `None` if malformed (see [`decode_offset_index`]).
pub fn decode_time_index(bytes: &[u8]) -> Option<Vec<TimeEntry>> {
    if !bytes.len().is_multiple_of(TIME_ENTRY_LEN) {
        return None;
    }
    let entries: Vec<TimeEntry> = bytes
        .chunks_exact(TIME_ENTRY_LEN)
        .map(|c| TimeEntry {
            max_timestamp_ms: i64::from_le_bytes(c[0..8].try_into().expect("8 bytes")),
            relative_offset: u32::from_le_bytes(c[8..12].try_into().expect("4 bytes")),
            position: u32::from_le_bytes(c[12..16].try_into().expect("4 bytes")),
        })
        .collect();
    let increasing = entries.windows(2).all(|w| {
        w[0].max_timestamp_ms < w[1].max_timestamp_ms
            && w[0].relative_offset < w[1].relative_offset
            && w[0].position < w[1].position
    });
    increasing.then_some(entries)
}

/// The in-memory index of one segment.
#[derive(Debug, Clone)]
pub struct SegmentIndex {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    /// Bytes of frames written since the last offset entry.
    bytes_since_entry: u64,
    /// Largest record timestamp of the whole segment so far (`i64::MIN` when empty).
    pub max_timestamp_ms: i64,
}

impl Default for SegmentIndex {
    fn default() -> SegmentIndex {
        SegmentIndex {
            offsets: vec![],
            times: vec![],
            bytes_since_entry: 0,
            max_timestamp_ms: i64::MIN,
        }
    }
}

impl SegmentIndex {
    pub fn new() -> SegmentIndex {
        SegmentIndex::default()
    }

    pub fn from_entries(offsets: Vec<OffsetEntry>, times: Vec<TimeEntry>) -> SegmentIndex {
        let max_timestamp_ms = times.last().map_or(i64::MIN, |t| t.max_timestamp_ms);
        SegmentIndex {
            offsets,
            times,
            bytes_since_entry: 0,
            max_timestamp_ms,
        }
    }

    /// Records a frame appended at `position`; returns the entries to append to the index
    /// files, if this frame gets any.
    pub fn on_frame(
        &mut self,
        relative_offset: u32,
        position: u32,
        frame_len: u32,
        frame_max_timestamp_ms: i64,
        interval_bytes: u64,
    ) -> (Option<OffsetEntry>, Option<TimeEntry>) {
        let due = self.offsets.is_empty() || self.bytes_since_entry >= interval_bytes;
        self.bytes_since_entry += frame_len as u64;
        let new_max = frame_max_timestamp_ms > self.max_timestamp_ms;
        if new_max {
            self.max_timestamp_ms = frame_max_timestamp_ms;
        }
        if !due {
            return (None, None);
        }
        self.bytes_since_entry = frame_len as u64;
        let offset_entry = OffsetEntry {
            relative_offset,
            position,
        };
        self.offsets.push(offset_entry);
        let time_entry = self.time_entry_due(relative_offset, position);
        (Some(offset_entry), time_entry)
    }

    /// A final time entry when a segment is sealed, so that the sealed segment's largest
    /// timestamp is known from its time index alone.
    pub fn seal_entry(&mut self, last_frame: OffsetEntry) -> Option<TimeEntry> {
        self.time_entry_due(last_frame.relative_offset, last_frame.position)
    }

    fn time_entry_due(&mut self, relative_offset: u32, position: u32) -> Option<TimeEntry> {
        let last = self.times.last();
        let grows = last.is_none_or(|t| {
            self.max_timestamp_ms > t.max_timestamp_ms
                && relative_offset > t.relative_offset
                && position > t.position
        });
        if !grows || self.max_timestamp_ms == i64::MIN {
            return None;
        }
        let entry = TimeEntry {
            max_timestamp_ms: self.max_timestamp_ms,
            relative_offset,
            position,
        };
        self.times.push(entry);
        Some(entry)
    }

    /// Byte position of a frame at or before `offset`, to start scanning from.
    pub fn position_for_offset(&self, base: Offset, offset: Offset) -> u64 {
        let relative = offset.0.saturating_sub(base.0);
        let i = self
            .offsets
            .partition_point(|e| e.relative_offset as u64 <= relative);
        if i == 0 {
            0
        } else {
            self.offsets[i - 1].position as u64
        }
    }

    /// Byte position and offset of a frame at or before the first record that may have a
    /// timestamp ≥ `timestamp_ms`. Records before it all have smaller timestamps.
    pub fn start_for_timestamp(&self, base: Offset, timestamp_ms: i64) -> (u64, Offset) {
        let i = self
            .times
            .partition_point(|e| e.max_timestamp_ms < timestamp_ms);
        if i == 0 {
            (0, base)
        } else {
            let e = self.times[i - 1];
            (e.position as u64, base.plus(e.relative_offset as u64))
        }
    }

    /// Drops entries at or after `position` (the log was truncated there). The segment's
    /// largest timestamp is kept: frames between entries are not tracked one by one, and an
    /// over-estimate only costs a scan where an under-estimate would skip live records.
    pub fn truncate_to(&mut self, position: u64) {
        self.offsets.retain(|e| (e.position as u64) < position);
        self.times.retain(|e| (e.position as u64) < position);
        self.bytes_since_entry = u64::MAX / 2; // the next frame gets an entry
    }

    pub fn encode_offsets(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY_LEN);
        self.offsets.iter().for_each(|e| e.encode(&mut out));
        out
    }

    pub fn encode_times(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.times.len() * TIME_ENTRY_LEN);
        self.times.iter().for_each(|e| e.encode(&mut out));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_entries_every_interval() {
        let mut index = SegmentIndex::new();
        let mut position = 0u32;
        for i in 0..100u32 {
            index.on_frame(i * 10, position, 1000, i as i64, 4096);
            position += 1000;
        }
        // First frame, then one roughly every 4 KiB of frames.
        assert!(
            index.offsets.len() >= 20 && index.offsets.len() <= 26,
            "{}",
            index.offsets.len()
        );
        assert_eq!(
            index.offsets[0],
            OffsetEntry {
                relative_offset: 0,
                position: 0
            }
        );
        let bytes = index.encode_offsets();
        assert_eq!(decode_offset_index(&bytes).unwrap(), index.offsets);
        let times = index.encode_times();
        assert_eq!(decode_time_index(&times).unwrap(), index.times);
    }

    #[test]
    fn offset_lookup_finds_frame_at_or_before() {
        let index = SegmentIndex::from_entries(
            vec![
                OffsetEntry {
                    relative_offset: 0,
                    position: 0,
                },
                OffsetEntry {
                    relative_offset: 100,
                    position: 5000,
                },
                OffsetEntry {
                    relative_offset: 200,
                    position: 9000,
                },
            ],
            vec![],
        );
        let base = Offset(1000);
        assert_eq!(index.position_for_offset(base, Offset(1000)), 0);
        assert_eq!(index.position_for_offset(base, Offset(1099)), 0);
        assert_eq!(index.position_for_offset(base, Offset(1100)), 5000);
        assert_eq!(index.position_for_offset(base, Offset(1250)), 9000);
    }

    #[test]
    fn time_lookup_skips_only_older_records() {
        let index = SegmentIndex::from_entries(
            vec![],
            vec![
                TimeEntry {
                    max_timestamp_ms: 10,
                    relative_offset: 0,
                    position: 0,
                },
                TimeEntry {
                    max_timestamp_ms: 20,
                    relative_offset: 50,
                    position: 800,
                },
                TimeEntry {
                    max_timestamp_ms: 30,
                    relative_offset: 90,
                    position: 1600,
                },
            ],
        );
        let base = Offset(0);
        assert_eq!(index.start_for_timestamp(base, 5), (0, Offset(0)));
        assert_eq!(index.start_for_timestamp(base, 10), (0, Offset(0)));
        assert_eq!(index.start_for_timestamp(base, 11), (0, Offset(0)));
        assert_eq!(index.start_for_timestamp(base, 25), (800, Offset(50)));
        assert_eq!(index.start_for_timestamp(base, 99), (1600, Offset(90)));
        assert_eq!(index.max_timestamp_ms, 30);
    }

    #[test]
    fn malformed_index_bytes_are_rejected() {
        assert!(decode_offset_index(&[1, 2, 3]).is_none());
        let mut bytes = vec![];
        OffsetEntry {
            relative_offset: 5,
            position: 100,
        }
        .encode(&mut bytes);
        OffsetEntry {
            relative_offset: 3,
            position: 200,
        }
        .encode(&mut bytes);
        assert!(decode_offset_index(&bytes).is_none());
        assert!(decode_time_index(&[0; 15]).is_none());
    }

    #[test]
    fn truncation_drops_entries_past_the_cut() {
        let mut index = SegmentIndex::new();
        for i in 0..10u32 {
            index.on_frame(i, i * 100, 100, i as i64 * 10, 0);
        }
        index.truncate_to(450);
        assert_eq!(index.offsets.len(), 5);
        assert_eq!(index.times.len(), 5);
        assert!(index.max_timestamp_ms >= 40, "never under-estimated");
        let (entry, _) = index.on_frame(5, 450, 100, 1, 1 << 30);
        assert!(entry.is_some(), "the frame after a truncation is indexed");
    }
}
