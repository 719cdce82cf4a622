-- Money against the real Stripe: plan history, checkout sessions we created, reports that
-- retry with backoff and park, refunds and disputes.

-- Which plan applied when. The plan in force on a UTC day is the last one effective before
-- the day ends (a change applies to the whole day it is made on, as Stripe prices the day's
-- meter event, timestamped 23:59, with the subscription's price at that moment).
CREATE TABLE workspace_plans (
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    effective_at timestamptz NOT NULL,
    plan         text NOT NULL,
    PRIMARY KEY (workspace_id, effective_at)
);
INSERT INTO workspace_plans (workspace_id, effective_at, plan)
    SELECT id, created_at, plan FROM workspaces;
-- When the current plan began (NULL: since the workspace was created): a period that changed
-- plan caps units by the plan in force (see billing/usage.py hard_cap).
ALTER TABLE workspaces ADD COLUMN plan_since timestamptz;

-- The plan the Stripe subscription's prices belong to (NULL: not attached yet). A workspace
-- whose `plan` differs is moved by the billing sync job until they agree.
ALTER TABLE workspaces ADD COLUMN stripe_plan text, ADD COLUMN stripe_plan_at timestamptz;
UPDATE workspaces SET stripe_plan = plan, stripe_plan_at = created_at
    WHERE stripe_subscription_id IS NOT NULL;

-- Checkout sessions this service created: the only ones a webhook may credit.
CREATE TABLE checkout_sessions (
    id             text PRIMARY KEY,
    workspace_id   uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    pack           text NOT NULL,
    units          integer NOT NULL CHECK (units > 0),
    amount_cents   integer NOT NULL CHECK (amount_cents >= 0),
    currency       text NOT NULL,
    customer       text,
    status         text NOT NULL DEFAULT 'open'
                   CHECK (status IN ('open', 'awaiting_payment', 'paid', 'failed')),
    payment_intent text UNIQUE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    paid_at        timestamptz
);
CREATE INDEX checkout_sessions_workspace ON checkout_sessions (workspace_id);

-- Credits: a pack adds units (dated by payment), a refund or lost dispute takes back what
-- was not used yet (negative units, one row per Stripe event).
ALTER TABLE credit_ledger ADD COLUMN payment_intent text;
CREATE INDEX credit_ledger_payment_intent ON credit_ledger (payment_intent);

-- How much of a payment Stripe has reversed (refunds add up; a lost dispute is all of it),
-- kept even when it arrives before the payment itself is recorded, and applied then.
CREATE TABLE credit_reversals (
    payment_intent text PRIMARY KEY,
    fraction       numeric NOT NULL CHECK (fraction BETWEEN 0 AND 1),
    reason         text NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Reports: sent independently, retried with backoff, then parked.
--   pending → sent | ledger                      (the normal path)
--   pending → failed   (retries used up; `billing report` by hand tries again)
--   pending → expired  (older than Stripe accepts meter events; settled as an invoice item)
--   expired → invoiced
ALTER TABLE usage_reports DROP CONSTRAINT usage_reports_status_check;
ALTER TABLE usage_reports ADD CONSTRAINT usage_reports_status_check
    CHECK (status IN ('none', 'pending', 'sent', 'ledger', 'failed', 'expired', 'invoiced'));
ALTER TABLE usage_reports
    ADD COLUMN plan            text,
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN first_attempt_at timestamptz,
    ADD COLUMN last_attempt_at timestamptz,
    ADD COLUMN invoice_item    text;
UPDATE usage_reports r SET plan = w.plan FROM workspaces w WHERE w.id = r.workspace_id;
DROP INDEX usage_reports_pending;
CREATE INDEX usage_reports_unsent ON usage_reports (next_attempt_at)
    WHERE status IN ('pending', 'failed');
