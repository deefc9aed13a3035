-- tidemark cold storage: tombstones of rows removed from the hot tables, the deliveries that
-- proved them, operator overrides and the runs of the tombstoning pass. See docs/COLD_STORAGE.md.
--
-- Nothing here references warehouse_deliveries or warehouse_destinations with a foreign key:
-- removing a destination cascades to its deliveries, and the evidence of what was archived
-- (and where its copy lives) must outlive both. cold_storage_proofs keeps a snapshot instead.

-- "This organization may archive without a delivered copy" (e.g. no destination configured):
-- who, when, why. Never deleted; revoking stamps revoked_at/revoked_by. At most one active
-- override per organization.
CREATE TABLE cold_storage_overrides (
    id              uuid PRIMARY KEY,
    organization_id uuid NOT NULL,
    reason          text NOT NULL CHECK (length(btrim(reason)) > 0),
    created_by      text NOT NULL CHECK (length(btrim(created_by)) > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    revoked_by      text,
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);

CREATE UNIQUE INDEX cold_storage_overrides_active ON cold_storage_overrides (organization_id)
    WHERE revoked_at IS NULL;

-- One tombstoning pass (`tidemark tombstone --execute`). Dry runs record nothing.
CREATE TABLE cold_storage_runs (
    id            uuid PRIMARY KEY,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    -- `hostname:pid` of the process, and the pass's arguments (organization, table, limit, batch).
    started_by    text NOT NULL,
    arguments     jsonb NOT NULL,
    -- The retention cutoff of each organization was computed against this source clock.
    source_now    timestamptz NOT NULL,
    rows_archived bigint NOT NULL DEFAULT 0,
    -- 'running', then 'finished' or 'failed' (a crashed process leaves 'running').
    status        text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'finished', 'failed')),
    error         text
);

CREATE INDEX cold_storage_runs_started ON cold_storage_runs (started_at);

-- A snapshot of each delivery used as proof, taken in the transaction that first relied on it:
-- where the archived copy lives (kind, url, object key, format), the object's sha256 from the
-- receipt, and the destination's configuration (secret *references* only) to read it back even
-- after the destination is removed.
CREATE TABLE cold_storage_proofs (
    delivery_id        uuid PRIMARY KEY,
    destination_id     uuid NOT NULL,
    organization_id    uuid NOT NULL,
    "table"            warehouse_table NOT NULL,
    schema_version     integer NOT NULL,
    kind               warehouse_destination_kind NOT NULL,
    destination_name   text NOT NULL,
    destination_config jsonb NOT NULL,
    watermark_start    timestamptz NOT NULL,
    watermark_end      timestamptz NOT NULL,
    delivered_at       timestamptz,
    row_count          bigint,
    -- The receipt as the destination wrote it (object_key, url, format, sha256, bytes, ...).
    receipt            jsonb NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT now()
);

-- One tombstone per row removed from a hot table.
--
-- row_sha256 is sha256 over the row's canonical encoding: its JSONL line exactly as tidemark's
-- JSONL encoder writes it, without the trailing newline (docs/COLD_STORAGE.md). delivery_id
-- names the proof (cold_storage_proofs; the view cold_storage_tombstones spells it out as
-- delivered_to); override_id/override_reason are set when the row left under an override.
CREATE TABLE cold_storage_archive (
    organization_id uuid NOT NULL,
    "table"         warehouse_table NOT NULL,
    row_id          uuid NOT NULL,
    row_updated_at  timestamptz NOT NULL,
    row_sha256      bytea NOT NULL CHECK (length(row_sha256) = 32),
    -- The published schema version whose encoding row_sha256 was computed with.
    schema_version  integer NOT NULL,
    delivery_id     uuid,
    override_id     uuid,
    override_reason text,
    run_id          uuid NOT NULL,
    archived_at     timestamptz NOT NULL DEFAULT now(),
    -- Set by `tidemark archive recall --restore` when the row was put back; the tombstone stays.
    restored_at     timestamptz,
    CHECK (delivery_id IS NOT NULL OR (override_id IS NOT NULL AND override_reason IS NOT NULL)),
    -- Recall by row id (then organization and table). A row id can be archived again after a
    -- restore, always by a later transaction, so archived_at tells its tombstones apart. Row ids
    -- first keeps the key short: the pass inserts a tombstone per row, and every index costs.
    PRIMARY KEY (row_id, archived_at)
);

-- Recall by time (--from/--to on the row's updated_at) and reports by period (archived_at).
-- Tombstones are appended one batch at a time, each batch one organization × table in
-- updated_at order, all with one archived_at: block ranges are narrow in every one of these
-- columns, so a BRIN index prunes well and costs next to nothing per inserted row (a btree
-- would cost about as much as the heap insert itself). ("table" is an enum, which BRIN cannot
-- summarise; it is rechecked.)
CREATE INDEX cold_storage_archive_brin ON cold_storage_archive
    USING brin (organization_id, row_updated_at, archived_at) WITH (autosummarize = on);

-- Tombstones with their proof spelled out, for people and auditors reading SQL.
CREATE VIEW cold_storage_tombstones AS
SELECT a.organization_id,
       a."table",
       a.row_id,
       a.row_updated_at,
       encode(a.row_sha256, 'hex') AS row_sha256,
       a.schema_version,
       CASE WHEN p.delivery_id IS NOT NULL THEN
           jsonb_build_object(
               'destination_id', p.destination_id,
               'destination_name', p.destination_name,
               'delivery_id', p.delivery_id,
               'kind', p.kind,
               'url', p.receipt ->> 'url',
               'object_key', p.receipt ->> 'object_key',
               'format', p.receipt ->> 'format',
               'object_sha256', p.receipt ->> 'sha256',
               'watermark_start', p.watermark_start,
               'watermark_end', p.watermark_end)
       END AS delivered_to,
       a.override_id,
       a.override_reason,
       a.run_id,
       a.archived_at,
       a.restored_at
FROM cold_storage_archive a
LEFT JOIN cold_storage_proofs p ON p.delivery_id = a.delivery_id;
