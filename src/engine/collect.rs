//! `count(DISTINCT x)`'s partial state without its deduplication, for a continuous query's
//! epochs (see [`crate::engine::distinct`]).
//!
//! [`Collect`] stands in for `count(DISTINCT x)` in an epoch's `Partial` aggregate and its
//! `PartialReduce`: the same state (a list of values per group, of the same Arrow type), but
//! every value the group's rows had, in no particular order, duplicates included. Gathering
//! them is appending; the group's sets drop the duplicates when they look the values up.
//! Its final value is not defined: it is only ever partial state.

use std::mem::size_of_val;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, ListArray, UInt32Array};
use arrow::buffer::OffsetBuffer;
use arrow::compute::{cast, concat, take};
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result as DfResult, ScalarValue, internal_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

/// Collects the values of one argument, as a list per group.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Collect {
    signature: Signature,
    /// The list field of the state it stands in for.
    state: FieldRef,
}

impl Collect {
    /// Stands in for an aggregate whose state is the list field `state`.
    pub fn new(state: FieldRef) -> Collect {
        Collect {
            signature: Signature::any(1, Volatility::Immutable),
            state,
        }
    }

    fn item(&self) -> DfResult<FieldRef> {
        match self.state.data_type() {
            DataType::List(item) => Ok(item.clone()),
            t => internal_err!("collected values come in lists, not {t}"),
        }
    }
}

impl AggregateUDFImpl for Collect {
    fn name(&self) -> &str {
        "collect"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.state.data_type().clone())
    }

    fn state_fields(&self, _args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        Ok(vec![self.state.clone()])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        Ok(Box::new(Values::new(self.item()?)))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> DfResult<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Values::new(self.item()?)))
    }
}

/// Values gathered so far, each with its group: chunks of values as they came, and a
/// group index per value.
#[derive(Debug)]
struct Values {
    item: FieldRef,
    chunks: Vec<ArrayRef>,
    groups: Vec<u32>,
    bytes: usize,
    /// How many groups there are, with values or without.
    total: usize,
}

impl Values {
    fn new(item: FieldRef) -> Values {
        Values {
            item,
            chunks: vec![],
            groups: vec![],
            bytes: 0,
            total: 0,
        }
    }

    /// Adds the non-null values of `values` that `keep` (if any) selects, row `i`'s to
    /// group `group(i)`.
    fn push(
        &mut self,
        values: &ArrayRef,
        keep: Option<&BooleanArray>,
        group: impl Fn(usize) -> usize,
    ) -> DfResult<()> {
        let values = match values.data_type() == self.item.data_type() {
            true => values.clone(),
            false => cast(values, self.item.data_type())?,
        };
        let kept =
            |i: usize| values.is_valid(i) && keep.is_none_or(|k| k.is_valid(i) && k.value(i));
        let before = self.groups.len();
        let values = if values.null_count() == 0 && keep.is_none() {
            self.groups
                .extend((0..values.len()).map(|i| group(i) as u32));
            values
        } else {
            let mut at = vec![];
            for i in (0..values.len()).filter(|i| kept(*i)) {
                at.push(i as u32);
                self.groups.push(group(i) as u32);
            }
            take(&values, &UInt32Array::from(at), None)?
        };
        if self.groups.len() > before {
            self.bytes += values.get_array_memory_size();
            self.chunks.push(values);
        }
        Ok(())
    }

    /// The values of groups `0..n` as a list per group, in that order; the values of
    /// later groups stay, renumbered from 0.
    fn emit(&mut self, n: usize) -> DfResult<ArrayRef> {
        let chunks: Vec<&dyn Array> = self.chunks.iter().map(|c| c.as_ref()).collect();
        let all = match chunks.is_empty() {
            true => arrow::array::new_empty_array(self.item.data_type()),
            false => concat(&chunks)?,
        };
        let mut lengths = vec![0usize; n];
        for g in &self.groups {
            if let Some(l) = lengths.get_mut(*g as usize) {
                *l += 1;
            }
        }
        let offsets = OffsetBuffer::<i32>::from_lengths(lengths.iter().copied());
        let mut next: Vec<usize> = offsets[..n].iter().map(|o| *o as usize).collect();
        let mut order = vec![0u32; *offsets.last().expect("offsets") as usize];
        let (mut rest, mut rest_groups) = (vec![], vec![]);
        for (i, g) in self.groups.iter().enumerate() {
            match next.get_mut(*g as usize) {
                Some(at) => {
                    order[*at] = i as u32;
                    *at += 1;
                }
                None => {
                    rest.push(i as u32);
                    rest_groups.push(*g - n as u32);
                }
            }
        }
        let values = take(&all, &UInt32Array::from(order), None)?;
        self.chunks.clear();
        self.groups = rest_groups;
        self.total = self.total.saturating_sub(n);
        self.bytes = 0;
        if !rest.is_empty() {
            let rest = take(&all, &UInt32Array::from(rest), None)?;
            self.bytes = rest.get_array_memory_size();
            self.chunks.push(rest);
        }
        Ok(Arc::new(ListArray::try_new(
            self.item.clone(),
            offsets,
            values,
            None,
        )?))
    }

    /// Adds lists of values (a state), row `i`'s to group `group(i)`.
    fn merge(&mut self, lists: &ArrayRef, group: impl Fn(usize) -> usize) -> DfResult<()> {
        let lists = lists.as_list::<i32>();
        let offsets = lists.value_offsets();
        let (start, end) = (offsets[0] as usize, offsets[lists.len()] as usize);
        if end == start {
            return Ok(());
        }
        for (row, range) in offsets.windows(2).enumerate() {
            let g = group(row) as u32;
            self.groups
                .extend(std::iter::repeat_n(g, (range[1] - range[0]) as usize));
        }
        let values = lists.values().slice(start, end - start);
        self.bytes += values.get_array_memory_size();
        self.chunks.push(values);
        Ok(())
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.groups.capacity() * 4 + self.bytes
    }
}

impl GroupsAccumulator for Values {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> DfResult<()> {
        self.total = self.total.max(total_num_groups);
        self.push(&values[0], opt_filter, |i| group_indices[i])
    }

    fn evaluate(&mut self, _emit_to: EmitTo) -> DfResult<ArrayRef> {
        internal_err!("collected values are partial state, with no final value")
    }

    fn state(&mut self, emit_to: EmitTo) -> DfResult<Vec<ArrayRef>> {
        let n = match emit_to {
            EmitTo::All => self.total,
            EmitTo::First(n) => n,
        };
        Ok(vec![self.emit(n)?])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> DfResult<()> {
        self.total = self.total.max(total_num_groups);
        self.merge(&values[0], |row| group_indices[row])
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> DfResult<Vec<ArrayRef>> {
        // Each row its own group.
        let mut one = Values::new(self.item.clone());
        one.push(&values[0], opt_filter, |i| i)?;
        let lists = one.emit(values[0].len())?;
        Ok(vec![lists])
    }

    fn size(&self) -> usize {
        Values::size(self)
    }
}

impl Accumulator for Values {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        self.push(&values[0], None, |_| 0)
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        internal_err!("collected values are partial state, with no final value")
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        let list = self.emit(1)?;
        Ok(vec![ScalarValue::List(Arc::new(
            list.as_list::<i32>().clone(),
        ))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        self.merge(&states[0], |_| 0)
    }

    fn size(&self) -> usize {
        Values::size(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Int64Type};

    fn state(t: DataType) -> FieldRef {
        Arc::new(Field::new_list("s", Field::new_list_field(t, true), false))
    }

    fn list(lists: &ArrayRef, row: usize) -> Vec<i64> {
        let mut v = lists
            .as_list::<i32>()
            .value(row)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        v.sort_unstable();
        v
    }

    #[test]
    fn gathers_every_selected_value_by_group() {
        let collect = Collect::new(state(DataType::Int64));
        let mut values = Values::new(collect.item().unwrap());
        let a: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(1)]));
        GroupsAccumulator::update_batch(&mut values, &[a], &[0, 0, 1, 0], None, 2).unwrap();
        // Int32 values are cast to the list's type; the filter drops the last two rows.
        let b: ArrayRef = Arc::new(arrow::array::Int32Array::from(vec![7, 8, 9]));
        let keep = BooleanArray::from(vec![Some(true), None, Some(false)]);
        // Group 3 has no values: it has an empty list.
        GroupsAccumulator::update_batch(&mut values, &[b], &[2, 0, 1], Some(&keep), 4).unwrap();

        // Group 0 first, the others stay, renumbered.
        let first = GroupsAccumulator::state(&mut values, EmitTo::First(1)).unwrap();
        assert_eq!(first[0].len(), 1);
        assert_eq!(list(&first[0], 0), vec![1, 1]);
        let rest = GroupsAccumulator::state(&mut values, EmitTo::All).unwrap();
        assert_eq!(rest[0].len(), 3);
        assert_eq!(list(&rest[0], 0), vec![3]);
        assert_eq!(list(&rest[0], 1), vec![7]);
        assert_eq!(list(&rest[0], 2), Vec::<i64>::new());

        // Merging states adds each list to its row's group.
        let mut merged = Values::new(collect.item().unwrap());
        GroupsAccumulator::merge_batch(&mut merged, &rest, &[1, 1, 1], 2).unwrap();
        GroupsAccumulator::merge_batch(&mut merged, &first, &[0], 2).unwrap();
        let all = GroupsAccumulator::state(&mut merged, EmitTo::All).unwrap();
        assert_eq!(list(&all[0], 0), vec![1, 1]);
        assert_eq!(list(&all[0], 1), vec![3, 7]);
        assert!(GroupsAccumulator::evaluate(&mut merged, EmitTo::All).is_err());
    }

    #[test]
    fn without_groups_gathers_one_list() {
        let collect = Collect::new(state(DataType::Utf8));
        let mut values = Values::new(collect.item().unwrap());
        let a: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), None, Some("x")]));
        Accumulator::update_batch(&mut values, &[a]).unwrap();
        let ScalarValue::List(list) = &Accumulator::state(&mut values).unwrap()[0] else {
            panic!("a list");
        };
        assert_eq!(list.value(0).as_string::<i32>().len(), 2);
    }
}
