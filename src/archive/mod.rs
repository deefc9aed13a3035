//! Cold storage: remove aged rows from the hot tables only when a delivered copy is proven to
//! exist, leave a tombstone per removed row, and recall archived rows later with evidence that
//! they are unchanged. The full story is in docs/COLD_STORAGE.md.
//!
//! - [`hash`]: the canonical row encoding (the JSONL line) and `row_sha256`, from a hot row
//!   (binary COPY → Arrow → JSONL) or from an archived object (Parquet → Arrow → JSONL, or the
//!   stored JSONL line).
//! - [`proof`]: which delivery proves a row (the proof rule) and why a row is blocked.
//! - [`tombstone`]: the pass: candidates → proof → hash → one transaction per batch that deletes
//!   exactly the proven versions and writes their tombstones.
//! - [`recall`]: tombstones → objects → rows → re-hash → verify, and `--restore`.
//! - [`report`]: the per-run evidence for auditors.
//! - [`overrides`]: the recorded operator override ("no destination configured").
//!
//! Invariants:
//! - A row leaves a hot table only in the transaction that writes its tombstone, and only if
//!   its `updated_at` is still the one that was proven (`DELETE … WHERE t.updated_at = proven`).
//! - Tombstones are never deleted; a restore stamps `restored_at`.
//! - Archival deletes run with `SET LOCAL tidemark.archival = 'on'` ([`ARCHIVAL_SETTING`]), so
//!   a delete-capture trigger can tell them from business deletes.
//!
//! Must not touch: the outbox's state (deliveries are only read), the objects (only read).

pub mod hash;
pub mod overrides;
pub mod proof;
pub mod recall;
pub mod report;
pub mod tombstone;

use crate::error::{Error, Result};

/// The session setting archival transactions set (`'on'` while tombstoning, `'restore'` while
/// `archive recall --restore` puts rows back). A delete-capture trigger honours it with
/// `IF current_setting('tidemark.archival', true) = 'on' THEN RETURN OLD; END IF;`.
pub const ARCHIVAL_SETTING: &str = "tidemark.archival";

/// Crash and pause injection for tests, read from `TIDEMARK_FAILPOINT` (same convention as the
/// worker's `abort-after-deliver`):
/// - `abort-before-archive-commit[:N]`: in the N-th (default first) batch transaction, after
///   the DELETE and the tombstone INSERT ran and before COMMIT, abort the process (no
///   unwinding, like `kill -9`).
///
/// Do not set it in production.
pub(crate) fn failpoint_before_archive_commit() {
    static BATCHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let Ok(spec) = std::env::var("TIDEMARK_FAILPOINT") else {
        return;
    };
    let Some(rest) = spec.strip_prefix("abort-before-archive-commit") else {
        return;
    };
    let nth: usize = rest.strip_prefix(':').and_then(|n| n.parse().ok()).unwrap_or(1);
    if BATCHES.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 >= nth {
        eprintln!("failpoint abort-before-archive-commit: aborting the process");
        std::process::abort();
    }
}

/// Tombstoning and restoring write the hot tables and the control plane in one transaction, so
/// both must be the same database. `source_url` is the explicit `--source-url`, if any.
pub fn require_same_database(database_url: &str, source_url: Option<&str>, what: &str) -> Result<()> {
    match source_url {
        Some(s) if s != database_url => Err(Error::config(format!(
            "{what} needs the source and the control plane in the same database (tombstones and deletes commit in \
             one transaction), but --source-url/TIDEMARK_SOURCE_URL differs from --database-url/TIDEMARK_DATABASE_URL; \
             unset TIDEMARK_SOURCE_URL or point both at the same database"
        ))),
        _ => Ok(()),
    }
}

/// `hostname:pid`, recorded on runs and overrides.
pub fn process_label() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}
