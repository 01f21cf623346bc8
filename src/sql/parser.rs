//! Parsing: Runnel's statements, and everything else handed to DataFusion's parser.
//!
//! A statement is one of ours if it starts with words only Runnel gives meaning to
//! (`CREATE STREAM`, `SHOW TOPICS`, `COPY t FROM STDIN`, `SUBSCRIBE`, `… EMIT CHANGES`,
//! cursors that may read them, `FETCH … WITH (timeout)`, `GRANT … ON STREAM`); those are
//! parsed here with sqlparser's PostgreSQL dialect. PostgreSQL's session statements (`SET`,
//! `SHOW`, transaction control, users) are read by sqlparser's own statement parser and
//! taken in by [`super::standard`]. Everything else goes to DataFusion's parser, which
//! knows `CREATE EXTERNAL TABLE` and `COPY (query) TO`. All share one token stream, so a
//! string with several statements mixes them freely.

use datafusion::sql::parser::{DFParser, DFParserBuilder, ParserInput, Statement as DfStatement};
use sqlparser::ast::{
    CopyLegacyOption, CopyOption, CopySource, CopyTarget, Expr, ObjectName,
    Statement as SqlStatement, UnaryOperator, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use super::standard;
pub use super::standard::{Isolation, TransactionModes};
use crate::catalog::{Emit, ObjectClass, Privilege, SqlType, StreamKind};
use crate::error::{Error, Result};
use crate::ingest::copy::{CopyFormat, CopyOptions};

/// A parsed statement.
#[derive(Debug, Clone)]
pub enum Statement {
    /// `CALL nexmark(events [, 'options'])`: creates the Nexmark streams if need be and
    /// appends a run's events to them.
    LoadNexmark {
        events: u64,
        options: String,
    },
    CreateStream(CreateStream),
    CreateTopic(CreateTopic),
    Drop(Drop),
    ShowStreams,
    ShowTopics,
    Describe(String),
    CopyFrom(CopyFrom),
    /// `COPY relation [(columns)] TO STDOUT`, `COPY (query) TO STDOUT`.
    CopyTo(CopyTo),
    /// `SET name = value`, `SET name TO value`, `RESET name`, `RESET ALL`.
    Set {
        name: String,
        value: Option<String>,
    },
    /// `SHOW name` / `SHOW ALL`.
    ShowVariable(String),
    /// `BEGIN` / `START TRANSACTION` [modes].
    Begin(TransactionModes),
    /// `COMMIT` / `END` [`AND [NO] CHAIN`].
    Commit {
        chain: bool,
    },
    /// `ROLLBACK` / `ABORT` [`AND [NO] CHAIN`].
    Rollback {
        chain: bool,
    },
    /// `SAVEPOINT`, `RELEASE [SAVEPOINT]`, `ROLLBACK TO [SAVEPOINT]`: accepted for clients
    /// that nest transactions (SQLAlchemy, psycopg's `transaction()`).
    Savepoint(SavepointOp),
    /// `SET TRANSACTION modes`, or with `session` `SET SESSION CHARACTERISTICS AS
    /// TRANSACTION modes` (the defaults of later transactions).
    SetTransaction {
        modes: TransactionModes,
        session: bool,
    },
    /// `SET TRANSACTION SNAPSHOT 'id'`: a snapshot `pg_export_snapshot()` gave (pg_dump's
    /// parallel workers import their leader's).
    ImportSnapshot(String),
    /// `CREATE MATERIALIZED VIEW name [WITH (…)] AS SELECT …`.
    CreateView(CreateView),
    /// `INSERT INTO stream [(columns)] SELECT … EMIT CHANGES`: a persistent insert.
    InsertContinuous(InsertContinuous),
    /// `SELECT … FROM stream EMIT CHANGES [LIMIT n]`: a push query, whose rows keep coming.
    Push(PushQuery),
    /// `SUBSCRIBE name [WITH (…)]`, or `COPY (SUBSCRIBE …) TO STDOUT`.
    Subscribe(Subscribe),
    /// `DECLARE name CURSOR FOR …` / `DECLARE name SUBSCRIPTION CURSOR FOR subscription`.
    Declare(Declare),
    /// `FETCH [n | ALL | NEXT | FORWARD …] [FROM] cursor [WITH (timeout = …)]`.
    Fetch(Fetch),
    /// `CLOSE name`; `None` is `CLOSE ALL`.
    Close(Option<String>),
    /// `CREATE SUBSCRIPTION name FROM stream [WITH (start = …)]`: a consumer group.
    CreateSubscription(CreateSubscription),
    /// `ALTER SUBSCRIPTION name RESET TO EARLIEST | LATEST | TIMESTAMP '…'`.
    ResetSubscription {
        name: String,
        to: StartAt,
    },
    /// `CREATE USER`, `ALTER USER … PASSWORD`, `DROP USER`.
    User(UserStatement),
    /// `GRANT` and `REVOKE`.
    Grant(GrantStatement),
    /// Waits until every continuous query has processed everything appended before it.
    Flush,
    /// `LOCK [TABLE] name [, …] [IN mode MODE] [NOWAIT]` (pg_dump's first step).
    Lock(sqlparser::ast::Lock),
    /// `REFRESH MATERIALIZED VIEW name`: waits until the view has caught up.
    Refresh(String),
    /// `COMMENT ON … IS …`: only the empty comment (none), as Runnel keeps no comments.
    Comment(Box<sqlparser::ast::Statement>),
    /// `PREPARE name [(type, …)] AS statement`: the statement kept as SQL, with its
    /// parameters' declared types.
    Prepare {
        name: String,
        types: Vec<sqlparser::ast::DataType>,
        statement: String,
    },
    /// `EXECUTE name [(value, …)]`.
    Execute {
        name: String,
        parameters: Vec<sqlparser::ast::Expr>,
    },
    /// `DEALLOCATE [PREPARE] name`, or `… ALL` (`None`): forgets prepared statements,
    /// which the protocol layer keeps.
    Deallocate(Option<String>),
    ShowQueries,
    ShowViews,
    /// Planned by DataFusion: queries, INSERT, EXPLAIN, CREATE EXTERNAL TABLE, COPY … TO, …
    DataFusion(Box<DfStatement>),
}

impl Statement {
    /// The command a statement that writes runs as (`INSERT`, `CREATE STREAM`, …), which a
    /// read-only transaction refuses; `None` for one that only reads or sets the session.
    pub fn writes(&self) -> Option<String> {
        let command = match self {
            Statement::LoadNexmark { .. } => "CALL",
            Statement::CreateStream(c) if c.kind == StreamKind::Table => "CREATE TABLE",
            Statement::CreateStream(_) => "CREATE STREAM",
            Statement::CreateTopic(_) => "CREATE TOPIC",
            Statement::CreateView(_) => "CREATE MATERIALIZED VIEW",
            Statement::Drop(d) => return Some(format!("DROP {}", d.kind.name())),
            Statement::CopyFrom(_) => "COPY FROM",
            Statement::InsertContinuous(_) => "INSERT",
            Statement::CreateSubscription(_) => "CREATE SUBSCRIPTION",
            Statement::ResetSubscription { .. } => "ALTER SUBSCRIPTION",
            Statement::User(UserStatement::Create { .. }) => "CREATE ROLE",
            Statement::User(UserStatement::Alter { .. }) => "ALTER ROLE",
            Statement::User(UserStatement::Drop { .. }) => "DROP ROLE",
            Statement::Grant(GrantStatement::Owner { tag, .. }) => tag,
            Statement::Grant(GrantStatement::Privileges { grant: true, .. })
            | Statement::Grant(GrantStatement::Roles { grant: true, .. }) => "GRANT",
            Statement::Grant(_) => "REVOKE",
            Statement::Refresh(_) => "REFRESH MATERIALIZED VIEW",
            Statement::DataFusion(statement) => match statement.as_ref() {
                DfStatement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE",
                DfStatement::CopyTo(_) => "COPY",
                DfStatement::Statement(s) => match s.as_ref() {
                    SqlStatement::Insert(_) => "INSERT",
                    SqlStatement::Update(_) => "UPDATE",
                    SqlStatement::Delete(_) => "DELETE",
                    SqlStatement::Truncate(_) => "TRUNCATE TABLE",
                    SqlStatement::CreateTable(_) => "CREATE TABLE",
                    SqlStatement::CreateView(_) => "CREATE VIEW",
                    SqlStatement::CreateSchema { .. } => "CREATE SCHEMA",
                    SqlStatement::Drop { object_type, .. } => {
                        return Some(format!("DROP {object_type}"));
                    }
                    _ => return None,
                },
                _ => return None,
            },
            _ => return None,
        };
        Some(command.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct ColumnSpec {
    pub name: String,
    pub sql_type: SqlType,
    pub nullable: bool,
    pub key: bool,
}

/// `CREATE STREAM`, or `CREATE TABLE` (a stream of kind table, keyed by its primary key).
#[derive(Debug, Clone)]
pub struct CreateStream {
    pub kind: StreamKind,
    pub name: String,
    pub if_not_exists: bool,
    pub columns: Vec<ColumnSpec>,
    /// `WATERMARK FOR column AS expression`.
    pub watermark: Option<(String, String)>,
    pub options: Vec<(String, OptionValue)>,
    /// `CREATE STREAM … AS SELECT`.
    pub query: Option<String>,
    /// `… EMIT ON WINDOW CLOSE` after the query.
    pub emit: Emit,
}

#[derive(Debug, Clone)]
pub struct CreateView {
    pub name: String,
    pub if_not_exists: bool,
    pub options: Vec<(String, OptionValue)>,
    pub query: String,
    pub emit: Emit,
}

#[derive(Debug, Clone)]
pub struct InsertContinuous {
    pub target: String,
    pub columns: Vec<String>,
    pub query: String,
    pub emit: Emit,
}

#[derive(Debug, Clone)]
pub struct PushQuery {
    /// The `SELECT`, without `EMIT CHANGES` and its `LIMIT`.
    pub query: String,
    /// Ends the query after this many rows.
    pub limit: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Subscribe {
    pub relation: String,
    pub options: Vec<(String, OptionValue)>,
    /// Inside `COPY (…) TO STDOUT`: rows go out as COPY data.
    pub copy: bool,
}

/// `[WITH] [PASSWORD '…' | PASSWORD NULL] [SUPERUSER | NOSUPERUSER] [LOGIN | NOLOGIN]`.
#[derive(Clone, Default)]
pub struct UserOptions {
    /// `Some(None)`: `PASSWORD NULL`, no password.
    pub password: Option<Option<String>>,
    pub superuser: Option<bool>,
}

/// `GRANT`/`REVOKE` of privileges on objects, or of roles to users.
#[derive(Debug, Clone, PartialEq)]
pub enum GrantStatement {
    Privileges {
        grant: bool,
        /// `None` for `ALL [PRIVILEGES]`.
        privileges: Option<Vec<Privilege>>,
        class: ObjectClass,
        /// `ON ALL TABLES IN SCHEMA public` names no objects but all of them.
        objects: GrantTargets,
        grantees: Vec<String>,
    },
    Roles {
        grant: bool,
        roles: Vec<String>,
        users: Vec<String>,
    },
    /// `ALTER TABLE | MATERIALIZED VIEW | SCHEMA … name OWNER TO owner`.
    Owner {
        class: ObjectClass,
        name: String,
        owner: String,
        /// The command tag (`ALTER TABLE`, …).
        tag: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum GrantTargets {
    Named(Vec<String>),
    AllInSchema,
}

/// What a user statement does. (`Debug` leaves passwords out.)
#[derive(Clone)]
pub enum UserStatement {
    Create {
        name: String,
        if_not_exists: bool,
        options: UserOptions,
    },
    Alter {
        name: String,
        options: UserOptions,
    },
    Drop {
        names: Vec<String>,
        if_exists: bool,
    },
}

impl std::fmt::Debug for UserStatement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserStatement::Create { name, .. } => write!(f, "CREATE USER {name}"),
            UserStatement::Alter { name, .. } => write!(f, "ALTER USER {name}"),
            UserStatement::Drop { names, .. } => write!(f, "DROP USER {names:?}"),
        }
    }
}

/// A savepoint statement, with the savepoint's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavepointOp {
    Set(String),
    Release(String),
    RollbackTo(String),
}

#[derive(Debug, Clone)]
pub struct Declare {
    pub name: String,
    pub query: CursorQuery,
}

/// What a cursor reads.
#[derive(Debug, Clone)]
pub enum CursorQuery {
    /// A query: a bounded `SELECT`, a push query or a `SUBSCRIBE`.
    Statement(Box<Statement>),
    /// A subscription (consumer group), from its committed offsets.
    Subscription(String),
}

#[derive(Debug, Clone)]
pub struct Fetch {
    pub cursor: String,
    /// Rows at most; `None` for `ALL`.
    pub count: Option<u64>,
    /// How long to wait for a first row when none is ready; `None` waits as long as it takes.
    pub timeout: Option<std::time::Duration>,
}

#[derive(Debug, Clone)]
pub struct CreateSubscription {
    pub name: String,
    pub if_not_exists: bool,
    pub relation: String,
    pub options: Vec<(String, OptionValue)>,
}

/// Where a consumer group starts reading.
#[derive(Debug, Clone, PartialEq)]
pub enum StartAt {
    Earliest,
    Latest,
    /// The first record at or after this time (milliseconds since the epoch), per partition.
    Timestamp(i64),
}

impl StartAt {
    /// `earliest`, `latest` or a timestamp, as `WITH (start = …)` gives it.
    pub fn parse(text: &str) -> Result<StartAt> {
        match text.to_ascii_lowercase().as_str() {
            "earliest" => Ok(StartAt::Earliest),
            "latest" => Ok(StartAt::Latest),
            _ => parse_timestamp_ms(text).map(StartAt::Timestamp),
        }
    }
}

impl std::fmt::Display for StartAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartAt::Earliest => write!(f, "earliest"),
            StartAt::Latest => write!(f, "latest"),
            StartAt::Timestamp(ms) => match chrono::DateTime::from_timestamp_millis(*ms) {
                Some(t) => write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S%.3f")),
                None => write!(f, "{ms}"),
            },
        }
    }
}

/// A timestamp literal as milliseconds since the epoch (UTC unless it names a zone).
fn parse_timestamp_ms(text: &str) -> Result<i64> {
    arrow::compute::kernels::cast_utils::string_to_datetime(&chrono::Utc, text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            Error::data(
                "22007",
                format!(
                    "invalid start \"{text}\": expected earliest, latest or a timestamp such as '2026-01-31 12:00:00'"
                ),
            )
        })
}

#[derive(Debug, Clone)]
pub struct CreateTopic {
    pub name: String,
    pub if_not_exists: bool,
    pub options: Vec<(String, OptionValue)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Stream,
    Topic,
    Table,
    View,
    /// A persistent `INSERT … EMIT CHANGES`, by the name `SHOW QUERIES` gives it.
    Query,
    /// A consumer group (`CREATE SUBSCRIPTION`).
    Subscription,
}

impl ObjectKind {
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Stream => "STREAM",
            ObjectKind::Topic => "TOPIC",
            ObjectKind::Table => "TABLE",
            ObjectKind::View => "MATERIALIZED VIEW",
            ObjectKind::Query => "QUERY",
            ObjectKind::Subscription => "SUBSCRIPTION",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Drop {
    pub kind: ObjectKind,
    pub if_exists: bool,
    pub names: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct CopyTo {
    /// The query whose rows are sent (`SELECT columns FROM relation` for a relation).
    pub query: String,
    pub options: CopyOptions,
}

#[derive(Debug, Clone)]
pub struct CopyFrom {
    pub target: String,
    pub columns: Vec<String>,
    pub options: CopyOptions,
}

/// The value of a `WITH (key = value)` option.
#[derive(Debug, Clone, PartialEq)]
pub enum OptionValue {
    Number(String),
    String(String),
    Word(String),
}

impl OptionValue {
    pub fn as_text(&self) -> &str {
        match self {
            OptionValue::Number(s) | OptionValue::String(s) | OptionValue::Word(s) => s,
        }
    }
}

/// Splits `sql` into statements.
pub fn parse(sql: &str) -> Result<Vec<Statement>> {
    super::depth::check_tokens(sql)?;
    let dialect = PostgreSqlDialect {};
    let input = match Tokenizer::new(&dialect, sql).tokenize_with_location() {
        Ok(tokens) => ParserInput::Tokens(without_deferrable(without_proctime(tokens)?)),
        // The parser reports it.
        Err(_) => ParserInput::Sql(sql),
    };
    let mut parser = DFParserBuilder::new(input)
        .with_dialect(&dialect)
        .with_recursion_limit(super::depth::MAX_PARSER_RECURSION)
        .build()
        .map_err(Error::from_datafusion)?;
    let mut statements = vec![];
    let mut expecting_delimiter = false;
    loop {
        while parser.parser.consume_token(&Token::SemiColon) {
            expecting_delimiter = false;
        }
        if parser.parser.peek_token() == Token::EOF {
            break;
        }
        if expecting_delimiter {
            let found = parser.parser.peek_token();
            return Err(Error::Syntax(format!(
                "syntax error at or near \"{found}\": expected end of statement"
            )));
        }
        let statement = parse_statement(&mut parser)?;
        check_depth(&statement)?;
        statements.push(statement);
        expecting_delimiter = true;
    }
    Ok(statements)
}

/// `tokens` without the clauses `FOR SYSTEM_TIME AS OF PROCTIME()` after a table's name:
/// Flink's words for reading a table as it is when a row is processed, which is how
/// Runnel reads tables anyway (a lookup join in a continuous query, any read in a bounded
/// one). Runnel keeps no history of a table to read it as of another time: any other
/// `FOR SYSTEM_TIME AS OF` is refused.
fn without_proctime(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|i| !matches!(tokens[*i].token, Token::Whitespace(_)))
        .collect();
    let word = |at: usize, keyword: Keyword, text: &str| {
        significant
            .get(at)
            .is_some_and(|i| match &tokens[*i].token {
                Token::Word(w) => w.keyword == keyword && w.value.eq_ignore_ascii_case(text),
                _ => false,
            })
    };
    let token = |at: usize, expected: &Token| {
        significant
            .get(at)
            .is_some_and(|i| tokens[*i].token == *expected)
    };
    let mut dropped = vec![false; tokens.len()];
    let mut at = 0;
    while at < significant.len() {
        let clause = word(at, Keyword::FOR, "for")
            && word(at + 1, Keyword::SYSTEM_TIME, "system_time")
            && word(at + 2, Keyword::AS, "as")
            && word(at + 3, Keyword::OF, "of");
        if !clause {
            at += 1;
            continue;
        }
        let proctime = word(at + 4, Keyword::NoKeyword, "proctime")
            && token(at + 5, &Token::LParen)
            && token(at + 6, &Token::RParen);
        if !proctime {
            return Err(Error::Unsupported(
                "FOR SYSTEM_TIME AS OF takes PROCTIME() only: a table is read as it is when \
                 the query (or, in a continuous query, the epoch) runs; Runnel keeps no \
                 history of tables to read them as of another time"
                    .into(),
            ));
        }
        dropped[significant[at]..=significant[at + 6]].fill(true);
        at += 7;
    }
    Ok(tokens
        .into_iter()
        .zip(dropped)
        .filter_map(|(token, dropped)| (!dropped).then_some(token))
        .collect())
}

/// `tokens` without `[NOT] DEFERRABLE` among the transaction modes of `BEGIN`, `START
/// TRANSACTION` and `SET TRANSACTION | SESSION CHARACTERISTICS` (pg_dump's `SERIALIZABLE,
/// READ ONLY, DEFERRABLE`), which sqlparser does not read. It asks a serializable read-only
/// transaction to wait for a snapshot no other transaction can invalidate; Runnel's
/// readers never wait, as each statement reads a snapshot of committed records.
fn without_deferrable(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let deferrable = |t: &TokenWithSpan| matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.keyword == Keyword::DEFERRABLE);
    // Nearly every statement has none: it goes through untouched.
    if !tokens.iter().any(deferrable) {
        return tokens;
    }
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|i| !matches!(tokens[*i].token, Token::Whitespace(_)))
        .collect();
    let keyword = |i: usize| match &tokens[i].token {
        Token::Word(w) if w.quote_style.is_none() => Some(w.keyword),
        _ => None,
    };
    let mut dropped = vec![false; tokens.len()];
    let mut in_transaction_statement = false;
    let mut statement_start = true;
    for (at, &i) in significant.iter().enumerate() {
        if statement_start {
            in_transaction_statement = matches!(
                keyword(i),
                Some(Keyword::BEGIN | Keyword::START | Keyword::SET)
            );
        }
        statement_start = tokens[i].token == Token::SemiColon;
        if !in_transaction_statement || keyword(i) != Some(Keyword::DEFERRABLE) {
            continue;
        }
        dropped[i] = true;
        let mut first = at;
        if at > 0 && keyword(significant[at - 1]) == Some(Keyword::NOT) {
            first -= 1;
            dropped[significant[first]] = true;
        }
        // The comma that joined it to the other modes.
        if first > 0 && tokens[significant[first - 1]].token == Token::Comma {
            dropped[significant[first - 1]] = true;
        } else if let Some(&next) = significant.get(at + 1)
            && tokens[next].token == Token::Comma
        {
            dropped[next] = true;
        }
    }
    tokens
        .into_iter()
        .zip(dropped)
        .filter_map(|(token, dropped)| (!dropped).then_some(token))
        .collect()
}

/// Refuses a statement whose expressions nest too deep (statements that carry a query as
/// text are checked when that text is parsed).
fn check_depth(statement: &Statement) -> Result<()> {
    match statement {
        Statement::DataFusion(s) => super::depth::check_statement(s),
        Statement::Declare(Declare {
            query: CursorQuery::Statement(s),
            ..
        }) => check_depth(s),
        _ => Ok(()),
    }
}

fn syntax(e: ParserError) -> Error {
    match e {
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => Error::Syntax(m),
        ParserError::RecursionLimitExceeded => super::depth::nested_too_deeply(),
    }
}

/// Goes back to the statement's first token (at `start`) and lets DataFusion parse it.
fn reparse_from(df: &mut DFParser<'_>, start: usize) -> Result<Statement> {
    while df.parser.index() > start {
        df.parser.prev_token();
    }
    df.parse_statement()
        .map(|s| Statement::DataFusion(Box::new(s)))
        .map_err(Error::from_datafusion)
}

fn parse_statement(df: &mut DFParser<'_>) -> Result<Statement> {
    // Where the statement's first token is (past any whitespace), to come back to.
    df.parser.next_token();
    df.parser.prev_token();
    let start = df.parser.index();
    let p = &mut df.parser;
    if p.parse_keywords(&[Keyword::CREATE, Keyword::STREAM]) {
        return parse_create_stream(p).map(Statement::CreateStream);
    }
    if p.parse_keywords(&[Keyword::CREATE, Keyword::MATERIALIZED, Keyword::VIEW]) {
        return parse_create_view(p);
    }
    if p.peek_keyword(Keyword::CALL) {
        p.next_token();
        if word_is(p, "nexmark") {
            p.next_token();
            return parse_load_nexmark(p);
        }
        return reparse_from(df, start);
    }
    if word_is(p, "FLUSH") {
        p.next_token();
        return Ok(Statement::Flush);
    }
    if p.peek_keyword(Keyword::PREPARE) || p.peek_keyword(Keyword::EXECUTE) {
        return match p.parse_statement().map_err(syntax)? {
            sqlparser::ast::Statement::Prepare {
                name,
                data_types,
                statement,
            } => Ok(Statement::Prepare {
                name: normalize(&name),
                types: data_types,
                statement: statement.to_string(),
            }),
            sqlparser::ast::Statement::Execute {
                name: Some(name),
                parameters,
                immediate: false,
                into,
                using,
                ..
            } if into.is_empty() && using.is_empty() => Ok(Statement::Execute {
                name: relation_name(&name)?,
                parameters,
            }),
            other => Err(Error::Unsupported(format!("{other}"))),
        };
    }
    if p.parse_keywords(&[Keyword::REFRESH, Keyword::MATERIALIZED, Keyword::VIEW]) {
        let _ = p.parse_keyword(Keyword::CONCURRENTLY);
        let name = parse_relation_name(p)?;
        strip_with_data_words(p);
        return Ok(Statement::Refresh(name));
    }
    if p.peek_keyword(Keyword::COMMENT) {
        let comment = p.parse_statement().map_err(syntax)?;
        return Ok(Statement::Comment(Box::new(comment)));
    }
    if p.peek_keyword(Keyword::ALTER)
        && let Some(owner) = parse_alter_owner(p)?
    {
        return Ok(Statement::Grant(owner));
    }
    if p.peek_keyword(Keyword::LOCK) {
        return p
            .parse_lock_statement()
            .map(Statement::Lock)
            .map_err(syntax);
    }
    if p.parse_keyword(Keyword::DEALLOCATE) {
        let _ = p.parse_keyword(Keyword::PREPARE);
        if p.parse_keyword(Keyword::ALL) {
            return Ok(Statement::Deallocate(None));
        }
        let name = normalize(&p.parse_identifier().map_err(syntax)?);
        return Ok(Statement::Deallocate(Some(name)));
    }
    if p.peek_keyword(Keyword::SELECT) || p.peek_keyword(Keyword::WITH) {
        // `… EMIT CHANGES [LIMIT n]` makes a SELECT a push query; as for INSERT, the
        // general parser would read EMIT as an alias.
        let mut tokens = statement_tokens(p);
        if let Some(limit) = strip_emit_changes_limit(&mut tokens)? {
            return parse_push_query(tokens, limit).map(Statement::Push);
        }
        return reparse_from(df, start);
    }
    if p.peek_keyword(Keyword::INSERT) {
        // `… EMIT CHANGES` makes an INSERT continuous; the general parser would read EMIT
        // as a table alias, so the statement's tokens are taken apart first.
        let mut tokens = statement_tokens(p);
        if let Some(emit) = strip_emit(&mut tokens) {
            return parse_insert_continuous(tokens, emit).map(Statement::InsertContinuous);
        }
        return reparse_from(df, start);
    }
    if p.parse_keyword(Keyword::CREATE) {
        if word_is(p, "TOPIC") {
            p.next_token();
            return parse_create_topic(p).map(Statement::CreateTopic);
        }
        p.prev_token();
    }
    if p.peek_keyword(Keyword::GRANT) || p.peek_keyword(Keyword::REVOKE) {
        return parse_grant(p).map(Statement::Grant);
    }
    if p.parse_keyword(Keyword::DROP) {
        let kind = if p.parse_keyword(Keyword::STREAM) {
            Some(ObjectKind::Stream)
        } else if word_is(p, "TOPIC") {
            p.next_token();
            Some(ObjectKind::Topic)
        } else if p.parse_keyword(Keyword::TABLE) {
            Some(ObjectKind::Table)
        } else if p.parse_keywords(&[Keyword::MATERIALIZED, Keyword::VIEW]) {
            Some(ObjectKind::View)
        } else if word_is(p, "QUERY") {
            p.next_token();
            Some(ObjectKind::Query)
        } else if word_is(p, "SUBSCRIPTION") {
            p.next_token();
            Some(ObjectKind::Subscription)
        } else {
            None
        };
        if let Some(kind) = kind {
            return parse_drop(p, kind).map(Statement::Drop);
        }
        p.prev_token();
    }
    if p.parse_keyword(Keyword::SHOW) {
        if word_is(p, "STREAMS") {
            p.next_token();
            return Ok(Statement::ShowStreams);
        }
        if word_is(p, "TOPICS") {
            p.next_token();
            return Ok(Statement::ShowTopics);
        }
        if word_is(p, "QUERIES") {
            p.next_token();
            return Ok(Statement::ShowQueries);
        }
        if p.parse_keywords(&[Keyword::MATERIALIZED, Keyword::VIEWS]) {
            return Ok(Statement::ShowViews);
        }
        p.prev_token();
        return match p.parse_statement().map_err(syntax)? {
            show @ SqlStatement::ShowVariable { .. } => standard::session_statement(show),
            // MySQL's SHOW TABLES, SHOW COLUMNS …, which DataFusion answers.
            other => Ok(Statement::DataFusion(Box::new(DfStatement::Statement(
                Box::new(other),
            )))),
        };
    }
    if p.parse_keyword(Keyword::DESCRIBE) || p.parse_keyword(Keyword::DESC) {
        let name = parse_relation_name(p)?;
        return Ok(Statement::Describe(name));
    }
    if is_session_statement(p) {
        return parse_session_statement(p);
    }
    if word_is(p, "SUBSCRIBE") {
        p.next_token();
        return parse_subscribe(p, false).map(Statement::Subscribe);
    }
    if p.parse_keyword(Keyword::DECLARE) {
        return parse_declare(df).map(Statement::Declare);
    }
    if p.parse_keyword(Keyword::FETCH) {
        return parse_fetch(p).map(Statement::Fetch);
    }
    if p.parse_keyword(Keyword::CREATE) {
        if word_is(p, "SUBSCRIPTION") {
            p.next_token();
            return parse_create_subscription(p).map(Statement::CreateSubscription);
        }
        p.prev_token();
    }
    if p.parse_keyword(Keyword::ALTER) {
        if word_is(p, "SUBSCRIPTION") {
            p.next_token();
            let name = normalize(&p.parse_identifier().map_err(syntax)?);
            if !(word_is(p, "RESET") && {
                p.next_token();
                p.parse_keyword(Keyword::TO)
            }) {
                return Err(Error::Syntax(format!(
                    "syntax error at or near \"{}\": ALTER SUBSCRIPTION name RESET TO EARLIEST | LATEST | TIMESTAMP '…'",
                    p.peek_token()
                )));
            }
            let to = if word_is(p, "EARLIEST") {
                p.next_token();
                StartAt::Earliest
            } else if word_is(p, "LATEST") {
                p.next_token();
                StartAt::Latest
            } else if p.parse_keyword(Keyword::TIMESTAMP) {
                let token = p.next_token();
                let Token::SingleQuotedString(text) = token.token else {
                    return p.expected("a timestamp string", token).map_err(syntax);
                };
                StartAt::Timestamp(parse_timestamp_ms(&text)?)
            } else {
                return p
                    .expected("EARLIEST, LATEST or TIMESTAMP", p.peek_token())
                    .map_err(syntax);
            };
            return Ok(Statement::ResetSubscription { name, to });
        }
        p.prev_token();
    }
    if p.peek_keyword(Keyword::COPY)
        && p.peek_nth_token(1).token == Token::LParen
        && matches!(&p.peek_nth_token(2).token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("SUBSCRIBE"))
    {
        p.next_token();
        p.next_token();
        p.next_token();
        let subscribe = parse_subscribe(p, true)?;
        p.expect_token(&Token::RParen).map_err(syntax)?;
        p.expect_keyword(Keyword::TO).map_err(syntax)?;
        if !p.parse_keyword(Keyword::STDOUT) {
            return Err(Error::Unsupported(
                "COPY (SUBSCRIBE …) goes TO STDOUT only".into(),
            ));
        }
        if p.parse_keyword(Keyword::WITH) || p.consume_token(&Token::LParen) {
            return Err(Error::Unsupported(
                "COPY (SUBSCRIBE …) TO STDOUT takes no options: it sends the text format".into(),
            ));
        }
        return Ok(Statement::Subscribe(subscribe));
    }
    if p.peek_keyword(Keyword::COPY) && p.peek_nth_token(1).token == Token::LParen {
        // COPY (query) TO STDOUT is ours; COPY (query) TO 'file' goes to DataFusion.
        if let Ok(SqlStatement::Copy {
            source: CopySource::Query(query),
            to: true,
            target: CopyTarget::Stdout,
            options,
            legacy_options,
            ..
        }) = p.parse_statement()
        {
            return Ok(Statement::CopyTo(CopyTo {
                query: query.to_string(),
                options: copy_options(&options, &legacy_options)?,
            }));
        }
        while p.index() > start {
            p.prev_token();
        }
    }
    if p.peek_keyword(Keyword::COPY) && !matches!(p.peek_nth_token(1).token, Token::LParen) {
        // COPY table FROM STDIN is ours; COPY (query) TO and COPY table TO go to DataFusion.
        let statement = p.parse_statement().map_err(syntax)?;
        if let SqlStatement::Copy {
            source:
                CopySource::Table {
                    table_name,
                    columns,
                },
            to: false,
            target,
            options,
            legacy_options,
            ..
        } = statement
        {
            if !matches!(target, CopyTarget::Stdin) {
                return Err(Error::Unsupported(
                    "COPY … FROM a server file is not supported; use COPY … FROM STDIN (psql's \\copy)".into(),
                ));
            }
            return Ok(Statement::CopyFrom(CopyFrom {
                target: relation_name(&table_name)?,
                columns: columns.iter().map(normalize).collect(),
                options: copy_options(&options, &legacy_options)?,
            }));
        }
        if let SqlStatement::Copy {
            source:
                CopySource::Table {
                    table_name,
                    columns,
                },
            to: true,
            target: CopyTarget::Stdout,
            options,
            legacy_options,
            ..
        } = &statement
        {
            let columns = match columns.as_slice() {
                [] => "*".to_string(),
                columns => columns
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            return Ok(Statement::CopyTo(CopyTo {
                query: format!("SELECT {columns} FROM {table_name}"),
                options: copy_options(options, legacy_options)?,
            }));
        }
        // Re-parse from the start with DataFusion's parser (COPY table TO 'file').
        while df.parser.index() > start {
            df.parser.prev_token();
        }
    }
    let statement = df.parse_statement().map_err(Error::from_datafusion)?;
    if let DfStatement::Statement(s) = &statement
        && let SqlStatement::CreateTable(create) = s.as_ref()
    {
        return create_table(create);
    }
    Ok(Statement::DataFusion(Box::new(statement)))
}

/// `CREATE TABLE` as sqlparser reads it, as Runnel keeps it: a stream of kind table whose
/// KEY columns are the primary key's. What tables cannot have yet is refused by name.
fn create_table(create: &sqlparser::ast::CreateTable) -> Result<Statement> {
    use sqlparser::ast::{ColumnOption, CreateTableOptions, SqlOption, TableConstraint};
    let name = relation_name(&create.name)?;
    let refuse = |what: &str| {
        Err(Error::Unsupported(format!(
            "CREATE TABLE {what} is not supported"
        )))
    };
    if create.temporary {
        return refuse("TEMPORARY: tables are durable");
    }
    if create.or_replace {
        return refuse("OR REPLACE");
    }
    if create.query.is_some() {
        return refuse("… AS SELECT: create the table, then INSERT INTO … SELECT");
    }
    if create.like.is_some() || create.clone.is_some() {
        return refuse("LIKE");
    }
    let mut columns = vec![];
    let mut primary_key: Option<Vec<String>> = None;
    let mut set_primary_key = |names: Vec<String>| -> Result<()> {
        if primary_key.replace(names).is_some() {
            return Err(Error::plan(
                "42P16",
                format!("multiple primary keys for table \"{name}\" are not allowed"),
            ));
        }
        Ok(())
    };
    for column in &create.columns {
        let name = normalize(&column.name);
        let mut spec = ColumnSpec {
            sql_type: SqlType::from_ast(&column.data_type)?,
            name,
            nullable: true,
            key: false,
        };
        for option in &column.options {
            match &option.option {
                ColumnOption::Null => spec.nullable = true,
                ColumnOption::NotNull => spec.nullable = false,
                ColumnOption::PrimaryKey(_) => set_primary_key(vec![spec.name.clone()])?,
                ColumnOption::Comment(_) => {}
                other => {
                    return Err(Error::Unsupported(format!(
                        "column option {other} (of column \"{}\") is not supported in tables",
                        spec.name
                    )));
                }
            }
        }
        columns.push(spec);
    }
    for constraint in &create.constraints {
        match constraint {
            TableConstraint::PrimaryKey(pk) => {
                let names = pk
                    .columns
                    .iter()
                    .map(|c| match &c.column.expr {
                        Expr::Identifier(ident) => Ok(normalize(ident)),
                        other => Err(Error::Unsupported(format!(
                            "a primary key of expression {other} is not supported"
                        ))),
                    })
                    .collect::<Result<Vec<_>>>()?;
                set_primary_key(names)?;
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "constraint {other} is not supported in tables (a PRIMARY KEY is)"
                )));
            }
        }
    }
    let mut options = match &create.table_options {
        CreateTableOptions::None => vec![],
        CreateTableOptions::With(options) => options
            .iter()
            .map(|option| match option {
                SqlOption::KeyValue { key, value } => {
                    let key = key.value.to_lowercase();
                    let value = option_value(&key, value.clone())?;
                    Ok((key, value))
                }
                other => Err(Error::Syntax(format!("unsupported table option {other}"))),
            })
            .collect::<Result<Vec<_>>>()?,
        other => return refuse(&format!("with options {other}")),
    };
    // `topic` names a stream's or table's topic; `topic = true` alone makes a schemaless
    // topic.
    let topic_flag = options
        .iter()
        .position(|(key, value)| key == "topic" && flag(key, value).is_ok_and(|on| on));
    let stream_flag = options.iter().any(|(key, _)| key == "stream");
    if let Some(at) = topic_flag
        && !stream_flag
    {
        options.remove(at);
        return schemaless_topic(create, name, &columns, primary_key.is_some(), options);
    }
    // The storage parameters pg_dump writes back (`pg_class.reloptions`): a stream's
    // `stream`, `key` and `watermark`, a table's `primary_key`.
    let mut take = |name: &str| {
        let i = options.iter().position(|(key, _)| key == name)?;
        Some(options.remove(i).1)
    };
    let names = |value: OptionValue| -> Vec<String> {
        value
            .as_text()
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect()
    };
    if let Some(names) = take("primary_key").map(names) {
        set_primary_key(names)?;
    }
    let stream = match take("stream") {
        None => false,
        Some(v) => flag("stream", &v)?,
    };
    let keys = take("key").map(names).unwrap_or_default();
    let watermark = take("watermark");
    if stream {
        if primary_key.is_some() {
            return refuse("WITH (stream = true) and a primary key: a stream has KEY columns");
        }
        for key in &keys {
            key_column(&mut columns, key)?.key = true;
        }
        let watermark = watermark
            .map(|w| parse_watermark(w.as_text()))
            .transpose()?;
        return Ok(Statement::CreateStream(CreateStream {
            kind: StreamKind::Stream,
            name,
            if_not_exists: create.if_not_exists,
            columns,
            watermark,
            options,
            query: None,
            emit: Emit::Changes,
        }));
    }
    if !keys.is_empty() || watermark.is_some() {
        return refuse("WITH (key, watermark) without stream = true");
    }
    for key in primary_key.iter().flatten() {
        let column = key_column(&mut columns, key)?;
        // As in PostgreSQL, a primary key's columns are NOT NULL.
        column.key = true;
        column.nullable = false;
    }
    Ok(Statement::CreateStream(CreateStream {
        kind: StreamKind::Table,
        name,
        if_not_exists: create.if_not_exists,
        columns,
        watermark: None,
        options,
        query: None,
        emit: Emit::Changes,
    }))
}

/// A boolean option's value.
fn flag(option: &str, value: &OptionValue) -> Result<bool> {
    match value.as_text().to_ascii_lowercase().as_str() {
        "true" | "on" => Ok(true),
        "false" | "off" => Ok(false),
        other => Err(Error::data(
            "22023",
            format!("option {option} must be true or false, not \"{other}\""),
        )),
    }
}

/// `CREATE TABLE name (_key bytea, _value bytea) WITH (topic = true, …)`: PostgreSQL's
/// spelling of `CREATE TOPIC name WITH (…)`, as pg_dump writes a topic back.
fn schemaless_topic(
    create: &sqlparser::ast::CreateTable,
    name: String,
    columns: &[ColumnSpec],
    primary_key: bool,
    options: Vec<(String, OptionValue)>,
) -> Result<Statement> {
    let shape: Vec<(&str, &SqlType, bool)> = columns
        .iter()
        .map(|c| (c.name.as_str(), &c.sql_type, c.nullable))
        .collect();
    let expected = [
        (crate::storage::KEY_COLUMN, &SqlType::Bytea, true),
        (crate::catalog::VALUE_COLUMN, &SqlType::Bytea, true),
    ];
    if primary_key || shape != expected {
        return Err(Error::Unsupported(format!(
            "CREATE TABLE {name} WITH (topic = true) makes a schemaless topic, whose columns are \
             ({} bytea, {} bytea)",
            crate::storage::KEY_COLUMN,
            crate::catalog::VALUE_COLUMN
        )));
    }
    Ok(Statement::CreateTopic(CreateTopic {
        name,
        if_not_exists: create.if_not_exists,
        options,
    }))
}

/// `WITH [NO] DATA` after `REFRESH MATERIALIZED VIEW name`.
fn strip_with_data_words(p: &mut Parser<'_>) {
    if p.parse_keyword(Keyword::WITH) {
        let _ = p.parse_keyword(Keyword::NO);
        let _ = p.parse_keyword(Keyword::DATA);
    }
}

/// `ALTER TABLE | STREAM | TOPIC | [MATERIALIZED] VIEW | SCHEMA [IF EXISTS] name OWNER TO
/// role`; `None` (and the parser where it was) for any other `ALTER`.
fn parse_alter_owner(p: &mut Parser<'_>) -> Result<Option<GrantStatement>> {
    let start = p.index();
    let rewind = |p: &mut Parser<'_>| {
        while p.index() > start {
            p.prev_token();
        }
    };
    p.expect_keyword(Keyword::ALTER).map_err(syntax)?;
    let (class, tag) = if p.parse_keyword(Keyword::TABLE) {
        (ObjectClass::Relation, "ALTER TABLE")
    } else if p.parse_keyword(Keyword::STREAM) {
        (ObjectClass::Relation, "ALTER STREAM")
    } else if word_is(p, "TOPIC") {
        p.next_token();
        (ObjectClass::Relation, "ALTER TOPIC")
    } else if p.parse_keywords(&[Keyword::MATERIALIZED, Keyword::VIEW]) {
        (ObjectClass::Relation, "ALTER MATERIALIZED VIEW")
    } else if p.parse_keyword(Keyword::SCHEMA) {
        (ObjectClass::Schema, "ALTER SCHEMA")
    } else {
        rewind(p);
        return Ok(None);
    };
    let _ = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let _ = p.parse_keyword(Keyword::ONLY);
    let name = p.parse_object_name(false).map_err(syntax)?;
    if !p.parse_keywords(&[Keyword::OWNER, Keyword::TO]) {
        rewind(p);
        return Ok(None);
    }
    let name = match class {
        ObjectClass::Schema => name.to_string().trim_matches('"').to_string(),
        _ => relation_name(&name)?,
    };
    let owner = normalize(&p.parse_identifier().map_err(syntax)?);
    Ok(Some(GrantStatement::Owner {
        class,
        name,
        owner,
        tag,
    }))
}

/// The column a key names (42703 if none).
fn key_column<'a>(columns: &'a mut [ColumnSpec], key: &str) -> Result<&'a mut ColumnSpec> {
    columns.iter_mut().find(|c| c.name == key).ok_or_else(|| {
        Error::plan(
            "42703",
            format!("column \"{key}\" named in key does not exist"),
        )
    })
}

/// The `watermark` storage parameter, `column AS expression` (`WATERMARK FOR column AS
/// expression` in `CREATE STREAM`).
fn parse_watermark(text: &str) -> Result<(String, String)> {
    let mut p = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .map_err(syntax)?;
    let column = normalize(&p.parse_identifier().map_err(syntax)?);
    p.expect_keyword(Keyword::AS).map_err(syntax)?;
    let expr = p.parse_expr().map_err(syntax)?;
    p.expect_token(&Token::EOF).map_err(syntax)?;
    Ok((column, expr.to_string()))
}

/// Whether the statement ahead is one of PostgreSQL's session statements — `SET`,
/// `RESET`, transaction control, `CLOSE`, users — which sqlparser reads (see [`standard`]).
fn is_session_statement(p: &Parser<'_>) -> bool {
    const FIRST: [Keyword; 11] = [
        Keyword::SET,
        Keyword::RESET,
        Keyword::BEGIN,
        Keyword::START,
        Keyword::COMMIT,
        Keyword::END,
        Keyword::ROLLBACK,
        Keyword::ABORT,
        Keyword::SAVEPOINT,
        Keyword::RELEASE,
        Keyword::CLOSE,
    ];
    let on_users = [Keyword::CREATE, Keyword::ALTER, Keyword::DROP]
        .into_iter()
        .any(|k| p.peek_keyword(k))
        && matches!(&p.peek_nth_token(1).token,
            Token::Word(w) if matches!(w.keyword, Keyword::USER | Keyword::ROLE));
    on_users || FIRST.into_iter().any(|k| p.peek_keyword(k))
}

fn parse_session_statement(p: &mut Parser<'_>) -> Result<Statement> {
    let statement = if p.parse_keyword(Keyword::ABORT) {
        // PostgreSQL's other spelling of ROLLBACK, which sqlparser does not know.
        match p.parse_rollback().map_err(syntax)? {
            SqlStatement::Rollback {
                savepoint: Some(_), ..
            } => return Err(Error::Syntax("syntax error at or near \"TO\"".into())),
            rollback => rollback,
        }
    } else if p.parse_keywords(&[Keyword::CREATE, Keyword::USER]) {
        // sqlparser reads CREATE USER as Snowflake's; PostgreSQL's is CREATE ROLE.
        p.parse_create_role()
            .map(SqlStatement::CreateRole)
            .map_err(syntax)?
    } else if p.parse_keywords(&[Keyword::ALTER, Keyword::USER]) {
        p.parse_alter_role().map_err(syntax)?
    } else {
        p.parse_statement().map_err(syntax)?
    };
    standard::session_statement(statement)
}

fn word_is(p: &Parser<'_>, word: &str) -> bool {
    matches!(&p.peek_token().token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

pub use crate::catalog::normalize;

/// A relation name, which may be qualified with the schema `public` (or catalog `runnel`).
pub fn relation_name(name: &ObjectName) -> Result<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| {
            p.as_ident()
                .map(normalize)
                .ok_or_else(|| Error::Syntax(format!("invalid name {name}")))
        })
        .collect::<Result<_>>()?;
    relation_name_parts(&parts)
}

/// [`relation_name`] of an already normalized name.
pub fn relation_name_parts(parts: &[String]) -> Result<String> {
    match parts {
        [name] => Ok(name.clone()),
        [schema, name] if schema == "public" => Ok(name.clone()),
        [catalog, schema, name] if catalog == "runnel" && schema == "public" => Ok(name.clone()),
        _ => Err(Error::plan(
            "3F000",
            format!(
                "{}: streams and topics live in the schema \"public\"",
                parts.join(".")
            ),
        )),
    }
}

/// `[TO] name [WITH (…)]` after `SUBSCRIBE`.
fn parse_subscribe(p: &mut Parser<'_>, copy: bool) -> Result<Subscribe> {
    let _ = p.parse_keyword(Keyword::TO); // SUBSCRIBE TO name, as Materialize also reads it
    let relation = parse_relation_name(p)?;
    let options = parse_with_options(p)?;
    Ok(Subscribe {
        relation,
        options,
        copy,
    })
}

/// `DECLARE name [BINARY] [NO SCROLL] CURSOR [WITHOUT HOLD] FOR query`, or
/// `DECLARE name SUBSCRIPTION CURSOR FOR subscription`, after `DECLARE`.
fn parse_declare(df: &mut DFParser<'_>) -> Result<Declare> {
    let p = &mut df.parser;
    let name = normalize(&p.parse_identifier().map_err(syntax)?);
    if word_is(p, "SUBSCRIPTION") {
        p.next_token();
        p.expect_keyword(Keyword::CURSOR).map_err(syntax)?;
        p.expect_keyword(Keyword::FOR).map_err(syntax)?;
        let group = normalize(&p.parse_identifier().map_err(syntax)?);
        return Ok(Declare {
            name,
            query: CursorQuery::Subscription(group),
        });
    }
    loop {
        if p.parse_keyword(Keyword::BINARY) {
            return Err(Error::Unsupported(
                "binary cursors are not supported; the extended protocol can ask for binary results".into(),
            ));
        }
        if p.parse_keyword(Keyword::SCROLL) {
            return Err(Error::Unsupported(
                "cursors only move forward (NO SCROLL)".into(),
            ));
        }
        if p.parse_keyword(Keyword::INSENSITIVE)
            || p.parse_keyword(Keyword::ASENSITIVE)
            || p.parse_keywords(&[Keyword::NO, Keyword::SCROLL])
        {
            continue;
        }
        break;
    }
    p.expect_keyword(Keyword::CURSOR).map_err(syntax)?;
    if p.parse_keywords(&[Keyword::WITH, Keyword::HOLD]) {
        return Err(Error::Unsupported(
            "WITH HOLD cursors are not supported: a cursor ends with its transaction".into(),
        ));
    }
    let _ = p.parse_keywords(&[Keyword::WITHOUT, Keyword::HOLD]);
    p.expect_keyword(Keyword::FOR).map_err(syntax)?;
    let statement = parse_statement(df)?;
    let readable = match &statement {
        Statement::Push(_) => true,
        Statement::Subscribe(s) => !s.copy,
        Statement::DataFusion(s) => matches!(
            s.as_ref(),
            DfStatement::Statement(s) if matches!(s.as_ref(), SqlStatement::Query(_))
        ),
        _ => false,
    };
    if !readable {
        return Err(Error::Syntax(
            "DECLARE … CURSOR FOR takes a SELECT, a SELECT … EMIT CHANGES or a SUBSCRIBE".into(),
        ));
    }
    Ok(Declare {
        name,
        query: CursorQuery::Statement(Box::new(statement)),
    })
}

/// `[NEXT | n | ALL | FORWARD [n | ALL]] [FROM | IN] name [WITH (timeout = …)]`, after
/// `FETCH`.
fn parse_fetch(p: &mut Parser<'_>) -> Result<Fetch> {
    let backwards = [
        Keyword::PRIOR,
        Keyword::FIRST,
        Keyword::LAST,
        Keyword::ABSOLUTE,
        Keyword::RELATIVE,
        Keyword::BACKWARD,
    ];
    if let Some(k) = p.parse_one_of_keywords(&backwards) {
        return Err(Error::Unsupported(format!(
            "FETCH {k:?}: cursors only move forward (FETCH n, NEXT, ALL, FORWARD)"
        )));
    }
    let count_of = |p: &mut Parser<'_>| -> Result<Option<Option<u64>>> {
        if p.parse_keyword(Keyword::ALL) {
            return Ok(Some(None));
        }
        if let Token::Number(n, _) = &p.peek_token().token {
            let n = n.parse::<u64>().map_err(|_| {
                Error::Syntax(format!(
                    "FETCH count must be a non-negative integer, not {n}"
                ))
            })?;
            p.next_token();
            return Ok(Some(Some(n)));
        }
        Ok(None)
    };
    let count = if p.parse_keyword(Keyword::NEXT) {
        Some(1)
    } else {
        let _ = p.parse_keyword(Keyword::FORWARD);
        count_of(p)?.unwrap_or(Some(1))
    };
    let _ = p.parse_keyword(Keyword::FROM) || p.parse_keyword(Keyword::IN);
    let cursor = normalize(&p.parse_identifier().map_err(syntax)?);
    let mut timeout = None;
    for (key, value) in parse_with_options(p)? {
        match key.as_str() {
            "timeout" => timeout = Some(parse_timeout(value.as_text())?),
            other => {
                return Err(Error::plan(
                    "22023",
                    format!("unknown FETCH option \"{other}\" (timeout)"),
                ));
            }
        }
    }
    Ok(Fetch {
        cursor,
        count,
        timeout,
    })
}

/// FETCH's timeout: a duration, or a bare number of seconds.
pub fn parse_timeout(text: &str) -> Result<std::time::Duration> {
    match text.trim().parse::<f64>() {
        Ok(seconds) => std::time::Duration::try_from_secs_f64(seconds).map_err(|_| {
            Error::data(
                "22007",
                format!("invalid timeout \"{text}\": a number of seconds must not be negative"),
            )
        }),
        Err(_) => super::duration::parse_duration(text),
    }
}

/// `GRANT privileges ON objects TO grantees`, `REVOKE … FROM …`, `GRANT role TO user`.
fn parse_grant(p: &mut Parser<'_>) -> Result<GrantStatement> {
    let grant = p.parse_keyword(Keyword::GRANT);
    if !grant {
        p.expect_keyword(Keyword::REVOKE).map_err(syntax)?;
        if p.parse_keywords(&[Keyword::GRANT, Keyword::OPTION, Keyword::FOR]) {
            return Err(Error::Unsupported(
                "grant options are not supported: only owners and superusers grant".into(),
            ));
        }
    }
    let to = if grant { Keyword::TO } else { Keyword::FROM };
    // Privilege or role names, up to ON (privileges) or TO/FROM (roles).
    let mut words = vec![];
    let mut all = false;
    loop {
        if p.parse_keyword(Keyword::ALL) {
            let _ = p.parse_keyword(Keyword::PRIVILEGES);
            all = true;
        } else {
            let token = p.next_token();
            match &token.token {
                Token::Word(w) => words.push(w.value.clone()),
                _ => return p.expected("a privilege or a role", token).map_err(syntax),
            }
            if p.peek_token().token == Token::LParen {
                return Err(Error::Unsupported(
                    "column privileges are not supported; grant on the whole stream".into(),
                ));
            }
        }
        if !p.consume_token(&Token::Comma) {
            break;
        }
    }
    let names = |p: &mut Parser<'_>| -> Result<Vec<String>> {
        let mut names = vec![];
        loop {
            let name = p.parse_identifier().map_err(syntax)?;
            names.push(
                if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("public") {
                    crate::catalog::access::PUBLIC.to_string()
                } else {
                    normalize(&name)
                },
            );
            if !p.consume_token(&Token::Comma) {
                return Ok(names);
            }
        }
    };
    if !p.parse_keyword(Keyword::ON) {
        if all {
            return p.expected("ON", p.peek_token()).map_err(syntax);
        }
        p.expect_keyword(to).map_err(syntax)?;
        let users = names(p)?;
        if p.parse_keywords(&[Keyword::WITH, Keyword::ADMIN, Keyword::OPTION]) {
            return Err(Error::Unsupported(
                "WITH ADMIN OPTION is not supported".into(),
            ));
        }
        return Ok(GrantStatement::Roles {
            grant,
            roles: words.iter().map(|w| w.to_lowercase()).collect(),
            users,
        });
    }
    let privileges = if all {
        None
    } else {
        Some(
            words
                .iter()
                .map(|w| {
                    Privilege::parse(w).ok_or_else(|| {
                        Error::plan("42601", format!("unrecognized privilege type \"{w}\""))
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        )
    };
    let class = if word_is(p, "SUBSCRIPTION") {
        p.next_token();
        ObjectClass::Subscription
    } else if p.parse_keyword(Keyword::SCHEMA) {
        ObjectClass::Schema
    } else {
        // TABLE, STREAM, TOPIC, VIEW, MATERIALIZED VIEW, or nothing: a relation.
        let _ = p.parse_keyword(Keyword::TABLE)
            || p.parse_keyword(Keyword::STREAM)
            || p.parse_keywords(&[Keyword::MATERIALIZED, Keyword::VIEW])
            || p.parse_keyword(Keyword::VIEW)
            || (word_is(p, "TOPIC") && {
                p.next_token();
                true
            });
        ObjectClass::Relation
    };
    let objects = if class == ObjectClass::Relation && p.parse_keyword(Keyword::ALL) {
        if !(p.parse_keyword(Keyword::TABLES)
            || word_is(p, "STREAMS") && {
                p.next_token();
                true
            })
        {
            return p.expected("TABLES", p.peek_token()).map_err(syntax);
        }
        p.expect_keywords(&[Keyword::IN, Keyword::SCHEMA])
            .map_err(syntax)?;
        let schema = normalize(&p.parse_identifier().map_err(syntax)?);
        if schema != crate::catalog::PUBLIC_SCHEMA {
            return Err(Error::plan(
                "3F000",
                format!("schema \"{schema}\" does not exist"),
            ));
        }
        GrantTargets::AllInSchema
    } else {
        let mut objects = vec![];
        loop {
            objects.push(match class {
                ObjectClass::Relation => parse_relation_name(p)?,
                _ => normalize(&p.parse_identifier().map_err(syntax)?),
            });
            if !p.consume_token(&Token::Comma) {
                break;
            }
        }
        GrantTargets::Named(objects)
    };
    p.expect_keyword(to).map_err(syntax)?;
    let grantees = names(p)?;
    if grant && p.parse_keywords(&[Keyword::WITH, Keyword::GRANT, Keyword::OPTION]) {
        return Err(Error::Unsupported(
            "WITH GRANT OPTION is not supported: only owners and superusers grant".into(),
        ));
    }
    let _ = p.parse_keyword(Keyword::CASCADE) || p.parse_keyword(Keyword::RESTRICT);
    Ok(GrantStatement::Privileges {
        grant,
        privileges,
        class,
        objects,
        grantees,
    })
}

fn parse_create_subscription(p: &mut Parser<'_>) -> Result<CreateSubscription> {
    let if_not_exists = parse_if_not_exists(p);
    let name = normalize(&p.parse_identifier().map_err(syntax)?);
    p.expect_keyword(Keyword::FROM).map_err(syntax)?;
    let relation = parse_relation_name(p)?;
    let options = parse_with_options(p)?;
    Ok(CreateSubscription {
        name,
        if_not_exists,
        relation,
        options,
    })
}

fn parse_relation_name(p: &mut Parser<'_>) -> Result<String> {
    let name = p.parse_object_name(false).map_err(syntax)?;
    relation_name(&name)
}

fn parse_if_not_exists(p: &mut Parser<'_>) -> bool {
    p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS])
}

fn parse_create_stream(p: &mut Parser<'_>) -> Result<CreateStream> {
    let if_not_exists = parse_if_not_exists(p);
    let name = parse_relation_name(p)?;
    let mut columns = vec![];
    let mut watermark = None;
    if p.consume_token(&Token::LParen) {
        loop {
            if word_is(p, "WATERMARK") {
                p.next_token();
                p.expect_keyword(Keyword::FOR).map_err(syntax)?;
                let column = normalize(&p.parse_identifier().map_err(syntax)?);
                p.expect_keyword(Keyword::AS).map_err(syntax)?;
                let expr = p.parse_expr().map_err(syntax)?;
                watermark = Some((column, expr.to_string()));
            } else {
                columns.push(parse_column(p)?);
            }
            if p.consume_token(&Token::Comma) {
                continue;
            }
            p.expect_token(&Token::RParen).map_err(syntax)?;
            break;
        }
    }
    let options = parse_with_options(p)?;
    let (query, emit) = if p.parse_keyword(Keyword::AS) {
        let (query, emit) = parse_continuous_query(p)?;
        (Some(query), emit)
    } else {
        (None, Emit::Changes)
    };
    Ok(CreateStream {
        kind: StreamKind::Stream,
        name,
        if_not_exists,
        columns,
        watermark,
        options,
        query,
        emit,
    })
}

/// `CREATE MATERIALIZED VIEW name [WITH (…)] AS SELECT …`; with `stream = true` among its
/// options, a derived stream (`CREATE STREAM name WITH (…) AS SELECT …`), as pg_dump
/// writes one back: `pg_class` shows a derived stream as a materialized view, whose
/// definition is its query.
fn parse_create_view(p: &mut Parser<'_>) -> Result<Statement> {
    let if_not_exists = parse_if_not_exists(p);
    let name = parse_relation_name(p)?;
    let mut options = parse_with_options(p)?;
    p.expect_keyword(Keyword::AS).map_err(syntax)?;
    let (query, emit) = parse_continuous_query(p)?;
    if let Some(at) = options.iter().position(|(key, _)| key == "stream") {
        let (key, value) = options.remove(at);
        if flag(&key, &value)? {
            return Ok(Statement::CreateStream(CreateStream {
                kind: StreamKind::Stream,
                name,
                if_not_exists,
                columns: vec![],
                watermark: None,
                options,
                query: Some(query),
                emit,
            }));
        }
    }
    Ok(Statement::CreateView(CreateView {
        name,
        if_not_exists,
        options,
        emit,
        query,
    }))
}

/// `(events [, 'options'])` after `CALL nexmark`.
fn parse_load_nexmark(p: &mut Parser<'_>) -> Result<Statement> {
    let usage = || Error::Syntax("CALL nexmark(events [, 'options'])".into());
    p.expect_token(&Token::LParen).map_err(syntax)?;
    let events = match p.next_token().token {
        Token::Number(n, _) => n.parse::<u64>().map_err(|_| usage())?,
        _ => return Err(usage()),
    };
    let mut options = String::new();
    if p.consume_token(&Token::Comma) {
        options = match p.next_token().token {
            Token::SingleQuotedString(s) => s,
            _ => return Err(usage()),
        };
    }
    p.expect_token(&Token::RParen).map_err(syntax)?;
    Ok(Statement::LoadNexmark { events, options })
}

/// The `SELECT` of a continuous query, with an optional trailing `EMIT CHANGES` (updates
/// every epoch: what a continuous query does anyway) or `EMIT ON WINDOW CLOSE`.
fn parse_continuous_query(p: &mut Parser<'_>) -> Result<(String, Emit)> {
    let mut tokens = statement_tokens(p);
    strip_with_data(&mut tokens);
    let emit = strip_emit(&mut tokens).unwrap_or_default();
    let mut sub = Parser::new(&PostgreSqlDialect {}).with_tokens_with_locations(tokens);
    let query = sub.parse_query().map_err(syntax)?;
    if sub.peek_token() != Token::EOF {
        return Err(Error::Syntax(format!(
            "syntax error at or near \"{}\"",
            sub.peek_token()
        )));
    }
    Ok((query.to_string(), emit))
}

fn parse_insert_continuous(tokens: Vec<TokenWithSpan>, emit: Emit) -> Result<InsertContinuous> {
    let mut p = Parser::new(&PostgreSqlDialect {}).with_tokens_with_locations(tokens);
    p.expect_keyword(Keyword::INSERT).map_err(syntax)?;
    p.expect_keyword(Keyword::INTO).map_err(syntax)?;
    let target = parse_relation_name(&mut p)?;
    let mut columns = vec![];
    if p.consume_token(&Token::LParen) {
        loop {
            columns.push(normalize(&p.parse_identifier().map_err(syntax)?));
            if p.consume_token(&Token::RParen) {
                break;
            }
            p.expect_token(&Token::Comma).map_err(syntax)?;
        }
    }
    let query = p.parse_query().map_err(syntax)?;
    if p.peek_token() != Token::EOF {
        return Err(Error::Syntax(format!(
            "syntax error at or near \"{}\"",
            p.peek_token()
        )));
    }
    Ok(InsertContinuous {
        target,
        columns,
        query: query.to_string(),
        emit,
    })
}

/// The tokens of the statement at the parser's position, up to its `;` or the end.
fn statement_tokens(p: &mut Parser<'_>) -> Vec<TokenWithSpan> {
    let mut depth = 0usize;
    let mut tokens = vec![];
    loop {
        match &p.peek_token().token {
            Token::EOF => break,
            Token::SemiColon if depth == 0 => break,
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
        tokens.push(p.next_token());
    }
    tokens
}

/// Removes a trailing `EMIT CHANGES [LIMIT n]`; `Some(limit)` if there was one.
fn strip_emit_changes_limit(tokens: &mut Vec<TokenWithSpan>) -> Result<Option<Option<u64>>> {
    let is = |t: &TokenWithSpan, word: &str| matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word));
    let n = tokens.len();
    if n >= 4
        && is(&tokens[n - 4], "EMIT")
        && is(&tokens[n - 3], "CHANGES")
        && is(&tokens[n - 2], "LIMIT")
    {
        let limit = match &tokens[n - 1].token {
            Token::Number(v, _) => v.parse::<u64>().map_err(|_| {
                Error::Syntax(format!(
                    "LIMIT of a push query must be a non-negative integer, not {v}"
                ))
            })?,
            other => {
                return Err(Error::Syntax(format!(
                    "LIMIT of a push query must be a non-negative integer, not {other}"
                )));
            }
        };
        tokens.truncate(n - 4);
        return Ok(Some(Some(limit)));
    }
    Ok(strip_emit_changes(tokens).then_some(None))
}

fn parse_push_query(tokens: Vec<TokenWithSpan>, limit: Option<u64>) -> Result<PushQuery> {
    let mut p = Parser::new(&PostgreSqlDialect {}).with_tokens_with_locations(tokens);
    let query = p.parse_query().map_err(syntax)?;
    if p.peek_token() != Token::EOF {
        return Err(Error::Syntax(format!(
            "syntax error at or near \"{}\"",
            p.peek_token()
        )));
    }
    Ok(PushQuery {
        query: query.to_string(),
        limit,
    })
}

/// Removes a trailing `EMIT CHANGES` or `EMIT ON WINDOW CLOSE`; which, if there was one.
fn strip_emit(tokens: &mut Vec<TokenWithSpan>) -> Option<Emit> {
    if strip_emit_changes(tokens) {
        return Some(Emit::Changes);
    }
    let is = |t: &TokenWithSpan, word: &str| matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word));
    let n = tokens.len();
    let on_close = n >= 4
        && ["EMIT", "ON", "WINDOW", "CLOSE"]
            .iter()
            .zip(&tokens[n - 4..])
            .all(|(word, t)| is(t, word));
    if on_close {
        tokens.truncate(n - 4);
        return Some(Emit::OnWindowClose);
    }
    None
}

/// Removes a trailing `WITH [NO] DATA` (PostgreSQL's `CREATE MATERIALIZED VIEW … AS …
/// WITH NO DATA`, as pg_dump writes views): a continuous query starts filling what it
/// maintains either way.
fn strip_with_data(tokens: &mut Vec<TokenWithSpan>) {
    let is = |t: &TokenWithSpan, word: &str| matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word));
    let n = tokens.len();
    if n >= 3
        && is(&tokens[n - 3], "WITH")
        && is(&tokens[n - 2], "NO")
        && is(&tokens[n - 1], "DATA")
    {
        tokens.truncate(n - 3);
    } else if n >= 2 && is(&tokens[n - 2], "WITH") && is(&tokens[n - 1], "DATA") {
        tokens.truncate(n - 2);
    }
}

/// Removes a trailing `EMIT CHANGES`; whether there was one.
fn strip_emit_changes(tokens: &mut Vec<TokenWithSpan>) -> bool {
    let is = |t: &TokenWithSpan, word: &str| matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word));
    let n = tokens.len();
    if n >= 2 && is(&tokens[n - 2], "EMIT") && is(&tokens[n - 1], "CHANGES") {
        tokens.truncate(n - 2);
        true
    } else {
        false
    }
}

fn parse_column(p: &mut Parser<'_>) -> Result<ColumnSpec> {
    let name = normalize(&p.parse_identifier().map_err(syntax)?);
    let data_type = p.parse_data_type().map_err(syntax)?;
    let sql_type = SqlType::from_ast(&data_type)?;
    let mut column = ColumnSpec {
        name,
        sql_type,
        nullable: true,
        key: false,
    };
    loop {
        if p.parse_keyword(Keyword::KEY) || p.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
            column.key = true;
        } else if p.parse_keywords(&[Keyword::NOT, Keyword::NULL]) {
            column.nullable = false;
        } else if p.parse_keyword(Keyword::NULL) {
            column.nullable = true;
        } else {
            return Ok(column);
        }
    }
}

fn parse_create_topic(p: &mut Parser<'_>) -> Result<CreateTopic> {
    let if_not_exists = parse_if_not_exists(p);
    let name = parse_relation_name(p)?;
    let options = parse_with_options(p)?;
    Ok(CreateTopic {
        name,
        if_not_exists,
        options,
    })
}

/// `WITH (key = value, …)`; keys may be any word (`timestamp`, `partitions` are keywords).
fn parse_with_options(p: &mut Parser<'_>) -> Result<Vec<(String, OptionValue)>> {
    let mut options = vec![];
    if !p.parse_keyword(Keyword::WITH) {
        return Ok(options);
    }
    p.expect_token(&Token::LParen).map_err(syntax)?;
    loop {
        let token = p.next_token();
        let key = match token.token {
            Token::Word(w) => w.value.to_lowercase(),
            Token::SingleQuotedString(s) => s.to_lowercase(),
            _ => return p.expected("an option name", token).map_err(syntax),
        };
        p.expect_token(&Token::Eq).map_err(syntax)?;
        let expr = p.parse_expr().map_err(syntax)?;
        let value = option_value(&key, expr)?;
        options.push((key, value));
        if p.consume_token(&Token::Comma) {
            continue;
        }
        p.expect_token(&Token::RParen).map_err(syntax)?;
        return Ok(options);
    }
}

/// An option's value as written: a number, a string, or a word.
fn option_value(key: &str, expr: Expr) -> Result<OptionValue> {
    let unsupported = |shown: String| {
        Err(Error::Syntax(format!(
            "unsupported value {shown} for option {key}"
        )))
    };
    Ok(match expr {
        Expr::Value(v) => match v.value {
            Value::Number(n, _) => OptionValue::Number(n),
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => OptionValue::String(s),
            Value::Boolean(b) => OptionValue::Word(b.to_string()),
            other => return unsupported(other.to_string()),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match *expr {
            Expr::Value(v) => match v.value {
                Value::Number(n, _) => OptionValue::Number(format!("-{n}")),
                other => return unsupported(format!("-{other}")),
            },
            other => return unsupported(format!("-{other}")),
        },
        Expr::Identifier(ident) => OptionValue::Word(ident.value),
        other => return unsupported(other.to_string()),
    })
}

fn parse_drop(p: &mut Parser<'_>, kind: ObjectKind) -> Result<Drop> {
    let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let mut names = vec![parse_relation_name(p)?];
    while p.consume_token(&Token::Comma) {
        names.push(parse_relation_name(p)?);
    }
    // PostgreSQL's CASCADE / RESTRICT: nothing depends on streams yet.
    let _ = p.parse_keyword(Keyword::CASCADE) || p.parse_keyword(Keyword::RESTRICT);
    Ok(Drop {
        kind,
        if_exists,
        names,
    })
}

fn one_byte(option: &str, c: char) -> Result<u8> {
    if c.is_ascii() {
        Ok(c as u8)
    } else {
        Err(Error::data(
            "22023",
            format!("COPY {option} must be a single one-byte character"),
        ))
    }
}

/// A COPY's options.
fn copy_options(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<CopyOptions> {
    let mut format = CopyFormat::Text;
    for o in options {
        if let CopyOption::Format(name) = o {
            format = match name.value.to_lowercase().as_str() {
                "text" => CopyFormat::Text,
                "csv" => CopyFormat::Csv,
                "binary" => CopyFormat::Binary,
                other => {
                    return Err(Error::data(
                        "22023",
                        format!("COPY format \"{other}\" not recognized"),
                    ));
                }
            };
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Csv(_) => format = CopyFormat::Csv,
            CopyLegacyOption::Binary => format = CopyFormat::Binary,
            _ => {}
        }
    }
    let mut out = CopyOptions::new(format);
    for o in options {
        match o {
            CopyOption::Format(_) | CopyOption::Freeze(_) | CopyOption::Encoding(_) => {}
            CopyOption::Delimiter(c) => out.delimiter = one_byte("delimiter", *c)?,
            CopyOption::Null(s) => out.null = s.clone(),
            CopyOption::Header(h) => out.header = *h,
            CopyOption::Quote(c) => out.quote = one_byte("quote", *c)?,
            CopyOption::Escape(c) => out.escape = one_byte("escape", *c)?,
            other => {
                return Err(Error::Unsupported(format!(
                    "COPY option {other} is not supported"
                )));
            }
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Csv(_) | CopyLegacyOption::Binary => {}
            CopyLegacyOption::Delimiter(c) => out.delimiter = one_byte("delimiter", *c)?,
            CopyLegacyOption::Null(s) => out.null = s.clone(),
            CopyLegacyOption::Header => out.header = true,
            other => {
                return Err(Error::Unsupported(format!(
                    "COPY option {other} is not supported"
                )));
            }
        }
    }
    if out.delimiter == b'\n' || out.delimiter == b'\r' {
        return Err(Error::data(
            "22023",
            "COPY delimiter cannot be newline or carriage return",
        ));
    }
    // Options that do not apply to the format are refused, with PostgreSQL's SQLSTATEs.
    let default = CopyOptions::new(format);
    if format == CopyFormat::Binary {
        if out.delimiter != default.delimiter {
            return Err(Error::Syntax(
                "cannot specify DELIMITER in BINARY mode".into(),
            ));
        }
        if out.null != default.null {
            return Err(Error::Syntax("cannot specify NULL in BINARY mode".into()));
        }
        if out.header {
            return Err(Error::Unsupported(
                "cannot specify HEADER in BINARY mode".into(),
            ));
        }
    }
    if format != CopyFormat::Csv && (out.quote != default.quote || out.escape != default.escape) {
        let which = if out.quote != default.quote {
            "quote"
        } else {
            "escape"
        };
        return Err(Error::Unsupported(format!(
            "COPY {which} available only in CSV mode"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Statement {
        let mut s = parse(sql).unwrap();
        assert_eq!(s.len(), 1, "{sql}");
        s.pop().unwrap()
    }

    #[test]
    fn push_queries_end_in_emit_changes_and_an_optional_limit() {
        let Statement::Push(q) = one("SELECT * FROM clicks WHERE x > 1 EMIT CHANGES LIMIT 3;")
        else {
            panic!()
        };
        assert_eq!(
            (q.query.as_str(), q.limit),
            ("SELECT * FROM clicks WHERE x > 1", Some(3))
        );
        let Statement::Push(q) = one("select url, count(*) from clicks group by url emit changes")
        else {
            panic!()
        };
        assert_eq!(q.limit, None);
        // Without EMIT CHANGES a SELECT is DataFusion's, also next to other statements.
        assert!(matches!(one("SELECT 1 AS emit"), Statement::DataFusion(_)));
        assert_eq!(parse("SELECT 1; SELECT 2").unwrap().len(), 2);
        assert!(matches!(
            parse("SELECT * FROM clicks EMIT CHANGES LIMIT -1"),
            Err(Error::Syntax(_))
        ));
    }

    #[test]
    fn create_stream_as_sql_md_writes_it() {
        let sql = "CREATE STREAM clicks (
            user_id  BIGINT KEY,
            url      TEXT,
            ts       TIMESTAMP,
            WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
        ) WITH (
            partitions   = 4,
            value_format = 'json',
            timestamp    = 'ts',
            retention    = '7 days',
            retention_bytes = 1073741824,
            compression  = 'lz4',
            topic        = 'clicks'
        );";
        let Statement::CreateStream(c) = one(sql) else {
            panic!()
        };
        assert_eq!(c.name, "clicks");
        assert_eq!(c.columns.len(), 3);
        assert!(c.columns[0].key && !c.columns[1].key);
        assert_eq!(c.columns[2].sql_type, SqlType::Timestamp);
        assert_eq!(
            c.watermark,
            Some(("ts".into(), "ts - INTERVAL '5 seconds'".into()))
        );
        assert_eq!(c.options.len(), 7);
        assert_eq!(
            c.options[0],
            ("partitions".into(), OptionValue::Number("4".into()))
        );
        assert_eq!(
            c.options[2],
            ("timestamp".into(), OptionValue::String("ts".into()))
        );
    }

    #[test]
    fn statements_mix_ours_and_datafusion() {
        let s = parse("CREATE TOPIC raw WITH (partitions = 3); SELECT 1; SHOW STREAMS; DROP TOPIC IF EXISTS raw; COPY clicks FROM STDIN WITH (FORMAT csv, HEADER)").unwrap();
        assert!(matches!(s[0], Statement::CreateTopic(_)));
        assert!(matches!(s[1], Statement::DataFusion(_)));
        assert!(matches!(s[2], Statement::ShowStreams));
        assert!(matches!(&s[3], Statement::Drop(d) if d.if_exists && d.kind == ObjectKind::Topic));
        let Statement::CopyFrom(c) = &s[4] else {
            panic!()
        };
        assert_eq!(c.options.format, CopyFormat::Csv);
        assert!(c.options.header);
    }

    #[test]
    fn continuous_statements_as_sql_md_writes_them() {
        let Statement::CreateStream(c) = one("CREATE STREAM cart_clicks WITH (partitions = 2) AS
            SELECT user_id, ts FROM clicks WHERE url = '/cart';")
        else {
            panic!()
        };
        assert_eq!(
            c.query.as_deref(),
            Some("SELECT user_id, ts FROM clicks WHERE url = '/cart'")
        );
        assert_eq!(
            c.options,
            vec![("partitions".into(), OptionValue::Number("2".into()))]
        );
        let Statement::CreateView(v) = one("CREATE MATERIALIZED VIEW clicks_per_user AS
            SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id")
        else {
            panic!()
        };
        assert_eq!(v.name, "clicks_per_user");
        assert!(
            v.query
                .starts_with("SELECT user_id, count(*) AS n FROM clicks")
        );
        let Statement::InsertContinuous(i) = one(
            "INSERT INTO alerts SELECT user_id, url FROM clicks WHERE url LIKE '/admin%' EMIT CHANGES;",
        ) else {
            panic!()
        };
        assert_eq!(i.target, "alerts");
        assert_eq!(
            i.query,
            "SELECT user_id, url FROM clicks WHERE url LIKE '/admin%'"
        );
        // EMIT would otherwise be an alias of clicks.
        let Statement::InsertContinuous(i) =
            one("INSERT INTO a (x) SELECT x FROM clicks EMIT CHANGES")
        else {
            panic!()
        };
        assert_eq!(
            (i.columns, i.query.as_str()),
            (vec!["x".to_string()], "SELECT x FROM clicks")
        );
        assert!(matches!(
            one("INSERT INTO a SELECT 1"),
            Statement::DataFusion(_)
        ));
        assert!(matches!(one("FLUSH"), Statement::Flush));
        assert!(matches!(one("SHOW QUERIES"), Statement::ShowQueries));
        assert!(matches!(
            one("SHOW MATERIALIZED VIEWS"),
            Statement::ShowViews
        ));
        assert!(
            matches!(one("DROP MATERIALIZED VIEW IF EXISTS v"), Statement::Drop(d) if d.kind == ObjectKind::View)
        );
        assert!(
            matches!(one("DROP QUERY insert_into_alerts_3"), Statement::Drop(d) if d.kind == ObjectKind::Query)
        );
        let several =
            parse("CREATE MATERIALIZED VIEW v AS SELECT count(*) FROM t; FLUSH; SELECT * FROM v")
                .unwrap();
        assert_eq!(several.len(), 3);
    }

    #[test]
    fn statements_after_others_reparse_from_their_own_start() {
        let s = parse("SELECT 1;\n  INSERT INTO t VALUES (1);\n\n  COPY t TO 'x.csv';  INSERT INTO u SELECT 2").unwrap();
        assert_eq!(s.len(), 4);
        assert!(s.iter().all(|s| matches!(s, Statement::DataFusion(_))));
    }

    #[test]
    fn names_follow_postgres_case_rules() {
        let Statement::Describe(n) = one("DESCRIBE Clicks") else {
            panic!()
        };
        assert_eq!(n, "clicks");
        let Statement::Describe(n) = one("DESCRIBE \"Clicks\"") else {
            panic!()
        };
        assert_eq!(n, "Clicks");
        let Statement::Describe(n) = one("DESCRIBE public.clicks") else {
            panic!()
        };
        assert_eq!(n, "clicks");
        assert_eq!(
            parse("DESCRIBE other.clicks").unwrap_err().sqlstate(),
            "3F000"
        );
    }

    #[test]
    fn copy_to_and_queries_go_to_datafusion() {
        assert!(matches!(
            one("COPY (SELECT 1) TO 'x.csv'"),
            Statement::DataFusion(_)
        ));
        assert!(matches!(
            one("COPY clicks TO 'x.csv'"),
            Statement::DataFusion(_)
        ));
        assert!(matches!(
            one("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION 'x.csv'"),
            Statement::DataFusion(_)
        ));
        assert!(matches!(
            one("SET client_encoding = 'UTF8'"),
            Statement::Set { .. }
        ));
        assert!(matches!(
            one("show transaction isolation level"),
            Statement::ShowVariable(_)
        ));
    }

    #[test]
    fn session_statements_keep_what_they_say() {
        let set = |sql: &str| match one(sql) {
            Statement::Set { name, value } => (name, value),
            other => panic!("{sql}: {other:?}"),
        };
        assert_eq!(set("SET TimeZone TO DEFAULT"), ("timezone".into(), None));
        assert_eq!(
            set("SET search_path = \"$user\", Public"),
            ("search_path".into(), Some("$user, public".into()))
        );
        assert_eq!(
            set("SET LOCAL statement_timeout = '5s'"),
            ("statement_timeout".into(), Some("5s".into()))
        );
        assert_eq!(set("RESET ALL"), ("all".into(), None));
        assert_eq!(
            set("SET TIME ZONE 'Europe/Paris'"),
            ("timezone".into(), Some("Europe/Paris".into()))
        );
        let Statement::Begin(modes) =
            one("BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE")
        else {
            panic!("BEGIN");
        };
        assert_eq!(modes.isolation, Some(Isolation::Serializable));
        assert_eq!(modes.read_only, Some(true));
        let Statement::SetTransaction { modes, session } =
            one("SET SESSION CHARACTERISTICS AS TRANSACTION NOT DEFERRABLE, READ WRITE")
        else {
            panic!("SET SESSION CHARACTERISTICS");
        };
        assert!(session);
        assert_eq!(modes.read_only, Some(false));
        assert!(matches!(
            one("ROLLBACK TO SAVEPOINT \"Sp\""),
            Statement::Savepoint(SavepointOp::RollbackTo(name)) if name == "Sp"
        ));
        assert!(matches!(
            one("COMMIT AND CHAIN"),
            Statement::Commit { chain: true }
        ));
        assert!(matches!(one("END"), Statement::Commit { chain: false }));
        assert!(matches!(
            one("ABORT WORK"),
            Statement::Rollback { chain: false }
        ));
        assert!(matches!(one("CLOSE ALL"), Statement::Close(None)));
        // DEFERRABLE elsewhere is left alone.
        assert_eq!(
            without_deferrable_text("SELECT 1; SET TRANSACTION DEFERRABLE"),
            "SELECT 1; SET TRANSACTION "
        );
    }

    fn without_deferrable_text(sql: &str) -> String {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        without_deferrable(tokens)
            .iter()
            .map(|t| t.token.to_string())
            .collect()
    }

    #[test]
    fn syntax_errors_are_42601() {
        for bad in [
            "CREATE STREAM (",
            "SELEC 1",
            "CREATE STREAM s (a frobnicate)",
            "SELECT 1 2",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                matches!(e.sqlstate(), "42601" | "42704"),
                "{bad}: {e} {}",
                e.sqlstate()
            );
        }
    }
}
