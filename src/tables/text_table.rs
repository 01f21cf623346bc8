//! `CREATE EXTERNAL TABLE … STORED AS TEXT`: one row per line of a file, in a column `line`
//! (Spark's `textFile`). DataFusion reads CSV, JSON and Parquet itself; this adds plain text.
//!
//! LOCATION is a file or a directory (every regular file in it, in name order), read-only.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProviderFactory};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{CreateExternalTable, Expr};
use datafusion::physical_plan::ExecutionPlan;

use super::blocking_scan::{BlockingScanExec, BlockingSource};
use crate::error::Error;

const BATCH_LINES: usize = 8192;

#[derive(Debug, Default)]
pub struct TextTableFactory;

#[async_trait]
impl TableProviderFactory for TextTableFactory {
    async fn create(
        &self,
        _state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let fields = cmd.schema.fields();
        let field = match fields.len() {
            0 => Field::new("line", DataType::Utf8, true),
            1 if matches!(
                fields[0].data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) =>
            {
                Field::new(fields[0].name(), DataType::Utf8, true)
            }
            _ => {
                return Err(Error::plan(
                    "42601",
                    "a TEXT table has one text column (by default named \"line\")",
                )
                .into());
            }
        };
        let mut files = vec![];
        for location in &cmd.locations {
            let path = PathBuf::from(location.strip_prefix("file://").unwrap_or(location));
            let meta = std::fs::metadata(&path).map_err(|e| {
                Error::plan(
                    "58P01",
                    format!("could not open \"{}\": {e}", path.display()),
                )
            })?;
            if meta.is_dir() {
                let mut inside: Vec<PathBuf> = std::fs::read_dir(&path)
                    .map_err(|e| {
                        Error::plan(
                            "58P01",
                            format!("could not list \"{}\": {e}", path.display()),
                        )
                    })?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file())
                    .collect();
                inside.sort();
                files.extend(inside);
            } else {
                files.push(path);
            }
        }
        Ok(Arc::new(TextTable {
            schema: Arc::new(Schema::new(vec![field])),
            files,
        }))
    }
}

#[derive(Debug)]
struct TextTable {
    schema: SchemaRef,
    files: Vec<PathBuf>,
}

#[async_trait]
impl TableProvider for TextTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let scan = TextScan {
            files: self.files.clone(),
        };
        Ok(Arc::new(BlockingScanExec::new(scan, schema, limit)))
    }
}

/// Reads text files, one partition per file.
#[derive(Debug)]
struct TextScan {
    files: Vec<PathBuf>,
}

impl BlockingSource for TextScan {
    fn name(&self) -> &'static str {
        "TextScanExec"
    }

    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "files={}", self.files.len())
    }

    fn partitions(&self) -> usize {
        self.files.len()
    }

    fn read(
        &self,
        i: usize,
        schema: &SchemaRef,
        emit: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> DfResult<()> {
        let path = &self.files[i];
        let io = |e: std::io::Error| {
            Error::plan("58030", format!("reading \"{}\": {e}", path.display()))
        };
        let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            let mut lines = StringBuilder::with_capacity(BATCH_LINES, BATCH_LINES * 64);
            let mut rows = 0;
            while rows < BATCH_LINES {
                line.clear();
                if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
                    break;
                }
                number += 1;
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                let text = std::str::from_utf8(&line).map_err(|_| {
                    Error::data(
                        "22021",
                        format!(
                            "\"{}\", line {number}: invalid byte sequence for encoding \"UTF8\"",
                            path.display()
                        ),
                    )
                })?;
                lines.append_value(text);
                rows += 1;
            }
            if rows == 0 {
                return Ok(());
            }
            // With an empty projection (count(*)), only the row count is needed.
            let columns = if schema.fields().is_empty() {
                vec![]
            } else {
                vec![Arc::new(lines.finish()) as _]
            };
            let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
            if !emit(RecordBatch::try_new_with_options(
                schema.clone(),
                columns,
                &options,
            )?) {
                return Ok(());
            }
        }
    }
}
