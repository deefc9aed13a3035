-- tidemark reference data generator: deterministic synthetic data for the reference schema
-- (schema.sql). Load schema.sql first, then this file, then:
--
--     SELECT tidemark_ref_generate(p_seed, p_orgs, p_rows, p_days, p_end [, p_only_events]);
--
-- p_only_events (default false) writes organizations and events only: the other tables' row
-- counts still shape the references events carry (identity_id, asset_id), so the events rows are
-- byte-identical to a full run; used by the large benchmarks, where the other tables would only
-- take disk.
--
-- Determinism: every value is a pure function of (p_seed, p_orgs, p_rows, p_days, p_end, table,
-- row number). uuids are md5(...)::uuid, everything else comes from hashint8extended() (the
-- platform-independent integer hash Postgres uses for hash partitioning) and float arithmetic;
-- random(), now() and gen_random_uuid() are never used for data. The same
-- arguments give byte-identical tables (run on an empty database, or at least with no rows of the
-- same seed already present: ids depend on the seed, so different seeds can share a database).
--
-- Needs superuser: the function runs with session_replication_role = replica (a function-level
-- SET, restored on exit) so that the tidemark_ref_touch_updated_at() triggers, which would stamp
-- now() on every row, do not fire and the generated historical updated_at values stick. That also
-- disables the organization_id foreign-key triggers during the load; the generator inserts the
-- organizations first and only references them.
--
-- Time model, shared by every table: the rows of a table are spread over [p_end - p_days, p_end)
-- in row-number order with jitter (physical order correlates with updated_at, as in a real
-- append-mostly table). Rows come in chunks of 50: 30% of the chunks start with a burst of 5..50
-- rows sharing one identical updated_at, and half of those bursts sit exactly on a 15-minute
-- boundary (hh:00/15/30/45:00.000000). Of the other rows 2% are exactly on a boundary and 1% one
-- microsecond before one (hh:14:59.999999). created_at <= updated_at, both inside the range.
--
-- Organizations: p_orgs tenants with linearly skewed weights (org 1 gets p_orgs shares, org n
-- gets 1), interleaved over a cycle of p_orgs*(p_orgs+1)/2 rows, so every table is spread over
-- all organizations once it has more rows than that cycle. References between tables (asset,
-- identity, triggering event, finding) always point to a generated row of the same organization;
-- references to events and findings point to a row whose updated_at is not later than the
-- referencing row's created_at.

-- ---------------------------------------------------------------------------------------------
-- Helpers. All are single-expression IMMUTABLE SQL functions so the planner inlines them.
-- ---------------------------------------------------------------------------------------------

-- Non-negative 63-bit hash of (i, salt).
CREATE OR REPLACE FUNCTION tidemark_ref_h(p_i bigint, p_salt bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT hashint8extended(p_i, p_salt) & 9223372036854775807 $$;

-- Uniform integer in [0, p_m).
CREATE OR REPLACE FUNCTION tidemark_ref_mod(p_i bigint, p_salt bigint, p_m bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (hashint8extended(p_i, p_salt) & 9223372036854775807) % p_m $$;

-- Uniform float in [0, 1) with 53 random bits.
CREATE OR REPLACE FUNCTION tidemark_ref_unit(p_i bigint, p_salt bigint) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (hashint8extended(p_i, p_salt) & 9007199254740991)::float8 / 9007199254740992::float8 $$;

-- Log-uniform float in [p_lo, p_hi): heavy-tailed durations, sizes and latencies.
CREATE OR REPLACE FUNCTION tidemark_ref_logu(p_i bigint, p_salt bigint, p_lo float8, p_hi float8)
RETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT p_lo * exp(ln(p_hi / p_lo)
              * ((hashint8extended(p_i, p_salt) & 9007199254740991)::float8 / 9007199254740992::float8)) $$;

-- One element of a (constant) array.
CREATE OR REPLACE FUNCTION tidemark_ref_pick(p_arr anyarray, p_i bigint, p_salt bigint)
RETURNS anyelement LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT p_arr[1 + (hashint8extended(p_i, p_salt) & 9223372036854775807) % cardinality(p_arr)] $$;

-- A contiguous slice of 0..p_max elements of a (constant) array; 0 elements gives '{}'.
CREATE OR REPLACE FUNCTION tidemark_ref_slice(p_arr anyarray, p_from bigint, p_len bigint)
RETURNS anyarray LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT p_arr[p_from : p_from + p_len - 1] $$;

-- Deterministic uuid of row p_i of p_tag (NULL when p_i is NULL).
CREATE OR REPLACE FUNCTION tidemark_ref_uuid(p_seed int, p_tag text, p_i bigint) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT md5(p_seed::text || ':' || p_tag || ':' || p_i::text)::uuid $$;

-- Microsecond offset of fractional row position p_x when p_n rows are spread over p_range µs.
CREATE OR REPLACE FUNCTION tidemark_ref_slot(p_x float8, p_n bigint, p_range bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT floor(p_x / p_n::float8 * p_range::float8)::bigint % p_range $$;

-- Offset p_off rounded down to a 15-minute boundary of the epoch (p_s0 = range start in epoch µs),
-- minus p_d µs, never below 0.
CREATE OR REPLACE FUNCTION tidemark_ref_align(p_off bigint, p_s0 bigint, p_d bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT GREATEST(0::bigint,
                      floor((p_off + p_s0)::float8 / 900000000::float8)::bigint * 900000000 - p_s0 - p_d) $$;

-- updated_at offset (µs from the range start) of 0-based row p_r of a table of p_n rows.
-- Invariant used by references: the result is <= (p_r + 51) / p_n * p_range.
CREATE OR REPLACE FUNCTION tidemark_ref_t(p_salt bigint, p_r bigint, p_n bigint, p_range bigint, p_s0 bigint)
RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE
    WHEN tidemark_ref_mod(p_r / 50, p_salt, 100) < 30
     AND p_r % 50 < 5 + tidemark_ref_mod(p_r / 50, p_salt + 1, 46) THEN
        CASE tidemark_ref_mod(p_r / 50, p_salt + 2, 2)
        WHEN 0 THEN tidemark_ref_align(
            tidemark_ref_slot((p_r / 50 * 50)::float8 + 50 * tidemark_ref_unit(p_r / 50, p_salt + 3), p_n, p_range),
            p_s0, 0)
        ELSE tidemark_ref_slot((p_r / 50 * 50)::float8 + 50 * tidemark_ref_unit(p_r / 50, p_salt + 3), p_n, p_range)
        END
    ELSE
        CASE tidemark_ref_mod(p_r, p_salt + 4, 100)
        WHEN 0 THEN tidemark_ref_align(
            tidemark_ref_slot(p_r + 20 * tidemark_ref_unit(p_r, p_salt + 5), p_n, p_range), p_s0, 0)
        WHEN 1 THEN tidemark_ref_align(
            tidemark_ref_slot(p_r + 20 * tidemark_ref_unit(p_r, p_salt + 5), p_n, p_range), p_s0, 0)
        WHEN 2 THEN tidemark_ref_align(
            tidemark_ref_slot(p_r + 20 * tidemark_ref_unit(p_r, p_salt + 5), p_n, p_range), p_s0, 1)
        ELSE tidemark_ref_slot(p_r + 20 * tidemark_ref_unit(p_r, p_salt + 5), p_n, p_range)
        END
    END $$;

-- A random row of the same organization in a table of p_n rows, given p_p, the organization's
-- (randomly chosen) position in the organization cycle of length p_w, and p_p0, its first
-- position, used when p_p is beyond a small table. NULL when the organization has no row there.
CREATE OR REPLACE FUNCTION tidemark_ref_row_any(p_p bigint, p_p0 bigint, p_n bigint, p_w bigint, p_h bigint)
RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN p_p < p_n THEN p_p + p_w * (p_h % ((p_n - 1 - p_p) / p_w + 1))
                  WHEN p_p0 < p_n THEN p_p0 + p_w * (p_h % ((p_n - 1 - p_p0) / p_w + 1)) END $$;

-- A row of the same organization at or before row p_r0 (a row whose updated_at is known not to be
-- later than some instant), p_back cycles further back at most. NULL when there is none.
CREATE OR REPLACE FUNCTION tidemark_ref_row_before(p_p bigint, p_p0 bigint, p_r0 bigint, p_w bigint, p_back bigint)
RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN p_r0 >= p_p THEN p_p + p_w * GREATEST(0::bigint, (p_r0 - p_p) / p_w - p_back)
                  WHEN p_r0 >= p_p0 THEN p_p0 + p_w * GREATEST(0::bigint, (p_r0 - p_p0) / p_w - p_back) END $$;

-- inet from a bucket p_m in [0, 100) and a hash p_h: IPv4 and IPv6 hosts, hosts with an interface
-- prefix length, and networks; NULL for p_m < p_null_pct.
CREATE OR REPLACE FUNCTION tidemark_ref_inet(p_m bigint, p_h bigint, p_null_pct int) RETURNS inet
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE
    WHEN p_m < p_null_pct THEN NULL
    WHEN p_m < 45 THEN '10.0.0.0'::inet + p_h % 16777216
    WHEN p_m < 65 THEN '11.0.0.0'::inet + p_h % 3288334336
    WHEN p_m < 80 THEN '2001:db8::'::inet + p_h % 281474976710656
    WHEN p_m < 85 THEN 'fd12:3456:789a:1::'::inet + p_h % 4294967296
    WHEN p_m < 90 THEN set_masklen('192.168.0.0'::inet + p_h % 65536, 24)
    WHEN p_m < 93 THEN ('{10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,192.168.1.0/24,100.64.0.0/10,203.0.113.0/24}'::inet[])[1 + p_h % 6]
    WHEN p_m < 97 THEN set_masklen('2001:db8:abcd:12::'::inet + p_h % 65536, 64)
    ELSE ('{2001:db8::/32,2001:db8:abcd::/48,fe80::/10,fd00::/8,::1/128,::ffff:198.51.100.7/128}'::inet[])[1 + p_h % 6]
    END $$;

-- ---------------------------------------------------------------------------------------------
-- The generator.
-- ---------------------------------------------------------------------------------------------
DROP FUNCTION IF EXISTS tidemark_ref_generate(int, int, bigint, int, timestamptz);
CREATE OR REPLACE FUNCTION tidemark_ref_generate(
    p_seed int, p_orgs int, p_rows bigint, p_days int, p_end timestamptz,
    p_only_events boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SET session_replication_role = replica
AS $fn$
DECLARE
    v_start  timestamptz;
    v_range  bigint;                                -- µs in [v_start, p_end)
    v_s0     bigint;                                -- v_start in epoch µs
    v_w      bigint;                                -- organization cycle length
    v_stride bigint;                                -- interleaving stride, coprime to v_w
    v_org_of int[];                                 -- cycle position -> organization number
    v_pos    bigint[];                              -- block slot -> cycle position
    v_lo     bigint[];                              -- organization -> first block slot
    v_wt     bigint[];                              -- organization -> weight (block slots)
    v_first  bigint[];                              -- organization -> its first cycle position
    v_org    uuid[];                                -- organization number -> id
    v_b      bigint := p_seed::bigint * 100000;     -- salt base; table t uses v_b + t * 1000 + field
    v_risk   bigint;                                -- salt of the "risky identity" trait
    n_ev bigint; n_fi bigint; n_rr bigint; n_sd bigint; n_wd bigint;
    n_al bigint; n_og bigint; n_id bigint; n_as bigint; n_bs bigint;
    v_back_ev bigint; v_back_fi bigint;
    v_t0 timestamptz := clock_timestamp();
BEGIN
    IF p_seed IS NULL OR p_orgs IS NULL OR p_only_events IS NULL OR p_rows IS NULL OR p_days IS NULL OR p_end IS NULL THEN
        RAISE EXCEPTION 'tidemark_ref_generate: arguments must not be NULL';
    END IF;
    IF p_orgs < 1 OR p_orgs > 2000 THEN
        RAISE EXCEPTION 'tidemark_ref_generate: p_orgs must be in 1..2000, got %', p_orgs;
    END IF;
    IF p_days < 1 OR p_days > 36500 THEN
        RAISE EXCEPTION 'tidemark_ref_generate: p_days must be in 1..36500, got %', p_days;
    END IF;
    IF p_rows < 0 THEN
        RAISE EXCEPTION 'tidemark_ref_generate: p_rows must be >= 0, got %', p_rows;
    END IF;
    IF current_setting('session_replication_role') <> 'replica' THEN
        RAISE EXCEPTION 'tidemark_ref_generate: session_replication_role is not replica';
    END IF;

    v_start := p_end - make_interval(days => p_days);
    v_range := p_days::bigint * 86400000000;
    v_s0    := (extract(epoch FROM v_start) * 1000000)::bigint;
    v_risk  := v_b + 99000;

    -- Row counts.
    n_ev := p_rows;
    n_fi := CASE WHEN p_rows > 0 THEN GREATEST(1, p_rows / 10) ELSE 0 END;
    n_rr := CASE WHEN p_rows > 0 THEN GREATEST(1, p_rows / 20) ELSE 0 END;
    n_sd := CASE WHEN p_rows > 0 THEN GREATEST(1, p_rows / 50) ELSE 0 END;
    n_wd := n_sd; n_al := n_sd; n_og := n_sd; n_id := n_sd; n_as := n_sd; n_bs := n_sd;

    -- Organization cycle: organization k owns p_orgs - k + 1 consecutive block slots of a cycle of
    -- v_w; cycle position p maps to block slot (p * v_stride) % v_w, which interleaves them.
    v_w := p_orgs::bigint * (p_orgs + 1) / 2;
    v_stride := GREATEST(1, round(v_w * 0.6180339887)::bigint);
    WHILE gcd(v_stride, v_w) <> 1 LOOP
        v_stride := v_stride + 1;
    END LOOP;
    SELECT array_agg((k - 1)::bigint * p_orgs - (k - 1)::bigint * (k - 2) / 2 ORDER BY k),
           array_agg((p_orgs - k + 1)::bigint ORDER BY k),
           array_agg(md5(p_seed::text || ':org:' || k::text)::uuid ORDER BY k)
      INTO v_lo, v_wt, v_org
      FROM generate_series(1, p_orgs) AS k;
    SELECT array_agg(b.k ORDER BY c.p), array_agg(c.p ORDER BY b.q)
      INTO v_org_of, v_pos
      FROM (SELECT k, q
              FROM generate_series(1, p_orgs) AS k,
                   LATERAL generate_series(v_lo[k], v_lo[k] + v_wt[k] - 1) AS q) AS b
      JOIN (SELECT p, (p * v_stride) % v_w AS q FROM generate_series(0::bigint, v_w - 1) AS p) AS c
        ON c.q = b.q;
    SELECT array_agg(f ORDER BY k) INTO v_first
      FROM (SELECT v_org_of[p + 1] AS k, min(p) AS f
              FROM generate_series(0::bigint, v_w - 1) AS p GROUP BY 1) AS m;

    v_back_ev := GREATEST(0, n_ev / v_w / 50);
    v_back_fi := GREATEST(0, n_fi / v_w / 50);

    -- organizations ----------------------------------------------------------------------------
    INSERT INTO organizations (id, name, data_retention_days, created_at, updated_at)
    SELECT v_org[k],
           ('{Acme Corp,Ørsted Security,東京セキュリティ株式会社,Müller & Söhne GmbH,Globex,Café Société SA,'
            'Initech,Ελληνική Άμυνα ΑΕ,Nordlys AS,Zürich Cyber AG,Sinaí Labs 🚀,Umbrella Health}'::text[])[1 + (k - 1) % 12]
             || CASE WHEN k > 12 THEN ' ' || ((k - 1) / 12 + 1)::text ELSE '' END,
           ('{90,NULL,30,365,7,NULL,180,1}'::int[])[1 + (k - 1) % 8],
           v_start - make_interval(days => 400 + k * 7),
           v_start - make_interval(days => k % 30, hours => k % 24)
      FROM generate_series(1, p_orgs) AS k;

    IF p_rows = 0 THEN
        RETURN;
    END IF;

    -- identities (table 8) ----------------------------------------------------------------------
    IF NOT p_only_events THEN
    INSERT INTO identities (id, organization_id, email, display_name, provider, external_id,
                            mfa_enabled, roles, department, risk_level, disabled, last_login_at,
                            last_login_ip, created_at, updated_at)
    SELECT tidemark_ref_uuid(p_seed, 'identities', r),
           v_org[k],
           ('{jose.alvarez,zoe.mueller,lukasz.wisniewski,taro.yamada,ivan.petrov,ana.nunez,'
            'soren.kierkegaard,mohammed.ali,an.nguyen,siobhan.obrien,juergen.gross,chloe.dubois,'
            'wei.li,ayse.yilmaz,priya.raghunathan,deploy-bot}'::text[])[1 + nm]
             || '.' || r::text || '@org' || k::text || '.example.com',
           ('{José Álvarez,Zoë Müller,Łukasz Wiśniewski,山田 太郎,Иван Петров,Ana Núñez,Søren Kierkegård,'
            'محمد علي,Nguyễn Văn An,Siobhán O''Brien,Jürgen Groß,Chloé Dubois,李伟,Ayşe Yılmaz,'
            'Priya Raghunathan,🤖 Deploy Bot}'::text[])[1 + nm],
           ('{okta,okta,okta,okta,azure_ad,azure_ad,azure_ad,google,google,local}'::text[])[1 + pv],
           CASE WHEN pv < 4 THEN '00u' || lpad(to_hex(tidemark_ref_h(r, v_b + 8010) % 68719476736), 9, '0')
                WHEN pv < 7 THEN tidemark_ref_uuid(p_seed, 'aad', r)::text
                WHEN pv < 9 THEN (100000000000000000000::numeric + tidemark_ref_h(r, v_b + 8010))::text
                ELSE 'local-' || r::text END,
           tidemark_ref_mod(r, v_b + 8011, 100) < 80,
           tidemark_ref_slice('{viewer,analyst,responder,admin,owner,auditor,billing}'::text[],
                              1 + tidemark_ref_mod(r, v_b + 8012, 7), tidemark_ref_mod(r, v_b + 8013, 4)),
           CASE WHEN tidemark_ref_mod(r, v_b + 8014, 100) >= 25
                THEN tidemark_ref_pick('{Security,Engineering,Finance,R&D (Forschung),Vertrieb,営業部,IT Ops,Legal,Direction générale}'::text[], r, v_b + 8015)
           END,
           (CASE WHEN tidemark_ref_mod(r, v_risk, 5) = 0 THEN 2 + tidemark_ref_mod(r, v_b + 8016, 2)
                 ELSE tidemark_ref_mod(r, v_b + 8016, 2) END)::smallint,
           tidemark_ref_mod(r, v_b + 8017, 100) < 5,
           CASE WHEN tidemark_ref_mod(r, v_b + 8018, 100) >= 15
                THEN v_start + (c + floor((u - c) * tidemark_ref_unit(r, v_b + 8019))::bigint) * interval '1 microsecond'
           END,
           tidemark_ref_inet(tidemark_ref_mod(r, v_b + 8020, 100), tidemark_ref_h(r, v_b + 8021), 20),
           v_start + c * interval '1 microsecond',
           v_start + u * interval '1 microsecond'
      FROM (SELECT r, k, u, u - LEAST(u, floor(tidemark_ref_logu(r, v_b + 8003, 6e7, 2.6e12))::bigint) AS c,
                   tidemark_ref_mod(r, v_b + 8004, 16) AS nm, tidemark_ref_mod(r, v_b + 8005, 10) AS pv
              FROM (SELECT r, v_org_of[r % v_w + 1] AS k, tidemark_ref_t(v_b + 8000, r, n_id, v_range, v_s0) AS u
                      FROM (SELECT generate_series(0::bigint, n_id - 1) AS r) AS g
                    OFFSET 0) AS a
            OFFSET 0) AS b;
    END IF;

    -- assets (table 9) --------------------------------------------------------------------------
    IF NOT p_only_events THEN
    INSERT INTO assets (id, organization_id, hostname, asset_type, ip, os, os_version,
                        owner_identity_id, criticality, internet_exposed, tags, first_seen,
                        last_seen_at, created_at, updated_at)
    SELECT tidemark_ref_uuid(p_seed, 'assets', r),
           v_org[k],
           ('{web,db,vpn,dc,zoë-macbook,build,k8s-node,fw,mail,jump,müller-laptop,kiosk-東京}'::text[])[1 + ty]
             || '-' || lpad(to_hex(tidemark_ref_h(r, v_b + 9010) % 1048576), 5, '0')
             || '.' || tidemark_ref_pick('{prod,corp,dev,eu-west-1,ap-northeast-1,lab}'::text[], r, v_b + 9011)
             || '.internal',
           ('{server,server,server,server,laptop,container,container,network_device,server,server,laptop,laptop}'::text[])[1 + ty],
           tidemark_ref_inet(tidemark_ref_mod(r, v_b + 9012, 100), tidemark_ref_h(r, v_b + 9013), 10),
           ('{Ubuntu,Windows Server,Amazon Linux,Windows Server,macOS,Debian,Bottlerocket,Cisco IOS XE,RHEL,Ubuntu,Windows 11,macOS}'::text[])[1 + ty],
           CASE WHEN tidemark_ref_mod(r, v_b + 9014, 100) >= 20
                THEN (1 + ty % 5)::text || '.' || tidemark_ref_mod(r, v_b + 9015, 20)::text || '.'
                     || tidemark_ref_mod(r, v_b + 9016, 300)::text
           END,
           CASE WHEN tidemark_ref_mod(r, v_b + 9017, 100) >= 30
                THEN tidemark_ref_uuid(p_seed, 'identities',
                         tidemark_ref_row_any(pi, v_first[k], n_id, v_w, tidemark_ref_h(r, v_b + 9018)))
           END,
           (1 + tidemark_ref_mod(r, v_b + 9019, 5))::smallint,
           tidemark_ref_mod(r, v_b + 9020, 100) < 15,
           tidemark_ref_slice('{prod,pci,sox,crown-jewel,needs review,région-eu,東京,legacy,tier 0,"owner=sec,ops"}'::text[],
                              1 + tidemark_ref_mod(r, v_b + 9021, 10), tidemark_ref_mod(r, v_b + 9022, 5)),
           ((v_start + c * interval '1 microsecond') AT TIME ZONE 'UTC')::date - tidemark_ref_mod(r, v_b + 9023, 400)::int,
           CASE WHEN tidemark_ref_mod(r, v_b + 9024, 100) >= 10
                THEN v_start + (u - LEAST(u - c, tidemark_ref_mod(r, v_b + 9025, 3600000000))) * interval '1 microsecond'
           END,
           v_start + c * interval '1 microsecond',
           v_start + u * interval '1 microsecond'
      FROM (SELECT r, k, u, u - LEAST(u, floor(tidemark_ref_logu(r, v_b + 9003, 6e7, 2.6e12))::bigint) AS c,
                   tidemark_ref_mod(r, v_b + 9004, 12) AS ty,
                   v_pos[v_lo[k] + tidemark_ref_mod(r, v_b + 9005, v_wt[k]) + 1] AS pi
              FROM (SELECT r, v_org_of[r % v_w + 1] AS k, tidemark_ref_t(v_b + 9000, r, n_as, v_range, v_s0) AS u
                      FROM (SELECT generate_series(0::bigint, n_as - 1) AS r) AS g
                    OFFSET 0) AS a
            OFFSET 0) AS b;
    END IF;

    -- events (table 1) --------------------------------------------------------------------------
    INSERT INTO events (id, organization_id, source, event_type, severity, actor_ip, identity_id,
                        asset_id, tags, payload, risk_score, occurred_at, bytes_in, clock_skew_ms,
                        created_at, updated_at)
    SELECT tidemark_ref_uuid(p_seed, 'events', r),
           v_org[k],
           ('{crowdstrike,crowdstrike,okta,okta,okta,aws_cloudtrail,aws_cloudtrail,gcp_audit,github,'
            'github,m365,zscaler,suricata,osquery,sentinelone,google_workspace}'::text[])[1 + st],
           ('{process.start,detection.malware,auth.login.success,auth.login.failure,auth.mfa.challenge,'
            'iam.policy.change,s3.object.get,iam.role.grant,repo.clone,oauth.token.issued,'
            'mail.forward_rule.created,network.connection,ids.alert,file.write,threat.quarantined,'
            'drive.share.external}'::text[])[1 + st],
           ('{0,0,0,0,0,0,0,0,1,1,1,1,1,1,2,2,2,3,3,4}'::smallint[])[1 + tidemark_ref_mod(r, v_b + 1010, 20)],
           tidemark_ref_inet(tidemark_ref_mod(r, v_b + 1011, 100), tidemark_ref_h(r, v_b + 1012), 12),
           CASE WHEN tidemark_ref_mod(r, v_b + 1013, 100) >= 30
                THEN tidemark_ref_uuid(p_seed, 'identities', tidemark_ref_row_any(pi, v_first[k], n_id, v_w, tidemark_ref_h(r, v_b + 1014)))
           END,
           CASE WHEN tidemark_ref_mod(r, v_b + 1015, 100) >= 20
                THEN tidemark_ref_uuid(p_seed, 'assets', tidemark_ref_row_any(pa, v_first[k], n_as, v_w, tidemark_ref_h(r, v_b + 1016)))
           END,
           tidemark_ref_slice('{mitre:T1059,mitre:T1078,pci,prod,needs review,tier-0,région-eu,東京,vip,'
                              'crown-jewel,ransomware,"a,b \"quoted\""}'::text[],
                              1 + tidemark_ref_mod(r, v_b + 1017, 12), tidemark_ref_mod(r, v_b + 1018, 5)),
           jsonb_build_object(
               'schema', 'tidemark.event/2',
               'vendor_event_id', lpad(to_hex(h1), 16, '0'),
               'sensor', jsonb_build_object(
                   'id', 'sn-' || lpad(to_hex(h2 % 1048576), 5, '0'),
                   'version', '7.' || (h2 % 23)::text || '.' || (h2 % 1009)::text,
                   'region', tidemark_ref_pick('{eu-central-1,us-east-1,ap-northeast-1,sa-east-1,me-south-1}'::text[], r, v_b + 1020)),
               'process', CASE WHEN st IN (0, 1, 13, 14) OR h3 % 5 = 0 THEN jsonb_build_object(
                   'pid', 100 + h3 % 65000,
                   'name', tidemark_ref_pick('{powershell.exe,bash,python3,svchost.exe,curl,"Microsoft Teams",node,java}'::text[], r, v_b + 1021),
                   'cmdline', tidemark_ref_pick(ARRAY[
                       'powershell -NoProfile -EncodedCommand SQBFAFgA',
                       'curl -s https://exämple.test/ä?q=1 | sh',
                       '/usr/bin/python3 -m http.server 8080',
                       'C:\Windows\System32\svchost.exe -k netsvcs',
                       'java -jar /opt/app/ログ集約.jar --verbose'], r, v_b + 1022),
                   'parent_pid', CASE WHEN h3 % 7 = 0 THEN NULL ELSE 1 + h3 % 4096 END,
                   'sha256', lpad(to_hex(h1), 16, '0') || lpad(to_hex(h2), 16, '0')
                             || lpad(to_hex(h3), 16, '0') || lpad(to_hex(h4), 16, '0'),
                   'signed', h3 % 3 <> 0) END,
               'network', jsonb_build_object(
                   'dst_port', ('{443,80,22,3389,53,8443,445,25}'::int[])[1 + h4 % 8],
                   'proto', ('{tcp,tcp,tcp,udp,icmp}'::text[])[1 + h4 % 5],
                   'packets', jsonb_build_array(h4 % 1000, h4 % 97, h4 % 13 - 6)),
               'user', jsonb_build_object(
                   'name', tidemark_ref_pick('{José Álvarez,Zoë Müller,山田 太郎,Иван Петров,svc-backup,"O''Brien, Siobhán",🤖 deploy-bot}'::text[], r, v_b + 1023),
                   'domain', tidemark_ref_pick('{CORP,ad.example.com,東京支社,WORKGROUP}'::text[], r, v_b + 1024),
                   'elevated', h2 % 4 = 0),
               'verdict', jsonb_build_object(
                   'malicious', h1 % 9 = 0,
                   'confidence', round(tidemark_ref_unit(r, v_b + 1025)::numeric, 4),
                   'score_delta', h1 % 101 - 50),
               'geo', ('[{"country":"JP","city":"東京","lat":35.6895,"lon":139.6917},'
                       '{"country":"DE","city":"München","lat":48.1372,"lon":11.5756},'
                       '{"country":"BR","city":"São Paulo","lat":-23.5505,"lon":-46.6333},'
                       '{"country":"US","city":"New York","lat":40.7128,"lon":-74.006},'
                       '{"country":"ZA","city":"Cape Town","lat":-33.9249,"lon":18.4241},'
                       '{"country":null,"city":null,"lat":null,"lon":null}]'::jsonb) -> (h2 % 6)::int,
               'message', tidemark_ref_pick(ARRAY[
                   'Connexion refusée pour l''utilisateur',
                   'Anmeldung fehlgeschlagen: Passwort ungültig',
                   '不審なログインを検出しました',
                   'Process spawned from Office macro 🚨',
                   'Outbound connection to rare domain',
                   'Straße/Weg: ß and ẞ, naïve café, “quotes”',
                   ''], r, v_b + 1026)),
           CASE WHEN tidemark_ref_mod(r, v_b + 1027, 100) >= 15
                THEN round((1000 * tidemark_ref_unit(r, v_b + 1028) ^ 3)::numeric, 2)
           END,
           v_start + (c - floor(CASE WHEN tidemark_ref_mod(r, v_b + 1029, 100) < 3
                                     THEN tidemark_ref_logu(r, v_b + 1030, 3.6e9, 2.6e11)
                                     ELSE tidemark_ref_logu(r, v_b + 1030, 5e4, 1.2e8) END)::bigint) * interval '1 microsecond',
           CASE WHEN st IN (6, 8, 11, 12, 15) OR tidemark_ref_mod(r, v_b + 1031, 100) < 10
                THEN floor(tidemark_ref_logu(r, v_b + 1032, 40, 5e10))::bigint
           END,
           CASE WHEN tidemark_ref_mod(r, v_b + 1033, 100) >= 20
                THEN (CASE WHEN h4 % 2 = 0 THEN -1 ELSE 1 END)
                     * floor(tidemark_ref_logu(r, v_b + 1034, 1, 7.2e6))::int
           END,
           v_start + c * interval '1 microsecond',
           v_start + u * interval '1 microsecond'
      FROM (SELECT r, k, u,
                   CASE WHEN tidemark_ref_mod(r, v_b + 1003, 100) < 90 THEN u
                        ELSE u - LEAST(u, floor(tidemark_ref_logu(r, v_b + 1004, 1e6, 2.16e10))::bigint) END AS c,
                   tidemark_ref_mod(r, v_b + 1005, 16) AS st,
                   v_pos[v_lo[k] + tidemark_ref_mod(r, v_b + 1006, v_wt[k]) + 1] AS pi,
                   v_pos[v_lo[k] + tidemark_ref_mod(r, v_b + 1007, v_wt[k]) + 1] AS pa,
                   tidemark_ref_h(r, v_b + 1040) AS h1, tidemark_ref_h(r, v_b + 1041) AS h2,
                   tidemark_ref_h(r, v_b + 1042) AS h3, tidemark_ref_h(r, v_b + 1043) AS h4
              FROM (SELECT r, v_org_of[r % v_w + 1] AS k, tidemark_ref_t(v_b + 1000, r, n_ev, v_range, v_s0) AS u
                      FROM (SELECT generate_series(0::bigint, n_ev - 1) AS r) AS g
                    OFFSET 0) AS a
            OFFSET 0) AS b;

    -- findings (table 2) ------------------------------------------------------------------------
    -- Resolved findings: resolved_at <= updated_at, created_at = resolved_at - time to resolve
    -- (log-uniform from 5 minutes to 60 days / (1 + 2 * severity), squeezed into the range).
    -- Findings whose identity has the "risky" trait (shared with oauth_grants, whose scopes it
    -- skews to admin) escalate more often.
    IF NOT p_only_events THEN
    INSERT INTO findings (id, organization_id, rule_id, event_id, asset_id, identity_id, title,
                          severity, status, cvss, escalated, details, resolved_at, due_on,
                          created_at, updated_at)
    SELECT tidemark_ref_uuid(p_seed, 'findings', r),
           v_org[k],
           tidemark_ref_uuid(p_seed, 'rule:' || k::text, tidemark_ref_mod(r, v_b + 2010, 40)),
           CASE WHEN tidemark_ref_mod(r, v_b + 2011, 100) >= 15
                THEN tidemark_ref_uuid(p_seed, 'events', tidemark_ref_row_before(
                         pe, v_first[k], floor(c::float8 / v_range::float8 * n_ev::float8)::bigint - 52, v_w,
                         tidemark_ref_mod(r, v_b + 2012, v_back_ev + 1)))
           END,
           CASE WHEN tidemark_ref_mod(r, v_b + 2013, 100) >= 20
                THEN tidemark_ref_uuid(p_seed, 'assets', tidemark_ref_row_any(pa, v_first[k], n_as, v_w, tidemark_ref_h(r, v_b + 2014)))
           END,
           tidemark_ref_uuid(p_seed, 'identities', idr),
           ('{Brute-force login détecté,Öffentlich lesbarer S3-Bucket,権限昇格の試行を検出,'
            'Suspicious PowerShell — encoded command,OAuth token used from new country 🌍,'
            'Impossible travel: São Paulo → Zürich,Malware quarantined on endpoint,'
            'MFA disabled for privileged user,Exposed RDP port (3389) on internet-facing host,'
            'Secrets committed to repository,Credential stuffing spike 🚨,Вход с подозрительного IP}'::text[])[1 + ti],
           sev::smallint,
           CASE WHEN stm < 35 THEN 'open' WHEN stm < 50 THEN 'triaged' WHEN stm < 85 THEN 'resolved'
                WHEN stm < 90 THEN 'suppressed' ELSE 'false_positive' END,
           CASE WHEN ti IN (1, 8, 9) OR tidemark_ref_mod(r, v_b + 2015, 100) < 40
                THEN round(tidemark_ref_mod(r, v_b + 2016, 101)::numeric / 10, 1)
           END,
           tidemark_ref_mod(r, v_b + 2017, 100) < CASE WHEN idr IS NULL THEN 8
                                                       WHEN tidemark_ref_mod(idr, v_risk, 5) = 0 THEN 40
                                                       ELSE 6 END,
           jsonb_build_object(
               'rule', jsonb_build_object('name', 'rule-' || tidemark_ref_mod(r, v_b + 2010, 40)::text,
                                          'version', 1 + tidemark_ref_mod(r, v_b + 2018, 12)),
               'mitre', tidemark_ref_slice('{TA0001,T1078,T1059,T1059.001,T1110,T1530,T1098,T1567}'::text[],
                                           1 + tidemark_ref_mod(r, v_b + 2019, 8), tidemark_ref_mod(r, v_b + 2020, 4)),
               'evidence_count', tidemark_ref_mod(r, v_b + 2021, 500),
               'score_breakdown', jsonb_build_object(
                   'base', round((tidemark_ref_unit(r, v_b + 2022) * 10)::numeric, 2),
                   'context', round(((tidemark_ref_unit(r, v_b + 2023) - 0.6) * 5)::numeric, 2)),
               'remediation', tidemark_ref_pick(ARRAY[
                   'Rotate the credentials and review the sign-in log.',
                   'Bucket-Richtlinie auf privat setzen.',
                   '多要素認証を有効にしてください。',
                   'Isoler le poste et lancer une analyse complète.'], r, v_b + 2024),
               'assignee', NULL::text,
               'auto_closed', stm >= 90),
           CASE WHEN stm >= 50 AND stm < 85 OR stm >= 90 THEN v_start + base * interval '1 microsecond' END,
           CASE WHEN tidemark_ref_mod(r, v_b + 2025, 100) >= 30
                THEN ((v_start + c * interval '1 microsecond') AT TIME ZONE 'UTC')::date
                     + ('{90,30,14,7,2}'::int[])[1 + sev]
           END,
           v_start + c * interval '1 microsecond',
           v_start + u * interval '1 microsecond'
      FROM (SELECT b.*,
                   base - CASE WHEN ttr < base THEN ttr
                               ELSE floor(base * tidemark_ref_unit(r, v_b + 2009))::bigint END AS c
              FROM (SELECT a.*,
                           CASE WHEN (stm >= 50 AND stm < 85 OR stm >= 90) AND tidemark_ref_mod(r, v_b + 2006, 100) < 30
                                THEN u - LEAST(u, tidemark_ref_mod(r, v_b + 2007, 7200000000))
                                ELSE u END AS base,
                           floor(tidemark_ref_logu(r, v_b + 2008, 3e8, 5.184e12 / (1 + 2 * sev)))::bigint AS ttr,
                           CASE WHEN tidemark_ref_mod(r, v_b + 2030, 100) >= 25
                                THEN tidemark_ref_row_any(pi, v_first[k], n_id, v_w, tidemark_ref_h(r, v_b + 2031)) END AS idr
                      FROM (SELECT r, k, u,
                                   tidemark_ref_mod(r, v_b + 2003, 100) AS stm,
                                   tidemark_ref_mod(r, v_b + 2004, 12) AS ti,
                                   ('{0,1,1,1,2,2,2,2,3,3,3,4}'::int[])[1 + tidemark_ref_mod(r, v_b + 2005, 12)] AS sev,
                                   v_pos[v_lo[k] + tidemark_ref_mod(r, v_b + 2032, v_wt[k]) + 1] AS pe,
                                   v_pos[v_lo[k] + tidemark_ref_mod(r, v_b + 2033, v_wt[k]) + 1] AS pa,
                                   v_pos[v_lo[k] + tidemark_ref_mod(r, v_b + 2034, v_wt[k]) + 1] AS pi
                              FROM (SELECT r, v_org_of[r % v_w + 1] AS k,
                                           tidemark_ref_t(v_b + 2000, r, n_fi, v_range, v_s0) AS u
                                      FROM (SELECT generate_series(0::bigint, n_fi - 1) AS r) AS g
                                    OFFSET 0) AS a0
                            OFFSET 0) AS a
                    OFFSET 0) AS b
            OFFSET 0) AS c;
    END IF;

    -- rule_runs (table 3) -----------------------------------------------------------------------
    IF NOT p_only_events THEN
    INSERT INTO rule_runs (id, organization_id, rule_id, rule_version, trigger_kind, status,
                           started_at, finished_at, duration_ms, matched_count, scanned_rows,
                           cpu_seconds, error, created_at, updated_at)
    SELECT tidemark_ref_uuid(p_seed, 'rule_runs', r),
           v_org[k],
           tidemark_ref_uuid(p_seed, 'rule:' || k::text, rl),
           (1 + (rl * 7 + tidemark_ref_mod(r, v_b + 3010, 3)) % 12)::int,
           tidemark_ref_pick('{schedule,schedule,schedule,schedule,event,event,manual,backfill}'::text[], r, v_b + 3011),
           ('{succeeded,failed,running,timed_out,cancelled}'::text[])[1 + sti],
           v_start + c * interval '1 microsecond',
           CASE WHEN sti <> 2 THEN v_start + u * interval '1 microsecond' END,
           CASE WHEN sti <> 2 THEN ((u - c) / 1000)::int END,
           matched,
           matched * (1 + tidemark_ref_mod(r, v_b + 3015, 50)) + floor(tidemark_ref_logu(r, v_b + 3014, 1e3, 6e9))::bigint,
           CASE WHEN sti <> 2 AND tidemark_ref_mod(r, v_b + 3018, 100) >= 15
                THEN round(((u - c)::numeric / 1000000) * (0.05 + 1.9 * tidemark_ref_unit(r, v_b + 3016))::numeric, 3)
           END,
           CASE sti
               WHEN 1 THEN tidemark_ref_pick(ARRAY[
                   'relation "events_2026_11" does not exist',
                   'Lookup-Fehler: ungültiger Regex »^(?<user>.+)$«',
                   'upstream 503 from threat-intel feed',
                   'out of memory: work_mem exhausted during hash aggregate',
                   'ルールの評価に失敗しました: 無効なフィールド'], r, v_b + 3017)
               WHEN 3 THEN 'timeout after ' || ((u - c) / 1000)::text || ' ms'
           END,
           v_start + c * interval '1 microsecond',
           v_start + u * interval '1 microsecond'
      FROM (SELECT r, k, u, rl, sti,
                   CASE WHEN sti IN (0, 3) AND tidemark_ref_mod(r, v_b + 3012, 100) < 45
                        THEN floor(tidemark_ref_logu(r, v_b + 3013, 1, 2e6))::bigint ELSE 0 END AS matched,
                   u - LEAST(u, floor(CASE WHEN sti = 2 THEN tidemark_ref_logu(r, v_b + 3004, 1e6, 6e8)
                                           WHEN sti = 3 THEN 1.2e9 + tidemark_ref_mod(r, v_b + 3005, 1000000)
                                           ELSE tidemark_ref_logu(r, v_b + 3004, 5e3, 1.2e9) END)::bigint) AS c
              FROM (SELECT r, v_org_of[r % v_w + 1] AS k,
                           tidemark_ref_t(v_b + 3000, r, n_rr, v_range, v_s0) AS u,
                           tidemark_ref_mod(r, v_b + 3002, 40) AS rl,
                           ('{0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,2,3,4}'::int[])[1 + tidemark_ref_mod(r, v_b + 3003, 21)] AS sti
                      FROM (SELECT generate_series(0::bigint, n_rr - 1) AS r) AS g
                    OFFSET 0) AS a
            OFFSET 0) AS b;
    END IF;

    -- siem_deliveries (table 4) -----------------------------------------------------------------
    IF NOT p_only_events THEN
    INSERT INTO siem_deliveries (id, organization_id, event_id, target, endpoint, attempt,
                                 http_status, latency_ms, delivered, batch_size, payload_bytes,
                                 ingest_cost_usd, response, next_retry_at, created_at, updated_at)
    SELECT tidemark_ref_uuid(p_seed, 'siem_deliveries', r),
           v_org[k],
           CASE WHEN tidemark_ref_mod(r, v_b + 4010, 100) >= 5
                THEN tidemark_ref_uuid(p_seed, 'events', tidemark_ref_row_before(
                         pe, v_first[k], floor(c::float8 / v_range::float8 * n_ev::float8)::bigint - 52, v_w,
                         tidemark_ref_mod(r, v_b + 4011, v_back_ev + 1)))
           END,
           ('{splunk_hec,sentinel,qradar,elastic,chronicle,sumo_logic}'::text[])[1 + tg],
           ('{https://hec.splunk.example.com:8088/services/collector/event,'
             'https://dce-1.westeurope.ingest.monitor.azure.example/dataCollectionRules/dcr-1/streams/Custom-Tidemark,'
             'https://qradar.example.net/api/siem/events,'
             'https://es.example.org:9200/_bulk,'
             'https://malachiteingestion-pa.googleapis.example/v2/unstructuredlogentries:batchCreate,'
             'https://endpoint4.collection.sumologic.example/receiver/v1/http/ZaVnC4dhaV}'::text[])[1 + tg]
             || CASE WHEN tg = 0 THEN '?org=' || k::text ELSE '' END,
           attempt::smallint,
           hs,
           CASE WHEN hs IS NOT NULL THEN tidemark_ref_logu(r, v_b + 4012, 3.5, 4000)
                WHEN tidemark_ref_mod(r, v_b + 4013, 2) = 0 THEN 30000::float8 END,
           coalesce(hs BETWEEN 200 AND 299, false),
           bsz::int,
           bsz * (300 + tidemark_ref_mod(r, v_b + 4014, 900)),
           CASE WHEN tg IN (0, 1, 5) OR tidemark_ref_mod(r, v_b + 4015, 100) < 20
                THEN round((bsz * (300 + tidemark_ref_mod(r, v_b + 4014, 900)))::numeric * 0.000000000157, 9)
           END,
           CASE WHEN hs IS NULL THEN NULL
                WHEN hs BETWEEN 200 AND 299 THEN jsonb_build_object('text', 'Success', 'code', 0, 'ackId', tidemark_ref_mod(r, v_b + 4016, 1000000))
                WHEN hs = 429 THEN jsonb_build_object('error', 'Rate limited — retry after 30 s', 'retry_after', 30)
                ELSE jsonb_build_object('error', tidemark_ref_pick('{Invalid token,Payload too large,Internal Server Error,Service indisponible}'::text[], r, v_b + 4017),
                                        'code', hs, 'details', NULL::text)
           END,
           CASE WHEN NOT coalesce(hs BETWEEN 200 AND 299, false) AND attempt < 5
                THEN v_start + (u + (30000000::bigint << (attempt - 1))) * interval '1 microsecond'
           END,
           v_start + c * interval '1 microsecond',
           v_start + u * interval '1 microsecond'
      FROM (SELECT a.*, u - LEAST(u, (30000000::bigint << (attempt - 1)) - 30000000 + tidemark_ref_mod(r, v_b + 4005, 5000000)) AS c
              FROM (SELECT r, k, u,
                           tidemark_ref_mod(r, v_b + 4002, 6) AS tg,
                           ('{1,1,1,1,1,1,1,1,1,1,1,1,2,2,2,3,3,4,5}'::int[])[1 + tidemark_ref_mod(r, v_b + 4003, 19)] AS attempt,
                           ('{200,200,200,200,200,200,200,200,200,200,200,200,200,200,202,202,400,401,413,429,429,500,503,NULL,NULL}'::int[])[1 + tidemark_ref_mod(r, v_b + 4004, 25)] AS hs,
                           floor(tidemark_ref_logu(r, v_b + 4006, 1, 5000))::bigint AS bsz,
                           v_pos[v_lo[k] + tidemark_ref_mod(r, v_b + 4007, v_wt[k]) + 1] AS pe
                      FROM (SELECT r, v_org_of[r % v_w + 1] AS k,
                                   tidemark_ref_t(v_b + 4000, r, n_sd, v_range, v_s0) AS u
                              FROM (SELECT generate_series(0::bigint, n_sd - 1) AS r) AS g
                            OFFSET 0) AS a0
                    OFFSET 0) AS a
            OFFSET 0) AS b;
    END IF;

    -- workflow_deliveries (table 5) -------------------------------------------------------------
    IF NOT p_only_events THEN
    INSERT INTO workflow_deliveries (id, organization_id, finding_id, workflow, action, attempt,
                                     http_status, latency_ms, delivered, external_ref, request,
                                     response, created_at, updated_at)
    SELECT tidemark_ref_uuid(p_seed, 'workflow_deliveries', r),
           v_org[k],
           CASE WHEN tidemark_ref_mod(r, v_b + 5010, 100) >= 10
                THEN tidemark_ref_uuid(p_seed, 'findings', tidemark_ref_row_before(
                         pf, v_first[k], floor(c::float8 / v_range::float8 * n_fi::float8)::bigint - 52, v_w,
                         tidemark_ref_mod(r, v_b + 5011, v_back_fi + 1)))
           END,
           ('{jira,jira,servicenow,slack,slack,pagerduty,teams,webhook}'::text[])[1 + wf],
           CASE wf WHEN 0 THEN tidemark_ref_pick('{create_ticket,update_ticket,close_ticket}'::text[], r, v_b + 5012)
                   WHEN 1 THEN tidemark_ref_pick('{create_ticket,update_ticket,close_ticket}'::text[], r, v_b + 5012)
                   WHEN 2 THEN tidemark_ref_pick('{create_ticket,update_ticket}'::text[], r, v_b + 5012)
                   WHEN 5 THEN 'page'
                   ELSE 'notify' END,
           attempt::smallint,
           hs,
           CASE WHEN hs IS NOT NULL OR tidemark_ref_mod(r, v_b + 5013, 2) = 0
                THEN tidemark_ref_logu(r, v_b + 5014, 40, 12000) END,
           coalesce(hs BETWEEN 200 AND 299, false),
           CASE WHEN hs BETWEEN 200 AND 299 THEN
               CASE WHEN wf IN (0, 1) THEN 'SEC-' || (1 + tidemark_ref_mod(r, v_b + 5015, 99999))::text
                    WHEN wf = 2 THEN 'INC' || lpad((tidemark_ref_mod(r, v_b + 5015, 9999999))::text, 7, '0')
                    WHEN wf IN (3, 4) THEN (1700000000 + tidemark_ref_mod(r, v_b + 5015, 99999999))::text || '.'
                                           || lpad(tidemark_ref_mod(r, v_b + 5016, 1000000)::text, 6, '0')
                    WHEN wf = 5 THEN 'Q' || upper(lpad(to_hex(tidemark_ref_mod(r, v_b + 5015, 4294967296)), 8, '0'))
               END
           END,
           jsonb_build_object(
               'summary', tidemark_ref_pick('{Brute-force login détecté,Öffentlich lesbarer S3-Bucket,権限昇格の試行を検出,Credential stuffing spike 🚨}'::text[], r, v_b + 5017),
               'priority', ('{P1,P2,P3,P4}'::text[])[1 + tidemark_ref_mod(r, v_b + 5018, 4)],
               'labels', tidemark_ref_slice('{tidemark,security,auto,soc-tier1}'::text[],
                                            1 + tidemark_ref_mod(r, v_b + 5019, 4), tidemark_ref_mod(r, v_b + 5020, 3)),
               'fields', jsonb_build_object('customfield_10010', NULL::text, 'components', jsonb_build_array('SecOps'))),
           CASE WHEN hs IS NOT NULL AND tidemark_ref_mod(r, v_b + 5021, 100) >= 20
                THEN jsonb_build_object('status', hs, 'ok', hs BETWEEN 200 AND 299,
                                        'message', CASE WHEN hs BETWEEN 200 AND 299 THEN 'created' ELSE 'Échec de la requête' END)
           END,
           v_start + c * interval '1 microsecond',
           v_start + u * interval '1 microsecond'
      FROM (SELECT a.*, u - LEAST(u, floor(tidemark_ref_logu(r, v_b + 5005, 1e5, 3.6e9))::bigint) AS c
              FROM (SELECT r, k, u,
                           tidemark_ref_mod(r, v_b + 5002, 8) AS wf,
                           ('{1,1,1,1,1,1,1,1,1,1,2,2,3,4}'::int[])[1 + tidemark_ref_mod(r, v_b + 5003, 14)] AS attempt,
                           ('{200,200,200,201,201,201,201,201,204,204,400,403,404,429,500,502,NULL}'::int[])[1 + tidemark_ref_mod(r, v_b + 5004, 17)] AS hs,
                           v_pos[v_lo[k] + tidemark_ref_mod(r, v_b + 5006, v_wt[k]) + 1] AS pf
                      FROM (SELECT r, v_org_of[r % v_w + 1] AS k,
                                   tidemark_ref_t(v_b + 5000, r, n_wd, v_range, v_s0) AS u
                              FROM (SELECT generate_series(0::bigint, n_wd - 1) AS r) AS g
                            OFFSET 0) AS a0
                    OFFSET 0) AS a
            OFFSET 0) AS b;
    END IF;

    -- audit_log (table 6) -----------------------------------------------------------------------
    IF NOT p_only_events THEN
    INSERT INTO audit_log (id, organization_id, actor_id, actor_type, action, target_type,
                           target_id, ip, user_agent, success, metadata, occurred_at, created_at,
                           updated_at)
    SELECT tidemark_ref_uuid(p_seed, 'audit_log', r),
           v_org[k],
           CASE WHEN at < 14 THEN tidemark_ref_uuid(p_seed, 'identities', tidemark_ref_row_any(pi, v_first[k], n_id, v_w, tidemark_ref_h(r, v_b + 6010)))
                WHEN at < 17 THEN tidemark_ref_uuid(p_seed, 'api_key:' || k::text, tidemark_ref_mod(r, v_b + 6011, 8))
                WHEN at < 19 THEN tidemark_ref_uuid(p_seed, 'service', tidemark_ref_mod(r, v_b + 6011, 4))
           END,
           CASE WHEN at < 14 THEN 'user' WHEN at < 17 THEN 'api_key' WHEN at < 19 THEN 'service' ELSE 'system' END,
           ('{identity.login,identity.mfa.disable,destination.create,destination.rotate_credentials,'
            'finding.resolve,finding.suppress,oauth.grant.create,oauth.grant.revoke,rule.update,'
            'export.download,org.settings.update,asset.tag}'::text[])[1 + ac],
           ('{identity,identity,warehouse_destination,warehouse_destination,finding,finding,'
            'oauth_grant,oauth_grant,rule,export,organization,asset}'::text[])[1 + ac],
           CASE WHEN ac = 10 THEN NULL
                WHEN ac IN (0, 1) THEN tidemark_ref_uuid(p_seed, 'identities', tidemark_ref_row_any(pi, v_first[k], n_id, v_w, tidemark_ref_h(r, v_b + 6012)))
                WHEN ac = 11 THEN tidemark_ref_uuid(p_seed, 'assets', tidemark_ref_row_any(pi, v_first[k], n_as, v_w, tidemark_ref_h(r, v_b + 6012)))
                WHEN ac IN (4, 5) THEN tidemark_ref_uuid(p_seed, 'findings', tidemark_ref_row_any(pi, v_first[k], n_fi, v_w, tidemark_ref_h(r, v_b + 6012)))
                ELSE tidemark_ref_uuid(p_seed, 'audit_target:' || ac::text, r)
           END,
           CASE WHEN at < 19 THEN tidemark_ref_inet(tidemark_ref_mod(r, v_b + 6013, 100), tidemark_ref_h(r, v_b + 6014), 5) END,
           CASE WHEN at < 14 THEN tidemark_ref_pick(ARRAY[
                    'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15',
                    'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36',
                    'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0',
                    'tidemark-cli/0.3.1 (linux; x86_64)'], r, v_b + 6015)
                WHEN at < 17 THEN tidemark_ref_pick('{python-requests/2.32.3,Terraform/1.9.2 tidemark-provider/1.0.4,okhttp/4.12.0,curl/8.8.0}'::text[], r, v_b + 6015)
                WHEN at < 19 AND tidemark_ref_mod(r, v_b + 6016, 2) = 0 THEN 'tidemark-internal/2026.11'
           END,
           tidemark_ref_mod(r, v_b + 6017, 100) >= 7,
           jsonb_build_object(
               'request_id', lpad(to_hex(tidemark_ref_h(r, v_b + 6018)), 16, '0'),
               'changes', CASE WHEN ac IN (1, 3, 8, 10, 11) THEN jsonb_build_array(jsonb_build_object(
                              'field', ('{mfa_enabled,credentials,threshold,retention_days,tags}'::text[])[1 + tidemark_ref_mod(r, v_b + 6019, 5)],
                              'old', tidemark_ref_mod(r, v_b + 6020, 90),
                              'new', tidemark_ref_mod(r, v_b + 6021, 90) - 10))
                          ELSE '[]'::jsonb END,
               'reason', CASE WHEN tidemark_ref_mod(r, v_b + 6022, 3) = 0 THEN NULL
                              ELSE tidemark_ref_pick('{Demande du client — ticket ÄÖÜ-12,Quarterly access review,定期レビュー,Incident response}'::text[], r, v_b + 6023) END,
               'geo', jsonb_build_object('country', tidemark_ref_pick('{JP,DE,FR,US,BR,NO}'::text[], r, v_b + 6024),
                                         'asn', 64496 + tidemark_ref_mod(r, v_b + 6025, 15))),
           v_start + (c - tidemark_ref_mod(r, v_b + 6026, 2000000)) * interval '1 microsecond',
           v_start + c * interval '1 microsecond',
           v_start + u * interval '1 microsecond'
      FROM (SELECT r, k, u,
                   CASE WHEN tidemark_ref_mod(r, v_b + 6002, 100) < 97 THEN u
                        ELSE u - LEAST(u, tidemark_ref_mod(r, v_b + 6003, 600000000)) END AS c,
                   tidemark_ref_mod(r, v_b + 6004, 20) AS at,
                   tidemark_ref_mod(r, v_b + 6005, 12) AS ac,
                   v_pos[v_lo[k] + tidemark_ref_mod(r, v_b + 6006, v_wt[k]) + 1] AS pi
              FROM (SELECT r, v_org_of[r % v_w + 1] AS k,
                           tidemark_ref_t(v_b + 6000, r, n_al, v_range, v_s0) AS u
                      FROM (SELECT generate_series(0::bigint, n_al - 1) AS r) AS g
                    OFFSET 0) AS a
            OFFSET 0) AS b;
    END IF;

    -- oauth_grants (table 7) --------------------------------------------------------------------
    -- The organization comes from the granting identity. Identities with the "risky" trait get
    -- admin-level scopes far more often, and their findings escalate more often (see findings).
    IF NOT p_only_events THEN
    INSERT INTO oauth_grants (id, organization_id, identity_id, client_id, client_name, scopes,
                              granted_at, expires_at, revoked, revoked_at, last_used_at,
                              use_count, grant_ip, created_at, updated_at)
    SELECT tidemark_ref_uuid(p_seed, 'oauth_grants', r),
           v_org[v_org_of[idr % v_w + 1]],
           tidemark_ref_uuid(p_seed, 'identities', idr),
           ('{github-actions,slack-secops-bot,jira-cloud,terraform-cloud,zapier,notion,looker-studio,export-tool}'::text[])[1 + cl]
             || '.' || lpad(to_hex(cl * 2654435 + 1193), 6, '0'),
           ('{GitHub Actions,Slack — Sécurité,Jira Cloud,Terraform Cloud,Zapier,Notion,Looker Studio,エクスポートツール}'::text[])[1 + cl],
           CASE WHEN tidemark_ref_mod(r, v_b + 7010, 100) < (CASE WHEN risky THEN 70 ELSE 8 END)
                THEN tidemark_ref_slice('{openid,profile,email,offline_access,read:user,read:org,repo,workflow,write:packages,admin:repo_hook,admin:org,delete_repo}'::text[],
                                        8 + tidemark_ref_mod(r, v_b + 7011, 4), 2 + tidemark_ref_mod(r, v_b + 7012, 3))
                ELSE tidemark_ref_slice('{openid,profile,email,offline_access,read:user,read:org,repo,workflow,write:packages,admin:repo_hook,admin:org,delete_repo}'::text[],
                                        1 + tidemark_ref_mod(r, v_b + 7011, 7), tidemark_ref_mod(r, v_b + 7012, 5))
           END,
           v_start + g0 * interval '1 microsecond',
           CASE WHEN tidemark_ref_mod(r, v_b + 7013, 100) >= 30
                THEN v_start + g0 * interval '1 microsecond'
                     + ('{1,30,90,90,365}'::int[])[1 + tidemark_ref_mod(r, v_b + 7014, 5)] * interval '1 day'
           END,
           rv,
           CASE WHEN rv THEN v_start + u * interval '1 microsecond' END,
           CASE WHEN tidemark_ref_mod(r, v_b + 7015, 100) >= 20
                THEN v_start + (c + floor((u - c) * tidemark_ref_unit(r, v_b + 7016))::bigint) * interval '1 microsecond'
           END,
           CASE WHEN tidemark_ref_mod(r, v_b + 7017, 100) < 10 THEN 0
                ELSE floor(tidemark_ref_logu(r, v_b + 7018, 1, 2e7))::bigint END,
           tidemark_ref_inet(tidemark_ref_mod(r, v_b + 7019, 100), tidemark_ref_h(r, v_b + 7020), 15),
           v_start + c * interval '1 microsecond',
           v_start + u * interval '1 microsecond'
      FROM (SELECT b.*,
                   CASE WHEN tidemark_ref_mod(r, v_b + 7006, 100) < 80 THEN c
                        ELSE c - tidemark_ref_mod(r, v_b + 7007, 259200000000) END AS g0
              FROM (SELECT r, u, idr, cl,
                           tidemark_ref_mod(idr, v_risk, 5) = 0 AS risky,
                           tidemark_ref_mod(r, v_b + 7004, 100) < 12 AS rv,
                           u - LEAST(u, floor(tidemark_ref_logu(r, v_b + 7005, 1e6, 2.6e12))::bigint) AS c
                      FROM (SELECT r, tidemark_ref_t(v_b + 7000, r, n_og, v_range, v_s0) AS u,
                                   tidemark_ref_mod(r, v_b + 7002, n_id) AS idr,
                                   tidemark_ref_mod(r, v_b + 7003, 8) AS cl
                              FROM (SELECT generate_series(0::bigint, n_og - 1) AS r) AS g
                            OFFSET 0) AS a
                    OFFSET 0) AS b
            OFFSET 0) AS c;
    END IF;

    -- baseline_scores (table 10) ----------------------------------------------------------------
    -- Score = per (organization, framework) base + per-organization linear trend over the range
    -- + noise, so cross-organization trends are visible.
    IF NOT p_only_events THEN
    INSERT INTO baseline_scores (id, organization_id, asset_id, framework, control_id,
                                 control_title, score, score_delta, passed, weight, measured_on,
                                 evidence, created_at, updated_at)
    SELECT tidemark_ref_uuid(p_seed, 'baseline_scores', r),
           v_org[k],
           CASE WHEN tidemark_ref_mod(r, v_b + 10010, 100) >= 40
                THEN tidemark_ref_uuid(p_seed, 'assets', tidemark_ref_row_any(pa, v_first[k], n_as, v_w, tidemark_ref_h(r, v_b + 10011)))
           END,
           ('{CIS,SOC2,ISO27001,NIST-CSF,PCI-DSS}'::text[])[1 + ct / 8],
           ('{1.1.1,1.4,4.1,5.2.3,5.4.1,6.2,8.2,16.11,'
             'CC6.1,CC6.2,CC6.3,CC6.6,CC7.2,CC7.3,CC8.1,A1.2,'
             'A.5.15,A.5.17,A.8.2,A.8.5,A.8.9,A.8.12,A.8.16,A.8.24,'
             'PR.AA-01,PR.AA-05,PR.DS-01,PR.PS-02,DE.CM-01,DE.AE-02,RS.MA-01,GV.OC-03,'
             '1.2.1,2.2.1,3.5.1,6.3.3,7.2.1,8.3.6,10.2.1,11.3.1}'::text[])[1 + ct],
           ('{Ensure mounting of cramfs is disabled,Ensure bootloader password is set,'
             'Établir un inventaire des logiciels autorisés,Ensure SSH root login is disabled,'
             'Ensure password expiration is 365 days or less,Ensure audit logs are retained,'
             'Verschlüsselung ruhender Daten,Ensure centralized time synchronization,'
             'Logical access security software,Prior to issuing system credentials,'
             'Role-based access,Boundary protection,Anomaly monitoring,Incident evaluation,'
             'Change management,Capacity planning,'
             'Contrôle d''accès,Authentification,Privileged access rights — 特権アクセス権,'
             'Secure authentication,Configuration management,Data leakage prevention,'
             'Monitoring activities,Use of cryptography,'
             'Identities and credentials are managed,Access permissions are managed,'
             'Data-at-rest is protected,Software is maintained,Networks are monitored,'
             'Adverse events are analyzed,Incident management plan is executed,'
             'Stakeholder expectations are understood,'
             'Network security controls are defined,System components are securely configured,'
             'PAN is rendered unreadable,Inventory of bespoke software is maintained,'
             'Access is assigned by job function,Passwords have at least 12 characters,'
             'Audit logs capture user access,Vulnerability scans are performed quarterly}'::text[])[1 + ct],
           sc,
           CASE WHEN tidemark_ref_mod(r, v_b + 10012, 100) >= 20
                THEN round(((tidemark_ref_unit(r, v_b + 10013) - 0.55) * 50)::numeric, 2)
           END,
           sc >= 70.00,
           (1 + tidemark_ref_mod(ct, v_b + 10014, 9))::float8 / 3,
           ((v_start + c * interval '1 microsecond') AT TIME ZONE 'UTC')::date,
           CASE WHEN tidemark_ref_mod(r, v_b + 10015, 100) >= 25 THEN jsonb_build_object(
               'collector', tidemark_ref_pick('{aws-config,azure-policy,osquery,manual-attestation,gcp-scc}'::text[], r, v_b + 10016),
               'resources_checked', tidemark_ref_mod(r, v_b + 10017, 500),
               'failing', tidemark_ref_slice('{arn:aws:s3:::prod-backups,arn:aws:iam::123456789012:user/ci,vm-東京-01,/etc/ssh/sshd_config}'::text[],
                                             1 + tidemark_ref_mod(r, v_b + 10018, 4), CASE WHEN sc >= 70.00 THEN 0 ELSE 1 + tidemark_ref_mod(r, v_b + 10019, 3) END),
               'notes', CASE WHEN tidemark_ref_mod(r, v_b + 10020, 2) = 0 THEN 'Vérifié ✅' END)
           END,
           v_start + c * interval '1 microsecond',
           v_start + u * interval '1 microsecond'
      FROM (SELECT a.*,
                   round(LEAST(100, GREATEST(0,
                       40 + 55 * tidemark_ref_unit(k::bigint * 16 + ct / 8, v_b + 10004)
                       + (20 * tidemark_ref_unit(k, v_b + 10005) - 8) * (c::float8 / v_range::float8)
                       + 12 * (tidemark_ref_unit(r, v_b + 10006) - 0.5)))::numeric, 2) AS sc
              FROM (SELECT r, k, u,
                           u - LEAST(u, tidemark_ref_mod(r, v_b + 10002, 900000000)) AS c,
                           tidemark_ref_mod(r, v_b + 10003, 40) AS ct,
                           v_pos[v_lo[k] + tidemark_ref_mod(r, v_b + 10007, v_wt[k]) + 1] AS pa
                      FROM (SELECT r, v_org_of[r % v_w + 1] AS k,
                                   tidemark_ref_t(v_b + 10000, r, n_bs, v_range, v_s0) AS u
                              FROM (SELECT generate_series(0::bigint, n_bs - 1) AS r) AS g
                            OFFSET 0) AS a0
                    OFFSET 0) AS a
            OFFSET 0) AS b;
    END IF;

    ANALYZE organizations, events, findings, rule_runs, siem_deliveries, workflow_deliveries,
            audit_log, oauth_grants, identities, assets, baseline_scores;

    RAISE NOTICE 'tidemark_ref_generate: % events and % rows in the other tables in % s',
        n_ev, n_fi + n_rr + n_sd + n_wd + n_al + n_og + n_id + n_as + n_bs,
        round(extract(epoch FROM clock_timestamp() - v_t0)::numeric, 1);
END
$fn$;
