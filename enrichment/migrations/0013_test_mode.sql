-- Test mode (docs/api.md#test-mode): a key's mode travels with everything it makes. Test-mode
-- jobs run against the bundled simulators, reserve no unit (billing_period NULL), are charged
-- 0 units, and each mode sees only its own jobs, batches, webhook endpoints (and so their
-- deliveries) and usage.
ALTER TABLE api_keys ADD COLUMN livemode boolean NOT NULL DEFAULT true;
ALTER TABLE enrichment_jobs ADD COLUMN livemode boolean NOT NULL DEFAULT true;
ALTER TABLE batches ADD COLUMN livemode boolean NOT NULL DEFAULT true;
ALTER TABLE webhook_endpoints ADD COLUMN livemode boolean NOT NULL DEFAULT true;
ALTER TABLE enrichment_usage ADD COLUMN livemode boolean NOT NULL DEFAULT true;
-- (Every existing row is live: NOT VALID skips a scan of the table under its lock.)
ALTER TABLE enrichment_jobs ADD CONSTRAINT test_jobs_hold_no_unit
    CHECK (livemode OR billing_period IS NULL) NOT VALID;
-- Each mode fills its own slots: the oldest waiting job of a mode, found by index.
CREATE INDEX enrichment_jobs_waiting_by_mode ON enrichment_jobs (workspace_id, livemode,
    created_at, id) WHERE status = 'waiting';
DROP INDEX enrichment_jobs_waiting;
