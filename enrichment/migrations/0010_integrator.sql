-- The integrator's API: job lists, batches, cached answers, matches, outgoing webhooks.

-- A batch submission: its jobs point to it; leads refused at submission are counted here.
CREATE TABLE batches (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    template     text NOT NULL,
    total        integer NOT NULL CHECK (total >= 0),
    rejected     integer NOT NULL DEFAULT 0 CHECK (rejected >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    submitted_at timestamptz,            -- when every lead had its item (NULL: being admitted)
    completed_at timestamptz             -- when its last job ended (batch.completed sent)
);
CREATE INDEX batches_workspace ON batches (workspace_id, created_at DESC);

ALTER TABLE enrichment_jobs
    ADD COLUMN batch_id    uuid REFERENCES batches (id) ON DELETE SET NULL,
    ADD COLUMN cached_from uuid,     -- the earlier job whose result answered this one
    ADD COLUMN match       boolean;  -- a succeeded job: did it find anything?

-- Lists: newest first, a stable order (created_at, id) for cursors; by status. (A batch's
-- jobs are found through batch_items: at most 100.)
DROP INDEX enrichment_jobs_workspace;
CREATE INDEX enrichment_jobs_list ON enrichment_jobs (workspace_id, created_at DESC, id DESC);
CREATE INDEX enrichment_jobs_list_status
    ON enrichment_jobs (workspace_id, status, created_at DESC, id DESC);
-- The cache: a subject's latest success with a template, from the providers themselves (a
-- cached answer never answers again: the data's age is its original's).
CREATE INDEX enrichment_jobs_fresh ON enrichment_jobs (workspace_id, subject_hash, template,
                                                       completed_at DESC)
    WHERE status = 'succeeded' AND cached_from IS NULL;

-- Per job: did it find anything (true: charged; false: succeeded without a match; NULL:
-- failed, dead, or a cached answer). The usage endpoint counts matches from these rows.
ALTER TABLE enrichment_usage ADD COLUMN match boolean;

-- Outgoing webhooks (Standard Webhooks). The secret signs every delivery, so it is kept.
CREATE TABLE webhook_endpoints (
    id             uuid PRIMARY KEY,
    workspace_id   uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    url            text NOT NULL,
    events         text[] NOT NULL,
    secret         text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    failing_since  timestamptz,      -- first failure of the current run of failures
    last_failure_at timestamptz,     -- a day without failures ends a run
    disabled_at    timestamptz       -- after 3 days of failures (re-enabled by PATCH)
);
CREATE INDEX webhook_endpoints_workspace ON webhook_endpoints (workspace_id);

-- One row per message to one endpoint: the outbox and the delivery log. `id` is the
-- message's webhook-id, the same on every retry.
CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY,
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    workspace_id     uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    event_type       text NOT NULL,
    payload          jsonb NOT NULL,
    job_id           uuid REFERENCES enrichment_jobs (id) ON DELETE CASCADE,  -- erasure
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivering', 'succeeded', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,
    lease_token      uuid,             -- the attempt in flight: only it writes the outcome
    swept_at         timestamptz,      -- the sweeper last re-sent its message
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'delivering');
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC);
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);  -- retention
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id) WHERE job_id IS NOT NULL;

-- A batch's leads in order: the job each became (a same-day repeat points to the earlier
-- job; an erased job leaves NULL) or a refusal.
CREATE TABLE batch_items (
    batch_id uuid NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    idx      integer NOT NULL,
    job_id   uuid REFERENCES enrichment_jobs (id) ON DELETE SET NULL,
    rejected boolean NOT NULL DEFAULT false,
    PRIMARY KEY (batch_id, idx)
);
CREATE INDEX batch_items_job ON batch_items (job_id) WHERE job_id IS NOT NULL;
