package sqlstore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"maps"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/brokerauth/broker/storage"
)

// Dialects reported by [Store.Dialect].
const (
	DialectPostgres = "postgres"
	DialectSQLite   = "sqlite"
)

// Default pool sizes; see [WithMaxOpenConns].
const (
	defaultPostgresMaxOpenConns = 20
	defaultSQLiteMaxOpenConns   = 8
)

//go:embed migrations/postgres/*.sql migrations/sqlite/*.sql
var migrations embed.FS

var _ storage.Store = (*Store)(nil)

// Store is the SQL implementation of [storage.Store]. It is safe for
// concurrent use.
type Store struct {
	db      *sqlx.DB
	dialect string
	schema  string // PostgreSQL search_path schema, "" for the server's default
	dsn     string // PostgreSQL connection string, for LISTEN (notify.go)
	notify  notifyState

	// stmts are the prepared hot-path statements, by query text: read
	// without a lock, replaced whole (under mu) when one is added.
	mu    sync.Mutex
	stmts atomic.Pointer[map[string]*sqlx.Stmt]
}

// Option configures [Open].
type Option func(*options)

type options struct {
	maxOpenConns int
	schema       string
}

// WithMaxOpenConns limits the connection pool to n open connections
// (n > 0). The defaults are 20 for PostgreSQL and 8 for an SQLite file.
// It has no effect on "sqlite::memory:", which always uses one connection.
func WithMaxOpenConns(n int) Option {
	return func(o *options) { o.maxOpenConns = n }
}

// WithSchema makes every PostgreSQL connection use schema name as its only
// search_path entry, so that all tables (and goose's version table) live in
// it. [Store.Migrate] creates the schema when it is missing. Tests use it to
// give each test its own schema. It is an error with SQLite.
func WithSchema(name string) Option {
	return func(o *options) { o.schema = name }
}

// Open connects to the database at rawURL and checks that it answers.
// rawURL is one of:
//
//	postgres://user@host:5432/db?sslmode=disable  (or postgresql://; any lib/pq URL)
//	sqlite:broker.db                              a path relative to the working directory
//	sqlite:///var/lib/broker/broker.db            an absolute path
//	sqlite::memory:                               a private in-memory database
//
// SQLite files are opened in WAL mode with synchronous=NORMAL, a 10 s busy
// timeout, foreign keys on and BEGIN IMMEDIATE transactions, so writers
// queue instead of failing and a read-modify-write transaction holds the
// write lock from its start. Every connection to ":memory:" would be a
// database of its own, so "sqlite::memory:" uses a pool of exactly one
// connection that is never closed while the Store is open; a transaction then
// holds the only connection, which is fine for tests and tools but means an
// update closure must not call back into the Store.
//
// A query string on an SQLite URL is passed on to the driver
// (modernc.org/sqlite), e.g. sqlite:broker.db?_pragma=cache_size(-20000).
//
// Open does not create tables; call [Store.Migrate].
func Open(ctx context.Context, rawURL string, opts ...Option) (*Store, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.maxOpenConns < 0 {
		return nil, fmt.Errorf("sqlstore: open: max open conns %d is negative", o.maxOpenConns)
	}
	var (
		s   *Store
		err error
	)
	switch {
	case strings.HasPrefix(rawURL, "postgres://"), strings.HasPrefix(rawURL, "postgresql://"):
		s, err = openPostgres(rawURL, o)
	case strings.HasPrefix(rawURL, "sqlite:"):
		s, err = openSQLite(strings.TrimPrefix(rawURL, "sqlite:"), o)
	default:
		return nil, errors.New("sqlstore: open: unsupported database url (want postgres://, postgresql:// or sqlite:…)")
	}
	if err != nil {
		return nil, err
	}
	if err := s.db.PingContext(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("sqlstore: open: %w", err)
	}
	return s, nil
}

func openPostgres(dsn string, o options) (*Store, error) {
	if o.schema != "" {
		u, err := url.Parse(dsn)
		if err != nil {
			return nil, fmt.Errorf("sqlstore: open: invalid postgres url: %w", redactURL(err))
		}
		q := u.Query()
		// lib/pq sends parameters it does not know as run-time parameters
		// at connection start, so every pooled connection gets it.
		q.Set("search_path", pq.QuoteIdentifier(o.schema))
		u.RawQuery = q.Encode()
		dsn = u.String()
	}
	connector, err := pq.NewConnector(dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: open: invalid postgres url: %w", redactURL(err))
	}
	db := sqlx.NewDb(sql.OpenDB(connector), "postgres")
	n := o.maxOpenConns
	if n == 0 {
		n = defaultPostgresMaxOpenConns
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	db.SetConnMaxIdleTime(5 * time.Minute)
	db.SetConnMaxLifetime(time.Hour)
	return &Store{db: db, dialect: DialectPostgres, schema: o.schema, dsn: dsn}, nil
}

func openSQLite(path string, o options) (*Store, error) {
	if o.schema != "" {
		return nil, errors.New("sqlstore: open: WithSchema is for PostgreSQL only")
	}
	var extra string
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path, extra = path[:i], path[i+1:]
	}
	// sqlite:///abs/path is an absolute path, sqlite://rel a relative one.
	path = strings.TrimPrefix(path, "//")
	if path == "" {
		return nil, errors.New("sqlstore: open: sqlite url has no path")
	}
	memory := path == ":memory:"
	params := "_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_txlock=immediate"
	if !memory {
		params += "&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
	}
	if extra != "" {
		params += "&" + extra
	}
	dsn := "file:" + escapeSQLitePath(path) + "?" + params
	sqlDB, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: open: %w", err)
	}
	db := sqlx.NewDb(sqlDB, "sqlite")
	if memory {
		db.SetMaxOpenConns(1)
		db.SetMaxIdleConns(1)
		db.SetConnMaxIdleTime(0)
		db.SetConnMaxLifetime(0)
	} else {
		n := o.maxOpenConns
		if n == 0 {
			n = defaultSQLiteMaxOpenConns
		}
		db.SetMaxOpenConns(n)
		db.SetMaxIdleConns(n)
	}
	return &Store{db: db, dialect: DialectSQLite}, nil
}

// redactURL drops the URL, which may hold a password, from a *url.Error.
func redactURL(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err
	}
	return err
}

// escapeSQLitePath escapes the characters that end or escape the path of an
// SQLite URI filename (https://www.sqlite.org/uri.html).
func escapeSQLitePath(p string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(p)
}

// Dialect returns "postgres" or "sqlite".
func (s *Store) Dialect() string { return s.dialect }

// DB returns the underlying database handle, for tests and tools.
func (s *Store) DB() *sqlx.DB { return s.db }

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlstore: ping: %w", err)
	}
	return nil
}

// Close stops the subscriptions and releases the prepared statements and
// the connections.
func (s *Store) Close() error {
	s.closeSubscriptions()
	s.closeStmts()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("sqlstore: close: %w", err)
	}
	return nil
}

// Migrate brings the schema up to date with goose. It is idempotent, and on
// PostgreSQL concurrent calls (from several processes) wait for each other on
// an advisory lock. With [WithSchema] it first creates the schema if missing.
func (s *Store) Migrate(ctx context.Context) error {
	dir := "migrations/sqlite"
	dialect := goose.DialectSQLite3
	popts := []goose.ProviderOption{goose.WithDisableGlobalRegistry(true)}
	if s.dialect == DialectPostgres {
		dir, dialect = "migrations/postgres", goose.DialectPostgres
		if err := s.createSchema(ctx); err != nil {
			return err
		}
		// The lock is per schema so that tests migrating their own schemas
		// do not wait for each other.
		h := fnv.New64a()
		h.Write([]byte("brokerauth/broker sqlstore:" + s.schema))
		// Poll for the lock every second for up to 5 minutes.
		locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(int64(h.Sum64()>>1)), lock.WithLockTimeout(1, 300))
		if err != nil {
			return fmt.Errorf("sqlstore: migrate: %w", err)
		}
		popts = append(popts, goose.WithSessionLocker(locker))
	}
	fsys, err := fs.Sub(migrations, dir)
	if err != nil {
		return fmt.Errorf("sqlstore: migrate: %w", err)
	}
	// The provider is not closed: its Close would close s.db.
	p, err := goose.NewProvider(dialect, s.db.DB, fsys, popts...)
	if err != nil {
		return fmt.Errorf("sqlstore: migrate: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("sqlstore: migrate: %w", err)
	}
	// Statements prepared against the old schema may no longer be valid.
	s.closeStmts()
	return nil
}

// createSchema creates the WithSchema schema when it does not exist. It
// checks first, because CREATE SCHEMA IF NOT EXISTS needs the CREATE
// privilege on the database even when the schema exists.
func (s *Store) createSchema(ctx context.Context) error {
	if s.schema == "" {
		return nil
	}
	exists := func() (bool, error) {
		var ok bool
		err := s.db.GetContext(ctx, &ok, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, s.schema)
		if err != nil {
			return false, fmt.Errorf("sqlstore: migrate: look up schema: %w", err)
		}
		return ok, nil
	}
	if ok, err := exists(); ok || err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, "CREATE SCHEMA IF NOT EXISTS "+pq.QuoteIdentifier(s.schema)); err != nil {
		// IF NOT EXISTS does not stop two sessions creating it at once;
		// the loser gets a unique violation, and the schema exists.
		if ok, _ := exists(); ok {
			return nil
		}
		return fmt.Errorf("sqlstore: migrate: create schema: %w", err)
	}
	return nil
}

// stmt returns query (written with ? placeholders) prepared on the pool,
// preparing it on first use. database/sql re-prepares it on each connection
// as needed, so a hot query costs one round trip.
func (s *Store) stmt(ctx context.Context, query string) (*sqlx.Stmt, error) {
	if m := s.stmts.Load(); m != nil {
		if st, ok := (*m)[query]; ok {
			return st, nil
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.stmts.Load()
	if old != nil {
		if st, ok := (*old)[query]; ok {
			return st, nil
		}
	}
	st, err := s.db.PreparexContext(ctx, s.db.Rebind(query))
	if err != nil {
		return nil, err
	}
	m := make(map[string]*sqlx.Stmt)
	if old != nil {
		maps.Copy(m, *old)
	}
	m[query] = st
	s.stmts.Store(&m)
	return st, nil
}

func (s *Store) closeStmts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.stmts.Swap(nil); m != nil {
		for _, st := range *m {
			st.Close()
		}
	}
}

// q rebinds a query written with ? placeholders for the dialect.
func (s *Store) q(query string) string { return s.db.Rebind(query) }

// forUpdate is appended to a SELECT inside a transaction that will write
// the row back. PostgreSQL needs the row lock; SQLite has no FOR UPDATE but
// its BEGIN IMMEDIATE transactions already hold the database's write lock.
func (s *Store) forUpdate() string {
	if s.dialect == DialectPostgres {
		return " FOR UPDATE"
	}
	return ""
}

// inTx runs fn in a transaction and commits it, or rolls it back when fn
// returns an error, which is returned as is. op names the operation in
// errors of the transaction itself.
func (s *Store) inTx(ctx context.Context, op string, fn func(tx *sqlx.Tx) error) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlstore: %s: begin: %w", op, err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return dbErr(op, err)
	}
	return nil
}
