//! `avg` as PostgreSQL's: of integers (`smallint`, `integer`, `bigint`) a `numeric`, with
//! the 16 digits after the point a `numeric` division keeps ([`crate::sql::numeric`]),
//! its last rounded half away from zero (`avg` of 1, 2 and 2 is `1.6666666666666667`);
//! of any other type DataFusion's (`double precision` of floats, `numeric` of `numeric`,
//! an interval of intervals).
//!
//! Integers are summed in 128 bits — no count of `bigint`s a machine could read overflows
//! that — and divided only when the value is asked for. The partial state is the count
//! and the sum, as DataFusion's `avg` keeps it, so that it merges across partitions and
//! epochs; [`average`] is the division, which a table's continuous query also uses for
//! the count and sum it maintains ([`crate::engine::retract`]).

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, UInt64Array};
use arrow::datatypes::{DataType, Decimal128Type, Field, FieldRef, UInt64Type};
use datafusion::common::{Result as DfResult, ScalarValue, exec_err};
use datafusion::functions_aggregate::average::Avg as DataFusionAvg;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, Coercion, ColumnarValue, Documentation, EmitTo,
    GroupsAccumulator, ReversedUDAF, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature,
    TypeSignatureClass, Volatility,
};

use super::selected;

/// Digits after the point of an integer average.
pub const SCALE: i8 = 16;

/// The type of an integer average: a `bigint`'s average has 19 digits before the point.
pub const AVERAGE_TYPE: DataType = DataType::Decimal128(38, SCALE);

/// The type an integer sum is kept in: any integer, unscaled.
const SUM_TYPE: DataType = DataType::Decimal128(38, 0);

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Avg {
    signature: Signature,
    datafusion: DataFusionAvg,
}

impl Default for Avg {
    fn default() -> Avg {
        let datafusion = DataFusionAvg::new();
        // Integers as they are, then what DataFusion's `avg` takes (which would make an
        // integer a `double precision`).
        let mut signatures = vec![TypeSignature::Coercible(vec![Coercion::new_exact(
            TypeSignatureClass::Integer,
        )])];
        match &datafusion.signature().type_signature {
            TypeSignature::OneOf(theirs) => signatures.extend(theirs.iter().cloned()),
            theirs => signatures.push(theirs.clone()),
        }
        Avg {
            signature: Signature::one_of(signatures, Volatility::Immutable),
            datafusion,
        }
    }
}

/// `sum / count` with [`SCALE`] digits after the point, the last rounded half away from
/// zero; `sum` and the result unscaled and scaled `i128`s. Any average of 64-bit integers
/// fits: it is no larger than the largest of them.
pub fn average(sum: i128, count: u64) -> DfResult<i128> {
    if count == 0 {
        return exec_err!("an average of no values");
    }
    let count = i128::from(count);
    let scale = 10i128.pow(SCALE as u32);
    let (whole, rest) = (sum / count, sum % count);
    // `rest` is smaller than a `u64`, so `rest * 10^16` fits in 128 bits.
    let fraction = rest * scale;
    let (digits, remainder) = (fraction / count, fraction % count);
    let rounding = if 2 * remainder.abs() >= count {
        remainder.signum()
    } else {
        0
    };
    match whole.checked_mul(scale) {
        Some(scaled) => Ok(scaled + digits + rounding),
        None => exec_err!("numeric field overflow in avg"),
    }
}

/// Whether `avg` of `data_type` is an integer average: also of a NULL literal, which is
/// no value of any type.
pub fn is_integer(data_type: &DataType) -> bool {
    data_type.is_integer() || data_type.is_null()
}

impl AggregateUDFImpl for Avg {
    fn name(&self) -> &str {
        "avg"
    }

    fn aliases(&self) -> &[String] {
        self.datafusion.aliases()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        match args {
            [integer] if is_integer(integer) => Ok(AVERAGE_TYPE),
            _ => self.datafusion.return_type(args),
        }
    }

    fn accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        match args.expr_fields {
            [field] if is_integer(field.data_type()) => Ok(if args.is_distinct {
                Box::<DistinctSums>::default()
            } else {
                Box::<Sums>::default()
            }),
            _ => self.datafusion.accumulator(args),
        }
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        match args.input_fields {
            [field] if is_integer(field.data_type()) => Ok(if args.is_distinct {
                vec![Arc::new(Field::new_list(
                    format_state_name(args.name, "avg distinct"),
                    Field::new_list_field(SUM_TYPE, true),
                    false,
                ))]
            } else {
                vec![
                    Arc::new(Field::new(
                        format_state_name(args.name, "count"),
                        DataType::UInt64,
                        true,
                    )),
                    Arc::new(Field::new(
                        format_state_name(args.name, "sum"),
                        SUM_TYPE,
                        true,
                    )),
                ]
            }),
            _ => self.datafusion.state_fields(args),
        }
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        match args.expr_fields {
            [field] if is_integer(field.data_type()) => !args.is_distinct,
            _ => self.datafusion.groups_accumulator_supported(args),
        }
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> DfResult<Box<dyn GroupsAccumulator>> {
        match args.expr_fields {
            [field] if is_integer(field.data_type()) => Ok(Box::<Sums>::default()),
            _ => self.datafusion.create_groups_accumulator(args),
        }
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.datafusion.documentation()
    }
}

/// The integers of `array`, unscaled in 128 bits.
fn integers(array: &ArrayRef) -> DfResult<Decimal128Array> {
    Ok(arrow::compute::cast(array, &SUM_TYPE)?
        .as_primitive::<Decimal128Type>()
        .clone())
}

/// Each group's count and sum of integers; as an [`Accumulator`], the one group 0.
#[derive(Debug, Default)]
struct Sums {
    counts: Vec<u64>,
    sums: Vec<i128>,
}

impl Sums {
    fn grow(&mut self, groups: usize) {
        if self.counts.len() < groups {
            self.counts.resize(groups, 0);
            self.sums.resize(groups, 0);
        }
    }

    /// Adds (`sign` 1) or takes back (-1) the integers `values` into their groups.
    fn add(
        &mut self,
        values: &ArrayRef,
        group: impl Fn(usize) -> usize,
        filter: Option<&BooleanArray>,
        sign: i128,
    ) -> DfResult<()> {
        let values = integers(values)?;
        for (i, value) in values.iter().enumerate() {
            if let Some(value) = value
                && selected(filter, i)
            {
                let g = group(i);
                self.sums[g] = self.sums[g].wrapping_add(sign * value);
                self.counts[g] = if sign > 0 {
                    self.counts[g] + 1
                } else {
                    self.counts[g].saturating_sub(1)
                };
            }
        }
        Ok(())
    }

    /// Merges partial states: counts and sums.
    fn merge(&mut self, states: &[ArrayRef], group: impl Fn(usize) -> usize) -> DfResult<()> {
        let [counts, sums] = states else {
            return exec_err!("avg merges a count and a sum, not {} states", states.len());
        };
        let counts = counts.as_primitive::<UInt64Type>();
        let sums = sums.as_primitive::<Decimal128Type>();
        for i in 0..counts.len() {
            if counts.is_valid(i) && sums.is_valid(i) {
                let g = group(i);
                self.counts[g] += counts.value(i);
                self.sums[g] = self.sums[g].wrapping_add(sums.value(i));
            }
        }
        Ok(())
    }

    /// The partial state of groups of `counts` and `sums`.
    fn states(counts: Vec<u64>, sums: Vec<i128>) -> Vec<ArrayRef> {
        vec![
            Arc::new(UInt64Array::from(counts)),
            Arc::new(Decimal128Array::from(sums).with_data_type(SUM_TYPE)),
        ]
    }

    fn averages(counts: &[u64], sums: &[i128]) -> DfResult<ArrayRef> {
        let averages = counts
            .iter()
            .zip(sums)
            .map(|(&count, &sum)| (count > 0).then(|| average(sum, count)).transpose())
            .collect::<DfResult<Decimal128Array>>()?;
        Ok(Arc::new(averages.with_data_type(AVERAGE_TYPE)))
    }
}

impl GroupsAccumulator for Sums {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> DfResult<()> {
        self.grow(total_num_groups);
        self.add(&values[0], |i| group_indices[i], opt_filter, 1)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> DfResult<ArrayRef> {
        let counts = emit_to.take_needed(&mut self.counts);
        let sums = emit_to.take_needed(&mut self.sums);
        Sums::averages(&counts, &sums)
    }

    fn state(&mut self, emit_to: EmitTo) -> DfResult<Vec<ArrayRef>> {
        let counts = emit_to.take_needed(&mut self.counts);
        let sums = emit_to.take_needed(&mut self.sums);
        Ok(Sums::states(counts, sums))
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> DfResult<()> {
        self.grow(total_num_groups);
        self.merge(values, |i| group_indices[i])
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> DfResult<Vec<ArrayRef>> {
        // Each row its own group: a count of 1 and the row's value, or 0 and 0.
        let values = integers(&values[0])?;
        let (counts, sums): (Vec<u64>, Vec<i128>) = values
            .iter()
            .enumerate()
            .map(|(i, value)| match value {
                Some(value) if selected(opt_filter, i) => (1, value),
                _ => (0, 0),
            })
            .unzip();
        Ok(Sums::states(counts, sums))
    }

    fn size(&self) -> usize {
        self.counts.capacity() * size_of::<u64>() + self.sums.capacity() * size_of::<i128>()
    }
}

impl Accumulator for Sums {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        self.grow(1);
        self.add(&values[0], |_| 0, None, 1)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        self.grow(1);
        self.add(&values[0], |_| 0, None, -1)
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        self.grow(1);
        self.merge(states, |_| 0)
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        self.grow(1);
        Ok(vec![
            ScalarValue::UInt64(Some(self.counts[0])),
            ScalarValue::Decimal128(Some(self.sums[0]), 38, 0),
        ])
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        self.grow(1);
        ScalarValue::try_from_array(&Sums::averages(&self.counts, &self.sums)?, 0)
    }

    fn size(&self) -> usize {
        size_of::<Self>() + GroupsAccumulator::size(self)
    }
}

/// `avg(DISTINCT integer)`: the distinct integers seen.
#[derive(Debug, Default)]
struct DistinctSums {
    values: HashSet<i128>,
}

impl Accumulator for DistinctSums {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        self.values.extend(integers(&values[0])?.iter().flatten());
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        for list in states[0].as_list::<i32>().iter().flatten() {
            self.update_batch(&[list])?;
        }
        Ok(())
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        let values: Vec<ScalarValue> = self
            .values
            .iter()
            .map(|&v| ScalarValue::Decimal128(Some(v), 38, 0))
            .collect();
        Ok(vec![ScalarValue::List(ScalarValue::new_list_nullable(
            &values, &SUM_TYPE,
        ))])
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        let sum = self.values.iter().fold(0i128, |s, v| s.wrapping_add(*v));
        let count = self.values.len() as u64;
        let average = (count > 0).then(|| average(sum, count)).transpose()?;
        Ok(ScalarValue::Decimal128(average, 38, SCALE))
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.values.capacity() * size_of::<i128>()
    }
}

/// `average_of(sum, count)`: [`average`] of an integer sum and a count kept apart, NULL
/// where the count is NULL or not above 0. Not callable from SQL: a continuous query over
/// a table builds it from the sums it maintains.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AverageOf {
    signature: Signature,
}

impl Default for AverageOf {
    fn default() -> AverageOf {
        AverageOf {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for AverageOf {
    fn name(&self) -> &str {
        "average_of"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(AVERAGE_TYPE)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [sums, counts] = args.args.as_slice() else {
            return exec_err!("average_of a sum and a count, not {}", args.args.len());
        };
        let sums = integers(&sums.to_array(args.number_rows)?)?;
        let counts = integers(&counts.to_array(args.number_rows)?)?;
        let averages = sums
            .iter()
            .zip(counts.iter())
            .map(
                |(sum, count)| match (sum, count.and_then(|n| u64::try_from(n).ok())) {
                    (Some(sum), Some(count)) if count > 0 => average(sum, count).map(Some),
                    _ => Ok(None),
                },
            )
            .collect::<DfResult<Decimal128Array>>()?;
        Ok(ColumnarValue::Array(Arc::new(
            averages.with_data_type(AVERAGE_TYPE),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_round_their_last_digit_half_away_from_zero() {
        let e16 = 10i128.pow(16);
        assert_eq!(average(3, 2).unwrap(), 15 * e16 / 10);
        assert_eq!(average(5, 3).unwrap(), 16_666_666_666_666_667);
        assert_eq!(average(-5, 3).unwrap(), -16_666_666_666_666_667);
        assert_eq!(average(4, 3).unwrap(), 13_333_333_333_333_333);
        assert_eq!(average(-1, 2).unwrap(), -5 * e16 / 10);
        // Half of the last digit, away from zero.
        assert_eq!(average(1, 2 * e16 as u64).unwrap(), 1);
        assert_eq!(average(-1, 2 * e16 as u64).unwrap(), -1);
        let largest = i128::from(i64::MAX);
        assert_eq!(average(2 * largest, 2).unwrap(), largest * e16);
        assert!(average(1, 0).is_err());
    }

    #[test]
    fn group_states_merge_into_one_pass() {
        let values: ArrayRef = Arc::new(arrow::array::Int32Array::from(vec![
            Some(1),
            None,
            Some(2),
            Some(2),
            Some(7),
        ]));
        let mut one = Sums::default();
        GroupsAccumulator::update_batch(
            &mut one,
            std::slice::from_ref(&values),
            &[0, 0, 0, 0, 1],
            None,
            2,
        )
        .unwrap();
        let mut parts = Sums::default();
        let state = {
            let mut first = Sums::default();
            GroupsAccumulator::update_batch(&mut first, &[values], &[1, 1, 1, 1, 0], None, 2)
                .unwrap();
            GroupsAccumulator::state(&mut first, EmitTo::All).unwrap()
        };
        GroupsAccumulator::merge_batch(&mut parts, &state, &[1, 0], 2).unwrap();
        let (a, b) = (
            GroupsAccumulator::evaluate(&mut one, EmitTo::All).unwrap(),
            GroupsAccumulator::evaluate(&mut parts, EmitTo::All).unwrap(),
        );
        assert_eq!(a.as_ref(), b.as_ref());
        let a = a.as_primitive::<Decimal128Type>();
        assert_eq!(a.value(0), 16_666_666_666_666_667);
        assert_eq!(a.value(1), 7 * 10i128.pow(16));
    }
}
