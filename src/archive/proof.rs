//! The proof rule: which delivery proves that a row's current version has a delivered copy,
//! and, when none does, why the row is blocked.
//!
//! A row of organization O and table T with `updated_at = U` is proven by a delivery `d` when
//! `d.status = 'delivered'`, `d."table" = T`, `d.watermark_start <= U < d.watermark_end`, and
//! d's destination belongs to O and is `active`. Deliveries are windows or backfill chunks of
//! whole windows; the deliveries of one destination × table × schema version never overlap, so
//! each destination has at most one candidate per row and version (a destination in a
//! dual-write window has one per version). Among several proving deliveries, an object-store
//! delivery (receipt with an `object_key`, kind `PARQUET_S3` or `JSONL_S3`) is preferred, because
//! only those can be recalled; then Parquet before JSONL, then the lower schema version (v1 rows
//! can be restored into the source; a major with derived columns cannot), then the smaller
//! destination id.
//! Without a proof, an active override of O proves the row instead.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::control::destinations::DestinationKind;
use crate::error::Result;
use crate::schema::Table;

/// Why a candidate row may not leave the hot table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Blocked {
    /// The organization has no destination for this table, and no override.
    NoDestination,
    /// Its destinations for this table are all paused or in error.
    NoActiveDestination,
    /// No delivery of an active destination covers the row's `updated_at` (not planned yet, or
    /// before the destination's `start_from`: backfill the range).
    NotPlanned,
    /// A delivery covers it but is pending, leased or failed (retrying).
    NotDelivered,
    /// The covering delivery is dead-lettered (`tidemark retry`).
    DeadLetter,
}

impl Blocked {
    pub fn as_str(self) -> &'static str {
        match self {
            Blocked::NoDestination => "no_destination",
            Blocked::NoActiveDestination => "no_active_destination",
            Blocked::NotPlanned => "not_planned",
            Blocked::NotDelivered => "not_delivered",
            Blocked::DeadLetter => "dead_letter",
        }
    }

    /// One line for operators: what it means and what to do.
    pub fn explain(self) -> &'static str {
        match self {
            Blocked::NoDestination => {
                "no destination of the organization exports this table (add one, or record an override)"
            }
            Blocked::NoActiveDestination => {
                "every destination of the organization for this table is paused or in error"
            }
            Blocked::NotPlanned => "no delivery covers the row yet (wait for `tidemark run`, or backfill the range)",
            Blocked::NotDelivered => "the covering delivery is pending, leased or failed (not delivered yet)",
            Blocked::DeadLetter => {
                "the covering delivery is dead-lettered (see `tidemark status`, then `tidemark retry`)"
            }
        }
    }
}

/// What allows a row to leave the hot table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    Delivery {
        delivery_id: Uuid,
        destination_id: Uuid,
        schema_version: i32,
    },
    Override {
        override_id: Uuid,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Proven(Proof),
    Blocked(Blocked),
}

/// A destination of the organization, as far as the rule cares.
#[derive(Debug, Clone)]
pub struct DestinationInfo {
    pub id: Uuid,
    pub kind: DestinationKind,
    pub active: bool,
    /// The table is among its `enabled_tables`.
    pub exports_table: bool,
}

/// An active override of an organization.
#[derive(Debug, Clone)]
pub struct ActiveOverride {
    pub id: Uuid,
    pub reason: String,
}

/// Everything the rule needs about one organization × table, except the deliveries.
#[derive(Debug, Clone)]
pub struct Scope {
    pub organization_id: Uuid,
    pub table: Table,
    pub retention_days: i32,
    /// Rows with `updated_at < cutoff` are candidates.
    pub cutoff: DateTime<Utc>,
    pub destinations: Vec<DestinationInfo>,
    pub active_override: Option<ActiveOverride>,
}

impl Scope {
    pub async fn load(
        pool: &PgPool,
        organization_id: Uuid,
        table: Table,
        retention_days: i32,
        source_now: DateTime<Utc>,
    ) -> Result<Scope> {
        let rows = sqlx::query(
            "SELECT id, kind::text AS kind, status::text = 'active' AS active, \
               $2::warehouse_table = ANY(enabled_tables) AS exports_table \
             FROM warehouse_destinations WHERE organization_id = $1 ORDER BY id",
        )
        .bind(organization_id)
        .bind(table.db_label())
        .fetch_all(pool)
        .await?;
        let destinations = rows
            .iter()
            .map(|r| {
                Ok(DestinationInfo {
                    id: r.try_get("id")?,
                    kind: r.try_get::<String, _>("kind")?.parse()?,
                    active: r.try_get("active")?,
                    exports_table: r.try_get("exports_table")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let active_override = sqlx::query_as::<_, (Uuid, String)>(
            "SELECT id, reason FROM cold_storage_overrides WHERE organization_id = $1 AND revoked_at IS NULL",
        )
        .bind(organization_id)
        .fetch_optional(pool)
        .await?
        .map(|(id, reason)| ActiveOverride { id, reason });
        Ok(Scope {
            organization_id,
            table,
            retention_days,
            // Exact days of 86,400 s: no time zone (and no DST shift) is involved.
            cutoff: source_now - Duration::days(retention_days as i64),
            destinations,
            active_override,
        })
    }

    /// Whether any row of this scope can be proven at all (saves reading rows that cannot be).
    pub fn anything_provable(&self) -> bool {
        self.active_override.is_some() || self.destinations.iter().any(|d| d.active)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Delivered,
    DeadLetter,
    Open,
}

#[derive(Debug, Clone)]
struct Span {
    id: Uuid,
    start: i64,
    end: i64,
    status: Status,
    schema_version: i32,
    has_object: bool,
}

/// The deliveries of a scope's destinations over a range of `updated_at`, ready to classify rows.
#[derive(Debug, Clone)]
pub struct Coverage {
    /// Per destination (in `Scope::destinations` order): its deliveries sorted by schema
    /// version, then start.
    spans: Vec<Vec<Span>>,
}

impl Coverage {
    /// No deliveries at all (for scopes where nothing but an override could prove a row).
    pub fn none(scope: &Scope) -> Coverage {
        Coverage {
            spans: vec![Vec::new(); scope.destinations.len()],
        }
    }

    /// Loads the deliveries of the scope's destinations for its table that intersect
    /// `[first, last]` (row `updated_at` values).
    pub async fn load(pool: &PgPool, scope: &Scope, first: DateTime<Utc>, last: DateTime<Utc>) -> Result<Coverage> {
        let ids: Vec<Uuid> = scope.destinations.iter().map(|d| d.id).collect();
        let rows = sqlx::query(
            "SELECT d.id, d.destination_id, d.status::text AS status, d.watermark_start, d.watermark_end, \
               d.schema_version, coalesce(d.receipt ? 'object_key', false) AS has_object \
             FROM warehouse_deliveries d \
             WHERE d.destination_id = ANY($1) AND d.\"table\" = $2::warehouse_table \
               AND d.watermark_start > $3 - interval '1 day' AND d.watermark_start <= $4 AND d.watermark_end > $3 \
             ORDER BY d.destination_id, d.schema_version, d.watermark_start",
        )
        .bind(&ids)
        .bind(scope.table.db_label())
        .bind(first)
        .bind(last)
        .fetch_all(pool)
        .await?;
        let index: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut spans: Vec<Vec<Span>> = vec![Vec::new(); ids.len()];
        for r in rows {
            let destination: Uuid = r.try_get("destination_id")?;
            let status: String = r.try_get("status")?;
            let start: DateTime<Utc> = r.try_get("watermark_start")?;
            let end: DateTime<Utc> = r.try_get("watermark_end")?;
            if let Some(&i) = index.get(&destination) {
                spans[i].push(Span {
                    id: r.try_get("id")?,
                    start: start.timestamp_micros(),
                    end: end.timestamp_micros(),
                    status: match status.as_str() {
                        "delivered" => Status::Delivered,
                        "dead_letter" => Status::DeadLetter,
                        _ => Status::Open,
                    },
                    schema_version: r.try_get("schema_version")?,
                    has_object: r.try_get("has_object")?,
                });
            }
        }
        Ok(Coverage { spans })
    }

    /// Applies the proof rule to one row (`updated_at` in µs since the Unix epoch).
    pub fn classify(&self, scope: &Scope, updated_at: i64) -> Verdict {
        let mut best: Option<((u8, u8, i32, Uuid), Proof)> = None;
        let (mut dead, mut open) = (false, false);
        let lanes = scope.destinations.iter().zip(&self.spans).flat_map(|(dest, spans)| {
            spans
                .chunk_by(|a, b| a.schema_version == b.schema_version)
                .map(move |lane| (dest, lane))
        });
        for (dest, spans) in lanes {
            if !dest.active {
                continue;
            }
            let i = spans.partition_point(|s| s.start <= updated_at);
            let Some(span) = i.checked_sub(1).map(|i| &spans[i]) else {
                continue;
            };
            if span.end <= updated_at {
                continue;
            }
            match span.status {
                Status::Delivered => {
                    let object =
                        span.has_object && matches!(dest.kind, DestinationKind::ParquetS3 | DestinationKind::JsonlS3);
                    let rank = (
                        u8::from(!object),
                        u8::from(dest.kind != DestinationKind::ParquetS3),
                        span.schema_version,
                        dest.id,
                    );
                    if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                        best = Some((
                            rank,
                            Proof::Delivery {
                                delivery_id: span.id,
                                destination_id: dest.id,
                                schema_version: span.schema_version,
                            },
                        ));
                    }
                }
                Status::DeadLetter => dead = true,
                Status::Open => open = true,
            }
        }
        if let Some((_, proof)) = best {
            return Verdict::Proven(proof);
        }
        if let Some(o) = &scope.active_override {
            return Verdict::Proven(Proof::Override {
                override_id: o.id,
                reason: o.reason.clone(),
            });
        }
        let blocked = if !scope.destinations.iter().any(|d| d.active && d.exports_table) {
            if scope.destinations.iter().any(|d| d.exports_table) {
                Blocked::NoActiveDestination
            } else {
                Blocked::NoDestination
            }
        } else if dead {
            Blocked::DeadLetter
        } else if open {
            Blocked::NotDelivered
        } else {
            Blocked::NotPlanned
        };
        Verdict::Blocked(blocked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(dests: Vec<DestinationInfo>, ovr: bool) -> Scope {
        Scope {
            organization_id: Uuid::nil(),
            table: Table::Events,
            retention_days: 30,
            cutoff: Utc::now(),
            destinations: dests,
            active_override: ovr.then(|| ActiveOverride {
                id: Uuid::from_u128(9),
                reason: "none".into(),
            }),
        }
    }

    fn dest(id: u128, kind: DestinationKind, active: bool) -> DestinationInfo {
        DestinationInfo {
            id: Uuid::from_u128(id),
            kind,
            active,
            exports_table: true,
        }
    }

    fn span(id: u128, start: i64, end: i64, status: Status) -> Span {
        Span {
            id: Uuid::from_u128(id),
            start,
            end,
            status,
            schema_version: 1,
            has_object: true,
        }
    }

    #[test]
    fn half_open_windows_decide_and_object_stores_are_preferred() {
        let s = scope(
            vec![
                dest(1, DestinationKind::JsonlS3, true),
                dest(2, DestinationKind::ParquetS3, true),
                dest(3, DestinationKind::ParquetS3, false),
            ],
            false,
        );
        let c = Coverage {
            spans: vec![
                vec![
                    span(10, 0, 100, Status::Delivered),
                    span(11, 100, 200, Status::Delivered),
                ],
                vec![span(20, 0, 100, Status::Delivered), span(21, 100, 200, Status::Open)],
                vec![span(30, 0, 400, Status::Delivered)],
            ],
        };
        let id = |v: Verdict| match v {
            Verdict::Proven(Proof::Delivery { delivery_id, .. }) => delivery_id.as_u128(),
            other => panic!("{other:?}"),
        };
        assert_eq!(id(c.classify(&s, 0)), 20, "parquet preferred");
        assert_eq!(id(c.classify(&s, 99)), 20);
        assert_eq!(id(c.classify(&s, 100)), 11, "end is exclusive, start inclusive");
        // Only a paused destination covers it: not proof.
        assert_eq!(c.classify(&s, 300), Verdict::Blocked(Blocked::NotPlanned));
        assert_eq!(c.classify(&s, -1), Verdict::Blocked(Blocked::NotPlanned));
    }

    #[test]
    fn each_schema_version_is_its_own_lane_and_the_lower_version_proves() {
        let s = scope(vec![dest(1, DestinationKind::ParquetS3, true)], false);
        let v = |id, start, end, status, version| Span {
            schema_version: version,
            ..span(id, start, end, status)
        };
        // v1 in one backfill chunk, v2 in windows (one still open): they overlap.
        let c = Coverage {
            spans: vec![vec![
                v(10, 0, 400, Status::Delivered, 1),
                v(20, 0, 100, Status::Delivered, 2),
                v(21, 100, 200, Status::Open, 2),
                v(22, 200, 300, Status::Delivered, 2),
            ]],
        };
        let proof = |t| match c.classify(&s, t) {
            Verdict::Proven(Proof::Delivery {
                delivery_id,
                schema_version,
                ..
            }) => (delivery_id.as_u128(), schema_version),
            other => panic!("{other:?}"),
        };
        assert_eq!(proof(50), (10, 1), "both versions cover it: v1 preferred");
        assert_eq!(proof(150), (10, 1), "v2 still open, v1 delivered");
        assert_eq!(proof(399), (10, 1));
        let retired = Coverage {
            spans: vec![vec![
                v(10, 0, 100, Status::Delivered, 1),
                v(22, 200, 300, Status::Delivered, 2),
            ]],
        };
        assert_eq!(
            retired.classify(&s, 250),
            Verdict::Proven(Proof::Delivery {
                delivery_id: Uuid::from_u128(22),
                destination_id: Uuid::from_u128(1),
                schema_version: 2
            }),
            "after v1 is retired, v2 proves"
        );
        assert_eq!(retired.classify(&s, 150), Verdict::Blocked(Blocked::NotPlanned));
    }

    #[test]
    fn blocked_reasons_and_override() {
        let s = scope(vec![dest(1, DestinationKind::ParquetS3, true)], false);
        let c = Coverage {
            spans: vec![vec![
                span(10, 0, 100, Status::DeadLetter),
                span(11, 100, 200, Status::Open),
            ]],
        };
        assert_eq!(c.classify(&s, 5), Verdict::Blocked(Blocked::DeadLetter));
        assert_eq!(c.classify(&s, 150), Verdict::Blocked(Blocked::NotDelivered));
        let paused = scope(vec![dest(1, DestinationKind::ParquetS3, false)], false);
        assert_eq!(c.classify(&paused, 5), Verdict::Blocked(Blocked::NoActiveDestination));
        let none = scope(vec![], false);
        let empty = Coverage { spans: vec![] };
        assert_eq!(empty.classify(&none, 5), Verdict::Blocked(Blocked::NoDestination));
        let with_override = scope(vec![], true);
        assert!(matches!(
            empty.classify(&with_override, 5),
            Verdict::Proven(Proof::Override { .. })
        ));
    }
}
