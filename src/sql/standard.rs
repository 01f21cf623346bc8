//! PostgreSQL's session statements — `SET`, `RESET`, `SHOW`, transaction control, users —
//! as sqlparser reads them, taken into Runnel's terms. Whatever sqlparser reads that Runnel
//! cannot do is refused by name (`0A000`) rather than dropped: an isolation level, a
//! setting's quoted value, `AND CHAIN` and a savepoint's name all reach the session.

use sqlparser::ast::{
    self, AlterRoleOperation, ContextModifier, Expr, Ident, ObjectName, ObjectType, Password,
    Reset, RoleOption, Set, Statement as SqlStatement, TransactionAccessMode,
    TransactionIsolationLevel, TransactionMode, UnaryOperator, Value,
};

use super::parser::{SavepointOp, Statement, UserOptions, UserStatement};
use crate::catalog::normalize;
use crate::error::{Error, Result};

/// A transaction's characteristics, as `BEGIN`, `SET TRANSACTION` and `SET SESSION
/// CHARACTERISTICS` give them; `None` leaves one as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransactionModes {
    pub isolation: Option<Isolation>,
    pub read_only: Option<bool>,
}

/// PostgreSQL's isolation levels. Runnel runs every statement on a snapshot of its own,
/// as `READ COMMITTED` does, whichever is asked for (see docs/sql.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    ReadUncommitted,
    ReadCommitted,
    RepeatableRead,
    Serializable,
}

impl Isolation {
    const ALL: [Isolation; 4] = [
        Isolation::ReadUncommitted,
        Isolation::ReadCommitted,
        Isolation::RepeatableRead,
        Isolation::Serializable,
    ];

    /// The level as `SHOW transaction_isolation` names it.
    pub fn name(self) -> &'static str {
        match self {
            Isolation::ReadUncommitted => "read uncommitted",
            Isolation::ReadCommitted => "read committed",
            Isolation::RepeatableRead => "repeatable read",
            Isolation::Serializable => "serializable",
        }
    }

    /// A level by its name (`SET default_transaction_isolation = 'serializable'`).
    pub fn named(name: &str) -> Option<Isolation> {
        let name = name.trim();
        Isolation::ALL
            .into_iter()
            .find(|level| level.name().eq_ignore_ascii_case(name))
    }
}

/// Takes one of the statements this module knows, as sqlparser read it.
pub fn session_statement(statement: SqlStatement) -> Result<Statement> {
    match statement {
        SqlStatement::Set(set) => set_statement(set),
        SqlStatement::Reset(reset) => Ok(Statement::Set {
            name: match reset.reset {
                Reset::ALL => "all".into(),
                Reset::ConfigurationParameter(name) => setting_name(&name),
            },
            value: None,
        }),
        SqlStatement::ShowVariable { variable } => {
            let words: Vec<String> = variable.iter().map(|w| w.value.to_lowercase()).collect();
            // The settings SQL's own words name.
            let name = match words.join(" ").as_str() {
                "time zone" => "timezone".into(),
                "transaction isolation level" => "transaction_isolation".into(),
                "session authorization" => "session_authorization".into(),
                _ => words.join("."),
            };
            Ok(Statement::ShowVariable(name))
        }
        SqlStatement::StartTransaction {
            modes,
            modifier: None,
            statements,
            exception: None,
            has_end_keyword: false,
            ..
        } if statements.is_empty() => Ok(Statement::Begin(transaction_modes(&modes)?)),
        SqlStatement::Commit {
            chain,
            modifier: None,
            ..
        } => Ok(Statement::Commit { chain }),
        SqlStatement::Rollback {
            chain,
            savepoint: None,
        } => Ok(Statement::Rollback { chain }),
        SqlStatement::Rollback {
            chain: false,
            savepoint: Some(name),
        } => Ok(Statement::Savepoint(SavepointOp::RollbackTo(normalize(
            &name,
        )))),
        SqlStatement::Savepoint { name } => {
            Ok(Statement::Savepoint(SavepointOp::Set(normalize(&name))))
        }
        SqlStatement::ReleaseSavepoint { name } => {
            Ok(Statement::Savepoint(SavepointOp::Release(normalize(&name))))
        }
        SqlStatement::Close { cursor } => Ok(Statement::Close(match cursor {
            ast::CloseCursor::All => None,
            ast::CloseCursor::Specific { name } => Some(normalize(&name)),
        })),
        SqlStatement::CreateRole(create) => create_user(create),
        SqlStatement::AlterRole { name, operation } => alter_user(&name, operation),
        SqlStatement::Drop {
            object_type: ObjectType::Role | ObjectType::User,
            if_exists,
            names,
            cascade: false,
            ..
        } => Ok(Statement::User(UserStatement::Drop {
            names: names.iter().map(role_name).collect::<Result<Vec<_>>>()?,
            if_exists,
        })),
        other => Err(Error::Unsupported(format!("\"{other}\" is not supported"))),
    }
}

fn set_statement(set: Set) -> Result<Statement> {
    match set {
        Set::SingleAssignment {
            scope,
            hivevar: false,
            variable,
            values,
        } if scope != Some(ContextModifier::Global) => Ok(Statement::Set {
            name: setting_name(&variable),
            value: setting_value(&values)?,
        }),
        Set::SetTimeZone { value, .. } => Ok(Statement::Set {
            name: "timezone".into(),
            // `SET TIME ZONE LOCAL` is `SET TIME ZONE DEFAULT`.
            value: match &value {
                Expr::Identifier(Ident {
                    value,
                    quote_style: None,
                    ..
                }) if value.eq_ignore_ascii_case("local") => None,
                _ => setting_value(std::slice::from_ref(&value))?,
            },
        }),
        Set::SetNames {
            charset_name,
            collation_name: None,
        } => Ok(Statement::Set {
            name: "client_encoding".into(),
            value: Some(charset_name.value),
        }),
        Set::SetTransaction {
            modes,
            snapshot: None,
            session,
        } => Ok(Statement::SetTransaction {
            modes: transaction_modes(&modes)?,
            session,
        }),
        Set::SetTransaction {
            modes,
            snapshot: Some(snapshot),
            session: false,
        } if modes.is_empty() => match snapshot.value {
            ast::Value::SingleQuotedString(id) => Ok(Statement::ImportSnapshot(id)),
            other => Err(Error::Syntax(format!(
                "SET TRANSACTION SNAPSHOT takes a quoted snapshot identifier, not {other}"
            ))),
        },
        Set::SetRole { role_name, .. } => Ok(Statement::Set {
            name: "role".into(),
            value: Some(role_name.as_ref().map_or("none".into(), normalize)),
        }),
        Set::SetSessionAuthorization(param) => Ok(Statement::Set {
            name: "session_authorization".into(),
            value: match param.kind {
                ast::SetSessionAuthorizationParamKind::Default => None,
                ast::SetSessionAuthorizationParamKind::User(user) => Some(normalize(&user)),
            },
        }),
        other => Err(Error::Syntax(format!(
            "syntax error in \"{other}\": PostgreSQL's SET takes one setting"
        ))),
    }
}

/// A setting's name as PostgreSQL keeps it: case-insensitive, dotted for custom ones.
fn setting_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|part| match part.as_ident() {
            Some(ident) => ident.value.to_lowercase(),
            None => part.to_string().to_lowercase(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A setting's value as PostgreSQL reads it: words fold to lower case unless quoted,
/// strings and numbers are kept as written, a list is joined with `, `, and `DEFAULT`
/// (`None`) resets.
fn setting_value(values: &[Expr]) -> Result<Option<String>> {
    if let [
        Expr::Identifier(Ident {
            value,
            quote_style: None,
            ..
        }),
    ] = values
        && value.eq_ignore_ascii_case("default")
    {
        return Ok(None);
    }
    let one = |value: &Expr| -> Result<String> {
        Ok(match value {
            Expr::Identifier(ident) => normalize(ident),
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s)
                | Value::EscapedStringLiteral(s)
                | Value::NationalStringLiteral(s) => s.clone(),
                Value::DollarQuotedString(s) => s.value.clone(),
                Value::Number(n, _) => n.to_string(),
                Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(Error::Syntax(format!(
                        "syntax error at or near \"{other}\": a setting takes a word, a \
                         string or a number"
                    )));
                }
            },
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } if matches!(expr.as_ref(), Expr::Value(v) if matches!(v.value, Value::Number(..))) => {
                format!("-{expr}")
            }
            other => {
                return Err(Error::Syntax(format!(
                    "syntax error at or near \"{other}\": a setting takes a word, a string \
                     or a number"
                )));
            }
        })
    };
    let values = values.iter().map(one).collect::<Result<Vec<_>>>()?;
    Ok(Some(values.join(", ")))
}

fn transaction_modes(modes: &[TransactionMode]) -> Result<TransactionModes> {
    let mut taken = TransactionModes::default();
    for mode in modes {
        match mode {
            TransactionMode::IsolationLevel(level) => {
                taken.isolation = Some(match level {
                    TransactionIsolationLevel::ReadUncommitted => Isolation::ReadUncommitted,
                    TransactionIsolationLevel::ReadCommitted => Isolation::ReadCommitted,
                    TransactionIsolationLevel::RepeatableRead => Isolation::RepeatableRead,
                    TransactionIsolationLevel::Serializable => Isolation::Serializable,
                    TransactionIsolationLevel::Snapshot => {
                        return Err(Error::Syntax(
                            "syntax error at or near \"SNAPSHOT\": PostgreSQL's isolation \
                             levels are READ UNCOMMITTED, READ COMMITTED, REPEATABLE READ \
                             and SERIALIZABLE"
                                .into(),
                        ));
                    }
                });
            }
            TransactionMode::AccessMode(mode) => {
                taken.read_only = Some(*mode == TransactionAccessMode::ReadOnly);
            }
        }
    }
    Ok(taken)
}

fn role_name(name: &ObjectName) -> Result<String> {
    match name.0.as_slice() {
        [part] => part
            .as_ident()
            .map(normalize)
            .ok_or_else(|| Error::Syntax(format!("\"{name}\" is not a role name"))),
        _ => Err(Error::Syntax(format!("\"{name}\" is not a role name"))),
    }
}

/// `CREATE USER | ROLE name [WITH] options`: Runnel's users have a password and may be
/// superusers; every one may log in.
fn create_user(create: ast::CreateRole) -> Result<Statement> {
    let ast::CreateRole {
        names,
        if_not_exists,
        login: _,
        password,
        superuser,
        inherit,
        bypassrls,
        create_db,
        create_role,
        replication,
        connection_limit,
        valid_until,
        in_role,
        in_group,
        role,
        user,
        admin,
        authorization_owner,
    } = create;
    let refused = [
        (inherit.is_some(), "INHERIT"),
        (bypassrls.is_some(), "BYPASSRLS"),
        (create_db.is_some(), "CREATEDB"),
        (create_role.is_some(), "CREATEROLE"),
        (replication.is_some(), "REPLICATION"),
        (connection_limit.is_some(), "CONNECTION LIMIT"),
        (valid_until.is_some(), "VALID UNTIL"),
        (
            !(in_role.is_empty() && in_group.is_empty()),
            "IN ROLE (use GRANT role TO user)",
        ),
        (
            !(role.is_empty() && user.is_empty() && admin.is_empty()),
            "ROLE (use GRANT role TO user)",
        ),
        (authorization_owner.is_some(), "AUTHORIZATION"),
    ];
    if let Some((_, option)) = refused.iter().find(|(given, _)| *given) {
        return Err(user_option_unsupported(option));
    }
    let [name] = names.as_slice() else {
        return Err(Error::Syntax("CREATE USER makes one user at a time".into()));
    };
    Ok(Statement::User(UserStatement::Create {
        name: role_name(name)?,
        if_not_exists,
        options: UserOptions {
            password: password.map(password_text).transpose()?,
            superuser,
        },
    }))
}

/// `ALTER USER | ROLE name [WITH] options`.
fn alter_user(name: &Ident, operation: AlterRoleOperation) -> Result<Statement> {
    let AlterRoleOperation::WithOptions { options } = operation else {
        return Err(Error::Unsupported(format!(
            "ALTER USER … {operation} is not supported: a user's password and SUPERUSER can \
             be changed"
        )));
    };
    let mut taken = UserOptions::default();
    for option in options {
        match option {
            RoleOption::Password(password) => taken.password = Some(password_text(password)?),
            RoleOption::SuperUser(superuser) => taken.superuser = Some(superuser),
            // Every user may log in; roles without login are not a Runnel concept.
            RoleOption::Login(_) => {}
            other => return Err(user_option_unsupported(&other.to_string())),
        }
    }
    Ok(Statement::User(UserStatement::Alter {
        name: normalize(name),
        options: taken,
    }))
}

fn password_text(password: Password) -> Result<Option<String>> {
    match password {
        Password::NullPassword => Ok(None),
        Password::Password(Expr::Value(v)) => match v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Ok(Some(s)),
            other => Err(Error::Syntax(format!(
                "syntax error at or near \"{other}\": a password goes in single quotes"
            ))),
        },
        Password::Password(other) => Err(Error::Syntax(format!(
            "syntax error at or near \"{other}\": a password goes in single quotes"
        ))),
    }
}

fn user_option_unsupported(option: &str) -> Error {
    Error::Unsupported(format!(
        "the user option {option} is not supported: Runnel's users have a password and may \
         be superusers"
    ))
}
