// Package sqlstore implements [storage.Store] over sqlx for PostgreSQL
// (github.com/lib/pq) and SQLite (modernc.org/sqlite, pure Go).
//
// Every query is written once with ? placeholders and rebound for the
// dialect; the dialects differ only in their migrations
// (migrations/postgres, migrations/sqlite, embedded and run by goose through
// [Store.Migrate]) and in how a time is stored:
//
//   - PostgreSQL: timestamptz, jsonb attributes, bytea.
//   - SQLite: INTEGER microseconds since the Unix epoch (so comparisons are
//     numeric), TEXT JSON attributes, BLOB, STRICT tables.
//
// Times are truncated to the microsecond and returned in UTC.
//
// Uniqueness rules are named constraints and indexes (users_username_key,
// users_email_verified_key, keys_pkey, ...); one helper maps a violation of
// each to a [storage.ConflictError] naming the rule, and a foreign key
// violation (a missing user) to [storage.ErrNotFound].
//
// Concurrency: read-modify-write operations (UpdateUser, UpdateKey,
// UpdateSessionAttributes) run in one transaction that locks the row with
// SELECT ... FOR UPDATE on PostgreSQL. On SQLite every transaction is BEGIN
// IMMEDIATE, so it holds the database's write lock from its start, and other
// writers wait up to the 10 s busy timeout. UseVerificationToken is a single
// DELETE ... RETURNING, which both dialects run atomically.
//
// Usernames are compared with SQL lower(): PostgreSQL folds every letter,
// SQLite only ASCII ones. Emails are lower-cased in Go before they are stored.
package sqlstore
