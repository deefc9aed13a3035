-- Generated from schemas/findings/v1.json by tidemark; do not edit. Replace <catalog> and
-- <schema>; the DATABRICKS destination runs the same statements itself unless
-- "create_tables" is false. See docs/destinations/databricks.md.

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`findings_v1_raw` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the finding.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this finding; every export is scoped to one organization.',
  `rule_id` STRING NOT NULL COMMENT 'Detection rule that raised the finding; the same id appears in rule_runs.rule_id.',
  `event_id` STRING COMMENT 'Triggering event (events.id of the same organization) when the finding came from a single event; null for aggregate findings.',
  `asset_id` STRING COMMENT 'Affected asset (assets.id of the same organization); null when no single asset is affected.',
  `identity_id` STRING COMMENT 'Affected or responsible identity (identities.id of the same organization); null when no identity is involved.',
  `title` STRING NOT NULL COMMENT 'Human-readable title shown to analysts, possibly in the organization\'s language.',
  `severity` SMALLINT NOT NULL COMMENT 'Severity from 0 (informational) to 4 (critical) at the time of the last update.',
  `status` STRING NOT NULL COMMENT 'Workflow state: open, triaged, resolved, suppressed or false_positive.',
  `cvss` DECIMAL(3,1) COMMENT 'CVSS base score from 0.0 to 10.0 for vulnerability findings; null for behavioural findings.',
  `escalated` BOOLEAN NOT NULL COMMENT 'True when the finding was escalated to an incident.',
  `details` STRING NOT NULL COMMENT 'Rule-specific evidence, MITRE mapping, score breakdown and remediation advice as a JSON document.',
  `resolved_at` TIMESTAMP COMMENT 'When the finding was resolved or marked false positive, so that resolved_at minus created_at is its time to resolve; null while it is open, triaged or suppressed.',
  `due_on` DATE COMMENT 'Remediation deadline derived from the severity SLA; null when no SLA applies.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the finding row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the finding row was last inserted or modified; set to now() by a trigger and used as the export cursor.',
  `_tidemark_delivery_id` STRING NOT NULL COMMENT 'tidemark delivery that loaded this row version.',
  `_tidemark_loaded_at` TIMESTAMP NOT NULL COMMENT 'When COPY INTO loaded this row version.'
) USING DELTA COMMENT 'tidemark findings v1 raw history: every delivered row version, append-only. One finding raised by a detection rule against an organization\'s assets or identities, tracked from open to resolution.';

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`findings_v1` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the finding.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this finding; every export is scoped to one organization.',
  `rule_id` STRING NOT NULL COMMENT 'Detection rule that raised the finding; the same id appears in rule_runs.rule_id.',
  `event_id` STRING COMMENT 'Triggering event (events.id of the same organization) when the finding came from a single event; null for aggregate findings.',
  `asset_id` STRING COMMENT 'Affected asset (assets.id of the same organization); null when no single asset is affected.',
  `identity_id` STRING COMMENT 'Affected or responsible identity (identities.id of the same organization); null when no identity is involved.',
  `title` STRING NOT NULL COMMENT 'Human-readable title shown to analysts, possibly in the organization\'s language.',
  `severity` SMALLINT NOT NULL COMMENT 'Severity from 0 (informational) to 4 (critical) at the time of the last update.',
  `status` STRING NOT NULL COMMENT 'Workflow state: open, triaged, resolved, suppressed or false_positive.',
  `cvss` DECIMAL(3,1) COMMENT 'CVSS base score from 0.0 to 10.0 for vulnerability findings; null for behavioural findings.',
  `escalated` BOOLEAN NOT NULL COMMENT 'True when the finding was escalated to an incident.',
  `details` STRING NOT NULL COMMENT 'Rule-specific evidence, MITRE mapping, score breakdown and remediation advice as a JSON document.',
  `resolved_at` TIMESTAMP COMMENT 'When the finding was resolved or marked false positive, so that resolved_at minus created_at is its time to resolve; null while it is open, triaged or suppressed.',
  `due_on` DATE COMMENT 'Remediation deadline derived from the severity SLA; null when no SLA applies.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the finding row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the finding row was last inserted or modified; set to now() by a trigger and used as the export cursor.'
) USING DELTA COMMENT 'tidemark findings v1: one row per id, the newest updated_at wins. One finding raised by a detection rule against an organization\'s assets or identities, tracked from open to resolution.';

CREATE VIEW IF NOT EXISTS `<catalog>`.`<schema>`.`findings_v1_latest` COMMENT 'tidemark findings v1: the newest version of each id in the raw history.' AS
SELECT `id`, `organization_id`, `rule_id`, `event_id`, `asset_id`, `identity_id`, `title`, `severity`, `status`, `cvss`, `escalated`, `details`, `resolved_at`, `due_on`, `created_at`, `updated_at`
FROM `<catalog>`.`<schema>`.`findings_v1_raw`
QUALIFY ROW_NUMBER() OVER (PARTITION BY `id` ORDER BY `updated_at` DESC, `_tidemark_loaded_at` DESC) = 1;
