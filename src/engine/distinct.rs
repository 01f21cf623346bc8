//! The values each group's `count(DISTINCT …)` aggregates have counted, kept as sets.
//!
//! DataFusion keeps the partial state of `count(DISTINCT x)` as the list of the values
//! seen, and merges two states by building a set of both lists. Merged into a group's
//! stored state, each epoch would cost as much as every value the group ever had, and its
//! changelog would write that list again. A continuous query keeps instead, per group and
//! per such aggregate, the set of values counted, and stores the count: an epoch looks up
//! its own distinct values in the sets, counts the ones that are new, and its changelog
//! records those alone, which a restore adds to the sets again. Counts of different epochs
//! are of disjoint values, so they merge as a plain `count`'s do, by adding.
//!
//! The epoch's values reach the sets through [`Collect`], which stands in for
//! `count(DISTINCT x)` in the epoch's `Partial` aggregate: the same list, every value the
//! group's rows had rather than each once. DataFusion's own partial state builds a set of
//! the epoch's values for every group, from empty each epoch, and the merge of the threads'
//! rows builds it again; the sets here are looked up either way, so the duplicates are
//! dropped there, once.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, ListArray, UInt32Array};
use arrow::buffer::OffsetBuffer;
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, FieldRef};
use arrow::row::{RowConverter, SortField};
use hashbrown::{HashMap, HashSet};

use crate::error::{Error, Result};

/// What a set costs besides its values: its header and its place in the map.
const SET_BYTES: usize = 64;

/// How a set holds an aggregate's values.
#[derive(Debug, Clone)]
enum Kind {
    /// Integers and timestamps: as 64-bit integers.
    Int(DataType),
    /// Anything else: in Arrow's row format.
    Rows(SortField),
}

#[derive(Debug)]
enum ValueSet {
    Int(HashSet<i64>),
    /// The values, and the bytes they take besides the table.
    Rows(HashSet<Box<[u8]>>, usize),
}

impl ValueSet {
    fn len(&self) -> usize {
        match self {
            ValueSet::Int(s) => s.len(),
            ValueSet::Rows(s, _) => s.len(),
        }
    }

    fn reserve(&mut self, more: usize) {
        match self {
            ValueSet::Int(s) => s.reserve(more),
            ValueSet::Rows(s, _) => s.reserve(more),
        }
    }

    fn bytes(&self) -> usize {
        SET_BYTES
            + match self {
                ValueSet::Int(s) => s.capacity() * (8 + 1),
                ValueSet::Rows(s, values) => s.capacity() * (16 + 1) + values,
            }
    }
}

/// One aggregate's values, as its set holds them.
enum Values {
    Int(Int64Array),
    Rows(arrow::row::Rows),
}

impl Values {
    fn contained(&self, set: Option<&ValueSet>, i: usize) -> bool {
        match (self, set) {
            (_, None) => false,
            (Values::Int(v), Some(ValueSet::Int(s))) => s.contains(&v.value(i)),
            (Values::Rows(v), Some(ValueSet::Rows(s, _))) => s.contains(v.row(i).data()),
            _ => false,
        }
    }

    fn insert(&self, set: &mut ValueSet, i: usize) {
        match (self, set) {
            (Values::Int(v), ValueSet::Int(s)) => {
                s.insert(v.value(i));
            }
            (Values::Rows(v), ValueSet::Rows(s, bytes)) => {
                let value = v.row(i).data();
                if s.insert(value.into()) {
                    *bytes += value.len() + 16;
                }
            }
            _ => {}
        }
    }
}

/// The values of one group's list that [`Sets::novel`] has taken, so that a value the
/// list holds twice is taken once.
#[derive(Default)]
struct Taken<'v> {
    ints: HashSet<i64>,
    rows: HashSet<&'v [u8]>,
}

impl<'v> Taken<'v> {
    fn clear(&mut self) {
        self.ints.clear();
        self.rows.clear();
    }

    /// Takes value `i` of `values`: false if it was taken before.
    fn take(&mut self, values: &'v Values, i: usize) -> bool {
        match values {
            Values::Int(v) => self.ints.insert(v.value(i)),
            Values::Rows(v) => self.rows.insert(v.row(i).data()),
        }
    }
}

/// Per group (by its key in Arrow's row format), one set per `count(DISTINCT …)`.
#[derive(Debug)]
pub struct Sets {
    /// The lists DataFusion keeps the aggregates' values in: what goes in and comes out.
    lists: Vec<FieldRef>,
    kinds: Vec<Kind>,
    groups: HashMap<Vec<u8>, Vec<ValueSet>>,
    bytes: usize,
    /// Values in all the sets.
    values: usize,
}

fn internal(e: arrow::error::ArrowError) -> Error {
    Error::Internal(format!("distinct values: {e}"))
}

impl Sets {
    /// Empty sets for aggregates whose values come in lists of `lists`' types.
    pub fn new(lists: Vec<FieldRef>) -> Result<Sets> {
        let kinds = lists
            .iter()
            .map(|list| match list.data_type() {
                DataType::List(item) => Ok(match item.data_type() {
                    t @ (DataType::Int8
                    | DataType::Int16
                    | DataType::Int32
                    | DataType::Int64
                    | DataType::UInt8
                    | DataType::UInt16
                    | DataType::UInt32
                    | DataType::Timestamp(_, None)) => Kind::Int(t.clone()),
                    t => Kind::Rows(SortField::new(t.clone())),
                }),
                t => Err(Error::Internal(format!(
                    "distinct values come in lists, not {t}"
                ))),
            })
            .collect::<Result<_>>()?;
        Ok(Sets {
            lists,
            kinds,
            groups: HashMap::new(),
            bytes: 0,
            values: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.lists.len()
    }

    /// Values in all the sets.
    pub fn values(&self) -> usize {
        self.values
    }

    pub fn memory_bytes(&self) -> usize {
        self.bytes + self.groups.capacity() * (16 + 8 + 1)
    }

    fn held(&self, k: usize, values: &ArrayRef) -> Result<Values> {
        match &self.kinds[k] {
            Kind::Int(_) => Ok(Values::Int(
                cast(values, &DataType::Int64)
                    .map_err(internal)?
                    .as_primitive()
                    .clone(),
            )),
            Kind::Rows(field) => {
                let converter = RowConverter::new(vec![field.clone()]).map_err(internal)?;
                let rows = converter
                    .convert_columns(std::slice::from_ref(values))
                    .map_err(internal)?;
                Ok(Values::Rows(rows))
            }
        }
    }

    /// Of `lists` (one list array per aggregate, a row per group, the group of row `i`
    /// keyed `key(i)`), the values their groups have not counted: per aggregate, how many
    /// per row, and those values, as lists of the same type. A value may be in a list more
    /// than once; it is counted, and returned, once.
    pub fn novel<'a>(
        &self,
        key: impl Fn(usize) -> &'a [u8],
        lists: &[ArrayRef],
    ) -> Result<(Vec<ArrayRef>, Vec<ArrayRef>)> {
        let (mut counts, mut added) = (vec![], vec![]);
        for (k, list) in lists.iter().enumerate() {
            let list = list.as_list::<i32>();
            let values = self.held(k, list.values())?;
            let mut taken: Vec<u32> = vec![];
            let mut once = Taken::default();
            let mut count = Vec::with_capacity(list.len());
            for (row, range) in list.offsets().windows(2).enumerate() {
                let set = self.groups.get(key(row)).map(|sets| &sets[k]);
                let before = taken.len();
                once.clear();
                for i in range[0] as usize..range[1] as usize {
                    if list.values().is_valid(i)
                        && !values.contained(set, i)
                        && once.take(&values, i)
                    {
                        taken.push(i as u32);
                    }
                }
                count.push((taken.len() - before) as i64);
            }
            let offsets = OffsetBuffer::from_lengths(count.iter().map(|c| *c as usize));
            let values = take(list.values(), &UInt32Array::from(taken), None).map_err(internal)?;
            let DataType::List(item) = self.lists[k].data_type() else {
                unreachable!("checked in Sets::new");
            };
            added.push(Arc::new(
                ListArray::try_new(item.clone(), offsets, values, None).map_err(internal)?,
            ) as ArrayRef);
            counts.push(Arc::new(Int64Array::from(count)) as ArrayRef);
        }
        Ok((counts, added))
    }

    /// Adds `added` (lists as [`Sets::novel`] returns them, the group of row `i` keyed
    /// `key(i)`) to the groups' sets.
    pub fn add<'a>(&mut self, key: impl Fn(usize) -> &'a [u8], added: &[ArrayRef]) -> Result<()> {
        let Some(first) = added.first() else {
            return Ok(());
        };
        let values = added
            .iter()
            .enumerate()
            .map(|(k, list)| self.held(k, list.as_list::<i32>().values()))
            .collect::<Result<Vec<_>>>()?;
        let Sets {
            kinds,
            groups,
            bytes,
            values: count,
            ..
        } = self;
        for row in 0..first.len() {
            let sets = groups.entry_ref(key(row)).or_insert_with(|| {
                kinds
                    .iter()
                    .map(|kind| match kind {
                        Kind::Int(_) => ValueSet::Int(HashSet::new()),
                        Kind::Rows(_) => ValueSet::Rows(HashSet::new(), 0),
                    })
                    .collect()
            });
            for (k, list) in added.iter().enumerate() {
                let list = list.as_list::<i32>();
                let range =
                    list.value_offsets()[row] as usize..list.value_offsets()[row + 1] as usize;
                if range.is_empty() {
                    continue;
                }
                *bytes -= sets[k].bytes().min(*bytes);
                *count -= sets[k].len();
                // The values are new to the set: grow it once, not once per doubling.
                sets[k].reserve(range.len());
                for i in range {
                    if list.values().is_valid(i) {
                        values[k].insert(&mut sets[k], i);
                    }
                }
                *bytes += sets[k].bytes();
                *count += sets[k].len();
            }
        }
        Ok(())
    }

    /// Forgets the values of the group keyed `key`.
    pub fn remove(&mut self, key: &[u8]) {
        if let Some(sets) = self.groups.remove(key) {
            let bytes: usize = sets.iter().map(ValueSet::bytes).sum();
            self.bytes -= bytes.min(self.bytes);
            self.values -= sets.iter().map(ValueSet::len).sum::<usize>();
        }
    }

    /// Every value each of `rows` groups (the group of row `i` keyed `key(i)`) has counted:
    /// per aggregate, a list per row.
    pub fn lists<'a>(&self, key: impl Fn(usize) -> &'a [u8], rows: usize) -> Result<Vec<ArrayRef>> {
        let mut lists = vec![];
        for (k, field) in self.lists.iter().enumerate() {
            let DataType::List(item) = field.data_type() else {
                unreachable!("checked in Sets::new");
            };
            let mut lengths = Vec::with_capacity(rows);
            let values: ArrayRef = match &self.kinds[k] {
                Kind::Int(t) => {
                    let mut all: Vec<i64> = vec![];
                    for row in 0..rows {
                        let before = all.len();
                        if let Some(ValueSet::Int(s)) = self.groups.get(key(row)).map(|s| &s[k]) {
                            all.extend(s.iter().copied());
                        }
                        lengths.push(all.len() - before);
                    }
                    cast(&Int64Array::from(all), t).map_err(internal)?
                }
                Kind::Rows(field) => {
                    let converter = RowConverter::new(vec![field.clone()]).map_err(internal)?;
                    let parser = converter.parser();
                    let mut all = vec![];
                    for row in 0..rows {
                        let before = all.len();
                        if let Some(ValueSet::Rows(s, _)) = self.groups.get(key(row)).map(|s| &s[k])
                        {
                            all.extend(s.iter().map(|v| parser.parse(v)));
                        }
                        lengths.push(all.len() - before);
                    }
                    converter
                        .convert_rows(all)
                        .map_err(internal)?
                        .pop()
                        .expect("one column")
                }
            };
            let offsets = OffsetBuffer::from_lengths(lengths);
            lists.push(Arc::new(
                ListArray::try_new(item.clone(), offsets, values, None).map_err(internal)?,
            ) as ArrayRef);
        }
        Ok(lists)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow::array::{Int64Builder, ListBuilder, StringBuilder};
    use arrow::datatypes::Field;

    fn int_lists(rows: &[&[i64]]) -> ArrayRef {
        let mut b = ListBuilder::new(Int64Builder::new());
        for row in rows {
            b.values().append_slice(row);
            b.append(true);
        }
        Arc::new(b.finish())
    }

    fn text_lists(rows: &[&[&str]]) -> ArrayRef {
        let mut b = ListBuilder::new(StringBuilder::new());
        for row in rows {
            for v in *row {
                b.values().append_value(v);
            }
            b.append(true);
        }
        Arc::new(b.finish())
    }

    fn list_field(t: DataType) -> FieldRef {
        Arc::new(Field::new_list("l", Field::new_list_field(t, true), false))
    }

    fn counts(counts: &[ArrayRef]) -> Vec<Vec<i64>> {
        counts
            .iter()
            .map(|c| {
                c.as_primitive::<arrow::datatypes::Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    fn ints(list: &ArrayRef, row: usize) -> Vec<i64> {
        let mut v: Vec<i64> = list
            .as_list::<i32>()
            .value(row)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec();
        v.sort_unstable();
        v
    }

    #[test]
    fn counts_only_values_a_group_has_not_counted() {
        let lists = vec![list_field(DataType::Int64), list_field(DataType::Utf8)];
        let mut sets = Sets::new(lists.clone()).unwrap();
        let keys: [&[u8]; 2] = [b"a", b"b"];
        let key = |i: usize| keys[i];
        let first = [int_lists(&[&[1, 2], &[2]]), text_lists(&[&["x"], &[]])];
        let (c, added) = sets.novel(key, &first).unwrap();
        assert_eq!(counts(&c), [[2, 1], [1, 0]]);
        sets.add(key, &added).unwrap();

        let second = [
            int_lists(&[&[2, 3], &[1, 2]]),
            text_lists(&[&["x", "y"], &["x"]]),
        ];
        let (c, added) = sets.novel(key, &second).unwrap();
        assert_eq!(counts(&c), [[1, 1], [1, 1]]);
        assert_eq!(ints(&added[0], 0), vec![3]);
        assert_eq!(ints(&added[0], 1), vec![1]);
        sets.add(key, &added).unwrap();

        // What a snapshot writes gives the same sets back.
        let all = sets.lists(key, 2).unwrap();
        assert_eq!(ints(&all[0], 0), vec![1, 2, 3]);
        assert_eq!(ints(&all[0], 1), vec![1, 2]);
        let mut restored = Sets::new(lists).unwrap();
        restored.add(key, &all).unwrap();
        let (c, _) = restored.novel(key, &second).unwrap();
        assert_eq!(counts(&c), [[0, 0], [0, 0]]);

        assert!(sets.memory_bytes() > 0);
        assert_eq!(sets.values(), 3 + 2 + 2 + 1);
        sets.remove(b"a");
        let (c, _) = sets.novel(key, &second).unwrap();
        assert_eq!(counts(&c), [[2, 0], [2, 0]]);

        // A value a list holds more than once is new once.
        let twice = [
            int_lists(&[&[9, 9, 1, 1], &[1, 1]]),
            text_lists(&[&["z", "z"], &["x", "x"]]),
        ];
        let (c, added) = sets.novel(key, &twice).unwrap();
        assert_eq!(counts(&c), [[2, 0], [1, 0]]);
        assert_eq!(ints(&added[0], 0), vec![1, 9]);
    }
}
