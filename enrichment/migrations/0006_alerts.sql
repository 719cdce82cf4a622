-- Alert rule states and their changes.
CREATE TABLE alert_states (
    rule         text PRIMARY KEY,
    state        text NOT NULL CHECK (state IN ('ok', 'firing')),
    value        double precision,
    since        timestamptz NOT NULL DEFAULT now(),
    evaluated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE alert_events (
    id    bigserial PRIMARY KEY,
    rule  text NOT NULL,
    state text NOT NULL,
    value double precision,
    at    timestamptz NOT NULL DEFAULT now()
);
