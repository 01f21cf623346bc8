//! The write path from rows to records: keys and partitions ([`key`]), the records a
//! stream's rows become ([`records`]), and `COPY … FROM STDIN` input decoding ([`copy`]).

pub mod copy;
pub mod key;
pub mod records;
pub mod writer;

pub use records::WriteTarget;
