//! The reference application: the hot tables of a security platform (`schema.sql`) and a
//! deterministic, seeded synthetic data generator (`generate.sql`), used by `demo`, the tests
//! and the benchmarks. Production sources bring their own tables; these mirror their shape.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;

pub const SCHEMA_SQL: &str = include_str!("schema.sql");
pub const GENERATE_SQL: &str = include_str!("generate.sql");

/// Creates the reference tables and the generator function in an empty database.
pub async fn install(pool: &PgPool) -> Result<()> {
    sqlx::raw_sql(SCHEMA_SQL).execute(pool).await?;
    sqlx::raw_sql(GENERATE_SQL).execute(pool).await?;
    Ok(())
}

/// Shape of a generated data set. The same value always yields byte-identical rows.
#[derive(Debug, Clone)]
pub struct GenerateSpec {
    pub seed: i32,
    pub organizations: i32,
    /// Rows of `events`; the other tables get proportional counts.
    pub rows: i64,
    pub days: i32,
    /// Rows are spread over `[end - days, end)`.
    pub end: DateTime<Utc>,
    /// Write `organizations` and `events` only (the same events rows as a full run); for
    /// benchmarks at sizes where the other tables would only take disk.
    pub only_events: bool,
}

pub async fn generate(pool: &PgPool, spec: &GenerateSpec) -> Result<()> {
    sqlx::query("SELECT tidemark_ref_generate($1, $2, $3, $4, $5, $6)")
        .bind(spec.seed)
        .bind(spec.organizations)
        .bind(spec.rows)
        .bind(spec.days)
        .bind(spec.end)
        .bind(spec.only_events)
        .execute(pool)
        .await?;
    Ok(())
}

/// Organizations of the reference schema, in id order: `(id, name)`.
pub async fn organizations(pool: &PgPool) -> Result<Vec<(Uuid, String)>> {
    Ok(sqlx::query_as("SELECT id, name FROM organizations ORDER BY id")
        .fetch_all(pool)
        .await?)
}
