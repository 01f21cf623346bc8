//! `COPY … FROM STDIN` decoding: PostgreSQL's text, CSV and binary formats, streamed.
//!
//! Data arrives in arbitrary chunks (CopyData messages). The decoder splits it into rows as
//! it comes (csv-core's incremental reader for CSV, a line splitter for text), collects each
//! column's raw values, and every [`BATCH_ROWS`] rows turns them into typed Arrow arrays with
//! Arrow's casts. A value that does not parse is an error naming the line, the column and
//! the value, as PostgreSQL's `COPY` reports it.
//!
//! Differences from PostgreSQL, documented in `docs/sql.md`: in CSV an empty field is NULL
//! whether quoted or not (PostgreSQL reads `""` as an empty string).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, RecordBatch, new_null_array,
};
use arrow::datatypes::{DataType, SchemaRef};
use csv_core::{ReadRecordResult, Reader as CsvReader, ReaderBuilder as CsvReaderBuilder};

use super::binary::Frame;
use crate::catalog::SqlType;
use crate::error::{Error, Result};

/// Rows per record batch produced.
pub const BATCH_ROWS: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Csv,
    /// PostgreSQL's binary format (`super::binary`).
    Binary,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    pub format: CopyFormat,
    pub delimiter: u8,
    /// The string that means NULL (`\N` in text format, the empty string in CSV).
    pub null: String,
    pub header: bool,
    pub quote: u8,
    pub escape: u8,
}

impl CopyOptions {
    pub fn new(format: CopyFormat) -> CopyOptions {
        match format {
            CopyFormat::Text | CopyFormat::Binary => CopyOptions {
                format,
                delimiter: b'\t',
                null: "\\N".into(),
                header: false,
                quote: b'"',
                escape: b'"',
            },
            CopyFormat::Csv => CopyOptions {
                format,
                delimiter: b',',
                null: String::new(),
                header: false,
                quote: b'"',
                escape: b'"',
            },
        }
    }
}

/// One input column: its name, declared type, and position in the row schema.
#[derive(Debug, Clone)]
pub struct CopyColumn {
    pub name: String,
    pub sql_type: SqlType,
    pub index: usize,
}

/// What the rows of one `COPY` look like: shared by the tokenizer and by the typing of its
/// raw rows (which may run on another thread).
#[derive(Debug)]
pub struct CopyShape {
    relation: String,
    /// The columns the input has, in input order.
    columns: Vec<CopyColumn>,
    /// The rows produced: the relation's row schema (columns not in the input are NULL).
    row_schema: SchemaRef,
    /// Fields are binary values (the binary format), not text.
    binary: bool,
}

/// Rows split into fields but not yet typed: each input column's values as raw bytes.
pub struct RawRows {
    shape: Arc<CopyShape>,
    columns: Vec<BinaryArray>,
    /// Input line on which each row starts.
    lines: Vec<u64>,
}

impl RawRows {
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Types the rows into a record batch of the row schema.
    pub fn typed(self) -> Result<RecordBatch> {
        let shape = &self.shape;
        let rows = self.lines.len();
        let mut columns: Vec<ArrayRef> = shape
            .row_schema
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), rows))
            .collect();
        for (column, raw) in shape.columns.iter().zip(&self.columns) {
            let target = shape.row_schema.field(column.index).data_type();
            columns[column.index] = self.type_column(column, raw, target)?;
        }
        RecordBatch::try_new(shape.row_schema.clone(), columns)
            .map_err(|e| Error::Internal(format!("building COPY rows: {e}")))
    }

    fn type_column(
        &self,
        column: &CopyColumn,
        raw: &BinaryArray,
        target: &DataType,
    ) -> Result<ArrayRef> {
        if self.shape.binary {
            let bad = |row: usize| {
                Error::data(
                    "22P03",
                    format!(
                        "COPY {}, line {}, column {}: incorrect binary data format for type {}",
                        self.shape.relation, self.lines[row], column.name, column.sql_type
                    ),
                )
            };
            return match super::binary::typed_column(raw, column.sql_type, target) {
                Ok((typed, true)) => Ok(typed),
                Ok((text, false)) => {
                    let text = text.as_string::<i32>();
                    super::values::typed_column(text, target).map_err(|row| {
                        let context = format!(
                            "COPY {}, line {}, column {}: ",
                            self.shape.relation, self.lines[row], column.name
                        );
                        super::values::invalid_value(column.sql_type, text.value(row), &context)
                    })
                }
                Err(row) => Err(bad(row)),
            };
        }
        if *target == DataType::Binary {
            return decode_bytea(raw).map_err(|row| self.bad_value(column, raw, row));
        }
        let text = arrow::array::StringArray::try_from_binary(raw.clone()).map_err(|_| {
            let row = (0..raw.len())
                .find(|&i| raw.is_valid(i) && std::str::from_utf8(raw.value(i)).is_err())
                .unwrap_or(0);
            Error::data(
                "22021",
                format!(
                    "COPY {}, line {}, column {}: invalid byte sequence for encoding \"UTF8\"",
                    self.shape.relation, self.lines[row], column.name
                ),
            )
        })?;
        super::values::typed_column(&text, target).map_err(|row| self.bad_value(column, raw, row))
    }

    fn bad_value(&self, column: &CopyColumn, raw: &BinaryArray, row: usize) -> Error {
        let value = String::from_utf8_lossy(raw.value(row));
        let context = format!(
            "COPY {}, line {}, column {}: ",
            self.shape.relation, self.lines[row], column.name
        );
        super::values::invalid_value(column.sql_type, &value, &context)
    }
}

/// Splits `COPY` input into rows of raw fields, as it arrives.
pub struct CopyDecoder {
    shape: Arc<CopyShape>,
    options: CopyOptions,
    raw: Vec<BinaryBuilder>,
    /// Input line on which each collected row starts.
    row_lines: Vec<u64>,
    /// Number of the line being read (1-based).
    line: u64,
    header_pending: bool,
    /// Saw the end-of-data marker `\.`: later input is ignored.
    ended: bool,
    csv: CsvReader,
    csv_bytes: Vec<u8>,
    csv_ends: Vec<usize>,
    csv_bytes_len: usize,
    csv_ends_len: usize,
    csv_record_line: u64,
    /// Text format: the incomplete last line, carried to the next chunk.
    partial_line: Vec<u8>,
    /// Text format: the unescaped fields of the current line, and which are NULL.
    unescaped: Vec<Vec<u8>>,
    nulls: Vec<bool>,
    /// Binary format: input not yet framed, and whether its header has been read.
    binary_input: Vec<u8>,
    binary_header_read: bool,
    input_bytes: u64,
    /// Rows parsed into batches already taken.
    rows_taken: u64,
}

impl CopyDecoder {
    pub fn new(
        relation: &str,
        options: CopyOptions,
        columns: Vec<CopyColumn>,
        row_schema: SchemaRef,
    ) -> CopyDecoder {
        let csv = CsvReaderBuilder::new()
            .delimiter(options.delimiter)
            .quote(options.quote)
            .double_quote(options.escape == options.quote)
            .escape((options.escape != options.quote).then_some(options.escape))
            .build();
        let raw = columns
            .iter()
            .map(|_| BinaryBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16))
            .collect();
        let unescaped = columns.iter().map(|_| vec![]).collect();
        let nulls = vec![false; columns.len()];
        CopyDecoder {
            shape: Arc::new(CopyShape {
                relation: relation.to_string(),
                columns,
                row_schema,
                binary: options.format == CopyFormat::Binary,
            }),
            header_pending: options.header,
            options,
            raw,
            row_lines: Vec::with_capacity(BATCH_ROWS),
            line: 1,
            ended: false,
            csv,
            csv_bytes: vec![0; 64 * 1024],
            csv_ends: vec![0; 256],
            csv_bytes_len: 0,
            csv_ends_len: 0,
            csv_record_line: 1,
            partial_line: vec![],
            unescaped,
            nulls,
            binary_input: vec![],
            binary_header_read: false,
            input_bytes: 0,
            rows_taken: 0,
        }
    }

    /// Rows parsed so far.
    pub fn rows(&self) -> u64 {
        self.rows_taken + self.row_lines.len() as u64
    }

    /// Input bytes consumed since the last call.
    pub fn take_input_bytes(&mut self) -> u64 {
        std::mem::take(&mut self.input_bytes)
    }

    /// Feeds a chunk of input; returns the row batches it completed.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<RawRows>> {
        self.input_bytes += data.len() as u64;
        let mut out = vec![];
        match self.options.format {
            CopyFormat::Csv => self.push_csv(data, false, &mut out)?,
            CopyFormat::Text => self.push_text(data, &mut out)?,
            CopyFormat::Binary => self.push_binary(data, &mut out)?,
        }
        Ok(out)
    }

    /// Ends the input; returns the last rows.
    pub fn finish(&mut self) -> Result<Vec<RawRows>> {
        let mut out = vec![];
        match self.options.format {
            CopyFormat::Csv => self.push_csv(&[], true, &mut out)?,
            CopyFormat::Text => {
                if !self.partial_line.is_empty() {
                    let line = std::mem::take(&mut self.partial_line);
                    self.text_line(&line, &mut out)?;
                }
            }
            // Input may end without the trailer, between tuples (as in PostgreSQL).
            CopyFormat::Binary if !self.binary_header_read => {
                return Err(self.bad_binary("COPY file signature not recognized"));
            }
            CopyFormat::Binary if !self.ended && !self.binary_input.is_empty() => {
                return Err(self.bad_binary("unexpected EOF in COPY data"));
            }
            CopyFormat::Binary => {}
        }
        out.extend(self.take_rows());
        Ok(out)
    }

    /// The rows collected so far, even if fewer than a full batch (so that a chunk commit
    /// covers all the input consumed).
    pub fn take_rows(&mut self) -> Option<RawRows> {
        if self.row_lines.is_empty() {
            return None;
        }
        self.rows_taken += self.row_lines.len() as u64;
        // The next batch's builders get room for what this one held, so they do not grow by
        // reallocation (and fresh pages) on the way.
        let columns = self
            .raw
            .iter_mut()
            .map(|b| {
                let values = b.values_slice().len();
                std::mem::replace(
                    b,
                    BinaryBuilder::with_capacity(BATCH_ROWS, values + values / 8),
                )
                .finish()
            })
            .collect();
        Some(RawRows {
            shape: self.shape.clone(),
            columns,
            lines: std::mem::replace(&mut self.row_lines, Vec::with_capacity(BATCH_ROWS)),
        })
    }

    fn push_csv(&mut self, mut data: &[u8], eof: bool, out: &mut Vec<RawRows>) -> Result<()> {
        loop {
            let (result, n_in, n_out, n_ends) = self.csv.read_record(
                data,
                &mut self.csv_bytes[self.csv_bytes_len..],
                &mut self.csv_ends[self.csv_ends_len..],
            );
            self.line += count_newlines(&data[..n_in]);
            data = &data[n_in..];
            self.csv_bytes_len += n_out;
            self.csv_ends_len += n_ends;
            match result {
                ReadRecordResult::InputEmpty => {
                    if !eof {
                        return Ok(()); // the record continues in the next chunk
                    }
                }
                ReadRecordResult::OutputFull => {
                    let len = self.csv_bytes.len();
                    self.csv_bytes.resize(len * 2, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let len = self.csv_ends.len();
                    self.csv_ends.resize(len * 2, 0);
                }
                ReadRecordResult::Record => {
                    let line = self.csv_record_line;
                    let fields = self.csv_ends_len;
                    let blank = fields == 1 && self.csv_ends[0] == 0;
                    // `\.` alone on a line ends the data, as in PostgreSQL (psql sends it
                    // after a script's inline rows).
                    let end = fields == 1 && &self.csv_bytes[..self.csv_ends[0]] == b"\\.";
                    self.csv_bytes_len = 0;
                    self.csv_ends_len = 0;
                    self.csv_record_line = self.line;
                    if end {
                        self.ended = true;
                    }
                    if blank || end || self.ended {
                        continue;
                    }
                    if self.header_pending {
                        self.header_pending = false;
                        continue;
                    }
                    if fields != self.shape.columns.len() {
                        return Err(self.column_count_error(line, fields));
                    }
                    let null = self.options.null.as_bytes();
                    let mut start = 0;
                    for (builder, &end) in self.raw.iter_mut().zip(&self.csv_ends[..fields]) {
                        let field = &self.csv_bytes[start..end];
                        if field == null {
                            builder.append_null();
                        } else {
                            builder.append_value(field);
                        }
                        start = end;
                    }
                    self.row_done(line, out);
                }
                ReadRecordResult::End => return Ok(()),
            }
        }
    }

    fn push_binary(&mut self, data: &[u8], out: &mut Vec<RawRows>) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        self.binary_input.extend_from_slice(data);
        let input = std::mem::take(&mut self.binary_input);
        let mut at = 0;
        let framed = loop {
            let rest = &input[at..];
            let frame = if self.binary_header_read {
                super::binary::tuple(rest, self.shape.columns.len())
            } else {
                super::binary::header(rest)
            };
            match frame {
                Err(e) => break Err(self.bad_binary(&e)),
                Ok(Frame::Incomplete) => break Ok(()),
                Ok(Frame::Header { len }) => {
                    self.binary_header_read = true;
                    at += len;
                }
                Ok(Frame::Trailer) => {
                    self.ended = true;
                    at = input.len();
                    break Ok(());
                }
                Ok(Frame::Tuple { fields, len }) => {
                    for (builder, field) in self.raw.iter_mut().zip(fields) {
                        match field {
                            None => builder.append_null(),
                            Some(value) => builder.append_value(value),
                        }
                    }
                    let tuple = self.line;
                    self.line += 1;
                    self.row_done(tuple, out);
                    at += len;
                }
            }
        };
        self.binary_input = input;
        self.binary_input.drain(..at);
        framed
    }

    /// A binary `COPY` stream that is not one, at the tuple being read.
    fn bad_binary(&self, message: &str) -> Error {
        Error::data(
            "22P04",
            format!(
                "COPY {}, line {}: {message}",
                self.shape.relation, self.line
            ),
        )
    }

    fn push_text(&mut self, data: &[u8], out: &mut Vec<RawRows>) -> Result<()> {
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            let mut line = &rest[..nl];
            rest = &rest[nl + 1..];
            if self.partial_line.is_empty() {
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                self.text_line(line, out)?;
            } else {
                let mut whole = std::mem::take(&mut self.partial_line);
                whole.extend_from_slice(line);
                if whole.last() == Some(&b'\r') {
                    whole.pop();
                }
                self.text_line(&whole, out)?;
            }
        }
        self.partial_line.extend_from_slice(rest);
        Ok(())
    }

    fn text_line(&mut self, line: &[u8], out: &mut Vec<RawRows>) -> Result<()> {
        let number = self.line;
        self.line += 1;
        if self.ended {
            return Ok(());
        }
        if line == b"\\." {
            self.ended = true;
            return Ok(());
        }
        if self.header_pending {
            self.header_pending = false;
            return Ok(());
        }
        let mut count = 0;
        for raw in line.split(|b| *b == self.options.delimiter) {
            if count < self.unescaped.len() {
                self.nulls[count] = raw == self.options.null.as_bytes();
                unescape_text(raw, &mut self.unescaped[count]);
            }
            count += 1;
        }
        if count != self.shape.columns.len() {
            return Err(self.column_count_error(number, count));
        }
        for ((builder, value), null) in self.raw.iter_mut().zip(&self.unescaped).zip(&self.nulls) {
            if *null {
                builder.append_null();
            } else {
                builder.append_value(value);
            }
        }
        self.row_done(number, out);
        Ok(())
    }

    fn row_done(&mut self, line: u64, out: &mut Vec<RawRows>) {
        self.row_lines.push(line);
        if self.row_lines.len() >= BATCH_ROWS {
            out.extend(self.take_rows());
        }
    }

    fn column_count_error(&self, line: u64, got: usize) -> Error {
        let message = if got < self.shape.columns.len() {
            format!(
                "missing data for column \"{}\"",
                self.shape.columns[got].name
            )
        } else {
            "extra data after last expected column".to_string()
        };
        Error::data(
            "22P04",
            format!("COPY {}, line {line}: {message}", self.shape.relation),
        )
    }
}

fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b == b'\n').count() as u64
}

/// Undoes the text format's backslash escapes into `out`.
fn unescape_text(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' || i + 1 == raw.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let next = raw[i + 1];
        i += 2;
        match next {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut value = (next - b'0') as u32;
                let mut digits = 1;
                while digits < 3 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                    value = value * 8 + (raw[i] - b'0') as u32;
                    i += 1;
                    digits += 1;
                }
                out.push(value as u8);
            }
            b'x' if i < raw.len() && raw[i].is_ascii_hexdigit() => {
                let mut value = hex(raw[i]) as u32;
                i += 1;
                if i < raw.len() && raw[i].is_ascii_hexdigit() {
                    value = value * 16 + hex(raw[i]) as u32;
                    i += 1;
                }
                out.push(value as u8);
            }
            other => out.push(other),
        }
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// `bytea` input: PostgreSQL's hex format (`\x0a0b`), or the raw bytes otherwise.
/// On a malformed hex value, the row it is in.
fn decode_bytea(raw: &BinaryArray) -> std::result::Result<ArrayRef, usize> {
    let mut out = BinaryBuilder::with_capacity(raw.len(), raw.value_data().len());
    for i in 0..raw.len() {
        if raw.is_null(i) {
            out.append_null();
            continue;
        }
        let v = raw.value(i);
        match v.strip_prefix(b"\\x") {
            Some(digits) => {
                if digits.len() % 2 != 0 || !digits.iter().all(u8::is_ascii_hexdigit) {
                    return Err(i);
                }
                let bytes: Vec<u8> = digits
                    .chunks(2)
                    .map(|p| hex(p[0]) * 16 + hex(p[1]))
                    .collect();
                out.append_value(bytes);
            }
            None => out.append_value(v),
        }
    }
    Ok(Arc::new(out.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{Field, Int64Type, Schema, TimeUnit};

    fn decoder(format: CopyFormat, header: bool) -> CopyDecoder {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("url", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]));
        let columns = vec![
            CopyColumn {
                name: "id".into(),
                sql_type: SqlType::BigInt,
                index: 0,
            },
            CopyColumn {
                name: "url".into(),
                sql_type: SqlType::Text,
                index: 1,
            },
            CopyColumn {
                name: "ts".into(),
                sql_type: SqlType::Timestamp,
                index: 2,
            },
        ];
        let mut options = CopyOptions::new(format);
        options.header = header;
        CopyDecoder::new("clicks", options, columns, schema)
    }

    fn decode_all(d: &mut CopyDecoder, chunks: &[&[u8]]) -> Result<Vec<RecordBatch>> {
        let mut raw = vec![];
        for c in chunks {
            raw.extend(d.push(c)?);
        }
        raw.extend(d.finish()?);
        raw.into_iter().map(RawRows::typed).collect()
    }

    #[test]
    fn csv_data_ends_at_a_backslash_dot_line() {
        let mut d = decoder(CopyFormat::Csv, false);
        let batches = decode_all(&mut d, &[b"1,/a,\n\\.\n2,/b,\n"]).unwrap();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 1, "the rows before \\. only");
    }

    #[test]
    fn csv_rows_split_across_chunks() {
        let input = b"id,url,ts\n1,/home,2026-01-01 10:00:00\n2,\"/a,\"\"b\"\"\",2026-01-01 10:00:01\n3,,\n";
        // Every split point must give the same rows.
        for cut in 0..input.len() {
            let mut d = decoder(CopyFormat::Csv, true);
            let batches = decode_all(&mut d, &[&input[..cut], &input[cut..]]).unwrap();
            let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
            assert_eq!(batch.num_rows(), 3, "cut at {cut}");
            assert_eq!(
                batch.column(0).as_primitive::<Int64Type>().values(),
                &[1, 2, 3]
            );
            let urls = batch.column(1).as_string::<i32>();
            assert_eq!(urls.value(1), "/a,\"b\"");
            assert!(urls.is_null(2));
            assert!(batch.column(2).is_null(2));
        }
    }

    #[test]
    fn text_format_unescapes_and_reads_nulls() {
        let mut d = decoder(CopyFormat::Text, false);
        let batches =
            decode_all(&mut d, &[b"1\ta\\tb\\\\c\t\\N\n2\t\\N\t2026-01-01\n\\.\n"]).unwrap();
        let batch = &batches[0];
        assert_eq!(batch.num_rows(), 2);
        let urls = batch.column(1).as_string::<i32>();
        assert_eq!(urls.value(0), "a\tb\\c");
        assert!(urls.is_null(1));
        assert!(batch.column(2).is_null(0));
    }

    #[test]
    fn bad_values_name_line_column_and_value() {
        let mut d = decoder(CopyFormat::Csv, false);
        let err = decode_all(
            &mut d,
            &[b"1,/a,2026-01-01\n2,/b,2026-01-01\nx7,/c,2026-01-01\n"],
        )
        .unwrap_err();
        assert_eq!(err.sqlstate(), "22P02");
        assert_eq!(
            err.to_string(),
            "COPY clicks, line 3, column id: invalid input syntax for type bigint: \"x7\""
        );
        let mut d = decoder(CopyFormat::Csv, true);
        let err = decode_all(&mut d, &[b"h\n1,/a,not a time\n"]).unwrap_err();
        assert_eq!(err.sqlstate(), "22007");
        assert!(err.to_string().contains("line 2, column ts"), "{err}");
    }

    #[test]
    fn wrong_column_counts_are_errors() {
        let mut d = decoder(CopyFormat::Csv, false);
        let err = decode_all(&mut d, &[b"1,/a,2026-01-01\n2,/b\n"]).unwrap_err();
        assert_eq!(err.sqlstate(), "22P04");
        assert!(
            err.to_string()
                .contains("line 2: missing data for column \"ts\""),
            "{err}"
        );
        let mut d = decoder(CopyFormat::Text, false);
        let err = decode_all(&mut d, &[b"1\ta\t2026-01-01\tx\n"]).unwrap_err();
        assert!(err.to_string().contains("extra data"), "{err}");
    }

    #[test]
    fn large_inputs_come_out_in_bounded_batches() {
        let mut input = Vec::new();
        for i in 0..(BATCH_ROWS + 10) {
            input.extend_from_slice(format!("{i},/p,2026-01-01\n").as_bytes());
        }
        let mut d = decoder(CopyFormat::Csv, false);
        let batches = decode_all(&mut d, &input.chunks(8192).collect::<Vec<_>>()).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].num_rows(), BATCH_ROWS);
        let ids = batches[1]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.value(9), (BATCH_ROWS + 9) as i64);
    }

    #[test]
    fn bytea_hex_input() {
        let raw = BinaryArray::from(vec![Some(&b"\\x0aff"[..]), None, Some(b"abc")]);
        let out = decode_bytea(&raw).unwrap();
        let out = out.as_binary::<i32>();
        assert_eq!(out.value(0), &[10, 255]);
        assert!(out.is_null(1));
        assert_eq!(out.value(2), b"abc");
        assert_eq!(
            decode_bytea(&BinaryArray::from(vec![&b"\\xZZ"[..]])).unwrap_err(),
            0
        );
    }
}
