-- tidemark reference application schema.
--
-- This is NOT tidemark's control plane: it is a stand-in for the *application's* hot Postgres
-- (a security platform) that tidemark exports from. The demo, the tests and the benchmarks load
-- it into a fresh database, fill it with `tidemark_ref_generate(...)` (generate.sql) and export it.
--
-- Contract: each of the ten hot tables below matches schemas/<table>/v1.json column by column
-- (same order, names, types and nullability). Every hot table has
--   * `id uuid` primary key first and `organization_id uuid NOT NULL` (FK to organizations) second,
--   * `created_at` / `updated_at timestamptz NOT NULL` last,
--   * a BEFORE INSERT OR UPDATE trigger that sets `updated_at := now()` (transaction start time,
--     which is exactly what makes a long-running transaction commit rows "in the past"),
--   * an index on (updated_at, id) for the export cursor and one on (organization_id, updated_at, id)
--     for per-organization windows.
-- Run once on an empty database; needs no extension (gen_random_uuid() is built into Postgres 13+
-- and is only a column default for hand-written inserts; the generator never relies on it).

CREATE OR REPLACE FUNCTION tidemark_ref_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- Tenants. data_retention_days drives cold-storage tombstoning; NULL means keep forever.
CREATE TABLE organizations (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                text NOT NULL,
    data_retention_days integer,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER organizations_touch_updated_at BEFORE INSERT OR UPDATE ON organizations
    FOR EACH ROW EXECUTE FUNCTION tidemark_ref_touch_updated_at();

-- One security event ingested from a sensor or integration, normalized to a common envelope with the raw vendor payload attached.
CREATE TABLE events (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id),
    source          text NOT NULL,
    event_type      text NOT NULL,
    severity        smallint NOT NULL,
    actor_ip        inet,
    identity_id     uuid,
    asset_id        uuid,
    tags            text[] NOT NULL,
    payload         jsonb NOT NULL,
    risk_score      numeric(6,2),
    occurred_at     timestamptz NOT NULL,
    bytes_in        bigint,
    clock_skew_ms   integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX events_updated_at_id_idx ON events (updated_at, id);
CREATE INDEX events_org_updated_at_id_idx ON events (organization_id, updated_at, id);
CREATE TRIGGER events_touch_updated_at BEFORE INSERT OR UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION tidemark_ref_touch_updated_at();

-- One finding raised by a detection rule against an organization's assets or identities, tracked from open to resolution.
CREATE TABLE findings (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id),
    rule_id         uuid NOT NULL,
    event_id        uuid,
    asset_id        uuid,
    identity_id     uuid,
    title           text NOT NULL,
    severity        smallint NOT NULL,
    status          text NOT NULL,
    cvss            numeric(3,1),
    escalated       boolean NOT NULL,
    details         jsonb NOT NULL,
    resolved_at     timestamptz,
    due_on          date,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX findings_updated_at_id_idx ON findings (updated_at, id);
CREATE INDEX findings_org_updated_at_id_idx ON findings (organization_id, updated_at, id);
CREATE TRIGGER findings_touch_updated_at BEFORE INSERT OR UPDATE ON findings
    FOR EACH ROW EXECUTE FUNCTION tidemark_ref_touch_updated_at();

-- One execution of a detection rule for an organization, with its outcome, cost and match count.
CREATE TABLE rule_runs (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id),
    rule_id         uuid NOT NULL,
    rule_version    integer NOT NULL,
    trigger_kind    text NOT NULL,
    status          text NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    duration_ms     integer,
    matched_count   bigint NOT NULL,
    scanned_rows    bigint NOT NULL,
    cpu_seconds     numeric(12,3),
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX rule_runs_updated_at_id_idx ON rule_runs (updated_at, id);
CREATE INDEX rule_runs_org_updated_at_id_idx ON rule_runs (organization_id, updated_at, id);
CREATE TRIGGER rule_runs_touch_updated_at BEFORE INSERT OR UPDATE ON rule_runs
    FOR EACH ROW EXECUTE FUNCTION tidemark_ref_touch_updated_at();

-- One attempt to forward a batch of events to a customer SIEM, with the HTTP outcome and cost.
CREATE TABLE siem_deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id),
    event_id        uuid,
    target          text NOT NULL,
    endpoint        text NOT NULL,
    attempt         smallint NOT NULL,
    http_status     integer,
    latency_ms      double precision,
    delivered       boolean NOT NULL,
    batch_size      integer NOT NULL,
    payload_bytes   bigint NOT NULL,
    ingest_cost_usd numeric(24,9),
    response        jsonb,
    next_retry_at   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX siem_deliveries_updated_at_id_idx ON siem_deliveries (updated_at, id);
CREATE INDEX siem_deliveries_org_updated_at_id_idx ON siem_deliveries (organization_id, updated_at, id);
CREATE TRIGGER siem_deliveries_touch_updated_at BEFORE INSERT OR UPDATE ON siem_deliveries
    FOR EACH ROW EXECUTE FUNCTION tidemark_ref_touch_updated_at();

-- One attempt to push a finding into a customer workflow tool such as Jira, ServiceNow, Slack or PagerDuty.
CREATE TABLE workflow_deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id),
    finding_id      uuid,
    workflow        text NOT NULL,
    action          text NOT NULL,
    attempt         smallint NOT NULL,
    http_status     integer,
    latency_ms      double precision,
    delivered       boolean NOT NULL,
    external_ref    text,
    request         jsonb NOT NULL,
    response        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX workflow_deliveries_updated_at_id_idx ON workflow_deliveries (updated_at, id);
CREATE INDEX workflow_deliveries_org_updated_at_id_idx ON workflow_deliveries (organization_id, updated_at, id);
CREATE TRIGGER workflow_deliveries_touch_updated_at BEFORE INSERT OR UPDATE ON workflow_deliveries
    FOR EACH ROW EXECUTE FUNCTION tidemark_ref_touch_updated_at();

-- One audited administrative or security-relevant action taken by a user, API key or the platform itself.
CREATE TABLE audit_log (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id),
    actor_id        uuid,
    actor_type      text NOT NULL,
    action          text NOT NULL,
    target_type     text NOT NULL,
    target_id       uuid,
    ip              inet,
    user_agent      text,
    success         boolean NOT NULL,
    metadata        jsonb NOT NULL,
    occurred_at     timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_log_updated_at_id_idx ON audit_log (updated_at, id);
CREATE INDEX audit_log_org_updated_at_id_idx ON audit_log (organization_id, updated_at, id);
CREATE TRIGGER audit_log_touch_updated_at BEFORE INSERT OR UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION tidemark_ref_touch_updated_at();

-- One OAuth authorization an identity granted to a third-party client application, with its scopes and lifecycle.
CREATE TABLE oauth_grants (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id),
    identity_id     uuid NOT NULL,
    client_id       text NOT NULL,
    client_name     text NOT NULL,
    scopes          text[] NOT NULL,
    granted_at      timestamptz NOT NULL,
    expires_at      timestamptz,
    revoked         boolean NOT NULL,
    revoked_at      timestamptz,
    last_used_at    timestamptz,
    use_count       bigint NOT NULL,
    grant_ip        inet,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX oauth_grants_updated_at_id_idx ON oauth_grants (updated_at, id);
CREATE INDEX oauth_grants_org_updated_at_id_idx ON oauth_grants (organization_id, updated_at, id);
CREATE TRIGGER oauth_grants_touch_updated_at BEFORE INSERT OR UPDATE ON oauth_grants
    FOR EACH ROW EXECUTE FUNCTION tidemark_ref_touch_updated_at();

-- One human or machine identity of an organization, synchronized from its identity provider.
CREATE TABLE identities (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id),
    email           text NOT NULL,
    display_name    text NOT NULL,
    provider        text NOT NULL,
    external_id     text NOT NULL,
    mfa_enabled     boolean NOT NULL,
    roles           text[] NOT NULL,
    department      text,
    risk_level      smallint NOT NULL,
    disabled        boolean NOT NULL,
    last_login_at   timestamptz,
    last_login_ip   inet,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX identities_updated_at_id_idx ON identities (updated_at, id);
CREATE INDEX identities_org_updated_at_id_idx ON identities (organization_id, updated_at, id);
CREATE TRIGGER identities_touch_updated_at BEFORE INSERT OR UPDATE ON identities
    FOR EACH ROW EXECUTE FUNCTION tidemark_ref_touch_updated_at();

-- One device, server, container or cloud resource of an organization discovered by sensors or scanners.
CREATE TABLE assets (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id   uuid NOT NULL REFERENCES organizations (id),
    hostname          text NOT NULL,
    asset_type        text NOT NULL,
    ip                inet,
    os                text NOT NULL,
    os_version        text,
    owner_identity_id uuid,
    criticality       smallint NOT NULL,
    internet_exposed  boolean NOT NULL,
    tags              text[] NOT NULL,
    first_seen        date NOT NULL,
    last_seen_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX assets_updated_at_id_idx ON assets (updated_at, id);
CREATE INDEX assets_org_updated_at_id_idx ON assets (organization_id, updated_at, id);
CREATE TRIGGER assets_touch_updated_at BEFORE INSERT OR UPDATE ON assets
    FOR EACH ROW EXECUTE FUNCTION tidemark_ref_touch_updated_at();

-- One measurement of a compliance control for an organization or asset against a security baseline framework.
CREATE TABLE baseline_scores (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id),
    asset_id        uuid,
    framework       text NOT NULL,
    control_id      text NOT NULL,
    control_title   text NOT NULL,
    score           numeric(5,2) NOT NULL,
    score_delta     numeric(6,2),
    passed          boolean NOT NULL,
    weight          double precision NOT NULL,
    measured_on     date NOT NULL,
    evidence        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX baseline_scores_updated_at_id_idx ON baseline_scores (updated_at, id);
CREATE INDEX baseline_scores_org_updated_at_id_idx ON baseline_scores (organization_id, updated_at, id);
CREATE TRIGGER baseline_scores_touch_updated_at BEFORE INSERT OR UPDATE ON baseline_scores
    FOR EACH ROW EXECUTE FUNCTION tidemark_ref_touch_updated_at();

