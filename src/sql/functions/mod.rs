//! Functions Runnel registers in place of DataFusion's own — where the same answer can
//! be had for much less work, or where PostgreSQL's answer differs — and the ones PostgreSQL
//! has that DataFusion lacks; and `top_rows`, the aggregate a continuous Top-N keeps.

pub mod avg;
mod coalesced;
pub mod json;
mod regexp;
mod to_char;
pub mod top_rows;
pub mod typed_text;

use std::sync::Arc;

use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};

pub use coalesced::Coalesced;
pub use regexp::{RegexpMatch, RegexpMatchElement, RegexpSplitToArray, RegexpSubstr};
pub use to_char::ToChar;

/// Whether row `i` passes `filter` (an aggregate's `FILTER (WHERE …)`), if any.
fn selected(filter: Option<&datafusion::arrow::array::BooleanArray>, i: usize) -> bool {
    use datafusion::arrow::array::Array;
    filter.is_none_or(|f| f.is_valid(i) && f.value(i))
}

/// The functions of this module, to register over DataFusion's defaults.
pub fn udfs() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::from(ToChar::default()),
        ScalarUDF::from(RegexpMatch::default()),
        ScalarUDF::from(RegexpSubstr::default()),
        ScalarUDF::from(RegexpSplitToArray::default()),
    ]
    .into_iter()
    .chain(json::udfs())
    .chain([
        typed_text::gen_random_uuid(),
        ScalarUDF::from(typed_text::PgTypeof::default()),
    ])
    .collect()
}

/// The aggregate functions of this module.
pub fn udafs() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::from(avg::Avg::default()),
        AggregateUDF::from(top_rows::TopRows::default()),
    ]
}

/// Rewrites of calls into cheaper calls with the same answer, applied before planning.
pub fn rewrites() -> Vec<Arc<dyn FunctionRewrite + Send + Sync>> {
    vec![Arc::new(RegexpMatchElement::default())]
}
