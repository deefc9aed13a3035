-- Generated from schemas/assets/v1.json by tidemark; do not edit. Replace <catalog> and
-- <schema>; the DATABRICKS destination runs the same statements itself unless
-- "create_tables" is false. See docs/destinations/databricks.md.

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`assets_v1_raw` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the asset.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this asset; every export is scoped to one organization.',
  `hostname` STRING NOT NULL COMMENT 'Hostname or resource name of the asset.',
  `asset_type` STRING NOT NULL COMMENT 'Kind of asset: server, laptop, container, cloud_vm, network_device or database.',
  `ip` STRING COMMENT 'Primary IP address of the asset, with its interface prefix length when known; null when unknown.',
  `os` STRING NOT NULL COMMENT 'Operating system family, such as Ubuntu, Windows Server or macOS.',
  `os_version` STRING COMMENT 'Operating system version string; null when the sensor could not determine it.',
  `owner_identity_id` STRING COMMENT 'Identity responsible for the asset (identities.id of the same organization); null when unassigned.',
  `criticality` SMALLINT NOT NULL COMMENT 'Business criticality from 1 (low) to 5 (crown jewel).',
  `internet_exposed` BOOLEAN NOT NULL COMMENT 'True when the asset is reachable from the public internet.',
  `tags` ARRAY<STRING> NOT NULL COMMENT 'Labels attached to the asset, such as environment or compliance scope; empty when none.',
  `first_seen` DATE NOT NULL COMMENT 'Calendar day (UTC) on which the asset was first discovered.',
  `last_seen_at` TIMESTAMP COMMENT 'When a sensor or scanner last reported the asset; null if only imported.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the asset row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the asset row was last inserted or modified; set to now() by a trigger and used as the export cursor.',
  `_tidemark_delivery_id` STRING NOT NULL COMMENT 'tidemark delivery that loaded this row version.',
  `_tidemark_loaded_at` TIMESTAMP NOT NULL COMMENT 'When COPY INTO loaded this row version.'
) USING DELTA COMMENT 'tidemark assets v1 raw history: every delivered row version, append-only. One device, server, container or cloud resource of an organization discovered by sensors or scanners.';

CREATE TABLE IF NOT EXISTS `<catalog>`.`<schema>`.`assets_v1` (
  `id` STRING NOT NULL COMMENT 'Unique identifier of the asset.',
  `organization_id` STRING NOT NULL COMMENT 'Tenant organization that owns this asset; every export is scoped to one organization.',
  `hostname` STRING NOT NULL COMMENT 'Hostname or resource name of the asset.',
  `asset_type` STRING NOT NULL COMMENT 'Kind of asset: server, laptop, container, cloud_vm, network_device or database.',
  `ip` STRING COMMENT 'Primary IP address of the asset, with its interface prefix length when known; null when unknown.',
  `os` STRING NOT NULL COMMENT 'Operating system family, such as Ubuntu, Windows Server or macOS.',
  `os_version` STRING COMMENT 'Operating system version string; null when the sensor could not determine it.',
  `owner_identity_id` STRING COMMENT 'Identity responsible for the asset (identities.id of the same organization); null when unassigned.',
  `criticality` SMALLINT NOT NULL COMMENT 'Business criticality from 1 (low) to 5 (crown jewel).',
  `internet_exposed` BOOLEAN NOT NULL COMMENT 'True when the asset is reachable from the public internet.',
  `tags` ARRAY<STRING> NOT NULL COMMENT 'Labels attached to the asset, such as environment or compliance scope; empty when none.',
  `first_seen` DATE NOT NULL COMMENT 'Calendar day (UTC) on which the asset was first discovered.',
  `last_seen_at` TIMESTAMP COMMENT 'When a sensor or scanner last reported the asset; null if only imported.',
  `created_at` TIMESTAMP NOT NULL COMMENT 'When the asset row was first inserted into the platform database.',
  `updated_at` TIMESTAMP NOT NULL COMMENT 'When the asset row was last inserted or modified; set to now() by a trigger and used as the export cursor.'
) USING DELTA COMMENT 'tidemark assets v1: one row per id, the newest updated_at wins. One device, server, container or cloud resource of an organization discovered by sensors or scanners.';

CREATE VIEW IF NOT EXISTS `<catalog>`.`<schema>`.`assets_v1_latest` COMMENT 'tidemark assets v1: the newest version of each id in the raw history.' AS
SELECT `id`, `organization_id`, `hostname`, `asset_type`, `ip`, `os`, `os_version`, `owner_identity_id`, `criticality`, `internet_exposed`, `tags`, `first_seen`, `last_seen_at`, `created_at`, `updated_at`
FROM `<catalog>`.`<schema>`.`assets_v1_raw`
QUALIFY ROW_NUMBER() OVER (PARTITION BY `id` ORDER BY `updated_at` DESC, `_tidemark_loaded_at` DESC) = 1;
