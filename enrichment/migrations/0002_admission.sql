-- Admission control: idempotency, units reserved per billing period, credits, suppressions,
-- client Idempotency-Key answers.

ALTER TABLE enrichment_jobs
    ADD COLUMN idempotency_key text,  -- sha256(workspace|identifier|template|UTC day)
    ADD COLUMN billing_period  date;  -- first day of the UTC month whose unit it reserved
CREATE UNIQUE INDEX enrichment_jobs_idempotency ON enrichment_jobs (idempotency_key);

-- Units reserved at admission (queued + running + succeeded), per workspace and period. A job
-- that ends failed/dead gives its unit back. One row per period serialises admissions of one
-- workspace, which makes the hard cap exact under concurrency.
CREATE TABLE usage_counters (
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    period       date NOT NULL,
    reserved     integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    PRIMARY KEY (workspace_id, period)
);

-- Purchased credit units (the billing issue fills it); they raise the hard cap.
CREATE TABLE credit_ledger (
    id              bigserial PRIMARY KEY,
    workspace_id    uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    units           integer NOT NULL,
    reason          text NOT NULL,
    stripe_event_id text UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_ledger_workspace ON credit_ledger (workspace_id);

-- Subjects that must not be enriched again (erasure, objection).
CREATE TABLE suppressions (
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    subject_hash text NOT NULL,
    reason       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, subject_hash)
);

-- Answers to requests that carried an Idempotency-Key header, kept 24 h.
CREATE TABLE api_idempotency (
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    key          text NOT NULL,
    request_hash text NOT NULL,
    status       integer NOT NULL,
    response     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, key)
);
CREATE INDEX api_idempotency_created ON api_idempotency (created_at);
