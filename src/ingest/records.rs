//! Rows become records: the write path shared by `INSERT` and `COPY`.
//!
//! Given rows in a relation's shape (a stream's declared columns, or `_key, _value` for a
//! schemaless topic), [`WriteTarget::partition`] checks NOT NULL columns, derives each
//! record's timestamp and key, picks its partition, and returns one batch per partition in
//! the topic's storage schema — ready for one atomic append.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, RecordBatch, TimestampMillisecondArray,
    UInt32Array,
};
use arrow::compute::kernels::cast::cast;
use arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};

use super::key;
use crate::catalog::{CatalogData, Relation};
use crate::error::{Error, Result};
use crate::sql::text_type::TextType;
use crate::storage::{PartitionBatch, PartitionId, TopicId};

/// Where rows of a relation go, and how they become records.
#[derive(Debug, Clone)]
pub struct WriteTarget {
    /// The stream or topic name, for messages.
    pub relation: String,
    pub topic: TopicId,
    pub partitions: u32,
    pub storage_schema: SchemaRef,
    /// The rows writers supply. Every field is nullable here; NOT NULL columns are checked
    /// by [`WriteTarget::partition`], which can name the column.
    pub row_schema: SchemaRef,
    /// Per row column: declared NOT NULL.
    not_null: Vec<bool>,
    shape: Shape,
    /// Where records whose key is NULL go: round-robin when `None` (Kafka's way for
    /// records without a key); a fixed partition for upsert records, so the updates of
    /// the NULL group stay in order like any other key's.
    pub null_key_partition: Option<u32>,
    /// For a table: its primary key, which writes check.
    pub table: Option<Arc<TableTarget>>,
}

/// What writing a table needs besides a stream's write path: its primary key, for the
/// checks and messages of [`super::table`], and where its records keep their tombstone
/// flag and key.
#[derive(Debug, Clone)]
pub struct TableTarget {
    /// The primary key constraint's name (`users_pkey`).
    pub constraint: String,
    /// The primary key's columns, by index in the rows written; none for a table without
    /// one, whose rows are keyed by row ids ([`super::table::row_ids`]).
    pub key_columns: Vec<usize>,
    /// [`crate::catalog::TOMBSTONE_COLUMN`]'s index in the storage schema.
    pub tombstone: usize,
    /// [`crate::storage::KEY_COLUMN`]'s index in the storage schema.
    pub key: usize,
}

#[derive(Debug, Clone)]
enum Shape {
    Stream {
        key_columns: Vec<usize>,
        timestamp_column: Option<usize>,
    },
    /// Rows are `(_key, _value)`, both bytes.
    Topic,
}

impl WriteTarget {
    /// The names of the columns a row written here has, in order.
    pub fn column_names(&self) -> Vec<String> {
        self.row_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// The write target of a stream or schemaless topic; `None` for other relations.
    pub fn of(catalog: &CatalogData, relation: &Relation<'_>) -> Option<WriteTarget> {
        match relation {
            Relation::Stream(stream, topic) => {
                let key_columns: Vec<usize> = stream
                    .key_columns
                    .iter()
                    .map(|k| stream.column(k).expect("key columns are columns").0)
                    .collect();
                let timestamp_column = stream
                    .timestamp_column
                    .as_ref()
                    .map(|c| stream.column(c).expect("timestamp column is a column").0);
                let table = stream.is_table().then(|| {
                    let n = stream.columns.len();
                    Arc::new(TableTarget {
                        constraint: stream.key_constraint(),
                        key_columns: key_columns.clone(),
                        tombstone: n,
                        key: n + 2,
                    })
                });
                Some(WriteTarget {
                    relation: stream.name.clone(),
                    topic: topic.id,
                    partitions: topic.partitions,
                    storage_schema: catalog.storage_schema(topic),
                    row_schema: Arc::new(Schema::new(
                        stream
                            .value_fields()
                            .iter()
                            .map(|f| f.as_ref().clone().with_nullable(true))
                            .collect::<Vec<_>>(),
                    )),
                    not_null: stream.columns.iter().map(|c| !c.nullable).collect(),
                    shape: Shape::Stream {
                        key_columns,
                        timestamp_column,
                    },
                    null_key_partition: None,
                    table,
                })
            }
            Relation::Topic(topic) => Some(WriteTarget {
                relation: topic.name.clone(),
                topic: topic.id,
                partitions: topic.partitions,
                storage_schema: catalog.storage_schema(topic),
                row_schema: Arc::new(Schema::new(vec![
                    arrow::datatypes::Field::new(
                        crate::storage::KEY_COLUMN,
                        DataType::Binary,
                        true,
                    ),
                    arrow::datatypes::Field::new(
                        crate::catalog::VALUE_COLUMN,
                        DataType::Binary,
                        true,
                    ),
                ])),
                not_null: vec![false, false],
                shape: Shape::Topic,
                null_key_partition: None,
                table: None,
            }),
            Relation::External(_) | Relation::View(_) => None,
        }
    }

    /// Turns rows into per-partition record batches. `round_robin` is the topic's counter
    /// for records without a key; `now_ms` the append time.
    pub fn partition(
        &self,
        rows: &RecordBatch,
        round_robin: &AtomicU64,
        given: &Given,
    ) -> Result<Vec<PartitionBatch>> {
        let n = rows.num_rows();
        if n == 0 {
            return Ok(vec![]);
        }
        let records = self.records(rows, given)?;
        let keys = records.column(records.num_columns() - 2).clone();
        if self.partitions == 1 {
            return Ok(vec![PartitionBatch {
                topic: self.topic,
                partition: PartitionId(0),
                records,
            }]);
        }
        let keys = keys.as_binary::<i32>();
        let unkeyed = match self.null_key_partition {
            Some(_) => 0,
            None => keys.null_count() as u64,
        };
        let mut next_round_robin = round_robin.fetch_add(unkeyed, Ordering::Relaxed);
        let mut rows_of: Vec<Vec<u32>> = vec![vec![]; self.partitions as usize];
        for i in 0..n {
            let p = if keys.is_null(i) {
                if let Some(p) = self.null_key_partition {
                    p % self.partitions
                } else {
                    let p = (next_round_robin % self.partitions as u64) as u32;
                    next_round_robin += 1;
                    p
                }
            } else {
                key::partition_for_key(keys.value(i), self.partitions)
            };
            rows_of[p as usize].push(i as u32);
        }
        let mut out = vec![];
        for (p, indices) in rows_of.into_iter().enumerate() {
            if indices.is_empty() {
                continue;
            }
            let records = if indices.len() == n {
                records.clone()
            } else {
                arrow::compute::take_record_batch(&records, &UInt32Array::from(indices))
                    .map_err(|e| Error::Internal(format!("splitting records by partition: {e}")))?
            };
            out.push(PartitionBatch {
                topic: self.topic,
                partition: PartitionId(p as u32),
                records,
            });
        }
        Ok(out)
    }

    /// Turns rows into records in the topic's storage schema, checking NOT NULL columns and
    /// deriving each record's key and timestamp.
    pub fn records(&self, rows: &RecordBatch, given: &Given) -> Result<RecordBatch> {
        let checked = self.text_types_checked(rows)?;
        let rows = checked.as_ref().unwrap_or(rows);
        let n = rows.num_rows();
        if rows.num_columns() != self.row_schema.fields().len() {
            return Err(Error::Internal(format!(
                "{} columns written to \"{}\", which has {}",
                rows.num_columns(),
                self.relation,
                self.row_schema.fields().len()
            )));
        }
        for ((field, column), not_null) in self
            .row_schema
            .fields()
            .iter()
            .zip(rows.columns())
            .zip(&self.not_null)
        {
            if column.data_type() != field.data_type() {
                return Err(Error::Internal(format!(
                    "column \"{}\" of \"{}\" written as {}, stored as {}",
                    field.name(),
                    self.relation,
                    column.data_type(),
                    field.data_type()
                )));
            }
            let null = match &given.deleted {
                // A tombstone's columns other than its key are NULL.
                Some(deleted) => {
                    (0..n).any(|i| column.is_null(i) && !(deleted.is_valid(i) && deleted.value(i)))
                }
                None => column.null_count() > 0,
            };
            if *not_null && null {
                return Err(Error::data(
                    "23502",
                    format!(
                        "null value in column \"{}\" of stream \"{}\" violates not-null constraint",
                        field.name(),
                        self.relation
                    ),
                ));
            }
        }

        let (values, timestamps, keys): (Vec<ArrayRef>, ArrayRef, ArrayRef) = match &self.shape {
            Shape::Stream {
                key_columns,
                timestamp_column,
            } => {
                let timestamps = match timestamp_column {
                    Some(c) => timestamps_from(rows.column(*c), given.now_ms)?,
                    None => given.timestamps(n),
                };
                let keys: ArrayRef = match (&given.keys, &self.table) {
                    (Some(keys), _) => Arc::new(keys.clone()),
                    // A table without a primary key: each row a key of its own.
                    (None, Some(table)) if table.key_columns.is_empty() => {
                        Arc::new(super::table::row_ids(n))
                    }
                    _ => Arc::new(key::encode_keys(rows, key_columns)?),
                };
                (rows.columns().to_vec(), timestamps, keys)
            }
            Shape::Topic => (
                vec![rows.column(1).clone()],
                given.timestamps(n),
                rows.column(0).clone(),
            ),
        };

        let mut columns = values;
        if self.table.is_some() {
            columns.push(match &given.deleted {
                Some(deleted) => Arc::new(deleted.clone()),
                None => arrow::array::new_null_array(&DataType::Boolean, n),
            });
        }
        columns.extend(crate::storage::system_columns(timestamps, keys));
        if let Some(headers) = &given.headers {
            *columns.last_mut().expect("system columns") = headers.clone();
        }
        RecordBatch::try_new(self.storage_schema.clone(), columns)
            .map_err(|e| Error::Internal(format!("building records: {e}")))
    }
}

impl WriteTarget {
    /// `rows` with the values of their `json`, `jsonb` and `uuid` columns checked (22P02 if
    /// one is not such a value) and in their canonical text; `None` if it has no such
    /// columns.
    fn text_types_checked(&self, rows: &RecordBatch) -> Result<Option<RecordBatch>> {
        let kinds: Vec<Option<TextType>> = self
            .row_schema
            .fields()
            .iter()
            .map(|f| TextType::of(f))
            .collect();
        if kinds.iter().all(Option::is_none) || rows.num_columns() != kinds.len() {
            return Ok(None);
        }
        let mut columns = rows.columns().to_vec();
        for (column, kind) in columns.iter_mut().zip(kinds) {
            let Some(kind) = kind else { continue };
            let texts = arrow::compute::cast(column, &DataType::Utf8)
                .map_err(|e| Error::Internal(format!("reading JSON values: {e}")))?;
            let mut normal = arrow::array::StringBuilder::new();
            for text in texts.as_string::<i32>() {
                match text {
                    None => normal.append_null(),
                    Some(text) => match kind.input(text) {
                        Ok(None) => normal.append_value(text),
                        Ok(Some(canonical)) => normal.append_value(canonical),
                        Err(e) => return Err(e),
                    },
                }
            }
            *column = Arc::new(normal.finish());
        }
        RecordBatch::try_new(rows.schema(), columns)
            .map(Some)
            .map_err(|e| Error::Internal(format!("canonical values: {e}")))
    }
}

/// What a writer gives of its records besides their rows.
#[derive(Debug, Clone)]
pub struct Given {
    /// The append time (ms): a record's timestamp where nothing else gives one.
    pub now_ms: i64,
    /// Each record's own timestamp (a Kafka producer's), used unless the stream takes its
    /// timestamps from a column.
    pub timestamps: Option<ArrayRef>,
    /// Each record's headers, of [`crate::storage::headers_type`].
    pub headers: Option<ArrayRef>,
    /// For a table: which records are tombstones (deletes of their key).
    pub deleted: Option<BooleanArray>,
    /// Each record's key, where it is not made from the rows (a table's rows being deleted
    /// or rewritten in place).
    pub keys: Option<BinaryArray>,
}

impl Given {
    /// Records timestamped when they are appended, without headers (SQL's writes).
    pub fn append_time(now_ms: i64) -> Given {
        Given {
            now_ms,
            timestamps: None,
            headers: None,
            deleted: None,
            keys: None,
        }
    }

    fn timestamps(&self, n: usize) -> ArrayRef {
        match &self.timestamps {
            Some(given) => given.clone(),
            None => Arc::new(TimestampMillisecondArray::from_value(self.now_ms, n)),
        }
    }
}

/// Record timestamps (ms) from a timestamp-like column; append time where it is NULL.
fn timestamps_from(column: &ArrayRef, now_ms: i64) -> Result<ArrayRef> {
    let ms = DataType::Timestamp(TimeUnit::Millisecond, None);
    let converted = match column.data_type() {
        DataType::Int64 => cast(column, &DataType::Int64)
            .and_then(|c| cast(&c, &ms))
            .map_err(|e| Error::Internal(e.to_string()))?,
        DataType::Timestamp(_, Some(_)) => {
            // An instant: drop the zone, keep the UTC value.
            let utc = cast(
                column,
                &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            )
            .map_err(|e| Error::Internal(e.to_string()))?;
            let values = utc.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
            Arc::new(TimestampMillisecondArray::new(
                values.values().clone(),
                values.nulls().cloned(),
            ))
        }
        _ => cast(column, &ms).map_err(|e| Error::Internal(e.to_string()))?,
    };
    let values = converted.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
    if values.null_count() == 0 {
        return Ok(converted);
    }
    Ok(Arc::new(TimestampMillisecondArray::from_iter_values(
        values.iter().map(|v| v.unwrap_or(now_ms)),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ColumnDef, SqlType, StreamDef, TopicDef, ValueFormat};
    use crate::storage::Compression;
    use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};

    fn catalog(partitions: u32, key: bool) -> CatalogData {
        let mut data = CatalogData::default();
        let stream = StreamDef {
            name: "clicks".into(),
            kind: crate::catalog::StreamKind::Stream,
            topic: "clicks".into(),
            columns: vec![
                ColumnDef {
                    name: "user_id".into(),
                    sql_type: SqlType::BigInt,
                    nullable: true,
                },
                ColumnDef {
                    name: "url".into(),
                    sql_type: SqlType::Text,
                    nullable: false,
                },
                ColumnDef {
                    name: "ts".into(),
                    sql_type: SqlType::Timestamp,
                    nullable: true,
                },
            ],
            key_columns: if key { vec!["user_id".into()] } else { vec![] },
            value_format: ValueFormat::Json,
            timestamp_column: Some("ts".into()),
            watermark: None,
            late_data_topic: None,
            access: Default::default(),
        };
        data.topics.insert(
            "clicks".into(),
            TopicDef {
                id: TopicId(1),
                name: "clicks".into(),
                partitions,
                compression: Compression::None,
                retention_ms: None,
                retention_bytes: None,
                segment_bytes: 1 << 30,
                cleanup_policy: Default::default(),
                delete_retention_ms: None,
                stream: Some("clicks".into()),
                created_at_ms: 0,
                internal: None,
                access: Default::default(),
            },
        );
        data.streams.insert("clicks".into(), stream);
        data
    }

    fn rows(target: &WriteTarget, ids: Vec<Option<i64>>, urls: Vec<Option<&str>>) -> RecordBatch {
        let n = ids.len();
        RecordBatch::try_new(
            target.row_schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(urls)),
                Arc::new(TimestampMicrosecondArray::from(vec![Some(5_000_000); n])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn keyed_rows_go_where_kafka_would_put_them() {
        let data = catalog(4, true);
        let target = WriteTarget::of(&data, &data.relation("clicks").unwrap()).unwrap();
        let batch = rows(&target, (0..100).map(Some).collect(), vec![Some("/"); 100]);
        let parts = target
            .partition(&batch, &AtomicU64::new(0), &Given::append_time(1))
            .unwrap();
        let total: usize = parts.iter().map(|p| p.records.num_rows()).sum();
        assert_eq!(total, 100);
        for part in &parts {
            let keys = part.records.column(4).as_binary::<i32>();
            for key in keys.iter() {
                assert_eq!(key::partition_for_key(key.unwrap(), 4), part.partition.0);
            }
            let ts = part
                .records
                .column(3)
                .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
            assert!(
                ts.values().iter().all(|t| *t == 5_000),
                "record timestamp from ts, in ms"
            );
        }
    }

    #[test]
    fn unkeyed_rows_are_spread_round_robin() {
        let data = catalog(4, false);
        let target = WriteTarget::of(&data, &data.relation("clicks").unwrap()).unwrap();
        let counter = AtomicU64::new(0);
        let batch = rows(&target, vec![Some(1); 10], vec![Some("/"); 10]);
        let parts = target
            .partition(&batch, &counter, &Given::append_time(1))
            .unwrap();
        let sizes: Vec<usize> = parts.iter().map(|p| p.records.num_rows()).collect();
        assert_eq!(sizes, vec![3, 3, 2, 2]);
        let parts = target
            .partition(&batch, &counter, &Given::append_time(1))
            .unwrap();
        let sizes: Vec<usize> = parts.iter().map(|p| p.records.num_rows()).collect();
        assert_eq!(
            sizes,
            vec![2, 2, 3, 3],
            "the counter carries over between writes"
        );
    }

    #[test]
    fn not_null_columns_reject_nulls() {
        let data = catalog(1, false);
        let target = WriteTarget::of(&data, &data.relation("clicks").unwrap()).unwrap();
        let batch = rows(&target, vec![Some(1), Some(2)], vec![Some("/"), None]);
        let err = target
            .partition(&batch, &AtomicU64::new(0), &Given::append_time(1))
            .unwrap_err();
        assert_eq!(err.sqlstate(), "23502");
        assert!(err.to_string().contains("\"url\""), "{err}");
    }
}
