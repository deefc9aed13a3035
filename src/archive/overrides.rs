//! `cold_storage_overrides`: the recorded operator decision that an organization's aged rows
//! may be archived without a delivered copy (typically: it has no destination configured).
//! Who, when, why; honoured only for its organization; at most one active per organization;
//! never deleted (revoking stamps `revoked_at` and `revoked_by`). Every tombstone written under
//! an override carries its id and reason.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Override {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub reason: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
}

const COLUMNS: &str = "id, organization_id, reason, created_by, created_at, revoked_at, revoked_by";

pub async fn add(pool: &PgPool, organization_id: Uuid, reason: &str, created_by: &str) -> Result<Override> {
    if reason.trim().is_empty() {
        return Err(Error::invalid(
            "--reason must say why (it is recorded on every tombstone)",
        ));
    }
    if created_by.trim().is_empty() {
        return Err(Error::invalid("--by must name who decided"));
    }
    sqlx::query_as::<_, Override>(&format!(
        "INSERT INTO cold_storage_overrides (id, organization_id, reason, created_by) VALUES ($1, $2, $3, $4) \
         RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(organization_id)
    .bind(reason.trim())
    .bind(created_by.trim())
    .fetch_one(pool)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => Error::invalid(format!(
            "organization {organization_id} already has an active override; revoke it first"
        )),
        _ => Error::postgres("cannot record the override", e),
    })
}

/// Revokes the organization's active override; returns it.
pub async fn revoke(pool: &PgPool, organization_id: Uuid, revoked_by: &str) -> Result<Override> {
    if revoked_by.trim().is_empty() {
        return Err(Error::invalid("--by must name who revoked it"));
    }
    sqlx::query_as::<_, Override>(&format!(
        "UPDATE cold_storage_overrides SET revoked_at = now(), revoked_by = $2 \
         WHERE organization_id = $1 AND revoked_at IS NULL RETURNING {COLUMNS}"
    ))
    .bind(organization_id)
    .bind(revoked_by.trim())
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::invalid(format!("organization {organization_id} has no active override")))
}

/// Every override (active and revoked), newest first.
pub async fn list(pool: &PgPool, organization_id: Option<Uuid>) -> Result<Vec<Override>> {
    Ok(sqlx::query_as::<_, Override>(&format!(
        "SELECT {COLUMNS} FROM cold_storage_overrides WHERE $1::uuid IS NULL OR organization_id = $1 \
         ORDER BY created_at DESC, id"
    ))
    .bind(organization_id)
    .fetch_all(pool)
    .await?)
}
