-- Generated from schemas/oauth_grants/v1.json by tidemark; do not edit. Replace <catalog> and
-- <schema>; the DATABRICKS destination runs the same statements itself unless
-- "create_tables" is false. See docs/destinations/databricks.md.

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`oauth_grants_v1_raw` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the grant.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this OAuth grant; every export is scoped to one organization.',
  `identity_id` STRING NOT NULL COMMENT 'Identity that granted access (identities.id of the same organization).',
  `client_id` STRING NOT NULL COMMENT 'OAuth client identifier of the third-party application.',
  `client_name` STRING NOT NULL COMMENT 'Display name of the third-party application as registered by its publisher.',
  `scopes` ARRAY<STRING> NOT NULL COMMENT 'OAuth scopes granted, such as repo or admin:org; empty when only sign-in was granted.',
  `granted_at` TIMESTAMP NOT NULL COMMENT 'When the identity granted access.',
  `expires_at` TIMESTAMP COMMENT 'When the grant expires; null for grants that do not expire.',
  `revoked` BOOLEAN NOT NULL COMMENT 'True when the grant has been revoked.',
  `revoked_at` TIMESTAMP COMMENT 'When the grant was revoked; null while it is active.',
  `last_used_at` TIMESTAMP COMMENT 'When the client last used the grant; null if it was never used.',
  `use_count` BIGINT NOT NULL COMMENT 'Number of API calls the client made with the grant.',
  `grant_ip` STRING COMMENT 'IP address from which the grant was approved; null when the identity provider did not report it.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the OAuth grant row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the OAuth grant row was last inserted or modified; set to now() by a trigger and used as the export cursor.',
  `_tidemark_delivery_id` STRING NOT NULL COMMENT 'tidemark delivery that loaded this row version.',
  `_tidemark_loaded_at` TIMESTAMP NOT NULL COMMENT 'When COPY INTO loaded this row version.'
) USING DELTA COMMENT 'tidemark oauth_grants v1 raw history: every delivered row version, append-only. One OAuth authorization an identity granted to a third-party client application, with its scopes and lifecycle.';

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`oauth_grants_v1` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the grant.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this OAuth grant; every export is scoped to one organization.',
  `identity_id` STRING NOT NULL COMMENT 'Identity that granted access (identities.id of the same organization).',
  `client_id` STRING NOT NULL COMMENT 'OAuth client identifier of the third-party application.',
  `client_name` STRING NOT NULL COMMENT 'Display name of the third-party application as registered by its publisher.',
  `scopes` ARRAY<STRING> NOT NULL COMMENT 'OAuth scopes granted, such as repo or admin:org; empty when only sign-in was granted.',
  `granted_at` TIMESTAMP NOT NULL COMMENT 'When the identity granted access.',
  `expires_at` TIMESTAMP COMMENT 'When the grant expires; null for grants that do not expire.',
  `revoked` BOOLEAN NOT NULL COMMENT 'True when the grant has been revoked.',
  `revoked_at` TIMESTAMP COMMENT 'When the grant was revoked; null while it is active.',
  `last_used_at` TIMESTAMP COMMENT 'When the client last used the grant; null if it was never used.',
  `use_count` BIGINT NOT NULL COMMENT 'Number of API calls the client made with the grant.',
  `grant_ip` STRING COMMENT 'IP address from which the grant was approved; null when the identity provider did not report it.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the OAuth grant row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the OAuth grant row was last inserted or modified; set to now() by a trigger and used as the export cursor.'
) USING DELTA COMMENT 'tidemark oauth_grants v1: one row per id, the newest updated_at wins. One OAuth authorization an identity granted to a third-party client application, with its scopes and lifecycle.';

CREATE VIEW IF NOT EXISTS `<catalog>`.`<schema>`.`oauth_grants_v1_latest` COMMENT 'tidemark oauth_grants v1: the newest version of each id in the raw history.' AS
SELECT `id`, `organization_id`, `identity_id`, `client_id`, `client_name`, `scopes`, `granted_at`, `expires_at`, `revoked`, `revoked_at`, `last_used_at`, `use_count`, `grant_ip`, `created_at`, `updated_at`
FROM `<catalog>`.`<schema>`.`oauth_grants_v1_raw`
QUALIFY ROW_NUMBER() OVER (PARTITION BY `id` ORDER BY `updated_at` DESC, `_tidemark_loaded_at` DESC) = 1;
