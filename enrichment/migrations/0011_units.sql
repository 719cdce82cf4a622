-- The units ledger (enrichment/jobs/units.py). A refunded or lost-disputed pack whose units were
-- only reserved by unfinished jobs when the reversal arrived cannot take those back at once
-- (the cap would fall below what is reserved); they are owed, and each unit of a job
-- admitted before the reversal that comes back pays one before it can be spent again.
ALTER TABLE credit_reversals
    ADD COLUMN owed        integer NOT NULL DEFAULT 0 CHECK (owed >= 0),
    ADD COLUMN owed_before timestamptz;
CREATE INDEX credit_reversals_owed ON credit_reversals (payment_intent) WHERE owed > 0;

-- What happened to a job, for the layers above the jobs service (webhook messages, batch
-- completion): written in the transaction that ends a job (or answers it at once, erases it,
-- or closes a batch's submission), turned into messages and deleted after commit; the webhook
-- sweeper turns what a crash left. job_id NULL: the workspace's open batches may be complete.
CREATE TABLE job_events (
    id           bigserial PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    job_id       uuid,
    status       text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_events_created ON job_events (created_at);
