//! The Postgres wire protocol front end (pgwire crate): simple and extended query protocol,
//! `COPY … FROM STDIN`, cancel requests.
//!
//! One [`Handler`] per connection owns the connection's [`Session`]; pgwire calls it one
//! message at a time. This module only translates: SQL and COPY data go to the session,
//! [`Output`]s and [`Error`]s come back as protocol messages. Rows are encoded by arrow-pg
//! in the text or binary format each client asks for.

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow_pg::datatypes::df::deserialize_parameters;
use arrow_pg::datatypes::{encode_recordbatch, into_pg_type};
use arrow_pg::encoder::encode_value;

use crate::sql::functions::typed_text::OID_ALIAS;
use crate::sql::text_type::TextType;
use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use datafusion::execution::SendableRecordBatchStream;
use futures::{Sink, SinkExt, StreamExt, stream};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{
    ExtendedQueryHandler, SimpleQueryHandler, send_describe_response, send_execution_response,
    send_query_response,
};
use pgwire::api::results::{
    CopyCsvOptions, CopyEncoder, CopyResponse, CopyTextOptions, FieldInfo, QueryResponse, Response,
    Tag,
};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionManager, DEFAULT_NAME, PgWireConnectionState,
    PgWireServerHandlers, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail, CopyOutResponse};
use pgwire::messages::data::{DataRow, NoData, ParameterDescription, RowDescription};
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Close, CloseComplete, Describe, Execute, PortalSuspended,
    TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::NoticeResponse;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::admission::Ticket;
use crate::auth::{Auth, Gate};
use crate::db::{Described, Output, PushRows, Session};
use crate::error::Error;
use crate::ingest::copy::{CopyFormat, CopyOptions};

pub(crate) mod text;
use text::TextOptions;

/// The handlers of one connection.
pub struct Connection {
    handler: Arc<Handler>,
    gate: Arc<Gate<Handler>>,
    manager: Arc<ConnectionManager>,
}

impl Connection {
    /// `socket` is a second handle on the connection's socket, if there is one, to notice a
    /// client that leaves during a push query.
    /// `auth` decides who gets in.
    pub fn new(
        session: Session,
        manager: Arc<ConnectionManager>,
        socket: Option<Arc<TcpStream>>,
        auth: &Auth,
        ticket: Arc<Ticket>,
    ) -> Connection {
        let session = Arc::new(Mutex::new(session));
        let handler = Arc::new(Handler {
            session: session.clone(),
            parser: Arc::new(StatementParser { session }),
            manager: manager.clone(),
            socket,
            pushes: Default::default(),
        });
        Connection {
            gate: Arc::new(auth.gate(handler.clone(), ticket)),
            handler,
            manager,
        }
    }
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.handler.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.handler.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.gate.clone()
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        self.handler.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.manager.clone()))
    }
}

pub struct Handler {
    session: Arc<Mutex<Session>>,
    parser: Arc<StatementParser>,
    manager: Arc<ConnectionManager>,
    socket: Option<Arc<TcpStream>>,
    /// Push queries read a few rows at a time, by the name of their portal.
    pushes: std::sync::Mutex<HashMap<String, OpenPush>>,
}

/// A push query a client reads with Execute row limits (asyncpg's and pgjdbc's cursors,
/// pg-cursor): the portal it runs in and the rows of its epochs not sent yet. Each Execute
/// sends what is ready, waiting for the next epoch only if nothing is, and suspends the
/// portal (`PortalSuspended`) until the query ends.
struct OpenPush {
    portal: Arc<Portal<Prepared>>,
    rows: Box<PushRows>,
    fields: Arc<Vec<FieldInfo>>,
    options: TextOptions,
    pending: VecDeque<RecordBatch>,
    ended: bool,
    sent: usize,
}

impl Handler {
    /// Resolves once the client has gone: its end of the socket is closed, or it sent
    /// Terminate. Never resolves if that cannot be told (no second handle, or the client
    /// sent something else, which pgwire reads after the statement).
    async fn client_gone(&self) {
        if let Some(socket) = &self.socket {
            let mut first = [0u8; 1];
            match socket.peek(&mut first).await {
                Ok(0) | Err(_) => return,
                Ok(_) if first[0] == b'X' => return,
                Ok(_) => {}
            }
        }
        std::future::pending::<()>().await
    }
}

impl Handler {
    /// The open push queries, by portal (poisoning cannot leave the map inconsistent).
    fn pushes(&self) -> std::sync::MutexGuard<'_, HashMap<String, OpenPush>> {
        self.pushes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a portal's statement with its parameters (an Execute); what it produced and how
    /// the session writes values. The end of a transaction closes its push queries' portals.
    async fn execute_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
    ) -> PgWireResult<(crate::error::Result<Output>, TextOptions)>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let types: Vec<Option<&DataType>> = prepared
            .described
            .parameters
            .iter()
            .map(|f| f.as_ref().map(|f| f.data_type()))
            .collect();
        let params = match text_type_parameters(portal, &prepared.described.parameters)? {
            Some(portal) => deserialize_parameters(&portal, &types)?,
            None => deserialize_parameters(portal, &types)?,
        };
        let mut session = self.session.lock().await;
        if let Some(user) = client.metadata().get(pgwire::api::METADATA_USER) {
            session.set_user(user);
        }
        let output = session.execute_one(&prepared.sql, params).await;
        let options = text_options(&session);
        send_notices(client, session.take_notices()).await?;
        if matches!(output, Ok(Output::Commit | Output::Rollback)) {
            self.pushes().clear();
        }
        Ok((output, options))
    }

    /// Runs a push query's portal to be read a few rows at a time; `None` if it turned out
    /// not to be one (its statement means something else now).
    async fn start_push<C>(
        &self,
        client: &mut C,
        portal: &Arc<Portal<Prepared>>,
    ) -> PgWireResult<Option<OpenPush>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (output, options) = self.execute_portal(client, portal).await?;
        let Output::Push(rows) = output.map_err(pg_error)? else {
            return Ok(None);
        };
        if rows.copy {
            return Ok(None);
        }
        let fields = Arc::new(pg_fields(
            rows.schema().as_ref(),
            &portal.result_column_format,
        )?);
        Ok(Some(OpenPush {
            portal: portal.clone(),
            rows,
            fields,
            options,
            pending: VecDeque::new(),
            ended: false,
            sent: 0,
        }))
    }

    /// Sends up to `max_rows` of a push query's rows: those ready, or the next epoch's if
    /// none are. Returns whether the portal is suspended (the query goes on).
    async fn send_push_rows<C>(
        &self,
        client: &mut C,
        open: &mut OpenPush,
        max_rows: usize,
    ) -> PgWireResult<bool>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut gone = std::pin::pin!(self.client_gone());
        while open.pending.is_empty() && !open.ended {
            match next_or_gone(&mut open.rows, gone.as_mut(), open.sent).await? {
                Some(batches) => open
                    .pending
                    .extend(batches.into_iter().filter(|b| b.num_rows() > 0)),
                None => open.ended = true,
            }
        }
        let mut sent = 0;
        while sent < max_rows
            && let Some(batch) = open.pending.pop_front()
        {
            let take = (max_rows - sent).min(batch.num_rows());
            if take < batch.num_rows() {
                open.pending
                    .push_front(batch.slice(take, batch.num_rows() - take));
            }
            for row in encode_rows(&open.fields, batch.slice(0, take), &open.options) {
                client.feed(PgWireBackendMessage::DataRow(row?)).await?;
            }
            sent += take;
        }
        open.sent += sent;
        if open.pending.is_empty() && open.ended {
            let tag = Tag::new("SELECT").with_rows(open.sent);
            client
                .send(PgWireBackendMessage::CommandComplete(tag.into()))
                .await?;
            return Ok(false);
        }
        client
            .send(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()))
            .await?;
        Ok(true)
    }
}

#[async_trait]
impl NoopStartupHandler for Handler {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.manager.clone())
    }
}

/// A statement prepared with the extended protocol: its text (planned again, with the
/// parameter values, at every Execute) and what it takes and returns.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    sql: String,
    described: Described,
}

/// The parameter types a client may name that Runnel casts its parameters to.
const NUMERIC_TYPES: [Type; 6] = [
    Type::INT2,
    Type::INT4,
    Type::INT8,
    Type::FLOAT4,
    Type::FLOAT8,
    Type::NUMERIC,
];

pub struct StatementParser {
    session: Arc<Mutex<Session>>,
}

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        // Numeric types the client named are the parameters' types, as in PostgreSQL.
        let declared: Vec<Option<&str>> = types
            .iter()
            .map(|t| match t {
                Some(t) if NUMERIC_TYPES.contains(t) => Some(t.name()),
                _ => None,
            })
            .collect();
        let sql = crate::sql::declared::with_declared_types(sql, &declared);
        let described = self
            .session
            .lock()
            .await
            .describe(&sql)
            .await
            .map_err(pg_error)?;
        Ok(Some(Prepared { sql, described }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        stmt.described
            .parameters
            .iter()
            .map(|f| match f {
                Some(f) => marked_type(f).map_or_else(|| into_pg_type(f.data_type()), Ok),
                None => Ok(Type::UNKNOWN),
            })
            .collect()
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match &stmt.described.schema {
            Some(schema) => pg_fields(schema, format.unwrap_or(&Format::UnifiedText)),
            None => Ok(vec![]),
        }
    }
}

/// The portal with the parameters its client sent as `json`, `jsonb` or `uuid` turned into
/// the text they hold (arrow-pg reads them only as text; in binary, `jsonb` is a version
/// byte and the text, a `uuid` its 16 bytes), and text arrays sent as text into their binary
/// form (pgwire's text reading takes `""` and `"NULL"` for NULLs); `None` when it has none.
fn text_type_parameters(
    portal: &Portal<Prepared>,
    described: &[Option<arrow::datatypes::FieldRef>],
) -> PgWireResult<Option<Portal<Prepared>>> {
    let is_text_type = |t: &Option<Type>| matches!(t, Some(t) if *t == Type::JSON || *t == Type::JSONB || *t == Type::UUID);
    // The type the client sent each in: the one it named, else the one it was told.
    let hints: Vec<Option<Type>> = (0..portal.parameters.len())
        .map(
            |i| match portal.statement.parameter_types.get(i).cloned().flatten() {
                Some(t) if t != Type::UNKNOWN => Some(t),
                _ => described
                    .get(i)
                    .cloned()
                    .flatten()
                    .and_then(|f| marked_type(&f).or_else(|| into_pg_type(f.data_type()).ok())),
            },
        )
        .collect();
    let is_text_array = |t: &Option<Type>| matches!(t, Some(t) if [Type::TEXT_ARRAY, Type::VARCHAR_ARRAY, Type::BPCHAR_ARRAY, Type::NAME_ARRAY].contains(t));
    let text_array_as_text =
        |i: usize| is_text_array(&hints[i]) && !portal.parameter_format.is_binary(i);
    if !hints.iter().any(is_text_type) && !(0..hints.len()).any(text_array_as_text) {
        return Ok(None);
    }
    let bad = |message: String| {
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "22P02".into(),
            message,
        )))
    };
    let mut types = hints.clone();
    let mut parameters = portal.parameters.clone();
    let mut formats = Vec::with_capacity(parameters.len());
    for (i, parameter) in parameters.iter_mut().enumerate() {
        let binary = portal.parameter_format.is_binary(i);
        let hint = hints.get(i).cloned().flatten();
        if text_array_as_text(i) {
            if let Some(value) = parameter {
                let text = std::str::from_utf8(value)
                    .map_err(|_| bad(format!("parameter ${} is not UTF-8", i + 1)))?;
                let elements = crate::sql::array_literal::parse(text).map_err(pg_error)?;
                *value = binary_text_array(&elements);
            }
            formats.push(1);
            continue;
        }
        if !is_text_type(&hint) {
            formats.push(i16::from(binary));
            continue;
        }
        if binary && let Some(value) = parameter {
            if hint == Some(Type::JSONB) {
                match value.first() {
                    Some(1) => *value = value.slice(1..),
                    _ => {
                        return Err(bad(format!(
                            "unsupported jsonb version number in parameter ${}",
                            i + 1
                        )));
                    }
                }
            } else if hint == Some(Type::UUID) {
                let text = crate::sql::text_type::uuid_text(value).ok_or_else(|| {
                    bad(format!("a binary uuid is 16 bytes (parameter ${})", i + 1))
                })?;
                *value = bytes::Bytes::from(text);
            }
        }
        types[i] = Some(Type::TEXT);
        formats.push(0);
    }
    let mut converted = Portal::default();
    converted.name = portal.name.clone();
    converted.statement = Arc::new(pgwire::api::stmt::StoredStatement::new(
        portal.statement.id.clone(),
        portal.statement.statement.clone(),
        types,
    ));
    converted.parameter_format = Format::Individual(formats);
    converted.parameters = parameters;
    converted.result_column_format = portal.result_column_format.clone();
    converted.state = portal.state.clone();
    Ok(Some(converted))
}

/// PostgreSQL's binary form of a one-dimensional `text[]`.
fn binary_text_array(elements: &[Option<String>]) -> bytes::Bytes {
    let mut out = BytesMut::new();
    out.put_i32(i32::from(!elements.is_empty()));
    out.put_i32(i32::from(elements.iter().any(Option::is_none)));
    out.put_u32(Type::TEXT.oid());
    if !elements.is_empty() {
        out.put_i32(elements.len() as i32);
        out.put_i32(1);
    }
    for element in elements {
        match element {
            None => out.put_i32(-1),
            Some(e) => {
                out.put_i32(e.len() as i32);
                out.put_slice(e.as_bytes());
            }
        }
    }
    out.freeze()
}

/// The result columns as the client is told of them. A column type the wire encoding has no
/// PostgreSQL type for (a list of lists, say) is refused with 0A000, saying which: the query
/// cannot be answered correctly, which is not an internal error.
fn pg_fields(schema: &Schema, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
    let mut infos = arrow_pg::datatypes::arrow_schema_to_pg_fields(schema, format, None)
        .map_err(unsendable_type)?;
    // Text marked as `json`, `jsonb` or `uuid`, and a list of integers marked as oids, are
    // told as that type (arrow-pg knows only the storage type).
    for (info, field) in infos.iter_mut().zip(schema.fields()) {
        if let Some(datatype) = marked_type(field) {
            *info = FieldInfo::new(
                info.name().to_string(),
                info.table_id(),
                info.column_id(),
                datatype,
                info.format(),
            );
        }
    }
    Ok(infos)
}

/// The PostgreSQL type of a field whose Arrow type alone does not say it: text marked as
/// `json`, `jsonb` or `uuid`, a list of integers marked as oids.
fn marked_type(field: &arrow::datatypes::Field) -> Option<Type> {
    match (TextType::of(field), field.data_type()) {
        (Some(t), _) => Some(pg_type(t)),
        (None, DataType::List(element))
            if element
                .metadata()
                .get(OID_ALIAS)
                .is_some_and(|kind| kind == "oid") =>
        {
            Some(Type::OID_ARRAY)
        }
        _ => None,
    }
}

fn pg_type(t: TextType) -> Type {
    match t {
        TextType::Json => Type::JSON,
        TextType::Jsonb => Type::JSONB,
        TextType::Uuid => Type::UUID,
    }
}

fn unsendable_type(e: PgWireError) -> PgWireError {
    match e {
        PgWireError::UserError(info) if info.code == "XX000" => {
            PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".into(),
                "0A000".into(),
                format!(
                    "a result column's type cannot be sent to PostgreSQL clients: {}",
                    info.message
                ),
            )))
        }
        other => other,
    }
}

/// Removes the prepared statements `DEALLOCATE` named. `DEALLOCATE ALL` leaves them: the
/// store cannot list them, and a client that prepares a name again replaces its statement.
fn forget_statements<C>(client: &C, names: Vec<Option<String>>)
where
    C: ClientPortalStore,
    C::PortalStore: PortalStore,
{
    for name in names.into_iter().flatten() {
        client.portal_store().rm_statement(&name);
    }
}

/// An error as the client sees it.
pub fn pg_error(e: Error) -> PgWireError {
    if matches!(e, Error::Internal(_) | Error::Storage(_)) {
        tracing::error!(error = %e, "statement failed");
    } else {
        tracing::debug!(error = %e, "statement failed");
    }
    let mut info = ErrorInfo::new("ERROR".into(), e.sqlstate().into(), e.to_string());
    info.detail = e.detail().map(str::to_string);
    PgWireError::UserError(Box::new(info))
}

/// The rows of `batch` as DataRow messages, each value as PostgreSQL writes it.
fn encode_rows(
    fields: &Arc<Vec<FieldInfo>>,
    batch: RecordBatch,
    options: &TextOptions,
) -> Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send> {
    match text::for_wire(batch, fields, options) {
        Ok((batch, fields)) => encode_recordbatch(fields, batch),
        Err(e) => Box::new(std::iter::once(Err(e))),
    }
}

/// How this session's values are written (its `extra_float_digits` and `TimeZone`).
fn text_options(session: &Session) -> TextOptions {
    TextOptions {
        extra_float_digits: session
            .variable("extra_float_digits")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1),
        time_zone: session
            .variable("timezone")
            .and_then(|zone| zone.trim().parse().ok()),
    }
}

fn response(output: Output, format: &Format, options: &TextOptions) -> PgWireResult<Response> {
    Ok(match output {
        Output::Rows(stream) => {
            let fields = Arc::new(pg_fields(stream.schema().as_ref(), format)?);
            let encode_fields = fields.clone();
            let options = options.clone();
            let rows = stream
                .map(move |batch| match batch {
                    Ok(batch) => {
                        stream::iter(encode_rows(&encode_fields, batch, &options)).left_stream()
                    }
                    Err(e) => {
                        stream::iter(std::iter::once(Err(pg_error(Error::from_datafusion(e)))))
                            .right_stream()
                    }
                })
                .flatten();
            Response::Query(QueryResponse::new(fields, rows))
        }
        Output::Empty => Response::EmptyQuery,
        Output::Command { tag, rows } => {
            let mut t = Tag::new(tag);
            if tag == "INSERT" {
                t = t.with_oid(0);
            }
            if let Some(rows) = rows {
                t = t.with_rows(rows as usize);
            }
            Response::Execution(t)
        }
        Output::CopyIn { columns, format } => Response::CopyIn(CopyResponse::new(
            i8::from(format == CopyFormat::Binary),
            columns,
            stream::empty(),
        )),
        Output::Fetched { schema, rows } => {
            let fields = Arc::new(pg_fields(schema.as_ref(), format)?);
            let encode_fields = fields.clone();
            let options = options.clone();
            let rows = stream::iter(rows)
                .flat_map(move |batch| stream::iter(encode_rows(&encode_fields, batch, &options)));
            let mut response = QueryResponse::new(fields, rows);
            response.set_command_tag("FETCH");
            Response::Query(response)
        }
        Output::Declared => Response::TransactionStart(Tag::new("DECLARE CURSOR")),
        Output::Push(_) => unreachable!("push queries are streamed by `stream_push`"),
        Output::CopyOut { .. } => unreachable!("COPY … TO STDOUT is streamed by `copy_out`"),
        Output::Begin => Response::TransactionStart(Tag::new("BEGIN")),
        Output::Commit => Response::TransactionEnd(Tag::new("COMMIT")),
        Output::Rollback => Response::TransactionEnd(Tag::new("ROLLBACK")),
    })
}

async fn send_notices<C>(client: &mut C, notices: Vec<String>) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    for notice in notices {
        let info = ErrorInfo::new("NOTICE".into(), "00000".into(), notice);
        client
            .feed(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
                info,
            )))
            .await?;
    }
    Ok(())
}

/// Streams a push query's rows to the client, flushing after every epoch, until its
/// `LIMIT` or an error. A cancel request ends it too: pgwire drops this future and answers
/// `57014`. The extended protocol described the columns already; the simple one sends them
/// first (`describe`).
async fn stream_push<C>(
    client: &mut C,
    mut rows: Box<PushRows>,
    format: &Format,
    options: &TextOptions,
    describe: bool,
    gone: impl Future<Output = ()>,
) -> PgWireResult<Response>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    if rows.copy {
        return stream_copy_out(client, rows, options, gone).await;
    }
    let fields = Arc::new(pg_fields(rows.schema().as_ref(), format)?);
    if describe {
        let description = RowDescription::new(fields.iter().map(Into::into).collect());
        client
            .send(PgWireBackendMessage::RowDescription(description))
            .await?;
    }
    let mut sent = 0;
    let mut gone = std::pin::pin!(gone);
    loop {
        let Some(batches) = next_or_gone(&mut rows, gone.as_mut(), sent).await? else {
            break;
        };
        for batch in batches {
            for row in encode_rows(&fields, batch, options) {
                client.feed(PgWireBackendMessage::DataRow(row?)).await?;
                sent += 1;
            }
        }
        client.flush().await?;
    }
    Ok(Response::Execution(Tag::new("SELECT").with_rows(sent)))
}

/// The push query's next epoch; an error once the client has left (`gone`).
async fn next_or_gone(
    rows: &mut PushRows,
    gone: std::pin::Pin<&mut impl Future<Output = ()>>,
    sent: usize,
) -> PgWireResult<Option<Vec<RecordBatch>>> {
    tokio::select! {
        next = rows.next() => next.map_err(pg_error),
        () = gone => {
            tracing::info!(sent, "client left during a push query; ending it");
            Err(PgWireError::IoError(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the client left during a push query",
            )))
        }
    }
}

/// `COPY (SUBSCRIBE …) TO STDOUT`: the rows as COPY text data, flushed after every epoch,
/// so that psql prints them as they happen.
async fn stream_copy_out<C>(
    client: &mut C,
    mut rows: Box<PushRows>,
    options: &TextOptions,
    gone: impl Future<Output = ()>,
) -> PgWireResult<Response>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let schema = rows.schema();
    let gone = std::pin::pin!(gone);
    let copy = CopyOptions::new(CopyFormat::Text);
    let source = CopySource::Push {
        rows: &mut rows,
        gone,
    };
    copy_out(client, schema, &copy, options, source).await
}

/// Where the rows of a `COPY … TO STDOUT` come from.
enum CopySource<'a, G: Future<Output = ()>> {
    /// A push query's epochs, until the client leaves.
    Push {
        rows: &'a mut PushRows,
        gone: std::pin::Pin<&'a mut G>,
    },
    Query(&'a mut SendableRecordBatchStream),
}

impl<G: Future<Output = ()>> CopySource<'_, G> {
    async fn next(&mut self) -> PgWireResult<Option<Vec<RecordBatch>>> {
        match self {
            CopySource::Push { rows, gone } => next_or_gone(rows, gone.as_mut(), 0).await,
            CopySource::Query(rows) => match rows.next().await {
                Some(Ok(batch)) => Ok(Some(vec![batch])),
                Some(Err(e)) => Err(pg_error(Error::from_datafusion(e))),
                None => Ok(None),
            },
        }
    }
}

/// `COPY … TO STDOUT`: the batches `next` gives, as COPY data in the text, CSV or binary
/// format, flushed after every call (a COPY of a SUBSCRIBE shows rows as they happen).
async fn copy_out<C>(
    client: &mut C,
    schema: SchemaRef,
    copy: &CopyOptions,
    options: &TextOptions,
    mut source: CopySource<'_, impl Future<Output = ()>>,
) -> PgWireResult<Response>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let binary = copy.format == CopyFormat::Binary;
    let format = if binary {
        Format::UnifiedBinary
    } else {
        Format::UnifiedText
    };
    let fields = Arc::new(pg_fields(schema.as_ref(), &format)?);
    let columns = fields.len();
    let code = i16::from(binary);
    client
        .send(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
            code as i8,
            columns as i16,
            vec![code; columns],
        )))
        .await?;
    let mut encoder = match copy.format {
        // Binary rows are encoded as the extended protocol's (below).
        CopyFormat::Text | CopyFormat::Binary => CopyEncoder::new_text(
            fields.clone(),
            CopyTextOptions {
                delimiter: char::from(copy.delimiter).to_string().into(),
                null_string: copy.null.as_str().into(),
            },
        ),
        CopyFormat::Csv => CopyEncoder::new_csv(
            fields.clone(),
            CopyCsvOptions {
                delimiter: char::from(copy.delimiter).to_string().into(),
                quote: char::from(copy.quote).to_string().into(),
                escape: char::from(copy.escape).to_string().into(),
                null_string: copy.null.as_str().into(),
                force_quote: vec![],
            },
        ),
    };
    // The binary format's header goes in front of the first row, as PostgreSQL sends it
    // (psycopg reads it so): the signature, no flags, no header extension.
    let mut binary_header = binary.then(|| {
        let mut header = BytesMut::from(&b"PGCOPY\n\xff\r\n\0"[..]);
        header.put_i32(0);
        header.put_i32(0);
        header
    });
    if copy.header && !binary {
        let line = header_line(&schema, copy);
        client
            .feed(PgWireBackendMessage::CopyData(CopyData::new(line.into())))
            .await?;
    }
    let mut sent = 0;
    while let Some(batches) = source.next().await? {
        for batch in batches {
            if binary {
                for row in encode_rows(&fields, batch, options) {
                    let row = row?;
                    let mut tuple = binary_header.take().unwrap_or_default();
                    tuple.reserve(2 + row.data.len());
                    tuple.put_i16(row.field_count);
                    tuple.extend_from_slice(&row.data);
                    client
                        .feed(PgWireBackendMessage::CopyData(CopyData::new(
                            tuple.freeze(),
                        )))
                        .await?;
                    sent += 1;
                }
                continue;
            }
            let (batch, encoding) = text::for_wire(batch, &fields, options)?;
            let schema = batch.schema();
            for row in 0..batch.num_rows() {
                for (i, field) in encoding.iter().enumerate() {
                    encode_value(&mut encoder, batch.column(i), row, schema.field(i), field)?;
                }
                client
                    .feed(PgWireBackendMessage::CopyData(encoder.take_copy()))
                    .await?;
                sent += 1;
            }
        }
        client.flush().await?;
    }
    if binary {
        let mut trailer = binary_header.take().unwrap_or_default();
        trailer.put_i16(-1);
        client
            .feed(PgWireBackendMessage::CopyData(CopyData::new(
                trailer.freeze(),
            )))
            .await?;
    }
    client
        .send(PgWireBackendMessage::CopyDone(CopyDone::new()))
        .await?;
    Ok(Response::Execution(Tag::new("COPY").with_rows(sent)))
}

/// The column names, as `HEADER` puts them on the first line (quoted in CSV if need be).
fn header_line(schema: &Schema, copy: &CopyOptions) -> String {
    let delimiter = char::from(copy.delimiter);
    let quote = char::from(copy.quote);
    let names: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            let name = f.name();
            let special = |c: char| c == delimiter || c == quote || c == '\n' || c == '\r';
            if copy.format == CopyFormat::Csv && (name.chars().any(special) || name.is_empty()) {
                let doubled = name.replace(quote, &format!("{quote}{quote}"));
                format!("{quote}{doubled}{quote}")
            } else {
                name.clone()
            }
        })
        .collect();
    format!("{}\n", names.join(&delimiter.to_string()))
}

/// Sends a bounded `COPY … TO STDOUT`.
async fn send_copy_out<C>(
    client: &mut C,
    mut rows: SendableRecordBatchStream,
    copy: &CopyOptions,
    options: &TextOptions,
) -> PgWireResult<Response>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let schema = rows.schema();
    let source = CopySource::<std::future::Pending<()>>::Query(&mut rows);
    copy_out(client, schema, copy, options, source).await
}

/// Sends what a simple query produced before a push query, ahead of its rows (pgwire sends
/// the responses `do_query` returns only once it has returned).
async fn send_responses<C>(
    client: &mut C,
    responses: impl Iterator<Item = Response>,
) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    for response in responses {
        match response {
            Response::Query(results) => send_query_response(client, results, true).await?,
            Response::Execution(tag)
            | Response::TransactionStart(tag)
            | Response::TransactionEnd(tag) => send_execution_response(client, tag).await?,
            Response::Error(e) => {
                client
                    .feed(PgWireBackendMessage::ErrorResponse((*e).into()))
                    .await?
            }
            _ => {
                return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "ERROR".into(),
                    "0A000".into(),
                    "a push query cannot follow COPY in the same query string".into(),
                ))));
            }
        }
    }
    Ok(())
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut session = self.session.lock().await;
        if let Some(user) = client.metadata().get(pgwire::api::METADATA_USER) {
            session.set_user(user);
        }
        let outputs = session.execute(query).await;
        let options = text_options(&session);
        if outputs
            .iter()
            .any(|o| matches!(o, Ok(Output::Commit | Output::Rollback)))
        {
            // The end of a transaction closes its portals.
            self.pushes().clear();
        }
        forget_statements(client, session.take_deallocated());
        send_notices(client, session.take_notices()).await?;
        let mut responses = Vec::with_capacity(outputs.len());
        for output in outputs {
            match output {
                Ok(Output::Push(rows)) => {
                    // Responses so far go first; the push query's rows follow them.
                    send_responses(client, responses.drain(..)).await?;
                    match stream_push(
                        client,
                        rows,
                        &Format::UnifiedText,
                        &options,
                        true,
                        self.client_gone(),
                    )
                    .await
                    {
                        Ok(done) => responses.push(done),
                        Err(PgWireError::UserError(info)) => responses.push(Response::Error(info)),
                        Err(e) => return Err(e),
                    }
                }
                Ok(Output::CopyOut {
                    rows,
                    options: copy,
                }) => {
                    send_responses(client, responses.drain(..)).await?;
                    match send_copy_out(client, rows, &copy, &options).await {
                        Ok(done) => responses.push(done),
                        Err(PgWireError::UserError(info)) => responses.push(Response::Error(info)),
                        Err(e) => return Err(e),
                    }
                }
                Ok(output) => responses.push(response(output, &Format::UnifiedText, &options)?),
                Err(e) => {
                    let PgWireError::UserError(info) = pg_error(e) else {
                        unreachable!()
                    };
                    responses.push(Response::Error(info));
                }
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = Prepared;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<StatementParser> {
        self.parser.clone()
    }

    /// An Execute with a row limit on a push query's portal sends the rows that are ready
    /// and suspends the portal, as PostgreSQL does for a cursor; without a limit, the rows
    /// stream until the query ends (`do_query`). Other portals run as pgwire runs them.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME).to_owned();
        let max_rows = message.max_rows.max(0) as usize;
        let Some(Entry::Value(portal)) = client.portal_store().get_portal(&name) else {
            return self._on_execute(client, message).await;
        };
        let open = self
            .pushes()
            .remove(&name)
            .filter(|open| Arc::ptr_eq(&open.portal, &portal));
        let fresh = open.is_none();
        if fresh && (max_rows == 0 || !portal.statement.statement.described.push) {
            return self._on_execute(client, message).await;
        }
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let result = async {
            let mut open = match open {
                Some(open) => open,
                None => match self.start_push(client, &portal).await? {
                    Some(open) => open,
                    None => {
                        return Err(pg_error(Error::Internal(
                            "a push query's portal did not run as one".into(),
                        )));
                    }
                },
            };
            // Without a limit, the rest of the rows.
            let limit = if max_rows == 0 { usize::MAX } else { max_rows };
            if self.send_push_rows(client, &mut open, limit).await? {
                self.pushes().insert(name, open);
            }
            Ok(())
        }
        .await;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        result
    }

    /// Closing a portal ends the push query running in it.
    async fn on_close<C>(&self, client: &mut C, message: Close) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => client.portal_store().rm_statement(name),
            TARGET_TYPE_BYTE_PORTAL => {
                self.pushes().remove(name);
                client.portal_store().rm_portal(name);
            }
            _ => {}
        }
        client
            .send(PgWireBackendMessage::CloseComplete(CloseComplete::new()))
            .await?;
        Ok(())
    }

    /// A Bind must supply exactly the parameters its statement takes, as PostgreSQL checks
    /// (pgwire ignores extra values, and a missing one would fail only at Execute).
    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
        let statement = match client.portal_store().get_statement(name) {
            Some(Entry::Value(statement)) => Some(statement),
            Some(Entry::Empty) => None,
            None => return Err(PgWireError::StatementNotFound(name.to_owned())),
        };
        let takes = statement.as_ref().map_or(0, |s| {
            s.parameter_types
                .len()
                .max(s.statement.described.parameters.len())
        });
        let supplied = message.parameters.len();
        if supplied != takes {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".into(),
                "08P01".into(),
                format!(
                    "bind message supplies {supplied} parameters, but prepared statement \"{name}\" requires {takes}"
                ),
            ))));
        }
        // A portal bound again is a new portal: a push query running in the old one ends.
        self.pushes()
            .remove(message.portal_name.as_deref().unwrap_or(DEFAULT_NAME));
        match statement {
            Some(statement) => {
                let portal = Portal::try_new(&message, statement)?;
                client.portal_store().put_portal(Arc::new(portal));
            }
            None => {
                let portal = message.portal_name.as_deref().unwrap_or(DEFAULT_NAME);
                client.portal_store().put_empty_portal(portal);
            }
        }
        client
            .send(PgWireBackendMessage::BindComplete(BindComplete::new()))
            .await?;
        Ok(())
    }

    /// pgwire answers a statement with parameters but no result columns with an empty
    /// RowDescription, which drivers (pgjdbc) read as "returns rows"; PostgreSQL sends
    /// ParameterDescription then NoData. Statements are answered here; portals as pgwire does.
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if message.target_type == TARGET_TYPE_BYTE_STATEMENT {
            let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
            if let Some(Entry::Value(statement)) = client.portal_store().get_statement(name) {
                let response = self.do_describe_statement(client, &statement).await?;
                if response.fields.is_empty() {
                    let oids = response.parameters.iter().map(|t| t.oid()).collect();
                    client
                        .send(PgWireBackendMessage::ParameterDescription(
                            ParameterDescription::new(oids),
                        ))
                        .await?;
                    client
                        .send(PgWireBackendMessage::NoData(NoData::new()))
                        .await?;
                    return Ok(());
                }
                return send_describe_response(client, &response).await;
            }
        }
        // A cursor made with DECLARE is also a portal of its name, as in PostgreSQL
        // (psycopg describes its named cursors that way).
        if message.target_type == TARGET_TYPE_BYTE_PORTAL
            && let Some(name) = message.name.as_deref()
            && client.portal_store().get_portal(name).is_none()
            && let Some(schema) = self.session.lock().await.cursor_schema(name)
        {
            let fields = pg_fields(&schema, &Format::UnifiedText)?;
            let description = RowDescription::new(fields.iter().map(Into::into).collect());
            return client
                .send(PgWireBackendMessage::RowDescription(description))
                .await
                .map_err(Into::into);
        }
        self._on_describe(client, message).await
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (output, options) = self.execute_portal(client, portal).await?;
        match output.map_err(pg_error)? {
            Output::Push(rows) => {
                stream_push(
                    client,
                    rows,
                    &portal.result_column_format,
                    &options,
                    false,
                    self.client_gone(),
                )
                .await
            }
            Output::CopyOut {
                rows,
                options: copy,
            } => send_copy_out(client, rows, &copy, &options).await,
            output => response(output, &portal.result_column_format, &options),
        }
    }
}

#[async_trait]
impl CopyHandler for Handler {
    async fn on_copy_data<C>(&self, _client: &mut C, data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.session
            .lock()
            .await
            .copy_data(&data.data)
            .await
            .map_err(pg_error)
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let output = self
            .session
            .lock()
            .await
            .copy_done()
            .await
            .map_err(pg_error)?;
        if let Output::Command { rows, .. } = output {
            let tag = Tag::new("COPY").with_rows(rows.unwrap_or(0) as usize);
            client
                .send(PgWireBackendMessage::CommandComplete(tag.into()))
                .await?;
        }
        Ok(())
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.session.lock().await.copy_fail();
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "57014".into(),
            format!("COPY from stdin failed: {}", fail.message),
        )))
    }
}
