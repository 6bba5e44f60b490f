-- The audit log (PostgreSQL): sign-ins and their failures, logouts,
-- revoked sessions, passkey and password changes, deleted users.
--
-- Append-only: sqlstore only inserts rows and, for the retention period
-- (audit.retention), deletes those older than it. user_id has no foreign
-- key, so that a user's history outlives the user. id orders the rows in
-- append order and pages listings.

-- +goose Up
CREATE TABLE audit_log (
    id          bigserial NOT NULL,
    occurred_at timestamptz NOT NULL,
    event       text NOT NULL,
    user_id     text COLLATE "C" NOT NULL DEFAULT '',
    provider    text NOT NULL DEFAULT '',
    reason      text NOT NULL DEFAULT '',
    ip          text NOT NULL DEFAULT '',
    user_agent  text NOT NULL DEFAULT '',
    data        jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT audit_log_pkey PRIMARY KEY (id)
);
CREATE INDEX audit_log_user_id_idx ON audit_log (user_id, occurred_at);
CREATE INDEX audit_log_event_idx ON audit_log (event, occurred_at);
CREATE INDEX audit_log_occurred_at_idx ON audit_log (occurred_at);

-- +goose Down
DROP TABLE audit_log;
