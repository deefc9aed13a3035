-- Generated from schemas/audit_log/v1.json by tidemark; do not edit. Replace <catalog> and
-- <schema>; the DATABRICKS destination runs the same statements itself unless
-- "create_tables" is false. See docs/destinations/databricks.md.

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`audit_log_v1_raw` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the audit entry.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this audit entry; every export is scoped to one organization.',
  `actor_id` STRING COMMENT 'Identity or API key that performed the action; null for actions taken by the platform itself.',
  `actor_type` STRING NOT NULL COMMENT 'Kind of actor: user, api_key, service or system.',
  `action` STRING NOT NULL COMMENT 'Dotted name of the action, such as identity.mfa.disable or oauth.grant.revoke.',
  `target_type` STRING NOT NULL COMMENT 'Kind of object the action was applied to, such as identity, finding or oauth_grant.',
  `target_id` STRING COMMENT 'Identifier of the object the action was applied to; null for organization-wide actions.',
  `ip` STRING COMMENT 'Client IP address of the request; null for actions taken by the platform itself.',
  `user_agent` STRING COMMENT 'User-Agent header of the request; null when the action did not come over HTTP.',
  `success` BOOLEAN NOT NULL COMMENT 'True when the action completed, false when it was denied or failed.',
  `metadata` STRING NOT NULL COMMENT 'Request id, changed fields with old and new values, reason and geolocation as a JSON document.',
  `occurred_at` TIMESTAMP NOT NULL COMMENT 'When the action was performed.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the audit entry row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the audit entry row was last inserted or modified; set to now() by a trigger and used as the export cursor.',
  `_tidemark_delivery_id` STRING NOT NULL COMMENT 'tidemark delivery that loaded this row version.',
  `_tidemark_loaded_at` TIMESTAMP NOT NULL COMMENT 'When COPY INTO loaded this row version.'
) USING DELTA COMMENT 'tidemark audit_log v1 raw history: every delivered row version, append-only. One audited administrative or security-relevant action taken by a user, API key or the platform itself.';

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`audit_log_v1` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the audit entry.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this audit entry; every export is scoped to one organization.',
  `actor_id` STRING COMMENT 'Identity or API key that performed the action; null for actions taken by the platform itself.',
  `actor_type` STRING NOT NULL COMMENT 'Kind of actor: user, api_key, service or system.',
  `action` STRING NOT NULL COMMENT 'Dotted name of the action, such as identity.mfa.disable or oauth.grant.revoke.',
  `target_type` STRING NOT NULL COMMENT 'Kind of object the action was applied to, such as identity, finding or oauth_grant.',
  `target_id` STRING COMMENT 'Identifier of the object the action was applied to; null for organization-wide actions.',
  `ip` STRING COMMENT 'Client IP address of the request; null for actions taken by the platform itself.',
  `user_agent` STRING COMMENT 'User-Agent header of the request; null when the action did not come over HTTP.',
  `success` BOOLEAN NOT NULL COMMENT 'True when the action completed, false when it was denied or failed.',
  `metadata` STRING NOT NULL COMMENT 'Request id, changed fields with old and new values, reason and geolocation as a JSON document.',
  `occurred_at` TIMESTAMP NOT NULL COMMENT 'When the action was performed.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the audit entry row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the audit entry row was last inserted or modified; set to now() by a trigger and used as the export cursor.'
) USING DELTA COMMENT 'tidemark audit_log v1: one row per id, the newest updated_at wins. One audited administrative or security-relevant action taken by a user, API key or the platform itself.';

CREATE VIEW IF NOT EXISTS `<catalog>`.`<schema>`.`audit_log_v1_latest` COMMENT 'tidemark audit_log v1: the newest version of each id in the raw history.' AS
SELECT `id`, `organization_id`, `actor_id`, `actor_type`, `action`, `target_type`, `target_id`, `ip`, `user_agent`, `success`, `metadata`, `occurred_at`, `created_at`, `updated_at`
FROM `<catalog>`.`<schema>`.`audit_log_v1_raw`
QUALIFY ROW_NUMBER() OVER (PARTITION BY `id` ORDER BY `updated_at` DESC, `_tidemark_loaded_at` DESC) = 1;
