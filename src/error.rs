//! Errors, named by cause, and their PostgreSQL SQLSTATEs.
//!
//! Every error a client can see is an [`Error`]. Each variant says whose fault it is (the
//! user's SQL or data, the environment, or ours) through its SQLSTATE class: 42 and 22 are
//! the user's, 53/58 the environment's, XX ours. DataFusion's errors are classified once, in
//! [`Error::from_datafusion`], so the rest of the code never matches on message text.

use datafusion::error::DataFusionError;

use crate::storage::StorageError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The statement does not parse. 42601
    #[error("{0}")]
    Syntax(String),
    /// The statement parses but does not make sense: unknown column, wrong argument types…
    #[error("{message}")]
    Plan { code: &'static str, message: String },
    /// A relation that does not exist. 42P01
    #[error("{0}")]
    UnknownRelation(String),
    /// A name already taken. 42P07
    #[error("{0}")]
    AlreadyExists(String),
    /// A name that cannot be used (e.g. path characters in a stream name). 42602
    #[error("{0}")]
    InvalidName(String),
    /// Something else depends on the object. 2BP01
    #[error("{0}")]
    Dependent(String),
    /// A value that does not fit: bad number, bad date, wrong column count in data… (22xxx)
    #[error("{message}")]
    Data { code: &'static str, message: String },
    /// A constraint the statement would break (23xxx), or a statement that would change
    /// a row twice (21000), with PostgreSQL's detail.
    #[error("{message}")]
    Constraint {
        code: &'static str,
        message: String,
        detail: Option<String>,
    },
    /// Valid SQL that Runnel does not support (yet). 0A000
    #[error("{0}")]
    Unsupported(String),
    /// A configured limit was hit. 54000
    #[error("{0}")]
    Limit(String),
    /// The client broke the protocol. 08P01
    #[error("{0}")]
    Protocol(String),
    /// The query was cancelled. 57014
    #[error("canceling statement due to user request")]
    Cancelled,
    /// The log or the disk failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A broken invariant: a bug in Runnel. XX000
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn plan(code: &'static str, message: impl Into<String>) -> Error {
        Error::Plan {
            code,
            message: message.into(),
        }
    }

    /// The same error (and SQLSTATE), its message followed by `note`.
    pub fn noting(self, note: &str) -> Error {
        Error::plan(self.sqlstate(), format!("{self}; {note}"))
    }

    pub fn data(code: &'static str, message: impl Into<String>) -> Error {
        Error::Data {
            code,
            message: message.into(),
        }
    }

    /// PostgreSQL's DETAIL line, where the error has one.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Error::Constraint { detail, .. } => detail.as_deref(),
            _ => None,
        }
    }

    /// The SQLSTATE a PostgreSQL client sees.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::Syntax(_) => "42601",
            Error::Plan { code, .. } => code,
            Error::UnknownRelation(_) => "42P01",
            Error::AlreadyExists(_) => "42P07",
            Error::InvalidName(_) => "42602",
            Error::Dependent(_) => "2BP01",
            Error::Data { code, .. } => code,
            Error::Constraint { code, .. } => code,
            Error::Unsupported(_) => "0A000",
            Error::Limit(_) => "54000",
            Error::Protocol(_) => "08P01",
            Error::Cancelled => "57014",
            Error::Storage(e) => match e {
                StorageError::Corruption { .. } => "XX001",
                StorageError::Io { source, .. }
                    if matches!(
                        source.kind(),
                        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                    ) =>
                {
                    "53100"
                }
                StorageError::Io { .. } | StorageError::Failed(_) => "58030",
                StorageError::Refused(_) | StorageError::Removed { .. } => "55000",
                StorageError::TooLarge(_) => "54000",
                StorageError::UnknownTopic(_) => "42P01",
                StorageError::UnknownPartition { .. } => "22023",
                StorageError::InvalidBatch(_) => "22000",
                StorageError::ShutDown => "57P01",
                StorageError::Locked { .. } => "55006",
            },
            Error::Internal(_) => "XX000",
        }
    }

    /// Classifies a DataFusion error. Errors Runnel raised inside DataFusion callbacks
    /// (table scans, sinks) come back as themselves.
    pub fn from_datafusion(e: DataFusionError) -> Error {
        use datafusion::arrow::error::ArrowError;
        use datafusion::common::SchemaError;
        match e {
            DataFusionError::Context(_, inner) => Error::from_datafusion(*inner),
            DataFusionError::Diagnostic(_, inner) => Error::from_datafusion(*inner),
            DataFusionError::Shared(inner) => match std::sync::Arc::try_unwrap(inner) {
                Ok(inner) => Error::from_datafusion(inner),
                // Several consumers hold it (a repartitioned plan): keep its SQLSTATE and text.
                Err(shared) => match find_ours(&shared) {
                    Some(ours) => Error::plan(ours.sqlstate(), ours.to_string()),
                    None => Error::from_datafusion(DataFusionError::Execution(shared.to_string())),
                },
            },
            DataFusionError::External(inner) => match inner.downcast::<Error>() {
                Ok(ours) => *ours,
                Err(other) => match other.downcast::<DataFusionError>() {
                    Ok(df) => Error::from_datafusion(*df),
                    Err(other) => match other.downcast::<ArrowError>() {
                        Ok(arrow) => {
                            Error::from_datafusion(DataFusionError::ArrowError(arrow, None))
                        }
                        Err(other) => Error::Internal(other.to_string()),
                    },
                },
            },
            DataFusionError::SQL(e, _)
                if matches!(*e, sqlparser::parser::ParserError::RecursionLimitExceeded) =>
            {
                crate::sql::depth::nested_too_deeply()
            }
            DataFusionError::SQL(e, _) => Error::Syntax(e.to_string()),
            DataFusionError::NotImplemented(m) if m.contains("ScalarSubquery") => {
                Error::Unsupported(format!(
                    "this correlated scalar subquery is not supported: Runnel runs one that \
                     aggregates without GROUP BY over rows its WHERE picks, or one correlated \
                     by equalities ({m})"
                ))
            }
            DataFusionError::NotImplemented(m) => Error::Unsupported(m),
            DataFusionError::SchemaError(e, _) => {
                let message = e.to_string();
                match *e {
                    SchemaError::FieldNotFound { .. } => Error::plan("42703", message),
                    SchemaError::AmbiguousReference { .. } => Error::plan("42702", message),
                    SchemaError::DuplicateQualifiedField { .. }
                    | SchemaError::DuplicateUnqualifiedField { .. } => {
                        Error::plan("42701", message)
                    }
                }
            }
            DataFusionError::ArrowError(e, _) => match *e {
                ArrowError::DivideByZero => Error::data("22012", "division by zero"),
                ArrowError::ArithmeticOverflow(m) => Error::data("22003", m),
                ArrowError::ComputeError(m) if m.to_ascii_lowercase().contains("overflow") => {
                    Error::data("22003", m)
                }
                ArrowError::CastError(m) | ArrowError::ParseError(m) => {
                    Error::data(cast_code(&m), m)
                }
                ArrowError::ExternalError(inner) => match inner.downcast::<Error>() {
                    Ok(ours) => *ours,
                    Err(other) => match other.downcast::<DataFusionError>() {
                        // A DataFusion error passed through an Arrow stream (an operator
                        // out of memory, say) keeps its own class.
                        Ok(df) => Error::from_datafusion(*df),
                        Err(other) => Error::Internal(other.to_string()),
                    },
                },
                other => Error::Internal(other.to_string()),
            },
            DataFusionError::Plan(m) => classify_plan_message(m),
            DataFusionError::Execution(m) => classify_execution_message(m),
            DataFusionError::ResourcesExhausted(m) => Error::plan(
                "53200",
                format!("out of memory: the query needs more than --memory-limit allows ({m})"),
            ),
            DataFusionError::Configuration(m) => Error::plan("22023", m),
            DataFusionError::IoError(e) => Error::plan("58030", e.to_string()),
            DataFusionError::ObjectStore(e) => Error::plan("58030", e.to_string()),
            DataFusionError::ParquetError(e) => Error::data("22000", e.to_string()),
            // DataFusion reports some unreadable files as internal errors; they are the data's.
            DataFusionError::Internal(m) if m.starts_with("Failed to parse") => {
                Error::data("22000", m)
            }
            DataFusionError::Substrait(m) | DataFusionError::Internal(m) => Error::Internal(m),
            other => Error::Internal(other.to_string()),
        }
    }
}

/// A Runnel error somewhere inside a DataFusion error.
fn find_ours(e: &DataFusionError) -> Option<&Error> {
    match e {
        DataFusionError::External(inner) => inner.downcast_ref::<Error>(),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            find_ours(inner)
        }
        DataFusionError::Shared(inner) => find_ours(inner),
        _ => None,
    }
}

/// 22003 for values out of the type's range, 22007 for date/time values, 22P02 for the rest
/// (PostgreSQL's split).
fn cast_code(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.starts_with("can't cast value") || m.contains("out of range") || m.contains("overflow") {
        "22003"
    } else if m.contains("timestamp")
        || m.contains("date")
        || m.contains("time")
        || m.contains("interval")
    {
        "22007"
    } else {
        "22P02"
    }
}

/// DataFusion reports planning errors as text; these are the ones users meet most, mapped to
/// the SQLSTATE PostgreSQL would give.
fn classify_plan_message(m: String) -> Error {
    let lower = m.to_ascii_lowercase();
    if let Some(name) = missing_table(&m) {
        Error::UnknownRelation(format!("relation \"{name}\" does not exist"))
    } else if lower.contains("table not found") {
        Error::UnknownRelation(m)
    } else if lower.contains("invalid function") || lower.contains("no function matches") {
        Error::plan("42883", m)
    } else if lower.contains("inserting query must have the same schema length")
        || lower.contains("column count")
        || lower.contains("has more expressions than target columns")
    {
        Error::plan("42601", m)
    } else if lower.contains("cannot cast")
        || lower.contains("cannot coerce")
        || lower.contains("cannot infer common")
    {
        Error::plan("42804", m)
    } else {
        Error::plan("42601", m)
    }
}

/// The table name in DataFusion's "table 'runnel.public.x' not found".
fn missing_table(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("table '")?;
    let (qualified, tail) = rest.split_once('\'')?;
    if !tail.starts_with(" not found") {
        return None;
    }
    Some(qualified.rsplit('.').next().unwrap_or(qualified))
}

fn classify_execution_message(m: String) -> Error {
    let lower = m.to_ascii_lowercase();
    if lower.contains("failed to parse") || lower.contains("does not contain correct footer") {
        // A file that is not in the format its table says.
        Error::data("22000", m)
    } else if lower.contains("scalar subquery returned more than one row") {
        Error::plan(
            "21000",
            "more than one row returned by a subquery used as an expression",
        )
    } else if lower.contains("types don't match and no valid cast exists") {
        // VALUES an INSERT's columns cannot take (PostgreSQL's "column … is of type … but
        // expression is of type …").
        Error::plan("42804", m)
    } else if lower.contains("cannot cast")
        || lower.contains("could not cast")
        || lower.contains("invalid input")
    {
        Error::data(cast_code(&m), m)
    } else if lower.contains("divide by zero") || lower.contains("division by zero") {
        Error::data("22012", m)
    } else if lower.contains("overflow") {
        Error::data("22003", m)
    } else {
        Error::Internal(m)
    }
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Error {
        Error::from_datafusion(e)
    }
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> DataFusionError {
        DataFusionError::External(Box::new(e))
    }
}
