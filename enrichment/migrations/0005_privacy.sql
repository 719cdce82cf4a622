-- Privacy: consent and objection records; retention bookkeeping.

CREATE TABLE consents (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    subject_hash text NOT NULL,          -- sha256 of the normalised identifier, never the identifier
    purpose      text NOT NULL,
    basis        text NOT NULL CHECK (basis IN ('consent', 'legitimate_interest')),
    granted      boolean NOT NULL,
    source       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consents_subject ON consents (workspace_id, subject_hash, created_at);

-- When raw data (lead input, error details) of a finished job was removed (90-day window).
ALTER TABLE enrichment_jobs ADD COLUMN raw_purged_at timestamptz;
CREATE INDEX enrichment_jobs_finished ON enrichment_jobs (completed_at)
    WHERE status IN ('succeeded', 'failed', 'dead');
