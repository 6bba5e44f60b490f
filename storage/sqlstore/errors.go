package sqlstore

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/lib/pq"
	"github.com/lib/pq/pqerror"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/brokerauth/broker/storage"
)

// conflictFlowState is the conflict field of a consumed flow state; callers
// turn it into [storage.ErrConsumed].
const conflictFlowState = "flow_state"

// constraintField maps the name of a unique constraint or index in the
// migrations to the [storage.ConflictError] field it reports.
func constraintField(constraint string) string {
	switch constraint {
	case "users_pkey":
		return storage.ConflictUserID
	case "users_username_key":
		return storage.ConflictUsername
	case "users_email_verified_key":
		return storage.ConflictEmail
	case "users_webauthn_handle_key":
		return storage.ConflictWebAuthnHandle
	case "keys_pkey":
		return storage.ConflictKey
	case "sessions_pkey":
		return storage.ConflictSession
	case "authenticators_pkey":
		return storage.ConflictCredential
	case "verification_tokens_pkey":
		return storage.ConflictVerificationToken
	case "flow_states_pkey":
		return conflictFlowState
	}
	return constraint
}

// dbErr translates an error of operation op (e.g. "create user") from the
// database into the storage vocabulary; it is the only place that knows the
// drivers' error codes:
//
//   - sql.ErrNoRows becomes [storage.ErrNotFound];
//   - a unique violation (PostgreSQL 23505; SQLite SQLITE_CONSTRAINT_UNIQUE
//     or SQLITE_CONSTRAINT_PRIMARYKEY) becomes a [*storage.ConflictError]
//     naming the rule that was broken;
//   - a foreign key violation (PostgreSQL 23503; SQLite
//     SQLITE_CONSTRAINT_FOREIGNKEY) becomes [storage.ErrNotFound]: every
//     foreign key references users, so the user does not exist;
//   - anything else is wrapped with op.
//
// It returns nil for a nil error.
func dbErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("sqlstore: %s: %w", op, storage.ErrNotFound)
	}
	if pe, ok := errors.AsType[*pq.Error](err); ok {
		switch pe.Code {
		case pqerror.UniqueViolation:
			return conflict(pe.Constraint, err)
		case pqerror.ForeignKeyViolation:
			return fmt.Errorf("sqlstore: %s: user: %w", op, storage.ErrNotFound)
		}
	}
	if se, ok := errors.AsType[*sqlite.Error](err); ok {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return conflict(sqliteConstraint(se.Code(), se.Error()), err)
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return fmt.Errorf("sqlstore: %s: user: %w", op, storage.ErrNotFound)
		}
	}
	return fmt.Errorf("sqlstore: %s: %w", op, err)
}

func conflict(constraint string, err error) *storage.ConflictError {
	return &storage.ConflictError{Field: constraintField(constraint), Err: err}
}

// sqliteConstraint names the constraint of an SQLite unique violation the way
// the migrations name it. SQLite reports "UNIQUE constraint failed: index
// 'name'" for an index on expressions and "UNIQUE constraint failed:
// table.column[, table.column]" for a primary key or a plain column list.
func sqliteConstraint(code int, msg string) string {
	const marker = "constraint failed: "
	i := strings.LastIndex(msg, marker)
	if i < 0 {
		return ""
	}
	rest := msg[i+len(marker):]
	if name, ok := strings.CutPrefix(rest, "index '"); ok {
		name, _, _ = strings.Cut(name, "'")
		return name
	}
	first, _, _ := strings.Cut(rest, ",")
	first, _, _ = strings.Cut(first, " ")
	table, column, _ := strings.Cut(first, ".")
	if code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY {
		return table + "_pkey"
	}
	return table + "_" + column + "_key"
}
