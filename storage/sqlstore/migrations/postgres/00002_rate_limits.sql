-- Rate-limit counters (PostgreSQL): failed password logins and sent emails,
-- counted per bucket ("login-key:email:ann@example.com", "login-ip:192.0.2.1",
-- ...) in fixed windows, so that every replica sees the same counts.
--
-- A row is one bucket's current window: hits so far and when the window ends.
-- sqlstore updates it with one INSERT ... ON CONFLICT DO UPDATE, which starts
-- a new window when the stored one has ended; the sweeper deletes ended ones.

-- +goose Up
CREATE TABLE rate_limits (
    bucket  text NOT NULL,
    hits    integer NOT NULL,
    expires timestamptz NOT NULL,
    CONSTRAINT rate_limits_pkey PRIMARY KEY (bucket)
);
CREATE INDEX rate_limits_expires_idx ON rate_limits (expires);

-- +goose Down
DROP TABLE rate_limits;
