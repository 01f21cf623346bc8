//! `coalesce(a, b)` for two arguments that cannot fail, evaluated for every row.
//!
//! DataFusion runs `coalesce` as the `CASE` it simplifies it to, which evaluates `b` only
//! for the rows where `a` is NULL: right for an argument that may fail or cost much, and a
//! filter of the batch and a merge of the two halves when `b` is a column already computed.
//! The planner's `CASE` lookups (`sql::planner`) use this one, whose arguments are a lookup
//! and a column: both are evaluated for every row, and Arrow's `zip` takes each row's value
//! from the first where it is not NULL. It is not registered: SQL cannot call it.

use arrow::compute::is_not_null;
use arrow::compute::kernels::zip::zip;
use arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Coalesced {
    signature: Signature,
}

impl Default for Coalesced {
    fn default() -> Coalesced {
        Coalesced {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Coalesced {
    fn name(&self) -> &str {
        "coalesce"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [first, second] if first == second => Ok(first.clone()),
            _ => exec_err!("coalesce of two values of one type, not {arg_types:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [first, second] = args.args.as_slice() else {
            return exec_err!("coalesce of two values, not {}", args.args.len());
        };
        let first = first.to_array(args.number_rows)?;
        let second = second.to_array(args.number_rows)?;
        Ok(ColumnarValue::Array(zip(
            &is_not_null(&first)?,
            &first,
            &second,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use arrow::array::{Array, ArrayRef, AsArray, StringArray};
    use arrow::datatypes::Field;
    use datafusion::common::ScalarValue;
    use datafusion::config::ConfigOptions;

    #[test]
    fn takes_the_first_value_not_null() {
        let a: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None, None]));
        let b: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), Some("y"), None]));
        let field = Arc::new(Field::new("v", DataType::Utf8, true));
        let call = |args| {
            Coalesced::default().invoke_with_args(ScalarFunctionArgs {
                args,
                arg_fields: vec![field.clone(), field.clone()],
                number_rows: 3,
                return_field: field.clone(),
                config_options: Arc::new(ConfigOptions::default()),
            })
        };
        let out = call(vec![
            ColumnarValue::Array(a),
            ColumnarValue::Array(b.clone()),
        ])
        .unwrap()
        .to_array(3)
        .unwrap();
        let out = out.as_string::<i32>();
        assert_eq!(out.value(0), "a");
        assert_eq!(out.value(1), "y");
        assert!(out.is_null(2));
        let null = ColumnarValue::Scalar(ScalarValue::Utf8(None));
        let out = call(vec![null, ColumnarValue::Array(b)])
            .unwrap()
            .to_array(3)
            .unwrap();
        assert_eq!(out.as_string::<i32>().value(0), "x");
    }
}
