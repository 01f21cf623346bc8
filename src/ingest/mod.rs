//! The write path from rows to records: keys and partitions ([`key`]), the records a
//! stream's rows become ([`records`]), `COPY … FROM STDIN` input decoding ([`copy`]), literal
//! `INSERT … VALUES` rows ([`values`]), and the append itself ([`writer`]), which checks a
//! table's primary key under its write lock ([`table`]).

pub mod binary;
pub mod copy;
pub mod formats;
pub mod key;
pub mod records;
pub mod table;
pub mod values;
pub mod writer;

pub use records::WriteTarget;
