//! Statements that read a table before they write it: `UPDATE`, `DELETE` and `INSERT … ON
//! CONFLICT`. Each holds the table's write lock from its read to its durable append (see
//! [`crate::ingest::table`]), so it reads every write committed before it and no write
//! commits in between — PostgreSQL's outcome for one statement at a time.
//!
//! `UPDATE` and `DELETE` run the plan DataFusion makes of them (the new rows, or the rows
//! to delete) as a bounded query over the table; the rows become upserts and tombstones.
//! `ON CONFLICT DO UPDATE` evaluates its `SET` over the existing rows joined with the
//! proposed ones (`excluded`).

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch, UInt32Array, new_null_array,
};
use arrow::compute::{CastOptions, cast_with_options, concat_batches, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::MemoryCatalogProviderList;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use sqlparser::ast::{
    AssignmentTarget, ConflictTarget, DoUpdate, Expr, Ident, Insert, OnConflictAction, OnInsert,
    visit_expressions_mut,
};

use super::Output;
use super::session::Session;
use crate::catalog::{HIDDEN_COLUMNS, Privilege, Relation, StreamDef, normalize};
use crate::error::{Error, Result};
use crate::ingest::WriteTarget;
use crate::ingest::key;
use crate::ingest::table::{TableLock, WriteKind};
use crate::ingest::writer::PendingWrite;
use crate::sql;
use crate::storage::{KEY_COLUMN, PartitionId};
use crate::tables::stream_table::StatementSnapshot;

/// The proposed rows' name in `ON CONFLICT DO UPDATE`, as PostgreSQL has it.
const EXCLUDED: &str = "excluded";
/// The column joining a proposed row with the existing one.
const ROW: &str = "__row";

impl Session {
    /// `UPDATE` or `DELETE` of the table `stream`, planned as `dml`.
    pub(super) async fn write_table(
        &mut self,
        dml: &DmlStatement,
        mut state: SessionState,
        stream: &StreamDef,
        target: WriteTarget,
    ) -> Result<Output> {
        refuse_hidden_assignments(dml, stream)?;
        let writer = self.db.tables.writer.clone();
        let mut lock = writer.lock_table(&target).await?;
        // Read as of now, under the lock: every write committed before this one.
        state
            .config_mut()
            .set_extension(Arc::new(StatementSnapshot(self.db.tables.log.snapshot())));
        let input: LogicalPlan = dml.input.as_ref().clone();
        let batches = DataFrame::new(state, input).collect().await?;
        let mut pending = PendingWrite::default();
        let mut count = 0;
        let heap = key_columns(&target).is_empty();
        let (tag, rows) = match dml.op {
            WriteOp::Delete => {
                for batch in &batches {
                    let tombstones = nulls(&target.row_schema, batch.num_rows());
                    let keys = Some(keys_of(batch)?);
                    writer.stage_keyed(
                        &target,
                        &tombstones,
                        WriteKind::Delete,
                        keys,
                        &mut pending,
                    )?;
                    count += batch.num_rows() as u64;
                }
                ("DELETE", count)
            }
            WriteOp::Update if heap => {
                // A row without a primary key keeps its row id.
                for batch in &batches {
                    let rows = columns_of(batch, &target.row_schema)?;
                    let keys = Some(keys_of(batch)?);
                    writer.stage_keyed(&target, &rows, WriteKind::Upsert, keys, &mut pending)?;
                    count += rows.num_rows() as u64;
                }
                ("UPDATE", count)
            }
            WriteOp::Update => {
                let mut moved = PendingWrite::default();
                let mut inserted = PendingWrite::default();
                for batch in &batches {
                    let rows = columns_of(batch, &target.row_schema)?;
                    let old_keys = keys_of(batch)?;
                    let new_keys = key::encode_keys(&rows, &key_columns(&target))?;
                    // A row whose key changes is a delete of the old key and an insert of
                    // the new one, which must not be taken.
                    let (same, changed): (Vec<u32>, Vec<u32>) = (0..rows.num_rows() as u32)
                        .partition(|i| {
                            let i = *i as usize;
                            new_keys.is_valid(i) && old_keys.value(i) == new_keys.value(i)
                        });
                    writer.stage_as(
                        &target,
                        &take(&rows, same)?,
                        WriteKind::Upsert,
                        &mut pending,
                    )?;
                    if !changed.is_empty() {
                        let indices = UInt32Array::from(changed.clone());
                        let old = arrow::compute::take(&old_keys, &indices, None)
                            .map_err(|e| Error::Internal(e.to_string()))?;
                        let tombstones = nulls(&target.row_schema, changed.len());
                        let old = Some(old.as_binary::<i32>().clone());
                        writer.stage_keyed(
                            &target,
                            &tombstones,
                            WriteKind::Delete,
                            old,
                            &mut moved,
                        )?;
                        writer.stage_as(
                            &target,
                            &take(&rows, changed)?,
                            WriteKind::Insert,
                            &mut inserted,
                        )?;
                    }
                    count += rows.num_rows() as u64;
                }
                // Old keys go before new ones are claimed, so keys can trade places.
                moved.extend(pending);
                moved.extend(inserted);
                pending = moved;
                ("UPDATE", count)
            }
            _ => {
                return Err(Error::Internal(
                    "a table write that is not UPDATE or DELETE".into(),
                ));
            }
        };
        writer.commit_locked(&mut lock, pending).await?;
        Ok(Output::Command {
            tag,
            rows: Some(rows),
        })
    }

    /// `INSERT … ON CONFLICT …` into a table.
    pub(super) async fn insert_on_conflict(
        &mut self,
        insert: &Insert,
        on: &OnInsert,
        params: Option<datafusion::common::ParamValues>,
    ) -> Result<Output> {
        let OnInsert::OnConflict(conflict) = on else {
            return Err(Error::Unsupported(
                "ON DUPLICATE KEY UPDATE is MySQL's; use ON CONFLICT".into(),
            ));
        };
        let name = match &insert.table {
            sqlparser::ast::TableObject::TableName(name) => sql::parser::relation_name(name)?,
            _ => {
                return Err(Error::Unsupported(
                    "INSERT … ON CONFLICT into a table function".into(),
                ));
            }
        };
        let catalog = self.db.tables.catalog.snapshot();
        let (stream, target) = match catalog.relation(&name) {
            Some(relation @ Relation::Stream(stream, _)) if stream.is_table() => (
                stream.clone(),
                WriteTarget::of(&catalog, &relation).expect("tables are writable"),
            ),
            Some(other) => {
                return Err(Error::Unsupported(format!(
                    "ON CONFLICT needs a table with a primary key; \"{name}\" is a {}",
                    other.kind()
                )));
            }
            None => {
                return Err(Error::UnknownRelation(format!(
                    "relation \"{name}\" does not exist"
                )));
            }
        };
        check_conflict_target(conflict.conflict_target.as_ref(), &stream, &conflict.action)?;
        // The proposed rows: the INSERT without its ON CONFLICT, planned as usual, not run.
        let statement = without_on_conflict(DfStatement::Statement(Box::new(
            sqlparser::ast::Statement::Insert(insert.clone()),
        )));
        let mut plan = sql::plan(&self.state, statement, &catalog).await?;
        if let Some(params) = params {
            plan = plan.with_param_values(params)?;
        }
        let who = self.principal();
        self.authorize(&plan, &catalog, &who)?;
        if let OnConflictAction::DoUpdate(_) = &conflict.action {
            // It rewrites rows that are there, and reads them: as PostgreSQL asks.
            catalog.check(&who, Privilege::Update, &name)?;
            catalog.check(&who, Privilege::Select, &name)?;
        }
        let LogicalPlan::Dml(dml) = plan else {
            return Err(Error::Internal(
                "an INSERT planned as something else".into(),
            ));
        };
        let mut state = self.state.clone();
        state.mark_start_execution();
        let writer = self.db.tables.writer.clone();
        let mut lock = writer.lock_table(&target).await?;
        state
            .config_mut()
            .set_extension(Arc::new(StatementSnapshot(self.db.tables.log.snapshot())));
        let batches = DataFrame::new(state, dml.input.as_ref().clone())
            .collect()
            .await?;
        let proposed = concat_batches(
            &target.row_schema,
            &batches_as(&batches, &target.row_schema)?,
        )
        .map_err(|e| Error::Internal(e.to_string()))?;
        let mut pending = PendingWrite::default();
        match &conflict.action {
            OnConflictAction::DoNothing => {
                writer.stage_as(&target, &proposed, WriteKind::InsertOrSkip, &mut pending)?;
                let rows = writer.commit_locked(&mut lock, pending).await?;
                Ok(insert_tag(rows))
            }
            OnConflictAction::DoUpdate(update) => {
                let alias = insert
                    .table_alias
                    .as_ref()
                    .map(|a| normalize(&a.alias))
                    .unwrap_or_else(|| name.clone());
                let (fresh, existing) = split_conflicts(&lock, &target, &proposed)?;
                writer.stage_as(
                    &target,
                    &take(&proposed, fresh)?,
                    WriteKind::Insert,
                    &mut pending,
                )?;
                let inserted = pending.rows();
                let updated = if existing.is_empty() {
                    None
                } else {
                    let ctx = scratch_context(&self.state);
                    Some(
                        resolve(
                            &ctx, &lock, &stream, &target, &proposed, &existing, update, &alias,
                        )
                        .await?,
                    )
                };
                let updated_rows = updated.as_ref().map_or(0, |u| u.num_rows() as u64);
                if let Some(updated) = updated {
                    writer.stage_as(&target, &updated, WriteKind::Upsert, &mut pending)?;
                }
                writer.commit_locked(&mut lock, pending).await?;
                Ok(insert_tag(inserted + updated_rows))
            }
        }
    }
}

/// 428C9 for an `UPDATE` that sets a hidden column: they are the record's, not the row's.
fn refuse_hidden_assignments(dml: &DmlStatement, stream: &StreamDef) -> Result<()> {
    let LogicalPlan::Projection(projection) = dml.input.as_ref() else {
        return Ok(());
    };
    for (expr, field) in projection.expr.iter().zip(projection.schema.fields()) {
        if HIDDEN_COLUMNS.contains(&field.name().as_str())
            && !matches!(
                expr.clone().unalias(),
                datafusion::logical_expr::Expr::Column(_)
            )
        {
            return Err(Error::plan(
                "428C9",
                format!(
                    "column \"{}\" of table \"{}\" is hidden: it is the record's, and cannot be updated",
                    field.name(),
                    stream.name
                ),
            ));
        }
    }
    Ok(())
}

/// An `INSERT … ON CONFLICT` as the plain `INSERT` of its proposed rows (DataFusion plans
/// those; the conflicts are resolved here); any other statement as it is.
pub(super) fn without_on_conflict(statement: DfStatement) -> DfStatement {
    match statement {
        DfStatement::Statement(s) => match *s {
            sqlparser::ast::Statement::Insert(mut insert) if insert.on.is_some() => {
                insert.on = None;
                insert.table_alias = None;
                DfStatement::Statement(Box::new(sqlparser::ast::Statement::Insert(insert)))
            }
            other => DfStatement::Statement(Box::new(other)),
        },
        other => other,
    }
}

fn insert_tag(rows: u64) -> Output {
    Output::Command {
        tag: "INSERT",
        rows: Some(rows),
    }
}

/// The primary key's column indexes in the rows written.
fn key_columns(target: &WriteTarget) -> Vec<usize> {
    target
        .table
        .as_ref()
        .expect("a table's write target")
        .key_columns
        .clone()
}

/// `ON CONFLICT (columns)` or `ON CONSTRAINT name` must name the primary key, the one
/// constraint a table has (42P10 otherwise, as PostgreSQL); `DO UPDATE` needs one.
fn check_conflict_target(
    target: Option<&ConflictTarget>,
    stream: &StreamDef,
    action: &OnConflictAction,
) -> Result<()> {
    let no_match = || {
        Error::plan(
            "42P10",
            "there is no unique or exclusion constraint matching the ON CONFLICT specification",
        )
    };
    match target {
        None if matches!(action, OnConflictAction::DoUpdate(_)) => Err(Error::plan(
            "42601",
            "ON CONFLICT DO UPDATE requires inference specification or constraint name",
        )),
        None => Ok(()),
        Some(ConflictTarget::Columns(columns)) => {
            let named: HashSet<String> = columns.iter().map(normalize).collect();
            let key: HashSet<String> = stream.key_columns.iter().cloned().collect();
            if named == key {
                Ok(())
            } else {
                Err(no_match())
            }
        }
        Some(ConflictTarget::OnConstraint(name)) => {
            let name = sql::parser::relation_name(name)?;
            if !stream.key_columns.is_empty() && name == stream.key_constraint() {
                Ok(())
            } else {
                Err(Error::plan(
                    "42704",
                    format!(
                        "constraint \"{name}\" for table \"{}\" does not exist",
                        stream.name
                    ),
                ))
            }
        }
    }
}

/// A proposed row whose key the table has: its index, its key's partition, its key.
type Conflict = (u32, PartitionId, Vec<u8>);

/// The proposed rows whose key the table does not have, and those whose key it has;
/// 21000 if two proposed rows share a key, as PostgreSQL refuses to update a row twice.
fn split_conflicts(
    lock: &TableLock,
    target: &WriteTarget,
    proposed: &RecordBatch,
) -> Result<(Vec<u32>, Vec<Conflict>)> {
    let keys = key::encode_keys(proposed, &key_columns(target))?;
    let mut seen = HashSet::new();
    let mut fresh = vec![];
    let mut existing = vec![];
    for i in 0..proposed.num_rows() {
        if keys.is_null(i) {
            // NOT NULL refuses it when it is staged.
            fresh.push(i as u32);
            continue;
        }
        let key = keys.value(i);
        if !seen.insert(key) {
            return Err(Error::Constraint {
                code: "21000",
                message: "ON CONFLICT DO UPDATE command cannot affect row a second time".into(),
                detail: Some(
                    "Ensure that no rows proposed for insertion within the same command have duplicate constrained values."
                        .into(),
                ),
            });
        }
        let partition = PartitionId(key::partition_for_key(key, target.partitions));
        match lock.find(partition, key) {
            Some(_) => existing.push((i as u32, partition, key.to_vec())),
            None => fresh.push(i as u32),
        }
    }
    Ok((fresh, existing))
}

/// The rows `DO UPDATE SET … [WHERE …]` makes of the conflicting proposed rows and the
/// current ones, in the table's columns; rows its WHERE rejects are left out.
#[allow(clippy::too_many_arguments)]
async fn resolve(
    ctx: &SessionContext,
    lock: &TableLock,
    stream: &StreamDef,
    target: &WriteTarget,
    proposed: &RecordBatch,
    existing: &[Conflict],
    update: &DoUpdate,
    alias: &str,
) -> Result<RecordBatch> {
    let keys: Vec<(PartitionId, Vec<u8>)> =
        existing.iter().map(|(_, p, k)| (*p, k.clone())).collect();
    let current: Vec<RecordBatch> = lock
        .current(&keys)
        .await?
        .into_iter()
        .map(|row| row.ok_or_else(|| Error::Internal("a conflicting row vanished".into())))
        .collect::<Result<_>>()?;
    let value_schema = Arc::new(Schema::new(
        stream.value_fields().iter().cloned().collect::<Vec<_>>(),
    ));
    let current = concat_batches(&value_schema, &batches_as(&current, &value_schema)?)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let excluded = take(proposed, existing.iter().map(|(i, ..)| *i).collect())?;
    let row_ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..existing.len() as i64));
    ctx.register_table(alias, Arc::new(numbered(&current, &row_ids)?))?;
    ctx.register_table(EXCLUDED, Arc::new(numbered(&excluded, &row_ids)?))?;

    let mut assigned: Vec<(String, Expr)> = vec![];
    for assignment in &update.assignments {
        let AssignmentTarget::ColumnName(column) = &assignment.target else {
            return Err(Error::Unsupported(
                "ON CONFLICT DO UPDATE SET (a, b) = … is not supported".into(),
            ));
        };
        let column = column
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(normalize)
            .ok_or_else(|| {
                Error::Syntax(format!("bad column {column} in ON CONFLICT DO UPDATE"))
            })?;
        if stream.column(&column).is_none() {
            return Err(Error::plan(
                "42703",
                format!(
                    "column \"{column}\" of relation \"{}\" does not exist",
                    stream.name
                ),
            ));
        }
        if stream.key_columns.contains(&column) {
            return Err(Error::Unsupported(format!(
                "ON CONFLICT DO UPDATE of the primary key column \"{column}\" is not supported"
            )));
        }
        assigned.push((column, qualify(assignment.value.clone(), alias)));
    }
    let quote = |name: &str| Ident::with_quote('"', name).to_string();
    let projection: Vec<String> = stream
        .columns
        .iter()
        .map(
            |c| match assigned.iter().find(|(name, _)| *name == c.name) {
                Some((_, expr)) => format!("{expr} AS {}", quote(&c.name)),
                None => format!("{}.{}", quote(alias), quote(&c.name)),
            },
        )
        .collect();
    let mut query = format!(
        "SELECT {} FROM {} JOIN {EXCLUDED} ON {}.{ROW} = {EXCLUDED}.{ROW}",
        projection.join(", "),
        quote(alias),
        quote(alias),
    );
    if let Some(selection) = &update.selection {
        query.push_str(&format!(" WHERE {}", qualify(selection.clone(), alias)));
    }
    let batches = ctx.sql(&query).await?.collect().await?;
    let rows = batches_as(&batches, &target.row_schema)?;
    concat_batches(&target.row_schema, &rows).map_err(|e| Error::Internal(e.to_string()))
}

/// A context with the session's functions and settings and a catalog of its own, to
/// evaluate expressions over rows in memory.
fn scratch_context(state: &SessionState) -> SessionContext {
    let config = state
        .config()
        .clone()
        .with_default_catalog_and_schema("scratch", "public")
        .with_create_default_catalog_and_schema(true);
    let state = SessionStateBuilder::new_from_existing(state.clone())
        .with_config(config)
        .with_catalog_list(Arc::new(MemoryCatalogProviderList::new()))
        .build();
    SessionContext::new_with_state(state)
}

/// `expr` with its unqualified columns qualified by the table's name or alias: in `ON
/// CONFLICT DO UPDATE`, a bare column is the existing row's.
fn qualify(mut expr: Expr, alias: &str) -> Expr {
    let _ = visit_expressions_mut(&mut expr, |e| {
        if let Expr::Identifier(ident) = e {
            *e = Expr::CompoundIdentifier(vec![Ident::with_quote('"', alias), ident.clone()]);
        }
        ControlFlow::<()>::Continue(())
    });
    expr
}

/// `rows` with a [`ROW`] column, as a table to join on it.
fn numbered(rows: &RecordBatch, ids: &ArrayRef) -> Result<MemTable> {
    let mut fields: Vec<Field> = rows
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(ROW, DataType::Int64, false));
    let schema = Arc::new(Schema::new(fields));
    let mut columns = rows.columns().to_vec();
    columns.push(ids.clone());
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(MemTable::try_new(schema, vec![vec![batch]])?)
}

/// The columns of `schema`, by name, from `batch` (a plan's output), each cast to its
/// type where the plan typed it otherwise.
fn columns_of(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column = batch.column_by_name(field.name()).ok_or_else(|| {
                Error::Internal(format!("column \"{}\" missing from the rows", field.name()))
            })?;
            if column.data_type() == field.data_type() {
                return Ok(column.clone());
            }
            cast_with_options(column, field.data_type(), &options)
                .map_err(|e| Error::data("22000", format!("column \"{}\": {e}", field.name())))
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::Internal(e.to_string()))
}

/// `batches` (a plan's output, in `schema`'s column order) in `schema` itself.
fn batches_as(batches: &[RecordBatch], schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    batches
        .iter()
        .map(|b| {
            let renamed = RecordBatch::try_new(
                Arc::new(Schema::new(
                    schema
                        .fields()
                        .iter()
                        .zip(b.schema().fields())
                        .map(|(want, got)| Field::new(want.name(), got.data_type().clone(), true))
                        .collect::<Vec<_>>(),
                )),
                b.columns().to_vec(),
            )
            .map_err(|e| Error::Internal(e.to_string()))?;
            columns_of(&renamed, schema)
        })
        .collect()
}

/// `n` rows of NULLs: tombstones' values.
fn nulls(schema: &SchemaRef, n: usize) -> RecordBatch {
    let columns = schema
        .fields()
        .iter()
        .map(|field| new_null_array(field.data_type(), n))
        .collect();
    RecordBatch::try_new(schema.clone(), columns).expect("NULLs of every column's type")
}

/// The record keys of a table's rows as read (its hidden `_key`).
fn keys_of(batch: &RecordBatch) -> Result<BinaryArray> {
    let keys = batch
        .column_by_name(KEY_COLUMN)
        .ok_or_else(|| Error::Internal("a table's rows read without their keys".into()))?;
    Ok(keys.as_binary::<i32>().clone())
}

fn take(rows: &RecordBatch, indices: Vec<u32>) -> Result<RecordBatch> {
    take_record_batch(rows, &UInt32Array::from(indices)).map_err(|e| Error::Internal(e.to_string()))
}
