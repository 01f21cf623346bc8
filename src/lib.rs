//! Runnel: a SQL-first streaming database.
pub mod storage;
