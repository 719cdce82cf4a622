-- The units ledger (enrichment/units.py). A refunded or lost-disputed pack whose units were
-- only reserved by unfinished jobs when the reversal arrived cannot take those back at once
-- (the cap would fall below what is reserved); they are owed, and each unit of a job
-- admitted before the reversal that comes back pays one before it can be spent again.
ALTER TABLE credit_reversals
    ADD COLUMN owed        integer NOT NULL DEFAULT 0 CHECK (owed >= 0),
    ADD COLUMN owed_before timestamptz;
CREATE INDEX credit_reversals_owed ON credit_reversals (payment_intent) WHERE owed > 0;
