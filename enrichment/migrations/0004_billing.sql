-- Billing: the Stripe catalog, overage reports frozen per workspace and UTC day, Stripe
-- events received, invoices.

ALTER TABLE workspaces ADD COLUMN stripe_subscription_id text;

CREATE TABLE billing_catalog (
    key       text PRIMARY KEY,     -- 'meter' or a price lookup key
    stripe_id text NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now()
);

-- One row per workspace and closed UTC day with usage, frozen BEFORE anything is sent.
-- units = overage units this day adds (beyond included + credits, in period order).
CREATE TABLE usage_reports (
    workspace_id   uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    day            date NOT NULL,
    period         date NOT NULL,
    used_to_date   integer NOT NULL,   -- units used in the period through this day
    allowance      integer NOT NULL,   -- included + credits bought by the end of the day
    units          integer NOT NULL CHECK (units >= 0),
    unit_price_usd numeric(10, 4) NOT NULL,
    identifier     text NOT NULL UNIQUE, -- the meter event's identifier and Idempotency-Key
    status         text NOT NULL CHECK (status IN ('none', 'pending', 'sent', 'ledger')),
    attempts       integer NOT NULL DEFAULT 0,
    last_error     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz,
    PRIMARY KEY (workspace_id, day)
);
CREATE INDEX usage_reports_pending ON usage_reports (day) WHERE status = 'pending';

CREATE TABLE stripe_events (
    id          text PRIMARY KEY,
    type        text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE invoices (
    id           text PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    status       text NOT NULL,
    amount_due   integer NOT NULL,       -- cents
    amount_paid  integer NOT NULL,
    currency     text NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoices_workspace ON invoices (workspace_id);

-- The nightly report aggregates a period's usage of every workspace by UTC day.
CREATE INDEX enrichment_usage_created ON enrichment_usage (created_at)
    INCLUDE (workspace_id, units);

-- A purchased pack is recorded once, by its checkout session.
ALTER TABLE credit_ledger ADD COLUMN checkout_session_id text UNIQUE;
