-- The audit log (SQLite): sign-ins and their failures, logouts, revoked
-- sessions, passkey and password changes, deleted users.
--
-- Append-only: sqlstore only inserts rows and, for the retention period
-- (audit.retention), deletes those older than it. user_id has no foreign
-- key, so that a user's history outlives the user. AUTOINCREMENT keeps ids
-- from being reused after the oldest rows are deleted, so id orders the
-- rows in append order and pages listings. Times are INTEGER microseconds
-- since the Unix epoch, as in 00001.

-- +goose Up
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    occurred_at INTEGER NOT NULL,
    event       TEXT NOT NULL,
    user_id     TEXT NOT NULL DEFAULT '',
    provider    TEXT NOT NULL DEFAULT '',
    reason      TEXT NOT NULL DEFAULT '',
    ip          TEXT NOT NULL DEFAULT '',
    user_agent  TEXT NOT NULL DEFAULT '',
    data        TEXT NOT NULL DEFAULT '{}'
) STRICT;
CREATE INDEX audit_log_user_id_idx ON audit_log (user_id, occurred_at);
CREATE INDEX audit_log_event_idx ON audit_log (event, occurred_at);
CREATE INDEX audit_log_occurred_at_idx ON audit_log (occurred_at);

-- +goose Down
DROP TABLE audit_log;
