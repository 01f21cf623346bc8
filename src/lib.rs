//! Runnel: a SQL-first streaming database.
pub mod catalog;
pub mod error;
pub mod ingest;
pub mod storage;
