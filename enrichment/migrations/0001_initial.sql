-- Workspaces, keys, jobs (+ outbox), results and usage: the foundation's tables.

CREATE TABLE workspaces (
    id                   uuid PRIMARY KEY,
    name                 text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    plan                 text NOT NULL,
    region               text NOT NULL DEFAULT 'us' CHECK (region IN ('us', 'eu')),
    person_level_enabled boolean NOT NULL DEFAULT true,
    stripe_customer_id   text UNIQUE,
    created_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    prefix       text NOT NULL UNIQUE,       -- public lookup part of the key
    key_hash     bytea NOT NULL,             -- sha256 of the whole key
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX api_keys_workspace ON api_keys (workspace_id);

CREATE TABLE enrichment_jobs (
    id              uuid PRIMARY KEY,
    workspace_id    uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    template        text NOT NULL,
    queue           text NOT NULL,
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'processing', 'succeeded', 'failed', 'dead')),
    subject_hash    text NOT NULL,           -- sha256 of the normalised identifier
    lead            jsonb NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}',
    attempts        integer NOT NULL DEFAULT 0,
    error           text,
    lease_token     uuid,                    -- fences the worker that holds the job
    lease_until     timestamptz,             -- past it, the sweeper hands the job to another worker
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    completed_at    timestamptz
);
CREATE INDEX idx_enrichment_jobs_status ON enrichment_jobs (status)
    WHERE status IN ('queued', 'processing');
CREATE INDEX enrichment_jobs_workspace ON enrichment_jobs (workspace_id, created_at DESC);
CREATE INDEX enrichment_jobs_subject ON enrichment_jobs (workspace_id, subject_hash);

-- Transactional outbox: written in the job's transaction, deleted once the task is published.
CREATE TABLE job_outbox (
    job_id     uuid PRIMARY KEY REFERENCES enrichment_jobs (id) ON DELETE CASCADE,
    queue      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE enrichment_results (
    job_id          uuid PRIMARY KEY REFERENCES enrichment_jobs (id) ON DELETE CASCADE,
    workspace_id    uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    idempotency_key text,
    template        text NOT NULL,
    fields          jsonb NOT NULL,
    citations       jsonb NOT NULL,
    completeness    numeric(4, 3) NOT NULL CHECK (completeness BETWEEN 0 AND 1),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX idx_enrichment_results_idem ON enrichment_results (idempotency_key);

CREATE TABLE enrichment_usage (
    id                bigserial PRIMARY KEY,
    workspace_id      uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    job_id            uuid NOT NULL UNIQUE,
    template          text NOT NULL,
    units             integer NOT NULL CHECK (units >= 0),
    tokens            integer NOT NULL DEFAULT 0,
    searches          integer NOT NULL DEFAULT 0,
    social_requests   integer NOT NULL DEFAULT 0,
    max_tokens        integer,
    max_searches      integer,
    cost_estimate_usd numeric(12, 6) NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_enrichment_usage_workspace ON enrichment_usage (workspace_id, created_at DESC);
