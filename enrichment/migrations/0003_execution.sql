-- Execution: jobs waiting for a workspace slot, and dead letters.

-- A queued job whose workspace had no free slot when a worker took it. It waits here (not in
-- a worker, not in the tier queue) until a slot is released and it is woken.
ALTER TABLE enrichment_jobs ADD COLUMN deferred boolean NOT NULL DEFAULT false;
CREATE INDEX enrichment_jobs_deferred ON enrichment_jobs (workspace_id, created_at)
    WHERE status = 'queued' AND deferred;

CREATE TABLE dead_letters (
    job_id       uuid PRIMARY KEY REFERENCES enrichment_jobs (id) ON DELETE CASCADE,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    status       text NOT NULL,               -- failed (final 4xx) or dead (retries used up)
    error        text,
    attempts     integer NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    replayed_at  timestamptz
);
CREATE INDEX dead_letters_pending ON dead_letters (created_at) WHERE replayed_at IS NULL;
