-- Dual-write: a destination can receive several major versions of a table at once (e.g. findings
-- v1 and v2 until the operator retires v1). Each version of a destination × table has its own
-- windows (deliveries) and its own watermark. See docs/SCHEMAS.md.
--
-- Safe on existing data: every existing delivery and watermark already carries schema_version
-- (1, the only version there was); the new keys only add that column, so no existing row can
-- conflict, and no row is rewritten. Stop the workers of the previous release before running it
-- (their ON CONFLICT names the old key).

-- Versions per table: {"findings": [1, 2]}. A table not named here gets [schema_version] (the
-- destination's default major, 1).
ALTER TABLE warehouse_destinations
    ADD COLUMN schema_versions jsonb NOT NULL DEFAULT '{}'::jsonb
        CHECK (jsonb_typeof(schema_versions) = 'object');

-- Deliveries: one per destination × table × version × window. The key keeps its leading
-- columns (destination, table, window start): every lookup by window range still walks it.
DO $$
DECLARE
    old_key text;
BEGIN
    SELECT c.conname INTO old_key
    FROM pg_constraint c
    WHERE c.conrelid = 'warehouse_deliveries'::regclass AND c.contype = 'u'
      AND (SELECT array_agg(a.attname::text ORDER BY k.ord)
           FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
           JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum)
          = ARRAY['destination_id', 'table', 'watermark_start', 'watermark_end'];
    IF old_key IS NULL THEN
        RAISE EXCEPTION 'warehouse_deliveries has no unique key (destination_id, table, watermark_start, watermark_end) to replace';
    END IF;
    EXECUTE format('ALTER TABLE warehouse_deliveries DROP CONSTRAINT %I', old_key);
END
$$;

ALTER TABLE warehouse_deliveries
    ADD CONSTRAINT warehouse_deliveries_window_key
        UNIQUE (destination_id, "table", watermark_start, watermark_end, schema_version),
    ADD CONSTRAINT warehouse_deliveries_schema_version_check CHECK (schema_version >= 1);

-- Watermarks: one per destination × table × version.
ALTER TABLE warehouse_watermarks
    DROP CONSTRAINT warehouse_watermarks_pkey,
    ADD PRIMARY KEY (destination_id, "table", schema_version),
    ADD CONSTRAINT warehouse_watermarks_schema_version_check CHECK (schema_version >= 1);
