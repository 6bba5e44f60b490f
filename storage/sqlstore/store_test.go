package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brokerauth/broker/storage"
	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
)

func TestSQLite(t *testing.T) {
	t.Parallel()
	storagetest.Run(t, func(t *testing.T) storage.Store { return storagetest.OpenSQLite(t) })
}

func TestSQLiteMemory(t *testing.T) {
	t.Parallel()
	storagetest.Run(t, func(t *testing.T) storage.Store { return openMigrated(t, "sqlite::memory:") })
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	storagetest.PostgresURL(t) // skip (or fail under CI) once, not per subtest
	storagetest.Run(t, func(t *testing.T) storage.Store { return storagetest.OpenPostgres(t) })
}

func openMigrated(t testing.TB, url string, opts ...sqlstore.Option) *sqlstore.Store {
	t.Helper()
	s, err := sqlstore.Open(t.Context(), url, opts...)
	if err != nil {
		t.Fatalf("Open(%s) = %v", url, err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate = %v", err)
	}
	return s
}

// TestUpdateKeyAcrossStores runs concurrent UpdateKey calls on one key
// through two Stores (two connection pools, as two broker processes would
// have) and checks that they ran one after another.
func TestUpdateKeyAcrossStores(t *testing.T) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		url := storagetest.SQLiteURL(t)
		updateKeyAcross(t, openMigrated(t, url), openMigrated(t, url))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		url, schema := storagetest.PostgresSchema(t)
		a := openMigrated(t, url, sqlstore.WithSchema(schema), sqlstore.WithMaxOpenConns(4))
		b := openMigrated(t, url, sqlstore.WithSchema(schema), sqlstore.WithMaxOpenConns(4))
		updateKeyAcross(t, a, b)
	})
}

func updateKeyAcross(t *testing.T, a, b *sqlstore.Store) {
	now := time.Now()
	k := storage.Key{ID: "oidc:sub", UserID: "u1", Provider: "oidc", ProviderUserID: "sub", CreatedAt: now, UpdatedAt: now}
	if err := a.CreateUser(t.Context(), storage.User{ID: "u1", CreatedAt: now, UpdatedAt: now}, &k); err != nil {
		t.Fatalf("CreateUser = %v", err)
	}
	storagetest.UpdateKeyConcurrently(t, k.ID, 20, a, b)
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	check := func(t *testing.T, s *sqlstore.Store) {
		t.Helper()
		// Idempotent.
		for range 2 {
			if err := s.Migrate(t.Context()); err != nil {
				t.Fatalf("Migrate = %v", err)
			}
		}
		if err := s.CreateUser(t.Context(), storage.User{ID: "u1"}, nil); err != nil {
			t.Fatalf("CreateUser after Migrate = %v", err)
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		check(t, openMigrated(t, storagetest.SQLiteURL(t)))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		url, schema := storagetest.PostgresSchema(t)
		// Two stores migrating one new schema at once: the advisory lock
		// makes one wait for the other.
		stores := make([]*sqlstore.Store, 2)
		for i := range stores {
			s, err := sqlstore.Open(t.Context(), url, sqlstore.WithSchema(schema), sqlstore.WithMaxOpenConns(2))
			if err != nil {
				t.Fatalf("Open = %v", err)
			}
			t.Cleanup(func() { s.Close() })
			stores[i] = s
		}
		var wg sync.WaitGroup
		errs := make([]error, len(stores))
		for i, s := range stores {
			wg.Go(func() { errs[i] = s.Migrate(t.Context()) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("concurrent Migrate = %v", err)
		}
		check(t, stores[0])

		// The tables are in the schema, not in public.
		var n int
		err := stores[0].DB().GetContext(t.Context(), &n,
			`SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name IN ('users', 'keys', 'sessions')`, schema)
		if err != nil || n != 3 {
			t.Errorf("tables in schema %s: %d, %v; want 3", schema, n, err)
		}
	})
}

func TestOpen(t *testing.T) {
	ctx := t.Context()
	t.Run("relative sqlite path", func(t *testing.T) {
		dir := t.TempDir()
		t.Chdir(dir)
		s := openMigrated(t, "sqlite:broker.db")
		if err := s.CreateUser(ctx, storage.User{ID: "u1"}, nil); err != nil {
			t.Fatalf("CreateUser = %v", err)
		}
		s.Close()
		// The data is in ./broker.db.
		s2 := openMigrated(t, "sqlite://"+filepath.ToSlash(filepath.Join(dir, "broker.db")))
		if _, err := s2.GetUser(ctx, "u1"); err != nil {
			t.Errorf("GetUser in reopened file = %v", err)
		}
	})
	t.Run("sqlite pragmas", func(t *testing.T) {
		s := openMigrated(t, storagetest.SQLiteURL(t))
		if got := s.Dialect(); got != sqlstore.DialectSQLite {
			t.Errorf("Dialect = %q; want sqlite", got)
		}
		for pragma, want := range map[string]string{"journal_mode": "wal", "foreign_keys": "1", "busy_timeout": "10000"} {
			var got string
			if err := s.DB().GetContext(ctx, &got, "PRAGMA "+pragma); err != nil {
				t.Fatalf("PRAGMA %s = %v", pragma, err)
			}
			if got != want {
				t.Errorf("PRAGMA %s = %s; want %s", pragma, got, want)
			}
		}
	})
	t.Run("memory is one database", func(t *testing.T) {
		s := openMigrated(t, "sqlite::memory:")
		// Concurrent users of the store all see the same tables.
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			wg.Go(func() { errs[i] = s.CreateUser(ctx, storage.User{ID: fmt.Sprint("u", i)}, nil) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("CreateUser = %v", err)
		}
		users, err := s.ListUsers(ctx, "", 100)
		if err != nil || len(users) != len(errs) {
			t.Errorf("ListUsers = %d users, %v; want %d", len(users), err, len(errs))
		}
	})
	t.Run("postgres", func(t *testing.T) {
		s := storagetest.OpenPostgres(t)
		if got := s.Dialect(); got != sqlstore.DialectPostgres {
			t.Errorf("Dialect = %q; want postgres", got)
		}
		if err := s.Ping(ctx); err != nil {
			t.Errorf("Ping = %v", err)
		}
	})
	for _, tc := range []struct {
		url  string
		opts []sqlstore.Option
		want string
	}{
		{"mysql://localhost/db", nil, "unsupported database url"},
		{"broker.db", nil, "unsupported database url"},
		{"sqlite:", nil, "no path"},
		{"sqlite::memory:", []sqlstore.Option{sqlstore.WithSchema("x")}, "PostgreSQL only"},
		{"sqlite::memory:", []sqlstore.Option{sqlstore.WithMaxOpenConns(-1)}, "negative"},
		{"sqlite:" + filepath.Join(t.TempDir(), "missing", "dir", "broker.db"), nil, "sqlstore: open"},
		{"postgres://u:secret@localhost:port/db", nil, "invalid postgres url"},
		{"postgres://u:secret@localhost:port/db", []sqlstore.Option{sqlstore.WithSchema("x")}, "invalid postgres url"},
	} {
		t.Run("error "+tc.url, func(t *testing.T) {
			s, err := sqlstore.Open(ctx, tc.url, tc.opts...)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) = nil error; want one containing %q", tc.url, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open(%q) = %v; want an error containing %q", tc.url, err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("Open(%q) = %v; the error shows the password", tc.url, err)
			}
		})
	}
}

// TestUpdateUserClosureReads checks that an update closure may read through
// the same store (on another pooled connection) while its transaction is open.
func TestUpdateUserClosureReads(t *testing.T) {
	t.Parallel()
	s := storagetest.OpenSQLite(t)
	ctx := t.Context()
	for _, id := range []string{"a", "b"} {
		if err := s.CreateUser(ctx, storage.User{ID: id}, nil); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err := s.UpdateUser(ctx, "a", func(u *storage.User) error {
		other, err := s.GetUser(ctx, "b")
		if err != nil {
			return err
		}
		u.Name = &other.ID
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateUser = %v", err)
	}
}
