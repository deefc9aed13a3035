-- tidemark control plane: destinations, the delivery outbox, watermarks.
-- Applied by `tidemark migrate` (sqlx migrator, recorded in _sqlx_migrations).

CREATE TYPE warehouse_destination_kind AS ENUM (
    'SNOWFLAKE', 'BIGQUERY', 'DATABRICKS', 'ICEBERG_S3', 'PARQUET_S3', 'JSONL_S3', 'POSTGRES_REPLICA'
);

CREATE TYPE warehouse_table AS ENUM (
    'EVENTS', 'FINDINGS', 'RULE_RUNS', 'SIEM_DELIVERIES', 'WORKFLOW_DELIVERIES',
    'AUDIT_LOG', 'OAUTH_GRANTS', 'IDENTITIES', 'ASSETS', 'BASELINE_SCORES'
);

CREATE TYPE warehouse_destination_status AS ENUM ('active', 'paused', 'error');

CREATE TYPE warehouse_delivery_status AS ENUM ('pending', 'leased', 'delivered', 'failed', 'dead_letter');

CREATE TABLE warehouse_destinations (
    id                      uuid PRIMARY KEY,
    organization_id         uuid NOT NULL,
    kind                    warehouse_destination_kind NOT NULL,
    name                    text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    -- Typed per kind; secrets appear only as references ({"env": ..} / {"file": ..}).
    config                  jsonb NOT NULL,
    -- Reserved for kinds that must hold a secret themselves: ciphertext + key version, never plaintext.
    credentials_encrypted   bytea,
    credentials_key_version integer,
    enabled_tables          warehouse_table[] NOT NULL CHECK (cardinality(enabled_tables) > 0),
    schema_version          integer NOT NULL DEFAULT 1 CHECK (schema_version >= 1),
    window_seconds          integer NOT NULL DEFAULT 900
                            CHECK (window_seconds BETWEEN 1 AND 86400 AND 86400 % window_seconds = 0),
    grace_seconds           integer NOT NULL DEFAULT 60 CHECK (grace_seconds >= 0),
    max_attempts            integer NOT NULL DEFAULT 8 CHECK (max_attempts >= 1),
    -- Windows before this instant are not planned by `run` (they can be backfilled).
    start_from              timestamptz,
    status                  warehouse_destination_status NOT NULL DEFAULT 'active',
    last_delivery_at        timestamptz,
    last_error              text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, name)
);

CREATE TABLE warehouse_deliveries (
    id                uuid PRIMARY KEY,
    destination_id    uuid NOT NULL REFERENCES warehouse_destinations (id) ON DELETE CASCADE,
    organization_id   uuid NOT NULL,
    "table"           warehouse_table NOT NULL,
    schema_version    integer NOT NULL,
    watermark_start   timestamptz NOT NULL,
    -- A window, or a backfill chunk of whole windows; never longer than a day.
    watermark_end     timestamptz NOT NULL
                      CHECK (watermark_end > watermark_start AND watermark_end - watermark_start <= interval '1 day'),
    status            warehouse_delivery_status NOT NULL DEFAULT 'pending',
    attempts          integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    lease_owner       text,
    lease_token       bigint,
    lease_expires_at  timestamptz,
    row_count         bigint,
    bytes             bigint,
    -- Cursor of the last exported row: (updated_at, id).
    last_updated_at   timestamptz,
    last_id           uuid,
    receipt           jsonb,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    delivered_at      timestamptz,
    UNIQUE (destination_id, "table", watermark_start, watermark_end),
    CHECK (status <> 'leased' OR (lease_owner IS NOT NULL AND lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK (status <> 'delivered' OR receipt IS NOT NULL)
);

-- Leasing walks due deliveries oldest window first.
CREATE INDEX warehouse_deliveries_queue ON warehouse_deliveries (watermark_start, id)
    WHERE status IN ('pending', 'failed');
CREATE INDEX warehouse_deliveries_lease ON warehouse_deliveries (lease_expires_at) WHERE status = 'leased';
-- The oldest undelivered window of a destination × table bounds its watermark; this keeps
-- finding it an index probe however long the delivered history grows. (The newest delivery
-- of a pair is found on the unique index, backwards: deliveries of a pair never overlap.)
CREATE INDEX warehouse_deliveries_open ON warehouse_deliveries (destination_id, "table", watermark_start)
    WHERE status <> 'delivered';

-- Lease tokens only ever grow: a token proves which lease a write belongs to (fencing).
CREATE SEQUENCE warehouse_lease_token_seq;

CREATE TABLE warehouse_watermarks (
    destination_id    uuid NOT NULL REFERENCES warehouse_destinations (id) ON DELETE CASCADE,
    "table"           warehouse_table NOT NULL,
    schema_version    integer NOT NULL DEFAULT 1,
    -- Every closed window before this instant has a delivery row.
    planned_through   timestamptz,
    -- Every planned window before this instant is delivered.
    delivered_through timestamptz,
    -- The (updated_at, id) of the last row of the delivered prefix: the high-water mark.
    last_updated_at   timestamptz,
    last_id           uuid,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (destination_id, "table")
);
