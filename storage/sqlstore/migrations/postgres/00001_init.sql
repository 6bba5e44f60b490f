-- Initial schema of the broker (PostgreSQL).
--
-- Constraint and index names are part of the contract with sqlstore's error
-- mapping (errors.go): a unique violation is reported by the name of the
-- constraint it hit, which tells which rule (user id, username, verified
-- email, key id, ...) the caller broke.
--
-- Ids that are paged by (users.id, keys.id) use the "C" collation so that
-- ordering is bytewise, as it is in SQLite.

-- +goose Up
CREATE TABLE users (
    id                text COLLATE "C" NOT NULL,
    username          text,
    email             text,
    email_verified_at timestamptz,
    name              text,
    image             text,
    attributes        jsonb NOT NULL DEFAULT '{}',
    webauthn_handle   bytea,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    CONSTRAINT users_pkey PRIMARY KEY (id)
);
-- Usernames are unique case-insensitively.
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
-- A verified email belongs to one user; unverified duplicates are allowed.
CREATE UNIQUE INDEX users_email_verified_key ON users (lower(email)) WHERE email_verified_at IS NOT NULL;
CREATE UNIQUE INDEX users_webauthn_handle_key ON users (webauthn_handle);
CREATE INDEX users_created_at_idx ON users (created_at, id);

CREATE TABLE keys (
    id               text COLLATE "C" NOT NULL,
    user_id          text COLLATE "C" NOT NULL,
    provider         text NOT NULL,
    provider_user_id text NOT NULL,
    hashed_password  text,
    access_token     text,
    refresh_token    text,
    id_token         text,
    token_expiry     timestamptz,
    scope            text,
    token_type       text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    CONSTRAINT keys_pkey PRIMARY KEY (id),
    CONSTRAINT keys_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
);
CREATE INDEX keys_user_id_idx ON keys (user_id, created_at);
CREATE INDEX keys_with_tokens_idx ON keys (id)
    WHERE access_token IS NOT NULL OR refresh_token IS NOT NULL OR id_token IS NOT NULL;

CREATE TABLE sessions (
    id               text NOT NULL,
    user_id          text COLLATE "C" NOT NULL,
    active_expires   timestamptz NOT NULL,
    idle_expires     timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    authenticated_at timestamptz NOT NULL,
    last_seen_at     timestamptz NOT NULL,
    user_agent       text NOT NULL DEFAULT '',
    ip               text NOT NULL DEFAULT '',
    attributes       jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT sessions_pkey PRIMARY KEY (id),
    CONSTRAINT sessions_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_idle_expires_idx ON sessions (idle_expires);

CREATE TABLE authenticators (
    credential_id    bytea NOT NULL,
    user_id          text COLLATE "C" NOT NULL,
    public_key       bytea NOT NULL,
    sign_count       bigint NOT NULL DEFAULT 0 CHECK (sign_count BETWEEN 0 AND 4294967295),
    backup_eligible  boolean NOT NULL DEFAULT false,
    backed_up        boolean NOT NULL DEFAULT false,
    device_type      text NOT NULL DEFAULT '',
    transports       text NOT NULL DEFAULT '[]',
    aaguid           bytea,
    attestation_type text NOT NULL DEFAULT '',
    name             text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL,
    last_used_at     timestamptz,
    CONSTRAINT authenticators_pkey PRIMARY KEY (credential_id),
    CONSTRAINT authenticators_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
);
CREATE INDEX authenticators_user_id_idx ON authenticators (user_id, created_at);

CREATE TABLE verification_tokens (
    identifier  text NOT NULL,
    token_hash  text NOT NULL,
    expires     timestamptz NOT NULL,
    redirect_to text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL,
    CONSTRAINT verification_tokens_pkey PRIMARY KEY (identifier, token_hash)
);
CREATE INDEX verification_tokens_expires_idx ON verification_tokens (expires);

CREATE TABLE flow_states (
    id      text NOT NULL,
    expires timestamptz NOT NULL,
    CONSTRAINT flow_states_pkey PRIMARY KEY (id)
);
CREATE INDEX flow_states_expires_idx ON flow_states (expires);

-- +goose Down
DROP TABLE flow_states;
DROP TABLE verification_tokens;
DROP TABLE authenticators;
DROP TABLE sessions;
DROP TABLE keys;
DROP TABLE users;
