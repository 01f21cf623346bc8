//! Runnel: a SQL-first streaming database.
pub mod auth;
pub mod catalog;
pub mod config;
pub mod db;
pub mod engine;
pub mod error;
pub mod groups;
pub mod ingest;
pub mod pgwire;
pub mod server;
pub mod sql;
pub mod storage;
pub mod tls;

/// The PostgreSQL version Runnel reports to clients (they adapt their SQL to it).
pub const SERVER_VERSION: &str = "16.0";
