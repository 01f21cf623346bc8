//! Session windows in continuous queries.
//!
//! A session of a key is a run of its rows in time order, each less than the gap after the
//! one before; its bounds are its first time and its last time plus the gap, so two runs
//! are one session exactly when each starts before the other ends. An epoch's rows form
//! sessions among themselves (the query's `SESSION` rewrite runs over the epoch's records
//! alone): *pieces*. A piece joins the key's open sessions it overlaps, and may bridge two
//! of them into one. The aggregation's groups are sessions — its group columns are the key,
//! `window_start` and `window_end` — so a merge upserts the merged session's group (the
//! merge of its pieces' and absorbed sessions' partial states) and removes the groups of
//! absorbed sessions whose bounds changed. [`Sessions`] keeps each key's open sessions'
//! bounds to find them.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, TimestampMicrosecondArray, UInt32Array,
};
use arrow::compute::{cast, filter_record_batch, take};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMicrosecondType};
use arrow::row::{RowConverter, SortField};

use crate::error::{Error, Result};

/// Where a session aggregation's state keeps a session's key and bounds: columns of its
/// group columns.
#[derive(Debug, Clone)]
pub struct SessionColumns {
    pub keys: Vec<usize>,
    pub start: usize,
    pub end: usize,
}

/// The bounds of a session, in microseconds since the epoch: `[start, end)`.
type Bounds = (i64, i64);

/// The open sessions of every key.
pub struct Sessions {
    columns: SessionColumns,
    converter: RowConverter,
    open: HashMap<Box<[u8]>, Vec<Bounds>>,
}

/// What an epoch's pieces do to the sessions.
struct Merge {
    /// The group columns of the open sessions the pieces overlap (as the state's leading
    /// columns, the pieces' other group columns beside them): their stored rows are merged
    /// with the pieces.
    absorbed: RecordBatch,
    /// Per key touched, its open sessions after the merge.
    after: Vec<(Box<[u8]>, Vec<Bounds>)>,
}

fn internal(e: arrow::error::ArrowError) -> Error {
    Error::Internal(format!("session windows: {e}"))
}

/// The values of a time column, in microseconds.
fn micros(column: &ArrayRef) -> Result<Vec<Option<i64>>> {
    let micros =
        cast(column, &DataType::Timestamp(TimeUnit::Microsecond, None)).map_err(internal)?;
    Ok(micros
        .as_primitive::<TimestampMicrosecondType>()
        .iter()
        .collect())
}

/// Microseconds as a time column of `data_type`.
fn of_type(values: Vec<i64>, data_type: &DataType) -> Result<ArrayRef> {
    let micros: ArrayRef = Arc::new(TimestampMicrosecondArray::from(values));
    cast(&micros, data_type).map_err(internal)
}

/// Joins the sorted `bounds` of one key that overlap: each starting before the one before
/// it ends.
fn joined(mut bounds: Vec<Bounds>) -> Vec<Bounds> {
    bounds.sort_unstable();
    let mut out: Vec<Bounds> = Vec::with_capacity(bounds.len());
    for (start, end) in bounds {
        match out.last_mut() {
            Some(last) if start < last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// The one of `sessions` (sorted, apart) that holds `start`.
fn holding(sessions: &[Bounds], start: i64) -> Option<Bounds> {
    let at = sessions.partition_point(|s| s.0 <= start);
    sessions[..at].last().copied().filter(|s| start < s.1)
}

impl Sessions {
    /// No sessions yet, of an aggregation whose state is `schema`.
    pub fn new(columns: SessionColumns, schema: &SchemaRef) -> Result<Sessions> {
        let fields = columns
            .keys
            .iter()
            .map(|k| SortField::new(schema.field(*k).data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields).map_err(internal)?;
        Ok(Sessions {
            columns,
            converter,
            open: HashMap::new(),
        })
    }

    /// How many sessions are open.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.values().map(Vec::len).sum()
    }

    /// Each row's key, as bytes.
    fn keys(&self, rows: &RecordBatch) -> Result<Vec<Box<[u8]>>> {
        if self.columns.keys.is_empty() {
            // Sessions over all rows: one key.
            return Ok(vec![Box::default(); rows.num_rows()]);
        }
        let columns: Vec<ArrayRef> = self
            .columns
            .keys
            .iter()
            .map(|k| rows.column(*k).clone())
            .collect();
        let converted = self.converter.convert_columns(&columns).map_err(internal)?;
        Ok(converted.iter().map(|r| r.data().into()).collect())
    }

    /// Each row's bounds; a session without them (it cannot happen: the rewrite leaves out
    /// rows without a time) is an error.
    fn bounds(&self, rows: &RecordBatch) -> Result<Vec<Bounds>> {
        let starts = micros(rows.column(self.columns.start))?;
        let ends = micros(rows.column(self.columns.end))?;
        starts
            .into_iter()
            .zip(ends)
            .map(|b| match b {
                (Some(start), Some(end)) => Ok((start, end)),
                _ => Err(Error::Internal("a session without bounds".into())),
            })
            .collect()
    }

    /// Takes in sessions as they are stored (`rows` in the state's leading columns), as a
    /// restore finds them.
    pub fn insert(&mut self, rows: &RecordBatch) -> Result<()> {
        for (key, bounds) in self.keys(rows)?.into_iter().zip(self.bounds(rows)?) {
            let sessions = self.open.entry(key).or_default();
            let at = sessions.partition_point(|s| *s < bounds);
            sessions.insert(at, bounds);
        }
        Ok(())
    }

    /// Merges the epoch's `pieces` (partial state, a row per piece) into the open sessions;
    /// `stored` looks up the stored rows of the sessions they absorb. Every partial state
    /// to merge, each labelled with the bounds of the session it is part of now, and the
    /// stored rows of the absorbed sessions whose bounds moved (their groups are gone).
    pub fn absorb(
        &mut self,
        pieces: RecordBatch,
        stored: impl FnOnce(&RecordBatch) -> Result<Option<RecordBatch>>,
    ) -> Result<(Vec<RecordBatch>, Option<RecordBatch>)> {
        let (keys, bounds) = (self.keys(&pieces)?, self.bounds(&pieces)?);
        let merge = self.merge(&pieces, &keys, &bounds)?;
        let mut states = vec![self.rebound(&merge, &pieces, &keys, &bounds)?.0];
        let mut removed = None;
        if let Some(stored) = stored(&merge.absorbed)? {
            let (keys, bounds) = (self.keys(&stored)?, self.bounds(&stored)?);
            let (rebounded, moved) = self.rebound(&merge, &stored, &keys, &bounds)?;
            let moved = filter_record_batch(&stored, &BooleanArray::from(moved));
            removed = Some(moved.map_err(internal)?);
            states.push(rebounded);
        }
        self.apply(merge);
        Ok((states, removed))
    }

    /// What `pieces`, whose keys and bounds are `keys` and `bounds`, do to the open
    /// sessions.
    fn merge(&self, pieces: &RecordBatch, keys: &[Box<[u8]>], bounds: &[Bounds]) -> Result<Merge> {
        // Per key: one of its pieces' rows (for its key columns), and its pieces' bounds.
        let mut touched: HashMap<&[u8], (u32, Vec<Bounds>)> = HashMap::new();
        for (row, (key, bounds)) in keys.iter().zip(bounds).enumerate() {
            touched
                .entry(key)
                .or_insert_with(|| (row as u32, vec![]))
                .1
                .push(*bounds);
        }
        let (mut rows, mut starts, mut ends) = (vec![], vec![], vec![]);
        let mut after = Vec::with_capacity(touched.len());
        for (key, (row, new)) in touched {
            let open = self.open.get(key).map(Vec::as_slice).unwrap_or(&[]);
            let merged = joined(open.iter().chain(&new).copied().collect());
            for session in open {
                let into = holding(&merged, session.0);
                if new.iter().any(|piece| holding(&merged, piece.0) == into) {
                    rows.push(row);
                    starts.push(session.0);
                    ends.push(session.1);
                }
            }
            after.push((key.into(), merged));
        }
        let rows = UInt32Array::from(rows);
        let columns = pieces
            .columns()
            .iter()
            .map(|c| take(c, &rows, None))
            .collect::<std::result::Result<Vec<ArrayRef>, _>>()
            .map_err(internal)?;
        let absorbed = self.with_bounds(pieces.schema(), columns, starts, ends)?;
        Ok(Merge { absorbed, after })
    }

    /// `rows` (pieces, or absorbed sessions' stored rows, whose keys and bounds are `keys`
    /// and `bounds`) with the bounds of the sessions `merge` makes of them, and for each
    /// whether its bounds moved.
    fn rebound(
        &self,
        merge: &Merge,
        rows: &RecordBatch,
        keys: &[Box<[u8]>],
        bounds: &[Bounds],
    ) -> Result<(RecordBatch, Vec<bool>)> {
        let after: HashMap<&[u8], &[Bounds]> = merge
            .after
            .iter()
            .map(|(key, sessions)| (&**key, sessions.as_slice()))
            .collect();
        let (mut starts, mut ends, mut moved) = (vec![], vec![], vec![]);
        for (key, bounds) in keys.iter().zip(bounds) {
            let into = after
                .get(&**key)
                .and_then(|sessions| holding(sessions, bounds.0))
                .ok_or_else(|| Error::Internal("a session merged into none".into()))?;
            starts.push(into.0);
            ends.push(into.1);
            moved.push(into != *bounds);
        }
        let rows = self.with_bounds(rows.schema(), rows.columns().to_vec(), starts, ends)?;
        Ok((rows, moved))
    }

    /// `columns` with their session bounds replaced by `starts` and `ends`.
    fn with_bounds(
        &self,
        schema: SchemaRef,
        mut columns: Vec<ArrayRef>,
        starts: Vec<i64>,
        ends: Vec<i64>,
    ) -> Result<RecordBatch> {
        let (start, end) = (self.columns.start, self.columns.end);
        columns[start] = of_type(starts, columns[start].data_type())?;
        columns[end] = of_type(ends, columns[end].data_type())?;
        RecordBatch::try_new(schema, columns).map_err(internal)
    }

    /// The sessions after `merge`.
    fn apply(&mut self, merge: Merge) {
        for (key, sessions) in merge.after {
            self.open.insert(key, sessions);
        }
    }

    /// Forgets the sessions whose stored rows are `rows`: closed.
    pub fn close(&mut self, rows: &RecordBatch) -> Result<()> {
        for (key, bounds) in self.keys(rows)?.into_iter().zip(self.bounds(rows)?) {
            if let Some(sessions) = self.open.get_mut(&key) {
                sessions.retain(|s| *s != bounds);
                if sessions.is_empty() {
                    self.open.remove(&key);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    /// Rows of (key, window_start, window_end, count).
    fn rows(rows: &[(&str, i64, i64, i64)]) -> RecordBatch {
        let time = DataType::Timestamp(TimeUnit::Millisecond, None);
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("window_start", time.clone(), true),
            Field::new("window_end", time, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let ms = |f: fn(&(&str, i64, i64, i64)) -> i64| -> ArrayRef {
            Arc::new(arrow::array::TimestampMillisecondArray::from(
                rows.iter().map(f).collect::<Vec<_>>(),
            ))
        };
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                ms(|r| r.1),
                ms(|r| r.2),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    fn merge(s: &Sessions, pieces: &RecordBatch) -> Merge {
        let (keys, bounds) = (s.keys(pieces).unwrap(), s.bounds(pieces).unwrap());
        s.merge(pieces, &keys, &bounds).unwrap()
    }

    fn rebound(s: &Sessions, merge: &Merge, rows: &RecordBatch) -> (RecordBatch, Vec<bool>) {
        let (keys, bounds) = (s.keys(rows).unwrap(), s.bounds(rows).unwrap());
        s.rebound(merge, rows, &keys, &bounds).unwrap()
    }

    fn sessions() -> Sessions {
        let columns = SessionColumns {
            keys: vec![0],
            start: 1,
            end: 2,
        };
        Sessions::new(columns, &rows(&[]).schema()).unwrap()
    }

    /// The (key, start ms, end ms) of `batch`.
    fn bounds(batch: &RecordBatch) -> Vec<(String, i64, i64)> {
        let mut out: Vec<_> = (0..batch.num_rows())
            .map(|i| {
                let ms = |c: usize| {
                    batch
                        .column(c)
                        .as_primitive::<arrow::datatypes::TimestampMillisecondType>()
                        .value(i)
                };
                (
                    batch.column(0).as_string::<i32>().value(i).to_string(),
                    ms(1),
                    ms(2),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn pieces_join_the_sessions_they_overlap_and_bridge_them() {
        let mut s = sessions();
        // Open: a [0, 10) and [30, 40), b [0, 10).
        s.insert(&rows(&[("a", 30, 40, 1), ("a", 0, 10, 2), ("b", 0, 10, 3)]))
            .unwrap();
        assert_eq!(s.len(), 3);
        // a piece of a bridging both of a's sessions ([9, 31)), one of b inside its session,
        // one of c, new.
        let pieces = rows(&[("a", 9, 31, 4), ("b", 2, 5, 5), ("c", 100, 110, 6)]);
        let merge = merge(&s, &pieces);
        assert_eq!(
            bounds(&merge.absorbed),
            [
                ("a".into(), 0, 10),
                ("a".into(), 30, 40),
                ("b".into(), 0, 10)
            ],
            "the open sessions the pieces overlap"
        );
        let (rebounded, moved) = rebound(&s, &merge, &merge.absorbed);
        assert_eq!(
            bounds(&rebounded),
            [
                ("a".into(), 0, 40),
                ("a".into(), 0, 40),
                ("b".into(), 0, 10)
            ]
        );
        assert_eq!(
            moved.iter().filter(|m| **m).count(),
            2,
            "a's two moved, b's not"
        );
        let (pieces, _) = rebound(&s, &merge, &pieces);
        assert_eq!(
            bounds(&pieces),
            [
                ("a".into(), 0, 40),
                ("b".into(), 0, 10),
                ("c".into(), 100, 110)
            ]
        );
        s.apply(merge);
        assert_eq!(s.len(), 3, "a [0, 40), b [0, 10), c [100, 110)");
        s.close(&rows(&[("b", 0, 10, 0)])).unwrap();
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn runs_that_only_touch_stay_apart() {
        let mut s = sessions();
        s.insert(&rows(&[("a", 0, 10, 1)])).unwrap();
        // A piece starting exactly at a's end is a gap after its last row: a new session.
        let merge = merge(&s, &rows(&[("a", 10, 20, 1)]));
        assert_eq!(merge.absorbed.num_rows(), 0);
        s.apply(merge);
        assert_eq!(s.len(), 2);
    }
}
