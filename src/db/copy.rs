//! `COPY … FROM STDIN` in a session.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::{Output, Session};
use crate::catalog::{Principal, Privilege, Relation, SqlType};
use crate::error::{Error, Result};
use crate::ingest::WriteTarget;
use crate::ingest::copy::{CopyColumn, CopyDecoder, RawRows};
use crate::ingest::writer::{PendingWrite, RowWriter};
use crate::progress::CopyProgress;
use crate::sql::parser::CopyFrom;

/// An in-progress `COPY … FROM STDIN`.
///
/// The connection's task splits input into rows; typing and partitioning them runs on
/// blocking threads, at most [`COPY_TYPING_AHEAD`] batches ahead, so a large `COPY` uses a
/// second core. Results are merged in input order.
pub(super) struct CopyIn {
    started: Instant,
    target: WriteTarget,
    decoder: CopyDecoder,
    typing: VecDeque<tokio::task::JoinHandle<Result<PendingWrite>>>,
    pending: PendingWrite,
    input_since_commit: u64,
    committed_rows: u64,
    /// What `sys.copies` shows of it.
    progress: Arc<CopyProgress>,
}

const COPY_TYPING_AHEAD: usize = 2;

impl CopyIn {
    async fn type_rows(&mut self, rows: RawRows, writer: &Arc<RowWriter>) -> Result<()> {
        while self.typing.len() >= COPY_TYPING_AHEAD {
            self.merge_oldest().await?;
        }
        let target = self.target.clone();
        let writer = writer.clone();
        self.typing.push_back(tokio::task::spawn_blocking(move || {
            let mut pending = PendingWrite::default();
            writer.stage(&target, &rows.typed()?, &mut pending)?;
            Ok(pending)
        }));
        Ok(())
    }

    async fn merge_oldest(&mut self) -> Result<()> {
        let handle = self.typing.pop_front().expect("something is being typed");
        let typed = handle
            .await
            .map_err(|e| Error::Internal(format!("typing COPY rows: {e}")))??;
        self.pending.extend(typed);
        Ok(())
    }

    /// Waits for every batch being typed; afterwards `pending` holds all input so far.
    async fn settle(&mut self) -> Result<()> {
        while !self.typing.is_empty() {
            self.merge_oldest().await?;
        }
        Ok(())
    }
}

impl Session {
    pub(super) fn start_copy(&mut self, c: CopyFrom, who: &Principal) -> Result<Output> {
        let data = self.db.tables.catalog.snapshot();
        let relation = data.relation(&c.target).ok_or_else(|| {
            Error::UnknownRelation(format!("relation \"{}\" does not exist", c.target))
        })?;
        data.check(who, Privilege::Insert, &c.target)?;
        let target = WriteTarget::of(&data, &relation).ok_or_else(|| {
            Error::plan(
                "42809",
                format!(
                    "cannot COPY into external table \"{}\"; it is read-only",
                    c.target
                ),
            )
        })?;
        let types: Vec<SqlType> = match &relation {
            Relation::Stream(stream, _) => stream.columns.iter().map(|c| c.sql_type).collect(),
            _ => vec![SqlType::Bytea, SqlType::Bytea],
        };
        let names = target.column_names();
        let mut columns = vec![];
        if c.columns.is_empty() {
            for (index, name) in names.iter().enumerate() {
                columns.push(CopyColumn {
                    name: name.clone(),
                    sql_type: types[index],
                    index,
                });
            }
        } else {
            for name in &c.columns {
                let index = names.iter().position(|n| n == name).ok_or_else(|| {
                    Error::plan(
                        "42703",
                        format!(
                            "column \"{name}\" of relation \"{}\" does not exist",
                            c.target
                        ),
                    )
                })?;
                if columns.iter().any(|c: &CopyColumn| c.index == index) {
                    return Err(Error::plan(
                        "42701",
                        format!("column \"{name}\" specified more than once"),
                    ));
                }
                columns.push(CopyColumn {
                    name: name.clone(),
                    sql_type: types[index],
                    index,
                });
            }
        }
        let format = c.options.format;
        let count = columns.len();
        let decoder = CopyDecoder::new(&c.target, c.options, columns, target.row_schema.clone());
        self.copy = Some(CopyIn {
            started: Instant::now(),
            target,
            decoder,
            typing: Default::default(),
            pending: PendingWrite::default(),
            input_since_commit: 0,
            committed_rows: 0,
            progress: self
                .db
                .tables
                .copies
                .start(self.number, &who.name, &c.target),
        });
        Ok(Output::CopyIn {
            columns: count,
            format,
        })
    }

    /// Takes a chunk of `COPY` data. On error the `COPY` is over and nothing of it that
    /// was not already committed in an earlier chunk is written.
    pub async fn copy_data(&mut self, data: &[u8]) -> Result<()> {
        let result = self.copy_data_inner(data).await;
        if let Err(e) = result {
            let copy = self.copy.take();
            return Err(committed_before(e, copy.as_ref()));
        }
        Ok(())
    }

    async fn copy_data_inner(&mut self, data: &[u8]) -> Result<()> {
        let chunk = self.db.config.copy_chunk_bytes;
        let writer = self.db.tables.writer.clone();
        let copy = self
            .copy
            .as_mut()
            .ok_or_else(|| Error::Protocol("COPY data without a COPY".into()))?;
        for rows in copy.decoder.push(data)? {
            copy.type_rows(rows, &writer).await?;
        }
        copy.progress
            .rows
            .store(copy.decoder.rows(), std::sync::atomic::Ordering::Relaxed);
        // Counted once its rows are: a reader that sees the bytes sees them parsed.
        CopyProgress::add(&copy.progress.bytes, data.len() as u64);
        copy.input_since_commit += copy.decoder.take_input_bytes();
        if copy.input_since_commit > chunk {
            if let Some(rows) = copy.decoder.take_rows() {
                copy.type_rows(rows, &writer).await?;
            }
            copy.settle().await?;
            copy.committed_rows += writer.commit(std::mem::take(&mut copy.pending)).await?;
            copy.progress
                .committed
                .store(copy.committed_rows, std::sync::atomic::Ordering::Relaxed);
            copy.input_since_commit = 0;
        }
        Ok(())
    }

    /// Ends `COPY` input: commits what is left and returns the row count.
    pub async fn copy_done(&mut self) -> Result<Output> {
        let mut copy = self
            .copy
            .take()
            .ok_or_else(|| Error::Protocol("COPY done without a COPY".into()))?;
        let writer = self.db.tables.writer.clone();
        let rest = async {
            for rows in copy.decoder.finish()? {
                copy.type_rows(rows, &writer).await?;
            }
            copy.settle().await?;
            writer.commit(std::mem::take(&mut copy.pending)).await
        };
        let rows = match rest.await {
            Ok(rows) => copy.committed_rows + rows,
            Err(e) => return Err(committed_before(e, Some(&copy))),
        };
        tracing::debug!(
            stream = %copy.target.relation,
            rows,
            total_ms = copy.started.elapsed().as_millis() as u64,
            "COPY committed"
        );
        Ok(Output::Command {
            tag: "COPY",
            rows: Some(rows),
        })
    }

    /// The client abandoned the `COPY`: nothing not already committed is written (the
    /// client is not told how much was: it asked for the end).
    pub fn copy_fail(&mut self) {
        self.copy = None;
    }
}

/// A failed `COPY`'s error, saying how many of its rows earlier chunks committed (they stay).
fn committed_before(e: Error, copy: Option<&CopyIn>) -> Error {
    match copy.map(|c| c.committed_rows) {
        Some(rows) if rows > 0 => e.noting(&format!(
            "{rows} rows of this COPY were committed before the error (each --copy-chunk-bytes of input commits on its own); the rows after them were not"
        )),
        _ => e,
    }
}
