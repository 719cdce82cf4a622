-- The prices in force per plan, with their history (enrichment/billing/prices.py is its one
-- writer): the billing walk prices a day's overage at the price in force at the day's end, and
-- the API and workers refuse to start while the plans file disagrees with the latest row
-- (docs/operations.md#changing-a-price). Rows are written when the Stripe catalog is first
-- synced with a plan, and by `enrichment billing change-price`.
CREATE TABLE plan_prices (
    plan         text NOT NULL,
    base_usd     numeric(12, 2) NOT NULL CHECK (base_usd >= 0),
    overage_usd  numeric(12, 6) NOT NULL CHECK (overage_usd >= 0),
    effective_at timestamptz NOT NULL,
    PRIMARY KEY (plan, effective_at)
);
