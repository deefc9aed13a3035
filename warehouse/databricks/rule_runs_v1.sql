-- Generated from schemas/rule_runs/v1.json by tidemark; do not edit. Replace <catalog> and
-- <schema>; the DATABRICKS destination runs the same statements itself unless
-- "create_tables" is false. See docs/destinations/databricks.md.

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`rule_runs_v1_raw` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the rule run.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this rule run; every export is scoped to one organization.',
  `rule_id` STRING NOT NULL COMMENT 'Detection rule that was executed; joins to findings.rule_id.',
  `rule_version` INT NOT NULL COMMENT 'Version number of the rule definition that was executed.',
  `trigger_kind` STRING NOT NULL COMMENT 'What started the run: schedule, event, manual or backfill.',
  `status` STRING NOT NULL COMMENT 'Outcome of the run: succeeded, failed, running, timed_out or cancelled.',
  `started_at` TIMESTAMP NOT NULL COMMENT 'When the run started executing.',
  `finished_at` TIMESTAMP COMMENT 'When the run finished; null while it is still running.',
  `duration_ms` INT COMMENT 'Wall-clock duration of the run in milliseconds; null while it is still running.',
  `matched_count` BIGINT NOT NULL COMMENT 'Number of records the rule matched in this run.',
  `scanned_rows` BIGINT NOT NULL COMMENT 'Number of records the rule evaluated in this run.',
  `cpu_seconds` DECIMAL(12,3) COMMENT 'CPU time consumed by the run in seconds, with millisecond precision; null when the executor did not report it.',
  `error` STRING COMMENT 'Error message for failed or timed-out runs; null otherwise.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the rule run row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the rule run row was last inserted or modified; set to now() by a trigger and used as the export cursor.',
  `_tidemark_delivery_id` STRING NOT NULL COMMENT 'tidemark delivery that loaded this row version.',
  `_tidemark_loaded_at` TIMESTAMP NOT NULL COMMENT 'When COPY INTO loaded this row version.'
) USING DELTA COMMENT 'tidemark rule_runs v1 raw history: every delivered row version, append-only. One execution of a detection rule for an organization, with its outcome, cost and match count.';

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`rule_runs_v1` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the rule run.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this rule run; every export is scoped to one organization.',
  `rule_id` STRING NOT NULL COMMENT 'Detection rule that was executed; joins to findings.rule_id.',
  `rule_version` INT NOT NULL COMMENT 'Version number of the rule definition that was executed.',
  `trigger_kind` STRING NOT NULL COMMENT 'What started the run: schedule, event, manual or backfill.',
  `status` STRING NOT NULL COMMENT 'Outcome of the run: succeeded, failed, running, timed_out or cancelled.',
  `started_at` TIMESTAMP NOT NULL COMMENT 'When the run started executing.',
  `finished_at` TIMESTAMP COMMENT 'When the run finished; null while it is still running.',
  `duration_ms` INT COMMENT 'Wall-clock duration of the run in milliseconds; null while it is still running.',
  `matched_count` BIGINT NOT NULL COMMENT 'Number of records the rule matched in this run.',
  `scanned_rows` BIGINT NOT NULL COMMENT 'Number of records the rule evaluated in this run.',
  `cpu_seconds` DECIMAL(12,3) COMMENT 'CPU time consumed by the run in seconds, with millisecond precision; null when the executor did not report it.',
  `error` STRING COMMENT 'Error message for failed or timed-out runs; null otherwise.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the rule run row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the rule run row was last inserted or modified; set to now() by a trigger and used as the export cursor.'
) USING DELTA COMMENT 'tidemark rule_runs v1: one row per id, the newest updated_at wins. One execution of a detection rule for an organization, with its outcome, cost and match count.';

CREATE VIEW IF NOT EXISTS `<catalog>`.`<schema>`.`rule_runs_v1_latest` COMMENT 'tidemark rule_runs v1: the newest version of each id in the raw history.' AS
SELECT `id`, `organization_id`, `rule_id`, `rule_version`, `trigger_kind`, `status`, `started_at`, `finished_at`, `duration_ms`, `matched_count`, `scanned_rows`, `cpu_seconds`, `error`, `created_at`, `updated_at`
FROM `<catalog>`.`<schema>`.`rule_runs_v1_raw`
QUALIFY ROW_NUMBER() OVER (PARTITION BY `id` ORDER BY `updated_at` DESC, `_tidemark_loaded_at` DESC) = 1;
