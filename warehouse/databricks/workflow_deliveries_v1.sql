-- Generated from schemas/workflow_deliveries/v1.json by tidemark; do not edit. Replace <catalog> and
-- <schema>; the DATABRICKS destination runs the same statements itself unless
-- "create_tables" is false. See docs/destinations/databricks.md.

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`workflow_deliveries_v1_raw` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the delivery attempt.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this workflow delivery; every export is scoped to one organization.',
  `finding_id` STRING COMMENT 'Finding that was pushed (findings.id of the same organization); null for digest notifications that cover several findings.',
  `workflow` STRING NOT NULL COMMENT 'Workflow integration: jira, servicenow, slack, pagerduty, teams or webhook.',
  `action` STRING NOT NULL COMMENT 'What was requested from the workflow tool, such as create_ticket, notify or page.',
  `attempt` SMALLINT NOT NULL COMMENT 'Attempt number for this action, starting at 1.',
  `http_status` INT COMMENT 'HTTP status code returned by the workflow tool; null when no response was received.',
  `latency_ms` DOUBLE COMMENT 'Round-trip time of the request in milliseconds; null when the connection could not be established.',
  `delivered` BOOLEAN NOT NULL COMMENT 'True when the workflow tool accepted the request.',
  `external_ref` STRING COMMENT 'Identifier assigned by the workflow tool, such as a Jira key or ServiceNow incident number; null when nothing was created.',
  `request` STRING NOT NULL COMMENT 'Request body that was sent to the workflow tool.',
  `response` STRING COMMENT 'Parsed response body; null when there was no response or it was not JSON.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the workflow delivery row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the workflow delivery row was last inserted or modified; set to now() by a trigger and used as the export cursor.',
  `_tidemark_delivery_id` STRING NOT NULL COMMENT 'tidemark delivery that loaded this row version.',
  `_tidemark_loaded_at` TIMESTAMP NOT NULL COMMENT 'When COPY INTO loaded this row version.'
) USING DELTA COMMENT 'tidemark workflow_deliveries v1 raw history: every delivered row version, append-only. One attempt to push a finding into a customer workflow tool such as Jira, ServiceNow, Slack or PagerDuty.';

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`workflow_deliveries_v1` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the delivery attempt.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this workflow delivery; every export is scoped to one organization.',
  `finding_id` STRING COMMENT 'Finding that was pushed (findings.id of the same organization); null for digest notifications that cover several findings.',
  `workflow` STRING NOT NULL COMMENT 'Workflow integration: jira, servicenow, slack, pagerduty, teams or webhook.',
  `action` STRING NOT NULL COMMENT 'What was requested from the workflow tool, such as create_ticket, notify or page.',
  `attempt` SMALLINT NOT NULL COMMENT 'Attempt number for this action, starting at 1.',
  `http_status` INT COMMENT 'HTTP status code returned by the workflow tool; null when no response was received.',
  `latency_ms` DOUBLE COMMENT 'Round-trip time of the request in milliseconds; null when the connection could not be established.',
  `delivered` BOOLEAN NOT NULL COMMENT 'True when the workflow tool accepted the request.',
  `external_ref` STRING COMMENT 'Identifier assigned by the workflow tool, such as a Jira key or ServiceNow incident number; null when nothing was created.',
  `request` STRING NOT NULL COMMENT 'Request body that was sent to the workflow tool.',
  `response` STRING COMMENT 'Parsed response body; null when there was no response or it was not JSON.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the workflow delivery row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the workflow delivery row was last inserted or modified; set to now() by a trigger and used as the export cursor.'
) USING DELTA COMMENT 'tidemark workflow_deliveries v1: one row per id, the newest updated_at wins. One attempt to push a finding into a customer workflow tool such as Jira, ServiceNow, Slack or PagerDuty.';

CREATE VIEW IF NOT EXISTS `<catalog>`.`<schema>`.`workflow_deliveries_v1_latest` COMMENT 'tidemark workflow_deliveries v1: the newest version of each id in the raw history.' AS
SELECT `id`, `organization_id`, `finding_id`, `workflow`, `action`, `attempt`, `http_status`, `latency_ms`, `delivered`, `external_ref`, `request`, `response`, `created_at`, `updated_at`
FROM `<catalog>`.`<schema>`.`workflow_deliveries_v1_raw`
QUALIFY ROW_NUMBER() OVER (PARTITION BY `id` ORDER BY `updated_at` DESC, `_tidemark_loaded_at` DESC) = 1;
