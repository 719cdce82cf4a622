-- Scheduling under real workloads: only runnable jobs go to the broker.
--
-- A job that may not run yet (its workspace's slots are all held) is `waiting` here, in line
-- behind its workspace's older jobs. A workspace's slots are held by its `queued` (runnable,
-- its message is in a tier queue) and `processing` jobs; when one ends, the oldest waiting job
-- takes its slot in the same transaction (enrichment/jobstore.py).

ALTER TABLE enrichment_jobs DROP CONSTRAINT enrichment_jobs_status_check;
ALTER TABLE enrichment_jobs ADD CONSTRAINT enrichment_jobs_status_check
    CHECK (status IN ('waiting', 'queued', 'processing', 'succeeded', 'failed', 'dead'));

ALTER TABLE enrichment_jobs
    ADD COLUMN runnable_at  timestamptz,  -- when it last took a slot (queue wait starts here)
    ADD COLUMN published_at timestamptz,  -- when its message was last sent to the broker
    ADD COLUMN runs integer NOT NULL DEFAULT 0;  -- claims since admission or replay

-- Before: every admitted job had a message; parked ones were `deferred`. Now the oldest
-- `limit` queued/processing jobs of a workspace keep their slot (and their message, which is
-- still in the broker: published "now", so the lost-message sweep leaves it alone) and the
-- rest wait; a message left for a waiting job is a no-op claim. The limit is the smallest a
-- plan can set (1); a workspace whose plan allows more gets its other slots filled by the
-- sweeper's first run.
UPDATE enrichment_jobs SET status = 'waiting' WHERE status = 'queued' AND deferred;
UPDATE enrichment_jobs j SET status = 'waiting' FROM (
    SELECT id, row_number() OVER (PARTITION BY workspace_id
                                  ORDER BY status = 'processing' DESC, created_at, id) AS n
    FROM enrichment_jobs WHERE status IN ('queued', 'processing')) ranked
    WHERE j.id = ranked.id AND ranked.n > 1 AND j.status = 'queued';
UPDATE enrichment_jobs SET runnable_at = now(), published_at = now(), runs = attempts
    WHERE status IN ('queued', 'processing');
ALTER TABLE enrichment_jobs DROP COLUMN deferred;  -- and its index

-- A workspace's line (oldest first) and the slots it holds.
CREATE INDEX enrichment_jobs_waiting ON enrichment_jobs (workspace_id, created_at, id)
    WHERE status = 'waiting';
CREATE INDEX enrichment_jobs_active ON enrichment_jobs (workspace_id)
    WHERE status IN ('queued', 'processing');
-- Queue wait over the last minutes (the alert), without a scan of every job.
CREATE INDEX enrichment_jobs_started ON enrichment_jobs (started_at);
