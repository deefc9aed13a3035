-- Generated from schemas/identities/v1.json by tidemark; do not edit. Replace <catalog> and
-- <schema>; the DATABRICKS destination runs the same statements itself unless
-- "create_tables" is false. See docs/destinations/databricks.md.

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`identities_v1_raw` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the identity.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this identity; every export is scoped to one organization.',
  `email` STRING NOT NULL COMMENT 'Primary e-mail address of the identity.',
  `display_name` STRING NOT NULL COMMENT 'Display name as provided by the identity provider, in any script.',
  `provider` STRING NOT NULL COMMENT 'Identity provider the identity is synchronized from: okta, azure_ad, google or local.',
  `external_id` STRING NOT NULL COMMENT 'Identifier of the identity in its identity provider.',
  `mfa_enabled` BOOLEAN NOT NULL COMMENT 'True when at least one multi-factor method is enrolled.',
  `roles` ARRAY<STRING> NOT NULL COMMENT 'Platform roles assigned to the identity, such as analyst or admin; empty when none are assigned.',
  `department` STRING COMMENT 'Department reported by the identity provider; null when unknown.',
  `risk_level` SMALLINT NOT NULL COMMENT 'Identity risk level from 0 (low) to 3 (critical) computed by the platform.',
  `disabled` BOOLEAN NOT NULL COMMENT 'True when the identity is deactivated in its provider.',
  `last_login_at` TIMESTAMP COMMENT 'When the identity last signed in; null if it never signed in.',
  `last_login_ip` STRING COMMENT 'IP address of the last sign-in; null if unknown.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the identity row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the identity row was last inserted or modified; set to now() by a trigger and used as the export cursor.',
  `_tidemark_delivery_id` STRING NOT NULL COMMENT 'tidemark delivery that loaded this row version.',
  `_tidemark_loaded_at` TIMESTAMP NOT NULL COMMENT 'When COPY INTO loaded this row version.'
) USING DELTA COMMENT 'tidemark identities v1 raw history: every delivered row version, append-only. One human or machine identity of an organization, synchronized from its identity provider.';

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`identities_v1` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the identity.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this identity; every export is scoped to one organization.',
  `email` STRING NOT NULL COMMENT 'Primary e-mail address of the identity.',
  `display_name` STRING NOT NULL COMMENT 'Display name as provided by the identity provider, in any script.',
  `provider` STRING NOT NULL COMMENT 'Identity provider the identity is synchronized from: okta, azure_ad, google or local.',
  `external_id` STRING NOT NULL COMMENT 'Identifier of the identity in its identity provider.',
  `mfa_enabled` BOOLEAN NOT NULL COMMENT 'True when at least one multi-factor method is enrolled.',
  `roles` ARRAY<STRING> NOT NULL COMMENT 'Platform roles assigned to the identity, such as analyst or admin; empty when none are assigned.',
  `department` STRING COMMENT 'Department reported by the identity provider; null when unknown.',
  `risk_level` SMALLINT NOT NULL COMMENT 'Identity risk level from 0 (low) to 3 (critical) computed by the platform.',
  `disabled` BOOLEAN NOT NULL COMMENT 'True when the identity is deactivated in its provider.',
  `last_login_at` TIMESTAMP COMMENT 'When the identity last signed in; null if it never signed in.',
  `last_login_ip` STRING COMMENT 'IP address of the last sign-in; null if unknown.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the identity row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the identity row was last inserted or modified; set to now() by a trigger and used as the export cursor.'
) USING DELTA COMMENT 'tidemark identities v1: one row per id, the newest updated_at wins. One human or machine identity of an organization, synchronized from its identity provider.';

CREATE VIEW IF NOT EXISTS `<catalog>`.`<schema>`.`identities_v1_latest` COMMENT 'tidemark identities v1: the newest version of each id in the raw history.' AS
SELECT `id`, `organization_id`, `email`, `display_name`, `provider`, `external_id`, `mfa_enabled`, `roles`, `department`, `risk_level`, `disabled`, `last_login_at`, `last_login_ip`, `created_at`, `updated_at`
FROM `<catalog>`.`<schema>`.`identities_v1_raw`
QUALIFY ROW_NUMBER() OVER (PARTITION BY `id` ORDER BY `updated_at` DESC, `_tidemark_loaded_at` DESC) = 1;
