//! tidemark: batch export of a security platform's hot Postgres tables to the warehouses and
//! object stores its customers own, exactly once per window, and cold-storage retention.
//!
//! One delivery, end to end: `plan` cuts closed windows → `control::outbox` leases one →
//! `extract` streams it by binary COPY into Arrow → `encode` writes Parquet or JSONL →
//! `deliver` lands it at the destination → the outbox completes it, fenced by the lease.

pub mod archive;
pub mod capture;
pub mod cli;
pub mod control;
pub mod deliver;
pub mod encode;
pub mod ephemeral;
pub mod error;
pub mod extract;
pub mod plan;
#[cfg(feature = "query")]
pub mod query;
pub mod reference;
pub mod schema;
pub mod secret;
pub mod source;
pub mod status;
pub mod worker;

pub use error::{Error, ErrorKind, Result};
