-- Initial schema of the broker (SQLite).
--
-- Times are INTEGER microseconds since the Unix epoch (UTC), so that
-- comparisons are numeric, never textual. Tables are STRICT, so a value of the
-- wrong type is an error instead of being stored as is.
--
-- Constraint and index names are part of the contract with sqlstore's error
-- mapping (errors.go): SQLite names the index of a unique violation, or for a
-- primary key the table, which tells which rule the caller broke.
--
-- Note: SQLite's lower() folds ASCII letters only, so usernames are unique
-- case-insensitively for ASCII; PostgreSQL folds all letters.

-- +goose Up
CREATE TABLE users (
    id                TEXT NOT NULL,
    username          TEXT,
    email             TEXT,
    email_verified_at INTEGER,
    name              TEXT,
    image             TEXT,
    attributes        TEXT NOT NULL DEFAULT '{}',
    webauthn_handle   BLOB,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    CONSTRAINT users_pkey PRIMARY KEY (id)
) STRICT;
-- Usernames are unique case-insensitively.
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
-- A verified email belongs to one user; unverified duplicates are allowed.
CREATE UNIQUE INDEX users_email_verified_key ON users (lower(email)) WHERE email_verified_at IS NOT NULL;
CREATE UNIQUE INDEX users_webauthn_handle_key ON users (webauthn_handle);
CREATE INDEX users_created_at_idx ON users (created_at, id);

CREATE TABLE keys (
    id               TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    provider         TEXT NOT NULL,
    provider_user_id TEXT NOT NULL,
    hashed_password  TEXT,
    access_token     TEXT,
    refresh_token    TEXT,
    id_token         TEXT,
    token_expiry     INTEGER,
    scope            TEXT,
    token_type       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    CONSTRAINT keys_pkey PRIMARY KEY (id),
    CONSTRAINT keys_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) STRICT;
CREATE INDEX keys_user_id_idx ON keys (user_id, created_at);
CREATE INDEX keys_with_tokens_idx ON keys (id)
    WHERE access_token IS NOT NULL OR refresh_token IS NOT NULL OR id_token IS NOT NULL;

CREATE TABLE sessions (
    id               TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    active_expires   INTEGER NOT NULL,
    idle_expires     INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    authenticated_at INTEGER NOT NULL,
    last_seen_at     INTEGER NOT NULL,
    user_agent       TEXT NOT NULL DEFAULT '',
    ip               TEXT NOT NULL DEFAULT '',
    attributes       TEXT NOT NULL DEFAULT '{}',
    CONSTRAINT sessions_pkey PRIMARY KEY (id),
    CONSTRAINT sessions_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) STRICT;
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_idle_expires_idx ON sessions (idle_expires);

CREATE TABLE authenticators (
    credential_id    BLOB NOT NULL,
    user_id          TEXT NOT NULL,
    public_key       BLOB NOT NULL,
    sign_count       INTEGER NOT NULL DEFAULT 0 CHECK (sign_count BETWEEN 0 AND 4294967295),
    backup_eligible  INTEGER NOT NULL DEFAULT 0,
    backed_up        INTEGER NOT NULL DEFAULT 0,
    device_type      TEXT NOT NULL DEFAULT '',
    transports       TEXT NOT NULL DEFAULT '[]',
    aaguid           BLOB,
    attestation_type TEXT NOT NULL DEFAULT '',
    name             TEXT NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL,
    last_used_at     INTEGER,
    CONSTRAINT authenticators_pkey PRIMARY KEY (credential_id),
    CONSTRAINT authenticators_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) STRICT;
CREATE INDEX authenticators_user_id_idx ON authenticators (user_id, created_at);

CREATE TABLE verification_tokens (
    identifier  TEXT NOT NULL,
    token_hash  TEXT NOT NULL,
    expires     INTEGER NOT NULL,
    redirect_to TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    CONSTRAINT verification_tokens_pkey PRIMARY KEY (identifier, token_hash)
) STRICT;
CREATE INDEX verification_tokens_expires_idx ON verification_tokens (expires);

CREATE TABLE flow_states (
    id      TEXT NOT NULL,
    expires INTEGER NOT NULL,
    CONSTRAINT flow_states_pkey PRIMARY KEY (id)
) STRICT;
CREATE INDEX flow_states_expires_idx ON flow_states (expires);

-- +goose Down
DROP TABLE flow_states;
DROP TABLE verification_tokens;
DROP TABLE authenticators;
DROP TABLE sessions;
DROP TABLE keys;
DROP TABLE users;
