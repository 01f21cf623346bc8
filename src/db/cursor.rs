//! Cursors: `DECLARE … CURSOR`, `FETCH` and `CLOSE`, for drivers that read a whole result
//! before returning it and so cannot read one that never ends.
//!
//! A cursor over a bounded `SELECT` reads its plan's batches as `FETCH` asks for rows. One
//! over a push query or `SUBSCRIBE` runs that query in a task of its own, which hands epochs
//! over a channel of one; when the client stops fetching, the task waits, reading nothing
//! more (so a slow client holds back only itself). `FETCH` returns what is ready, waiting
//! (up to its `timeout`) only when nothing is.
//!
//! A subscription cursor (`DECLARE c SUBSCRIPTION CURSOR FOR group`) reads its stream from
//! the group's committed offsets, exactly as many records as `FETCH` asks for, and remembers
//! where it got to; `COMMIT` makes that the group's committed offsets.

use std::collections::VecDeque;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::PushRows;
use crate::engine::PushQuery;
use crate::error::{Error, Result};
use crate::groups::{PartitionOffset, Reading};

pub(super) struct Cursor {
    schema: SchemaRef,
    source: Source,
    /// Rows read from the source and not fetched yet.
    buffered: VecDeque<RecordBatch>,
    /// An error the source raised after rows that were fetched first.
    failed: Option<Error>,
}

enum Source {
    /// (In a mutex only so that sessions can be shared between threads; it is never locked
    /// but through `&mut`.)
    Rows(std::sync::Mutex<SendableRecordBatchStream>),
    Push {
        epochs: mpsc::Receiver<Result<Vec<RecordBatch>>>,
        task: JoinHandle<()>,
    },
    Group(GroupCursor),
}

/// A subscription cursor: the stream read from where the group is.
pub(super) struct GroupCursor {
    pub group: String,
    pub query: Box<PushQuery>,
    /// Whether a `FETCH` has moved it since it was declared.
    pub moved: bool,
    pub _reading: Reading,
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Source::Push { task, .. } = self {
            task.abort();
        }
    }
}

impl Cursor {
    pub fn rows(stream: SendableRecordBatchStream) -> Cursor {
        Cursor::new(stream.schema(), Source::Rows(std::sync::Mutex::new(stream)))
    }

    /// A cursor over a push query or subscription, which starts reading at once.
    pub fn push(mut rows: Box<PushRows>) -> Cursor {
        let schema = rows.schema();
        let (tx, epochs) = mpsc::channel(1);
        let task = tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = rows.next() => next,
                    () = tx.closed() => return,
                };
                let ended = !matches!(next, Ok(Some(_)));
                let sent = match next {
                    Ok(Some(epoch)) => tx.send(Ok(epoch)).await,
                    Ok(None) => return,
                    Err(e) => tx.send(Err(e)).await,
                };
                if sent.is_err() || ended {
                    return;
                }
            }
        });
        Cursor::new(schema, Source::Push { epochs, task })
    }

    pub fn group(group: GroupCursor) -> Cursor {
        Cursor::new(group.query.schema(), Source::Group(group))
    }

    fn new(schema: SchemaRef, source: Source) -> Cursor {
        Cursor {
            schema,
            source,
            buffered: VecDeque::new(),
            failed: None,
        }
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The group and the offsets it has read up to, for a subscription cursor that has
    /// moved.
    pub fn group_position(&self) -> Option<(&str, Vec<PartitionOffset>)> {
        match &self.source {
            Source::Group(g) if g.moved => Some((
                &g.group,
                g.query
                    .positions()
                    .iter()
                    .map(|p| (p.topic, p.partition, p.offset))
                    .collect(),
            )),
            _ => None,
        }
    }

    /// Up to `count` rows (all if `None`): those ready now, or, when none are, the first
    /// that come within `timeout` (or ever, without one). A bounded query's cursor returns
    /// `count` rows unless it ends first.
    pub async fn fetch(
        &mut self,
        count: Option<u64>,
        timeout: Option<Duration>,
    ) -> Result<Vec<RecordBatch>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let want = count.unwrap_or(u64::MAX);
        let mut out = Taken::default();
        out.take(&mut self.buffered, want);
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        match &mut self.source {
            Source::Rows(stream) => {
                let stream = stream.get_mut().expect("never poisoned");
                while out.rows < want {
                    match stream.next().await {
                        Some(batch) => {
                            self.buffered.push_back(batch?);
                            out.take(&mut self.buffered, want);
                        }
                        None => break,
                    }
                }
            }
            Source::Push { epochs, .. } => {
                if out.rows == 0 && want > 0 {
                    let first = match deadline {
                        Some(deadline) => tokio::time::timeout_at(deadline, epochs.recv())
                            .await
                            .unwrap_or(None),
                        None => epochs.recv().await,
                    };
                    if let Some(epoch) = first {
                        self.buffered.extend(epoch?);
                        out.take(&mut self.buffered, want);
                    }
                }
                while out.rows < want {
                    match epochs.try_recv() {
                        Ok(Ok(epoch)) => {
                            self.buffered.extend(epoch);
                            out.take(&mut self.buffered, want);
                        }
                        Ok(Err(e)) => {
                            self.failed = Some(e);
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            Source::Group(g) => {
                if out.rows < want {
                    // Exactly as many records as asked for, so that the position is that of
                    // the last row returned.
                    let rows = g.query.read(want - out.rows, deadline).await?;
                    if !rows.is_empty() {
                        g.moved = true;
                    }
                    out.batches.extend(rows);
                }
            }
        }
        Ok(out.batches)
    }
}

/// Rows taken for one `FETCH`.
#[derive(Default)]
struct Taken {
    batches: Vec<RecordBatch>,
    rows: u64,
}

impl Taken {
    /// Moves rows from `buffered` until `want` have been taken.
    fn take(&mut self, buffered: &mut VecDeque<RecordBatch>, want: u64) {
        while self.rows < want {
            let Some(batch) = buffered.pop_front() else {
                return;
            };
            let n = batch.num_rows() as u64;
            if self.rows + n <= want {
                self.rows += n;
                self.batches.push(batch);
            } else {
                let keep = (want - self.rows) as usize;
                buffered.push_front(batch.slice(keep, batch.num_rows() - keep));
                self.batches.push(batch.slice(0, keep));
                self.rows = want;
            }
        }
    }
}
