-- Generated from schemas/siem_deliveries/v1.json by tidemark; do not edit. Replace <catalog> and
-- <schema>; the DATABRICKS destination runs the same statements itself unless
-- "create_tables" is false. See docs/destinations/databricks.md.

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`siem_deliveries_v1_raw` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the delivery attempt.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this SIEM delivery; every export is scoped to one organization.',
  `event_id` STRING COMMENT 'First event of the forwarded batch (events.id of the same organization); null for connectivity test deliveries.',
  `target` STRING NOT NULL COMMENT 'SIEM integration the batch was sent to, such as splunk_hec, sentinel or chronicle.',
  `endpoint` STRING NOT NULL COMMENT 'URL the batch was posted to.',
  `attempt` SMALLINT NOT NULL COMMENT 'Attempt number for this batch, starting at 1.',
  `http_status` INT COMMENT 'HTTP status code returned by the SIEM; null when no response was received (timeout or connection error).',
  `latency_ms` DOUBLE COMMENT 'Round-trip time of the request in milliseconds; null when the connection could not be established.',
  `delivered` BOOLEAN NOT NULL COMMENT 'True when the SIEM acknowledged the batch.',
  `batch_size` INT NOT NULL COMMENT 'Number of events in the batch.',
  `payload_bytes` BIGINT NOT NULL COMMENT 'Size of the request body in bytes.',
  `ingest_cost_usd` DECIMAL(24,9) COMMENT 'Ingest cost billed by the SIEM vendor for this batch in US dollars, at nano-dollar precision; null when the vendor does not bill per volume.',
  `response` STRING COMMENT 'Parsed response body returned by the SIEM; null when there was no response.',
  `next_retry_at` TIMESTAMP COMMENT 'When the next attempt is scheduled for an undelivered batch; null when delivered or given up.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the SIEM delivery row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the SIEM delivery row was last inserted or modified; set to now() by a trigger and used as the export cursor.',
  `_tidemark_delivery_id` STRING NOT NULL COMMENT 'tidemark delivery that loaded this row version.',
  `_tidemark_loaded_at` TIMESTAMP NOT NULL COMMENT 'When COPY INTO loaded this row version.'
) USING DELTA COMMENT 'tidemark siem_deliveries v1 raw history: every delivered row version, append-only. One attempt to forward a batch of events to a customer SIEM, with the HTTP outcome and cost.';

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`siem_deliveries_v1` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the delivery attempt.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this SIEM delivery; every export is scoped to one organization.',
  `event_id` STRING COMMENT 'First event of the forwarded batch (events.id of the same organization); null for connectivity test deliveries.',
  `target` STRING NOT NULL COMMENT 'SIEM integration the batch was sent to, such as splunk_hec, sentinel or chronicle.',
  `endpoint` STRING NOT NULL COMMENT 'URL the batch was posted to.',
  `attempt` SMALLINT NOT NULL COMMENT 'Attempt number for this batch, starting at 1.',
  `http_status` INT COMMENT 'HTTP status code returned by the SIEM; null when no response was received (timeout or connection error).',
  `latency_ms` DOUBLE COMMENT 'Round-trip time of the request in milliseconds; null when the connection could not be established.',
  `delivered` BOOLEAN NOT NULL COMMENT 'True when the SIEM acknowledged the batch.',
  `batch_size` INT NOT NULL COMMENT 'Number of events in the batch.',
  `payload_bytes` BIGINT NOT NULL COMMENT 'Size of the request body in bytes.',
  `ingest_cost_usd` DECIMAL(24,9) COMMENT 'Ingest cost billed by the SIEM vendor for this batch in US dollars, at nano-dollar precision; null when the vendor does not bill per volume.',
  `response` STRING COMMENT 'Parsed response body returned by the SIEM; null when there was no response.',
  `next_retry_at` TIMESTAMP COMMENT 'When the next attempt is scheduled for an undelivered batch; null when delivered or given up.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the SIEM delivery row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the SIEM delivery row was last inserted or modified; set to now() by a trigger and used as the export cursor.'
) USING DELTA COMMENT 'tidemark siem_deliveries v1: one row per id, the newest updated_at wins. One attempt to forward a batch of events to a customer SIEM, with the HTTP outcome and cost.';

CREATE VIEW IF NOT EXISTS `<catalog>`.`<schema>`.`siem_deliveries_v1_latest` COMMENT 'tidemark siem_deliveries v1: the newest version of each id in the raw history.' AS
SELECT `id`, `organization_id`, `event_id`, `target`, `endpoint`, `attempt`, `http_status`, `latency_ms`, `delivered`, `batch_size`, `payload_bytes`, `ingest_cost_usd`, `response`, `next_retry_at`, `created_at`, `updated_at`
FROM `<catalog>`.`<schema>`.`siem_deliveries_v1_raw`
QUALIFY ROW_NUMBER() OVER (PARTITION BY `id` ORDER BY `updated_at` DESC, `_tidemark_loaded_at` DESC) = 1;
