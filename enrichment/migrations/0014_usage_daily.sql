-- Usage per workspace, mode and UTC day: what the usage endpoint, the console and the billing
-- walk read, so their cost grows with days, not with jobs (docs/operations.md#usage-rollups).
-- Kept by the triggers below in the statement that writes enrichment_usage — the job's
-- finishing transaction, a cached answer's admission, a purge, a workspace's deletion — so it
-- always equals `SELECT … FROM enrichment_usage GROUP BY workspace_id, livemode, day`; a day
-- whose rows are all gone has no row. Nothing else writes this table.
CREATE TABLE usage_daily (
    workspace_id      uuid NOT NULL,
    livemode          boolean NOT NULL,
    day               date NOT NULL,
    jobs              bigint NOT NULL,  -- usage rows: jobs that ended or were answered cached
    units             bigint NOT NULL,
    matched           bigint NOT NULL,
    unmatched         bigint NOT NULL,
    tokens            bigint NOT NULL,
    searches          bigint NOT NULL,
    social_requests   bigint NOT NULL,
    cost_estimate_usd numeric(18, 6) NOT NULL,
    PRIMARY KEY (workspace_id, livemode, day)
);
-- The nightly report and reconciliation read one period of every workspace.
CREATE INDEX usage_daily_day ON usage_daily (day);

-- Takes away the changed rows' old values, adds their new ones. (An UPDATE may move a row to
-- another day: a replayed job's usage is dated when its rerun ends.) The ORDER BY takes the
-- rollup rows' locks in one order in every statement.
CREATE FUNCTION usage_daily_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    INSERT INTO usage_daily AS d (workspace_id, livemode, day, jobs, units, matched,
                                  unmatched, tokens, searches, social_requests,
                                  cost_estimate_usd)
    SELECT workspace_id, livemode, (created_at AT TIME ZONE 'UTC')::date, -count(*),
           -sum(units), -count(*) FILTER (WHERE match), -count(*) FILTER (WHERE NOT match),
           -sum(tokens), -sum(searches), -sum(social_requests), -sum(cost_estimate_usd)
    FROM old_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (workspace_id, livemode, day) DO UPDATE SET jobs = d.jobs + excluded.jobs,
      units = d.units + excluded.units, matched = d.matched + excluded.matched,
      unmatched = d.unmatched + excluded.unmatched, tokens = d.tokens + excluded.tokens,
      searches = d.searches + excluded.searches,
      social_requests = d.social_requests + excluded.social_requests,
      cost_estimate_usd = d.cost_estimate_usd + excluded.cost_estimate_usd;
    DELETE FROM usage_daily d USING (SELECT DISTINCT workspace_id, livemode,
        (created_at AT TIME ZONE 'UTC')::date AS day FROM old_rows) o
      WHERE d.workspace_id = o.workspace_id AND d.livemode = o.livemode AND d.day = o.day
        AND d.jobs = 0;  -- a day left without rows has no row
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO usage_daily AS d (workspace_id, livemode, day, jobs, units, matched,
                                  unmatched, tokens, searches, social_requests,
                                  cost_estimate_usd)
    SELECT workspace_id, livemode, (created_at AT TIME ZONE 'UTC')::date, count(*),
           sum(units), count(*) FILTER (WHERE match), count(*) FILTER (WHERE NOT match),
           sum(tokens), sum(searches), sum(social_requests), sum(cost_estimate_usd)
    FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (workspace_id, livemode, day) DO UPDATE SET jobs = d.jobs + excluded.jobs,
      units = d.units + excluded.units, matched = d.matched + excluded.matched,
      unmatched = d.unmatched + excluded.unmatched, tokens = d.tokens + excluded.tokens,
      searches = d.searches + excluded.searches,
      social_requests = d.social_requests + excluded.social_requests,
      cost_estimate_usd = d.cost_estimate_usd + excluded.cost_estimate_usd;
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER usage_daily_insert AFTER INSERT ON enrichment_usage
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_daily_apply();
CREATE TRIGGER usage_daily_update AFTER UPDATE ON enrichment_usage
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION usage_daily_apply();
CREATE TRIGGER usage_daily_delete AFTER DELETE ON enrichment_usage
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_daily_apply();

-- The backfill: the usage rows written so far. (Old processes may keep writing during a
-- rolling deploy: CREATE TRIGGER's lock holds their writes until this transaction commits.)
INSERT INTO usage_daily (workspace_id, livemode, day, jobs, units, matched, unmatched, tokens,
                         searches, social_requests, cost_estimate_usd)
SELECT workspace_id, livemode, (created_at AT TIME ZONE 'UTC')::date, count(*), sum(units),
       count(*) FILTER (WHERE match), count(*) FILTER (WHERE NOT match), sum(tokens),
       sum(searches), sum(social_requests), sum(cost_estimate_usd)
FROM enrichment_usage GROUP BY 1, 2, 3;
