-- Generated from schemas/events/v1.json by tidemark; do not edit. Replace <catalog> and
-- <schema>; the DATABRICKS destination runs the same statements itself unless
-- "create_tables" is false. See docs/destinations/databricks.md.

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`events_v1_raw` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the event.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this event; every export is scoped to one organization.',
  `source` STRING NOT NULL COMMENT 'Integration that produced the event, such as crowdstrike, okta or aws_cloudtrail.',
  `event_type` STRING NOT NULL COMMENT 'Normalized dotted event type, such as auth.login.failure or process.start.',
  `severity` SMALLINT NOT NULL COMMENT 'Normalized severity from 0 (informational) to 4 (critical).',
  `actor_ip` STRING COMMENT 'IPv4 or IPv6 address (or network, when the sensor reports only a prefix) the activity came from; null when the source does not report one.',
  `identity_id` STRING COMMENT 'Identity the activity is attributed to (identities.id of the same organization); null when unattributed.',
  `asset_id` STRING COMMENT 'Asset the event was observed on (assets.id of the same organization); null for cloud or identity-only events.',
  `tags` ARRAY<STRING> NOT NULL COMMENT 'Free-form labels such as MITRE technique ids attached by enrichment; empty when none apply.',
  `payload` STRING NOT NULL COMMENT 'Raw vendor payload after parsing, a nested JSON document of typically a few hundred bytes.',
  `risk_score` DECIMAL(6,2) COMMENT 'Enrichment risk score from 0.00 to 1000.00; null when enrichment has not scored the event.',
  `occurred_at` TIMESTAMP NOT NULL COMMENT 'When the activity happened according to the source; can precede created_at by minutes or, for late-arriving data, days.',
  `bytes_in` BIGINT COMMENT 'Bytes received by the actor during the activity for network-type events; null when not applicable.',
  `clock_skew_ms` INT COMMENT 'Sensor clock minus platform clock at ingestion in milliseconds, negative when the sensor lags; null when the sensor sends no clock.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the event row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the event row was last inserted or modified; set to now() by a trigger and used as the export cursor.',
  `_tidemark_delivery_id` STRING NOT NULL COMMENT 'tidemark delivery that loaded this row version.',
  `_tidemark_loaded_at` TIMESTAMP NOT NULL COMMENT 'When COPY INTO loaded this row version.'
) USING DELTA COMMENT 'tidemark events v1 raw history: every delivered row version, append-only. One security event ingested from a sensor or integration, normalized to a common envelope with the raw vendor payload attached.';

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`events_v1` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the event.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this event; every export is scoped to one organization.',
  `source` STRING NOT NULL COMMENT 'Integration that produced the event, such as crowdstrike, okta or aws_cloudtrail.',
  `event_type` STRING NOT NULL COMMENT 'Normalized dotted event type, such as auth.login.failure or process.start.',
  `severity` SMALLINT NOT NULL COMMENT 'Normalized severity from 0 (informational) to 4 (critical).',
  `actor_ip` STRING COMMENT 'IPv4 or IPv6 address (or network, when the sensor reports only a prefix) the activity came from; null when the source does not report one.',
  `identity_id` STRING COMMENT 'Identity the activity is attributed to (identities.id of the same organization); null when unattributed.',
  `asset_id` STRING COMMENT 'Asset the event was observed on (assets.id of the same organization); null for cloud or identity-only events.',
  `tags` ARRAY<STRING> NOT NULL COMMENT 'Free-form labels such as MITRE technique ids attached by enrichment; empty when none apply.',
  `payload` STRING NOT NULL COMMENT 'Raw vendor payload after parsing, a nested JSON document of typically a few hundred bytes.',
  `risk_score` DECIMAL(6,2) COMMENT 'Enrichment risk score from 0.00 to 1000.00; null when enrichment has not scored the event.',
  `occurred_at` TIMESTAMP NOT NULL COMMENT 'When the activity happened according to the source; can precede created_at by minutes or, for late-arriving data, days.',
  `bytes_in` BIGINT COMMENT 'Bytes received by the actor during the activity for network-type events; null when not applicable.',
  `clock_skew_ms` INT COMMENT 'Sensor clock minus platform clock at ingestion in milliseconds, negative when the sensor lags; null when the sensor sends no clock.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the event row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the event row was last inserted or modified; set to now() by a trigger and used as the export cursor.'
) USING DELTA COMMENT 'tidemark events v1: one row per id, the newest updated_at wins. One security event ingested from a sensor or integration, normalized to a common envelope with the raw vendor payload attached.';

CREATE VIEW IF NOT EXISTS `<catalog>`.`<schema>`.`events_v1_latest` COMMENT 'tidemark events v1: the newest version of each id in the raw history.' AS
SELECT `id`, `organization_id`, `source`, `event_type`, `severity`, `actor_ip`, `identity_id`, `asset_id`, `tags`, `payload`, `risk_score`, `occurred_at`, `bytes_in`, `clock_skew_ms`, `created_at`, `updated_at`
FROM `<catalog>`.`<schema>`.`events_v1_raw`
QUALIFY ROW_NUMBER() OVER (PARTITION BY `id` ORDER BY `updated_at` DESC, `_tidemark_loaded_at` DESC) = 1;
