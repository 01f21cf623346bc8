//! `top_rows(n, directions, order, row)`: the first `n` rows of each group in an order, as
//! a list of `row`s ranked from 1 — the aggregate a continuous query keeps for
//! `ROW_NUMBER() OVER (PARTITION BY … ORDER BY …) <= n` (see [`crate::sql::top_n`]).
//!
//! `order` is a struct of the ordering values, `directions` one letter pair per field of it
//! (`a` or `d` for ascending or descending, then `f` or `l` for nulls first or last: `"dfal"`
//! is `ORDER BY x DESC NULLS FIRST, y ASC NULLS LAST`), and `row` a struct of the values to
//! keep. Each kept row is held as bytes: its ordering values in Arrow's row format, which
//! compare as the order does, then the row's values in the same format. Adding a row to a
//! group, or merging two groups' partial states, is comparing bytes with the group's last
//! kept row; the values come back as Arrow arrays only when the final lists are built. The
//! partial state is the list of those byte strings, best first.

use std::mem::size_of;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BooleanArray, Int64Array, LargeBinaryBuilder, ListArray, StructArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Field, FieldRef, Fields};
use arrow::row::{RowConverter, RowParser, Rows, SortField};
use datafusion::common::{Result as DfResult, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;

use super::selected;

/// The name of the rank field beside a row's values in the lists `top_rows` returns.
pub const RANK_FIELD: &str = "rank";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TopRows {
    signature: Signature,
}

impl Default for TopRows {
    fn default() -> TopRows {
        TopRows {
            signature: Signature::any(4, Volatility::Immutable),
        }
    }
}

/// The struct type of a ranked row: `row`'s fields, then the rank.
fn ranked(row: &DataType) -> DfResult<Fields> {
    let DataType::Struct(fields) = row else {
        return plan_err!("top_rows keeps rows given as a struct, not {row}");
    };
    let mut fields: Vec<FieldRef> = fields.iter().cloned().collect();
    fields.push(Arc::new(Field::new(RANK_FIELD, DataType::Int64, false)));
    Ok(Fields::from(fields))
}

fn state_field(name: &str) -> FieldRef {
    Arc::new(Field::new_list(
        format!("{name}[rows]"),
        Field::new_list_field(DataType::LargeBinary, false),
        false,
    ))
}

impl AggregateUDFImpl for TopRows {
    fn name(&self) -> &str {
        "top_rows"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        let row = ranked(&args[3])?;
        Ok(DataType::List(Arc::new(Field::new_list_field(
            DataType::Struct(row),
            false,
        ))))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        Ok(vec![state_field(args.name)])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        Ok(Box::new(Kept::new(&args)?))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> DfResult<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Kept::new(&args)?))
    }
}

/// The rows each group keeps: byte strings (`key length`, key, values), best first.
struct Kept {
    n: usize,
    order: RowConverter,
    values: RowConverter,
    parser: RowParser,
    ranked: Fields,
    groups: Vec<Vec<Box<[u8]>>>,
    bytes: usize,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kept(top {}, {} groups)", self.n, self.groups.len())
    }
}

/// A kept row of ordering values `key` and values `values`.
fn entry(key: &[u8], values: &[u8]) -> Box<[u8]> {
    let mut entry = Vec::with_capacity(4 + key.len() + values.len());
    entry.extend_from_slice(&(key.len() as u32).to_le_bytes());
    entry.extend_from_slice(key);
    entry.extend_from_slice(values);
    entry.into_boxed_slice()
}

/// Whether `entry` is a kept row as [`entry`] makes them: a length, and that many bytes.
fn well_formed(entry: &[u8]) -> bool {
    entry.len() >= 4
        && u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]) as usize <= entry.len() - 4
}

/// The ordering part of a kept row.
fn key(entry: &[u8]) -> &[u8] {
    let (length, rest) = entry.split_at(4);
    let length = u32::from_le_bytes(length.try_into().expect("four bytes")) as usize;
    &rest[..length]
}

/// The values part of a kept row.
fn values(entry: &[u8]) -> &[u8] {
    let length = key(entry).len();
    &entry[4 + length..]
}

impl Kept {
    fn new(args: &AccumulatorArgs) -> DfResult<Kept> {
        let [n, directions, order, row] = args.exprs else {
            return plan_err!("top_rows takes 4 arguments: n, directions, order, row");
        };
        let literal =
            |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Literal>().map(|l| l.value().clone());
        let n = match literal(n) {
            Some(ScalarValue::Int64(Some(n))) if n > 0 => n as usize,
            other => return plan_err!("top_rows keeps a positive count of rows, not {other:?}"),
        };
        let directions = match literal(directions) {
            Some(ScalarValue::Utf8(Some(d))) => d,
            other => return plan_err!("top_rows takes its directions as text, not {other:?}"),
        };
        let DataType::Struct(order) = order.data_type(args.schema)? else {
            return plan_err!("top_rows orders by a struct of values");
        };
        Kept::of(n, &directions, &order, row.data_type(args.schema)?)
    }

    /// Keeps `n` rows of type `row` (a struct) per group, in the order of `order`'s fields
    /// and `directions` (see the module's documentation).
    fn of(n: usize, directions: &str, order: &Fields, row: DataType) -> DfResult<Kept> {
        let DataType::Struct(row_fields) = &row else {
            return plan_err!("top_rows keeps rows given as a struct");
        };
        let letters: Vec<char> = directions.chars().collect();
        if letters.len() != 2 * order.len() {
            return plan_err!("top_rows needs two direction letters per ordering value");
        }
        let sort_fields = order
            .iter()
            .zip(letters.chunks(2))
            .map(|(f, d)| {
                SortField::new_with_options(
                    f.data_type().clone(),
                    SortOptions {
                        descending: d[0] == 'd',
                        nulls_first: d[1] == 'f',
                    },
                )
            })
            .collect();
        let order = RowConverter::new(sort_fields)?;
        let values = RowConverter::new(
            row_fields
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        let parser = values.parser();
        Ok(Kept {
            n,
            order,
            values,
            parser,
            ranked: ranked(&row)?,
            groups: vec![],
            bytes: 0,
        })
    }

    fn grow(&mut self, total: usize) {
        if self.groups.len() < total {
            self.groups.resize_with(total, Vec::new);
        }
    }

    /// Keeps `entry` (built by `make`, only when it is kept) in `group` if it is among its
    /// first `n` by `key`.
    fn offer(&mut self, group: usize, key_bytes: &[u8], make: impl FnOnce() -> Box<[u8]>) {
        let kept = &mut self.groups[group];
        if kept.len() == self.n && kept.last().is_some_and(|last| key(last) <= key_bytes) {
            return;
        }
        let at = kept.partition_point(|e| key(e) <= key_bytes);
        let entry = make();
        self.bytes += entry.len() + size_of::<Box<[u8]>>();
        kept.insert(at, entry);
        if kept.len() > self.n
            && let Some(dropped) = kept.pop()
        {
            self.bytes -= dropped.len() + size_of::<Box<[u8]>>();
        }
    }

    /// The ordering values and the values of `args`' rows, in Arrow's row format.
    fn encode(&self, args: &[ArrayRef]) -> DfResult<(Rows, Rows)> {
        let (Some(order), Some(row)) = (args[2].as_struct_opt(), args[3].as_struct_opt()) else {
            return exec_err!("top_rows orders by a struct and keeps a struct");
        };
        let keys = self.order.convert_columns(order.columns())?;
        let rows = self.values.convert_columns(row.columns())?;
        Ok((keys, rows))
    }

    fn update(
        &mut self,
        args: &[ArrayRef],
        group: impl Fn(usize) -> usize,
        filter: Option<&BooleanArray>,
    ) -> DfResult<()> {
        let (keys, rows) = self.encode(args)?;
        for i in (0..keys.num_rows()).filter(|i| selected(filter, *i)) {
            let (k, v) = (keys.row(i), rows.row(i));
            let (k, v) = (k.as_ref(), v.as_ref());
            self.offer(group(i), k, || entry(k, v));
        }
        Ok(())
    }

    fn merge(&mut self, states: &[ArrayRef], group: impl Fn(usize) -> usize) -> DfResult<()> {
        let Some(lists) = states[0].as_list_opt::<i32>() else {
            return exec_err!("top_rows' state is a list of rows");
        };
        let Some(entries) = lists.values().as_binary_opt::<i64>() else {
            return exec_err!("top_rows' state holds rows as bytes");
        };
        for (row, range) in lists.value_offsets().windows(2).enumerate() {
            let g = group(row);
            for at in range[0] as usize..range[1] as usize {
                let entry = entries.value(at);
                if !well_formed(entry) {
                    return exec_err!("top_rows' state holds a damaged row");
                }
                self.offer(g, key(entry), || entry.into());
            }
        }
        Ok(())
    }

    /// The first groups `emit_to` names, taken out.
    fn take(&mut self, emit_to: EmitTo) -> Vec<Vec<Box<[u8]>>> {
        let taken = emit_to.take_needed(&mut self.groups);
        self.bytes -= taken
            .iter()
            .flatten()
            .map(|e| e.len() + size_of::<Box<[u8]>>())
            .sum::<usize>();
        taken
    }

    fn state_of(taken: &[Vec<Box<[u8]>>]) -> ArrayRef {
        let offsets = OffsetBuffer::<i32>::from_lengths(taken.iter().map(Vec::len));
        let rows = taken.iter().flatten();
        let mut entries = LargeBinaryBuilder::with_capacity(
            rows.clone().count(),
            rows.clone().map(|e| e.len()).sum(),
        );
        rows.for_each(|e| entries.append_value(e));
        Arc::new(ListArray::new(
            Arc::new(Field::new_list_field(DataType::LargeBinary, false)),
            offsets,
            Arc::new(entries.finish()),
            None,
        ))
    }

    fn evaluate_lists(&self, taken: &[Vec<Box<[u8]>>]) -> DfResult<ArrayRef> {
        let rows = taken.iter().flatten().map(|e| self.parser.parse(values(e)));
        let mut columns = self.values.convert_rows(rows)?;
        let ranks: Int64Array = taken
            .iter()
            .flat_map(|kept| 1..=kept.len() as i64)
            .collect();
        columns.push(Arc::new(ranks));
        let rows = StructArray::try_new(self.ranked.clone(), columns, None)?;
        Ok(Arc::new(ListArray::try_new(
            Arc::new(Field::new_list_field(
                DataType::Struct(self.ranked.clone()),
                false,
            )),
            OffsetBuffer::<i32>::from_lengths(taken.iter().map(Vec::len)),
            Arc::new(rows),
            None,
        )?))
    }

    fn memory(&self) -> usize {
        size_of::<Kept>()
            + self.groups.capacity() * size_of::<Vec<Box<[u8]>>>()
            + self.bytes
            + self.order.size()
            + self.values.size()
    }
}

impl GroupsAccumulator for Kept {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> DfResult<()> {
        self.grow(total_num_groups);
        self.update(values, |i| group_indices[i], opt_filter)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> DfResult<ArrayRef> {
        let taken = self.take(emit_to);
        self.evaluate_lists(&taken)
    }

    fn state(&mut self, emit_to: EmitTo) -> DfResult<Vec<ArrayRef>> {
        Ok(vec![Kept::state_of(&self.take(emit_to))])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> DfResult<()> {
        self.grow(total_num_groups);
        self.merge(values, |row| group_indices[row])
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> DfResult<Vec<ArrayRef>> {
        // Each row its own group.
        let (keys, rows) = self.encode(values)?;
        let one: Vec<Vec<Box<[u8]>>> = (0..keys.num_rows())
            .map(|i| match selected(opt_filter, i) {
                true => vec![entry(keys.row(i).as_ref(), rows.row(i).as_ref())],
                false => vec![],
            })
            .collect();
        Ok(vec![Kept::state_of(&one)])
    }

    fn size(&self) -> usize {
        self.memory()
    }
}

impl Accumulator for Kept {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        self.grow(1);
        self.update(values, |_| 0, None)
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        self.grow(1);
        let lists = self.evaluate_lists(&self.groups)?;
        ScalarValue::try_from_array(&lists, 0)
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        self.grow(1);
        let lists = Kept::state_of(&self.groups);
        Ok(vec![ScalarValue::try_from_array(&lists, 0)?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        self.grow(1);
        self.merge(states, |_| 0)
    }

    fn size(&self) -> usize {
        self.memory()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow::array::{Array, Int64Array, StringArray};
    use arrow::datatypes::Int64Type;

    fn row_type() -> DataType {
        DataType::Struct(Fields::from(vec![
            Field::new("c0", DataType::Int64, true),
            Field::new("c1", DataType::Utf8, true),
        ]))
    }

    /// Arguments for rows ordered by `price` (descending, nulls first), then `seq`.
    fn args(prices: Vec<Option<i64>>, names: Vec<&str>) -> Vec<ArrayRef> {
        let n = prices.len();
        let seq = Arc::new(Int64Array::from_iter_values(0..n as i64));
        let price: ArrayRef = Arc::new(Int64Array::from(prices));
        let order = StructArray::from(vec![
            (
                Arc::new(Field::new("o0", DataType::Int64, true)),
                price.clone(),
            ),
            (
                Arc::new(Field::new("o1", DataType::Int64, false)),
                seq as ArrayRef,
            ),
        ]);
        let row = StructArray::from(vec![
            (Arc::new(Field::new("c0", DataType::Int64, true)), price),
            (
                Arc::new(Field::new("c1", DataType::Utf8, true)),
                Arc::new(StringArray::from(names)) as ArrayRef,
            ),
        ]);
        let unused: ArrayRef = Arc::new(Int64Array::from(vec![0; n]));
        vec![unused.clone(), unused, Arc::new(order), Arc::new(row)]
    }

    fn kept(n: usize) -> Kept {
        let order = Fields::from(vec![
            Field::new("o0", DataType::Int64, true),
            Field::new("o1", DataType::Int64, false),
        ]);
        Kept::of(n, "dfal", &order, row_type()).unwrap()
    }

    /// Each group's (value, name, rank) rows, in rank order.
    fn ranked_rows(lists: &ArrayRef) -> Vec<Vec<(Option<i64>, String, i64)>> {
        let lists = lists.as_list::<i32>();
        (0..lists.len())
            .map(|g| {
                let rows = lists.value(g);
                let rows = rows.as_struct();
                let values = rows.column(0).as_primitive::<Int64Type>();
                let names = rows.column(1).as_string::<i32>();
                let ranks = rows.column(2).as_primitive::<Int64Type>();
                (0..rows.len())
                    .map(|i| {
                        let value = values.is_valid(i).then(|| values.value(i));
                        (value, names.value(i).to_string(), ranks.value(i))
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn keeps_the_first_rows_of_each_group_ranked() {
        let mut top = kept(2);
        let prices = vec![Some(5), Some(9), None, Some(7), Some(9), Some(1)];
        let names = vec!["a", "b", "c", "d", "e", "f"];
        GroupsAccumulator::update_batch(
            &mut top,
            &args(prices, names),
            &[0, 0, 1, 0, 0, 1],
            None,
            2,
        )
        .unwrap();
        let lists = GroupsAccumulator::evaluate(&mut top, EmitTo::All).unwrap();
        // Descending, NULLS FIRST; equal prices by the second ordering value.
        assert_eq!(
            ranked_rows(&lists),
            vec![
                vec![(Some(9), "b".into(), 1), (Some(9), "e".into(), 2)],
                vec![(None, "c".into(), 1), (Some(1), "f".into(), 2)],
            ]
        );
    }

    #[test]
    fn merged_states_keep_what_one_pass_would() {
        let prices = vec![Some(3), Some(8), Some(6), Some(2), Some(8), Some(7)];
        let names = vec!["a", "b", "c", "d", "e", "f"];
        let all = args(prices, names);
        let mut one = kept(3);
        GroupsAccumulator::update_batch(&mut one, &all, &[0; 6], None, 1).unwrap();
        let want = ranked_rows(&GroupsAccumulator::evaluate(&mut one, EmitTo::All).unwrap());

        // Two halves, each its own state; merged into a third in either order.
        let mut states = vec![];
        for half in [0..3, 3..6] {
            let mut part = kept(3);
            let slices: Vec<ArrayRef> = all
                .iter()
                .map(|a| a.slice(half.start, half.len()))
                .collect();
            GroupsAccumulator::update_batch(&mut part, &slices, &[0; 3], None, 1).unwrap();
            states.push(GroupsAccumulator::state(&mut part, EmitTo::All).unwrap());
        }
        let mut merged = kept(3);
        for state in states.iter().rev() {
            GroupsAccumulator::merge_batch(&mut merged, state, &[0], 1).unwrap();
        }
        let got = ranked_rows(&GroupsAccumulator::evaluate(&mut merged, EmitTo::All).unwrap());
        assert_eq!(got, want);
        assert_eq!(
            got[0].iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![Some(8), Some(8), Some(7)]
        );
    }

    #[test]
    fn a_damaged_state_is_an_error() {
        let mut top = kept(1);
        let entries = arrow::array::LargeBinaryArray::from_iter_values([&[9u8, 0, 0, 0, 1][..]]);
        let state: ArrayRef = Arc::new(ListArray::new(
            Arc::new(Field::new_list_field(DataType::LargeBinary, false)),
            OffsetBuffer::<i32>::from_lengths([1]),
            Arc::new(entries),
            None,
        ));
        assert!(GroupsAccumulator::merge_batch(&mut top, &[state], &[0], 1).is_err());
    }
}
