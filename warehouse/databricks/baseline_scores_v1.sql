-- Generated from schemas/baseline_scores/v1.json by tidemark; do not edit. Replace <catalog> and
-- <schema>; the DATABRICKS destination runs the same statements itself unless
-- "create_tables" is false. See docs/destinations/databricks.md.

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`baseline_scores_v1_raw` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the measurement.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this baseline score; every export is scoped to one organization.',
  `asset_id` STRING COMMENT 'Asset the control was measured on (assets.id of the same organization); null for organization-wide controls.',
  `framework` STRING NOT NULL COMMENT 'Baseline framework: CIS, SOC2, ISO27001, NIST-CSF or PCI-DSS.',
  `control_id` STRING NOT NULL COMMENT 'Control identifier within the framework, such as CC6.1 or A.8.2.',
  `control_title` STRING NOT NULL COMMENT 'Title of the control, possibly localized.',
  `score` DECIMAL(5,2) NOT NULL COMMENT 'Compliance score of the control from 0.00 to 100.00.',
  `score_delta` DECIMAL(6,2) COMMENT 'Change of the score since the previous measurement, negative when compliance degraded; null for the first measurement.',
  `passed` BOOLEAN NOT NULL COMMENT 'True when the score meets the control\'s passing threshold of 70.00.',
  `weight` DOUBLE NOT NULL COMMENT 'Relative weight of the control in the framework\'s aggregate score.',
  `measured_on` DATE NOT NULL COMMENT 'Calendar day (UTC) the measurement belongs to.',
  `evidence` STRING COMMENT 'Collector name, checked resources and failing resources as a JSON document; null when no evidence was collected.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the baseline score row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the baseline score row was last inserted or modified; set to now() by a trigger and used as the export cursor.',
  `_tidemark_delivery_id` STRING NOT NULL COMMENT 'tidemark delivery that loaded this row version.',
  `_tidemark_loaded_at` TIMESTAMP NOT NULL COMMENT 'When COPY INTO loaded this row version.'
) USING DELTA COMMENT 'tidemark baseline_scores v1 raw history: every delivered row version, append-only. One measurement of a compliance control for an organization or asset against a security baseline framework.';

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`baseline_scores_v1` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the measurement.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this baseline score; every export is scoped to one organization.',
  `asset_id` STRING COMMENT 'Asset the control was measured on (assets.id of the same organization); null for organization-wide controls.',
  `framework` STRING NOT NULL COMMENT 'Baseline framework: CIS, SOC2, ISO27001, NIST-CSF or PCI-DSS.',
  `control_id` STRING NOT NULL COMMENT 'Control identifier within the framework, such as CC6.1 or A.8.2.',
  `control_title` STRING NOT NULL COMMENT 'Title of the control, possibly localized.',
  `score` DECIMAL(5,2) NOT NULL COMMENT 'Compliance score of the control from 0.00 to 100.00.',
  `score_delta` DECIMAL(6,2) COMMENT 'Change of the score since the previous measurement, negative when compliance degraded; null for the first measurement.',
  `passed` BOOLEAN NOT NULL COMMENT 'True when the score meets the control\'s passing threshold of 70.00.',
  `weight` DOUBLE NOT NULL COMMENT 'Relative weight of the control in the framework\'s aggregate score.',
  `measured_on` DATE NOT NULL COMMENT 'Calendar day (UTC) the measurement belongs to.',
  `evidence` STRING COMMENT 'Collector name, checked resources and failing resources as a JSON document; null when no evidence was collected.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the baseline score row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the baseline score row was last inserted or modified; set to now() by a trigger and used as the export cursor.'
) USING DELTA COMMENT 'tidemark baseline_scores v1: one row per id, the newest updated_at wins. One measurement of a compliance control for an organization or asset against a security baseline framework.';

CREATE VIEW IF NOT EXISTS `<catalog>`.`<schema>`.`baseline_scores_v1_latest` COMMENT 'tidemark baseline_scores v1: the newest version of each id in the raw history.' AS
SELECT `id`, `organization_id`, `asset_id`, `framework`, `control_id`, `control_title`, `score`, `score_delta`, `passed`, `weight`, `measured_on`, `evidence`, `created_at`, `updated_at`
FROM `<catalog>`.`<schema>`.`baseline_scores_v1_raw`
QUALIFY ROW_NUMBER() OVER (PARTITION BY `id` ORDER BY `updated_at` DESC, `_tidemark_loaded_at` DESC) = 1;
