//! Fetch: records from where a consumer asks, long-polling when there are too few, and
//! read ahead for consumers that are behind.
//!
//! A consumer that is behind sends Fetch after Fetch, each starting where the answer before
//! ended, and clients keep one Fetch in flight per broker: left alone, the server reads and
//! encodes while the client waits, then the client parses while the server waits. So when
//! an answer leaves records behind it in a partition, the connection starts reading the next
//! ones at once ([`ReadAhead`]), and the next Fetch asking for them finds them ready, or
//! under way. A read ahead serves only the connection's next Fetch, and only for the same
//! topic (by id: a name can be reused), partition and offset, within that Fetch's limits;
//! otherwise it is dropped and the partition read as usual. It holds no more than the
//! answer it follows did.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use tokio::task::JoinHandle;

use super::Handler;
use crate::db::Database;
use crate::db::kafka::{FetchedBatch, Records};
use crate::kafka::records::{self, Codec};
use crate::storage::TopicId;

/// The longest a Fetch waits for records, whatever it asks.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// A connection's reads ahead: the partitions its last Fetch answer left records behind
/// in, each being read from where that answer ended.
#[derive(Default)]
pub struct ReadAhead {
    reads: HashMap<(String, i32), Ahead>,
}

/// A read of one partition: where from, and within what.
#[derive(Clone)]
struct Asked {
    topic: String,
    partition: i32,
    offset: i64,
    /// The most bytes of records (see [`encode_within`]).
    limit: usize,
    /// Whether these are the response's first records.
    first: bool,
}

/// One partition read ahead, with what it was read for.
struct Ahead {
    asked: Asked,
    read: JoinHandle<Result<PartitionRead, (i16, String)>>,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        // Nobody will take it: no more work for it (a no-op once it is done).
        self.read.abort();
    }
}

impl Ahead {
    /// Starts reading what `asked` names.
    fn start(db: Arc<Database>, asked: Asked) -> Ahead {
        let read = tokio::spawn(read_partition(db, asked.clone()));
        Ahead { asked, read }
    }

    /// Its records, if they answer `asked`: the same topic (by id), partition and offset,
    /// and within the limit (or read with the same one, as the response's first records).
    async fn take(mut self, db: &Database, asked: &Asked) -> Option<PartitionRead> {
        let wanted = self.asked.partition == asked.partition && self.asked.offset == asked.offset;
        if !wanted {
            return None;
        }
        let read = (&mut self.read).await.ok()?.ok()?;
        let fits = read.records.len() <= asked.limit
            || (asked.first && self.asked.first && asked.limit == self.asked.limit);
        let same_topic = db.kafka_topic_id(&asked.topic) == Some(read.topic);
        (fits && same_topic && !read.records.is_empty()).then_some(read)
    }
}

/// One partition's part of a Fetch answer.
struct PartitionRead {
    topic: TopicId,
    high_watermark: i64,
    log_start_offset: i64,
    /// Encoded record batches.
    records: Bytes,
    /// The offset after the last record in `records`.
    next_offset: i64,
}

/// One pass over the partitions a Fetch names.
struct Pass {
    response: FetchResponse,
    /// The record bytes in the response.
    bytes: usize,
    /// Whether any partition has an error.
    errors: bool,
    /// Where the answer left records behind: the reads to start ahead.
    behind: Vec<Asked>,
}

impl Handler {
    /// Answers when records reach `min_bytes`, or after `max_wait_ms`, waking on each
    /// commit to the log (never polling on a timer); then reads ahead where the answer
    /// left records behind.
    pub(super) async fn fetch(
        &self,
        request: FetchRequest,
        ahead: &mut ReadAhead,
    ) -> FetchResponse {
        let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let mut commits = self.db.log().subscribe_commits();
        // Only this Fetch may use what the one before read ahead.
        let mut ready = std::mem::take(&mut ahead.reads);
        let pass = loop {
            commits.borrow_and_update();
            let pass = self.fetch_once(&request, &mut ready).await;
            if pass.errors || pass.bytes >= request.min_bytes.max(0) as usize {
                break pass;
            }
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { break pass },
                _ = tokio::time::sleep_until(deadline) => {
                    break self.fetch_once(&request, &mut ready).await;
                }
            }
        };
        drop(ready);
        for next in pass.behind {
            let key = (next.topic.clone(), next.partition);
            ahead.reads.insert(key, Ahead::start(self.db.clone(), next));
        }
        pass.response
    }

    /// One pass over the partitions a Fetch names, taking what was read ahead for them.
    async fn fetch_once(
        &self,
        request: &FetchRequest,
        ready: &mut HashMap<(String, i32), Ahead>,
    ) -> Pass {
        let max_bytes = if request.max_bytes > 0 {
            request.max_bytes as usize
        } else {
            usize::MAX
        };
        let mut used = 0usize;
        let mut errors = false;
        let mut behind = vec![];
        let mut topics = vec![];
        for topic in &request.topics {
            let name = topic.topic.0.as_str();
            let mut partitions = vec![];
            for wanted in &topic.partitions {
                // Past the response's size, nothing more is read.
                let room = max_bytes.saturating_sub(used);
                let limit = (wanted.partition_max_bytes.max(0) as usize).min(room);
                let asked = Asked {
                    topic: name.to_string(),
                    partition: wanted.partition,
                    offset: wanted.fetch_offset,
                    limit,
                    first: used == 0,
                };
                let early = match ready.remove(&(asked.topic.clone(), asked.partition)) {
                    Some(ahead) => ahead.take(&self.db, &asked).await,
                    None => None,
                };
                let read = match early {
                    Some(read) => Ok(read),
                    None => read_partition(self.db.clone(), asked.clone()).await,
                };
                let mut data = PartitionData::default().with_partition_index(wanted.partition);
                match read {
                    Ok(read) => {
                        used += read.records.len();
                        if !read.records.is_empty() && read.next_offset < read.high_watermark {
                            behind.push(Asked {
                                offset: read.next_offset,
                                ..asked
                            });
                        }
                        data = data
                            .with_high_watermark(read.high_watermark)
                            .with_last_stable_offset(read.high_watermark)
                            .with_log_start_offset(read.log_start_offset)
                            .with_records(Some(read.records));
                    }
                    Err((code, message)) => {
                        tracing::debug!(topic = name, partition = wanted.partition, %message, "fetch refused");
                        errors = true;
                        data = data.with_error_code(code).with_high_watermark(-1);
                    }
                }
                partitions.push(data);
            }
            topics.push(
                FetchableTopicResponse::default()
                    .with_topic(topic.topic.clone())
                    .with_partitions(partitions),
            );
        }
        Pass {
            response: FetchResponse::default().with_responses(topics),
            bytes: used,
            errors,
            behind,
        }
    }
}

/// Reads the records `asked` names and encodes them.
async fn read_partition(db: Arc<Database>, asked: Asked) -> Result<PartitionRead, (i16, String)> {
    let fetched = db
        .kafka_fetch(&asked.topic, asked.partition, asked.offset, asked.limit)
        .await?;
    let (records, next_offset) = encode_within(&fetched.batches, asked.limit, asked.first);
    Ok(PartitionRead {
        topic: fetched.topic,
        high_watermark: fetched.high_watermark,
        log_start_offset: fetched.log_start_offset,
        records: records.freeze(),
        next_offset: next_offset.unwrap_or(asked.offset),
    })
}

/// Record batches for a Fetch answer, in order, as many as fit in `limit` bytes, and the
/// offset after their last record. Clients size their receive buffers from what they asked
/// for (librdkafka drops a connection whose response is larger), so nothing goes past the
/// limit, but for KIP-74's exception: when `first` (nothing else is in the response yet),
/// the first batch goes out whatever the limit, so a consumer always progresses. Batches
/// are cut where records allow: that one is no larger than it must be (one record, at
/// least).
fn encode_within(batches: &[FetchedBatch], limit: usize, first: bool) -> (BytesMut, Option<i64>) {
    let mut out = BytesMut::new();
    let mut next = None;
    for batch in batches {
        let (base, records) = (batch.base_offset, &batch.records);
        let deltas = batch.deltas.as_deref();
        // The offset after the first `n` records.
        let after = |n: usize| base + deltas.map_or(n as i64, |d| d[n - 1] as i64 + 1);
        let encode = |out: &mut BytesMut, records: &Records, n: usize| {
            records::encode_batch_at(out, base, deltas.map(|d| &d[..n]), records, Codec::None)
        };
        // Encoded in place, and taken back if it does not fit.
        let before = out.len();
        encode(&mut out, records, records.len());
        if out.len() <= limit {
            next = Some(after(records.len()));
            continue;
        }
        out.truncate(before);
        if first && out.is_empty() {
            // The longest prefix that fits, found by halving.
            let (mut fits, mut fails) = (1, records.len());
            while fails - fits > 1 {
                let middle = (fits + fails) / 2;
                encode(&mut out, &records.prefix(middle), middle);
                if out.len() <= limit {
                    fits = middle;
                } else {
                    fails = middle;
                }
                out.clear();
            }
            encode(&mut out, &records.prefix(fits), fits);
            next = Some(after(fits));
        }
        break;
    }
    (out, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` records with 100-byte values and no keys or headers.
    fn records(n: usize) -> Records {
        let mut headers = records::headers_builder();
        (0..n).for_each(|_| headers.append(true));
        Records {
            timestamps: vec![1_700_000_000_000; n],
            keys: arrow::array::BinaryArray::from_iter((0..n).map(|_| None::<Vec<u8>>)),
            values: arrow::array::BinaryArray::from_iter((0..n).map(|i| Some(vec![i as u8; 100]))),
            headers: headers.finish(),
        }
    }

    /// The records of the batches in `bytes`: (first offset, count) per batch.
    fn batches_in(mut bytes: &[u8]) -> Vec<(i64, usize)> {
        let mut found = vec![];
        while !bytes.is_empty() {
            let (_, length) = records::read_header(bytes).unwrap();
            let (header, records) = records::decode_batch(&bytes[..length], usize::MAX).unwrap();
            found.push((header.base_offset, records.len()));
            bytes = &bytes[length..];
        }
        found
    }

    #[test]
    fn fetch_answers_stay_within_their_limit_but_the_first_records_always_go() {
        let batch = |base_offset: i64| FetchedBatch {
            base_offset,
            deltas: None,
            records: records(10),
        };
        let batches = vec![batch(0), batch(10)];
        let (whole, next) = encode_within(&batches, usize::MAX, true);
        assert_eq!(batches_in(&whole), vec![(0, 10), (10, 10)]);
        assert_eq!(next, Some(20));
        // Room for one batch and a half: the first only.
        let (one, next) = encode_within(&batches, whole.len() * 3 / 4, false);
        assert_eq!(batches_in(&one), vec![(0, 10)]);
        assert_eq!(next, Some(10));
        // Room for less than a batch: nothing, unless these are the response's first
        // records, which are cut to fit.
        let limit = whole.len() / 4;
        assert_eq!(
            encode_within(&batches, limit, false),
            (BytesMut::new(), None)
        );
        let (cut, next) = encode_within(&batches, limit, true);
        assert!(cut.len() <= limit, "{} > {limit}", cut.len());
        let found = batches_in(&cut);
        assert!(
            found.len() == 1 && (1..10).contains(&found[0].1),
            "{found:?}"
        );
        assert_eq!(next, Some(found[0].1 as i64));
        // Room for no record at all: still one, so the consumer progresses.
        let (one, next) = encode_within(&batches, 10, true);
        assert_eq!(batches_in(&one), vec![(0, 1)]);
        assert_eq!(next, Some(1));
    }

    #[test]
    fn a_compacted_topics_records_keep_their_offsets() {
        let batches = vec![FetchedBatch {
            base_offset: 5,
            deltas: Some(vec![0, 3, 7]),
            records: records(3),
        }];
        let (out, next) = encode_within(&batches, usize::MAX, true);
        let (header, _) = records::read_header(&out).unwrap();
        assert_eq!((header.base_offset, header.last_offset_delta), (5, 7));
        assert_eq!(header.record_count, 3);
        assert_eq!(next, Some(13));
        // Cut to its first two records, it ends after the second.
        let (cut, next) = encode_within(&batches, out.len() - 1, true);
        let (header, _) = records::read_header(&cut).unwrap();
        assert_eq!((header.last_offset_delta, next), (3, Some(9)));
    }
}
