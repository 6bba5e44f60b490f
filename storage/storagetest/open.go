package storagetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/brokerauth/broker/storage/sqlstore"
)

// DefaultPostgresURL is the PostgreSQL server tests use when
// BROKER_TEST_DATABASE_URL is not set.
const DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// testMaxOpenConns keeps each test store's pool small: many tests, from
// many packages, share one PostgreSQL server and its max_connections.
const testMaxOpenConns = 4

// PostgresURL returns the URL of the test PostgreSQL server, from
// BROKER_TEST_DATABASE_URL or [DefaultPostgresURL]. When the server does not
// answer it skips the test, or fails it when CI=true.
func PostgresURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("BROKER_TEST_DATABASE_URL")
	if url == "" {
		url = DefaultPostgresURL
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := sqlstore.Open(ctx, url, sqlstore.WithMaxOpenConns(1))
	if err != nil {
		msg := "PostgreSQL is not available (set BROKER_TEST_DATABASE_URL): %v"
		if os.Getenv("CI") == "true" {
			t.Fatalf(msg, err)
		}
		t.Skipf(msg, err)
	}
	s.Close()
	return url
}

// PostgresSchema returns the test server's URL (see [PostgresURL]) and the
// name of a fresh schema for this test, which is dropped with everything in
// it when the test ends. Open stores on it with [sqlstore.WithSchema];
// [sqlstore.Store.Migrate] creates it.
func PostgresSchema(t testing.TB) (url, schema string) {
	t.Helper()
	url = PostgresURL(t)
	b := make([]byte, 8)
	rand.Read(b)
	schema = "test_" + hex.EncodeToString(b)
	t.Cleanup(func() {
		// The test's context is already canceled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := sqlstore.Open(ctx, url, sqlstore.WithMaxOpenConns(1))
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer s.Close()
		if _, err := s.DB().ExecContext(ctx, "DROP SCHEMA IF EXISTS "+pq.QuoteIdentifier(schema)+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return url, schema
}

// OpenPostgres returns a migrated store in a fresh PostgreSQL schema of its
// own (see [PostgresSchema]) with a pool of 4 connections, closed and
// dropped when the test ends. For other options, open the store yourself
// with [PostgresSchema], [sqlstore.Open] and [sqlstore.WithSchema].
func OpenPostgres(t testing.TB) *sqlstore.Store {
	t.Helper()
	url, schema := PostgresSchema(t)
	return open(t, url, sqlstore.WithMaxOpenConns(testMaxOpenConns), sqlstore.WithSchema(schema))
}

// OpenSQLite returns a migrated store on a new SQLite file in t.TempDir(),
// closed when the test ends.
func OpenSQLite(t testing.TB) *sqlstore.Store {
	t.Helper()
	return open(t, SQLiteURL(t))
}

// SQLiteURL returns the URL of a new SQLite database file in t.TempDir(),
// for tests that open more than one store on it.
func SQLiteURL(t testing.TB) string {
	return "sqlite://" + filepath.ToSlash(filepath.Join(t.TempDir(), "broker.db"))
}

func open(t testing.TB, url string, opts ...sqlstore.Option) *sqlstore.Store {
	t.Helper()
	s, err := sqlstore.Open(t.Context(), url, opts...)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return s
}
