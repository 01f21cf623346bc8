//! Integer arithmetic that overflows fails, as PostgreSQL's does (`22003`: "bigint out of
//! range"), instead of wrapping around. DataFusion plans `+`, `-` and `*` to wrap unless
//! asked otherwise, and nothing in its configuration asks; two rules ask:
//!
//! - [`CheckedConstants`], an analyzer rule after type coercion, evaluates integer arithmetic
//!   of literals with checked math, refusing what overflows before DataFusion's simplifier
//!   would fold it wrapping (what does not overflow it leaves to the simplifier, whose result
//!   is then the same);
//! - [`CheckedArithmetic`], a physical optimizer rule, makes the arithmetic of projections
//!   and filters (`SELECT` lists, `WHERE` clauses) check for overflow.
//!
//! Arithmetic inside aggregate arguments and sort keys still wraps; `docs/sql.md` says so.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlan, Operator};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::BinaryExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

#[derive(Debug, Default)]
pub struct CheckedArithmetic;

impl PhysicalOptimizerRule for CheckedArithmetic {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
                let mut changed = false;
                let mut exprs = Vec::with_capacity(projection.expr().len());
                for e in projection.expr() {
                    let checked = checked(e.expr.clone())?;
                    changed |= checked.transformed;
                    exprs.push(ProjectionExpr {
                        expr: checked.data,
                        alias: e.alias.clone(),
                    });
                }
                if changed {
                    let exec = ProjectionExec::try_new(exprs, projection.input().clone())?;
                    return Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>));
                }
            } else if let Some(filter) = node.downcast_ref::<FilterExec>() {
                let checked = checked(filter.predicate().clone())?;
                if checked.transformed {
                    let exec = FilterExecBuilder::from(filter)
                        .with_predicate(checked.data)
                        .build()?;
                    return Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>));
                }
            }
            Ok(Transformed::no(node))
        })
        .data()
    }

    fn name(&self) -> &str {
        "checked_arithmetic"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `expr` with every `+`, `-` and `*` failing on overflow.
fn checked(expr: Arc<dyn PhysicalExpr>) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    expr.transform_up(|e| {
        if let Some(binary) = e.downcast_ref::<BinaryExpr>()
            && matches!(
                binary.op(),
                Operator::Plus | Operator::Minus | Operator::Multiply
            )
        {
            let checked =
                BinaryExpr::new(binary.left().clone(), *binary.op(), binary.right().clone())
                    .with_fail_on_overflow(true);
            return Ok(Transformed::yes(Arc::new(checked) as Arc<dyn PhysicalExpr>));
        }
        Ok(Transformed::no(e))
    })
}

#[derive(Debug, Default)]
pub struct CheckedConstants;

impl AnalyzerRule for CheckedConstants {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.apply_with_subqueries(|node| {
            node.apply_expressions(|e| {
                e.clone().transform_up(fold)?;
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(plan)
    }

    fn name(&self) -> &str {
        "checked_constants"
    }
}

/// `literal op literal` (either side possibly a cast literal) of integers, folded with
/// checked arithmetic: the literal result, or the overflow error. (Only to find the error:
/// the plan keeps its expressions, and their names.)
fn fold(expr: Expr) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(binary) = &expr else {
        return Ok(Transformed::no(expr));
    };
    let (Some(left), Some(right)) = (
        integer_literal(&binary.left)?,
        integer_literal(&binary.right)?,
    ) else {
        return Ok(Transformed::no(expr));
    };
    let value = match binary.op {
        Operator::Plus => left.add_checked(&right)?,
        Operator::Minus => left.sub_checked(&right)?,
        Operator::Multiply => left.mul_checked(&right)?,
        _ => return Ok(Transformed::no(expr)),
    };
    Ok(Transformed::yes(Expr::Literal(value, None)))
}

/// The value of an integer literal, or of a cast of one to an integer type.
fn integer_literal(expr: &Expr) -> Result<Option<ScalarValue>> {
    let value = match expr {
        Expr::Literal(value, _) => value.clone(),
        Expr::Cast(cast) => match integer_literal(&cast.expr)? {
            Some(value) if cast.field.data_type().is_integer() => {
                value.cast_to(cast.field.data_type())?
            }
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    Ok((value.data_type().is_integer() && !value.is_null()).then_some(value))
}
