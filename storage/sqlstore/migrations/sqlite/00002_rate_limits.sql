-- Rate-limit counters (SQLite): failed password logins and sent emails,
-- counted per bucket ("login-key:email:ann@example.com", "login-ip:192.0.2.1",
-- ...) in fixed windows.
--
-- A row is one bucket's current window: hits so far and when the window ends
-- (INTEGER microseconds since the Unix epoch, as in 00001). sqlstore updates
-- it with one INSERT ... ON CONFLICT DO UPDATE (SQLite 3.35 or later for
-- RETURNING), which starts a new window when the stored one has ended; the
-- sweeper deletes ended ones.

-- +goose Up
CREATE TABLE rate_limits (
    bucket  TEXT NOT NULL,
    hits    INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    CONSTRAINT rate_limits_pkey PRIMARY KEY (bucket)
) STRICT;
CREATE INDEX rate_limits_expires_idx ON rate_limits (expires);

-- +goose Down
DROP TABLE rate_limits;
