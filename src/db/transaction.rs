//! A session's transaction block: where it is, its characteristics and its savepoints.
//!
//! Statements take effect as they run (there is nothing to roll back but cursors), so a
//! block is what clients see of PostgreSQL's: it bounds cursors, `COMMIT` commits what
//! subscription cursors fetched, a failure refuses the rest until `ROLLBACK`, savepoints
//! are named and checked, and `READ ONLY` refuses writes. Its isolation level is shown
//! back as asked; each statement reads its own snapshot whichever it is (docs/sql.md).

use super::session::Session;
use super::{Output, command};
use crate::error::{Error, Result};
use crate::sql::Statement;
use crate::sql::parser::{Isolation, SavepointOp, TransactionModes};

/// Where the session is in a transaction block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transaction {
    Idle,
    /// After `BEGIN`, or a `DECLARE` outside a block (which opens one).
    Open,
    /// A statement in the block failed: the rest is refused until `COMMIT` or `ROLLBACK`,
    /// which both roll back.
    Failed,
}

/// The open block's characteristics and savepoints.
#[derive(Debug, Clone, Default)]
pub struct Block {
    pub isolation: Option<Isolation>,
    pub read_only: Option<bool>,
    /// Savepoints, oldest first (a name may repeat; the newest wins, as in PostgreSQL).
    savepoints: Vec<String>,
}

pub(super) const DEFAULT_ISOLATION: &str = "default_transaction_isolation";
pub(super) const DEFAULT_READ_ONLY: &str = "default_transaction_read_only";

/// A boolean setting's value as PostgreSQL reads one (`on`, `true`, `yes`, `1`, …).
pub(super) fn setting_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" | "t" | "y" => Some(true),
        "off" | "false" | "no" | "0" | "f" | "n" => Some(false),
        _ => None,
    }
}

impl Session {
    /// Whether statements now run in a read-only transaction: the block's, or outside one
    /// the session's default (`SET default_transaction_read_only = on`, pgjdbc's
    /// `setReadOnly`).
    pub(super) fn read_only(&self) -> bool {
        match self.transaction {
            Transaction::Idle => self.default_read_only(),
            _ => self
                .block
                .read_only
                .unwrap_or_else(|| self.default_read_only()),
        }
    }

    fn default_read_only(&self) -> bool {
        self.vars
            .get(DEFAULT_READ_ONLY)
            .and_then(|v| setting_bool(v))
            .unwrap_or(false)
    }

    /// The isolation level a block runs at now, as `SHOW transaction_isolation` names it.
    pub(super) fn isolation(&self) -> &'static str {
        self.isolation_level().name()
    }

    fn isolation_level(&self) -> Isolation {
        let default = || {
            self.vars
                .get(DEFAULT_ISOLATION)
                .and_then(|v| Isolation::named(v))
                .unwrap_or(Isolation::ReadCommitted)
        };
        match self.transaction {
            Transaction::Idle => default(),
            _ => self.block.isolation.unwrap_or_else(default),
        }
    }

    /// The settings the block's characteristics are: `transaction_isolation` and
    /// `transaction_read_only`, as they are now.
    pub(super) fn transaction_settings(&self) -> [(&'static str, &'static str); 2] {
        let read_only = if self.read_only() { "on" } else { "off" };
        [
            ("transaction_isolation", self.isolation()),
            ("transaction_read_only", read_only),
        ]
    }

    /// 25006 for a statement that writes, in a read-only transaction.
    pub(super) fn check_writable(&self, statement: &Statement) -> Result<()> {
        if !self.read_only() {
            return Ok(());
        }
        match statement.writes() {
            Some(command) => Err(Error::plan(
                "25006",
                format!("cannot execute {command} in a read-only transaction"),
            )),
            None => Ok(()),
        }
    }

    pub(super) fn begin(&mut self, modes: TransactionModes) -> Result<Output> {
        if self.transaction == Transaction::Idle {
            self.transaction = Transaction::Open;
            self.block = Block {
                isolation: modes.isolation,
                read_only: modes.read_only,
                savepoints: vec![],
            };
            self.publish_settings();
        } else {
            // PostgreSQL warns, and applies the modes to the block it is in.
            self.notices
                .push("there is already a transaction in progress".into());
            self.apply(modes);
        }
        Ok(Output::Begin)
    }

    /// `COMMIT [AND CHAIN]`: commits what subscription cursors fetched and ends the block;
    /// `chain` opens the next with the same characteristics.
    pub(super) async fn commit(&mut self, chain: bool) -> Result<Output> {
        let output = match self.transaction {
            Transaction::Idle => {
                if chain {
                    return Err(outside_block("COMMIT AND CHAIN"));
                }
                self.notices
                    .push("there is no transaction in progress".into());
                return Ok(Output::Commit);
            }
            Transaction::Failed => Ok(Output::Rollback),
            Transaction::Open => {
                let positions: Vec<_> = self
                    .cursors
                    .values()
                    .filter_map(|c| c.group_position())
                    .map(|(group, offsets)| (group.to_string(), offsets))
                    .collect();
                let mut result = Ok(Output::Commit);
                for (group, offsets) in positions {
                    if let Err(e) = self.db.tables.groups.commit(&group, offsets).await {
                        result = Err(e);
                        break;
                    }
                }
                result
            }
        };
        self.end_transaction(chain);
        output
    }

    /// `ROLLBACK [AND CHAIN]`.
    pub(super) fn rollback(&mut self, chain: bool) -> Result<Output> {
        if self.transaction == Transaction::Idle {
            if chain {
                return Err(outside_block("ROLLBACK AND CHAIN"));
            }
            self.notices
                .push("there is no transaction in progress".into());
            return Ok(Output::Rollback);
        }
        self.end_transaction(chain);
        Ok(Output::Rollback)
    }

    /// Closes every cursor and leaves the block; `chain` opens the next one at once, with
    /// the same characteristics.
    pub(super) fn end_transaction(&mut self, chain: bool) {
        self.cursors.clear();
        if chain {
            self.transaction = Transaction::Open;
            self.block.savepoints.clear();
        } else {
            self.transaction = Transaction::Idle;
            self.block = Block::default();
        }
        self.publish_settings();
    }

    pub(super) fn savepoint(&mut self, op: SavepointOp) -> Result<Output> {
        if self.transaction == Transaction::Idle {
            let statement = match op {
                SavepointOp::Set(_) => "SAVEPOINT",
                SavepointOp::Release(_) => "RELEASE SAVEPOINT",
                SavepointOp::RollbackTo(_) => "ROLLBACK TO SAVEPOINT",
            };
            return Err(outside_block(statement));
        }
        let savepoints = &mut self.block.savepoints;
        let position = |savepoints: &[String], name: &str| {
            savepoints
                .iter()
                .rposition(|s| s == name)
                .ok_or_else(|| Error::plan("3B001", format!("savepoint \"{name}\" does not exist")))
        };
        // Statements take effect as they run, so a savepoint has nothing to keep; rolling
        // back to one ends a failure, as in PostgreSQL.
        Ok(command(match op {
            SavepointOp::Set(name) => {
                savepoints.push(name);
                "SAVEPOINT"
            }
            SavepointOp::Release(name) => {
                let at = position(savepoints, &name)?;
                savepoints.truncate(at);
                "RELEASE"
            }
            SavepointOp::RollbackTo(name) => {
                let at = position(savepoints, &name)?;
                savepoints.truncate(at + 1);
                self.transaction = Transaction::Open;
                "ROLLBACK"
            }
        }))
    }

    /// `SET TRANSACTION modes` (for the open block) or `SET SESSION CHARACTERISTICS AS
    /// TRANSACTION modes` (the defaults of the blocks to come).
    pub(super) fn set_transaction(
        &mut self,
        modes: TransactionModes,
        session: bool,
    ) -> Result<Output> {
        if session {
            if let Some(isolation) = modes.isolation {
                self.vars
                    .insert(DEFAULT_ISOLATION.into(), isolation.name().into());
            }
            if let Some(read_only) = modes.read_only {
                self.vars.insert(
                    DEFAULT_READ_ONLY.into(),
                    if read_only { "on" } else { "off" }.into(),
                );
            }
        } else if self.transaction == Transaction::Idle {
            // PostgreSQL warns and changes nothing.
            self.notices
                .push("SET TRANSACTION can only be used in transaction blocks".into());
        } else {
            self.apply(modes);
        }
        self.publish_settings();
        Ok(command("SET"))
    }

    /// `SET TRANSACTION SNAPSHOT 'id'`, of an identifier `pg_export_snapshot()` gave, in a
    /// `REPEATABLE READ` or `SERIALIZABLE` block, as PostgreSQL asks. Statements read their
    /// own snapshots all the same (as they do at those levels): what pg_dump's parallel
    /// workers read is as consistent as one pg_dump's, which `docs/sql.md` says is not.
    pub(super) fn import_snapshot(&mut self, id: &str) -> Result<Output> {
        if self.transaction == Transaction::Idle {
            // PostgreSQL warns, then imports into the statement's own transaction.
            self.notices
                .push("SET TRANSACTION can only be used in transaction blocks".into());
        }
        if !matches!(
            self.isolation_level(),
            Isolation::RepeatableRead | Isolation::Serializable
        ) {
            return Err(Error::Unsupported(
                "a snapshot-importing transaction must have isolation level SERIALIZABLE or \
                 REPEATABLE READ"
                    .into(),
            ));
        }
        if !crate::tables::pg::snapshot_exported(id) {
            return Err(Error::data(
                "22023",
                format!("invalid snapshot identifier: \"{id}\""),
            ));
        }
        Ok(command("SET"))
    }

    fn apply(&mut self, modes: TransactionModes) {
        self.block.isolation = modes.isolation.or(self.block.isolation);
        self.block.read_only = modes.read_only.or(self.block.read_only);
    }
}

fn outside_block(statement: &str) -> Error {
    Error::plan(
        "25P01",
        format!("{statement} can only be used in transaction blocks"),
    )
}
