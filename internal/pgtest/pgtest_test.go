package pgtest_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	_ "github.com/lib/pq"

	"github.com/brokerauth/broker/internal/pgtest"
)

func open(t *testing.T, url string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", url+"&connect_timeout=5")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func count(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(t.Context(), "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatalf("count: %v", err)
	}
	return n
}

// TestPGTestCluster: a private cluster answers, refuses connections once
// stopped or killed, and keeps committed rows across a clean restart and
// across crash recovery, on the same port.
func TestPGTestCluster(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t)
	url, port := c.URL(), c.Port()
	db := open(t, url)
	if _, err := db.ExecContext(t.Context(), "CREATE TABLE t (v int)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(t.Context(), "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}

	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if c.Running() {
		t.Fatal("Running after Stop")
	}
	if err := c.Stop(); err == nil {
		t.Fatal("second Stop did not fail")
	}
	down := open(t, url) // a fresh pool: no stale connections to flush
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := down.PingContext(ctx); err == nil {
		t.Fatal("ping succeeded while stopped")
	}

	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if c.Port() != port || c.URL() != url {
		t.Fatalf("restart moved the cluster: %s, was %s", c.URL(), url)
	}
	db = open(t, url)
	if n := count(t, db); n != 1 {
		t.Fatalf("rows after restart = %d; want 1", n)
	}
	if _, err := db.ExecContext(t.Context(), "INSERT INTO t VALUES (2)"); err != nil {
		t.Fatal(err)
	}

	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := open(t, url).PingContext(ctx); err == nil {
		t.Fatal("ping succeeded after Kill")
	}
	if err := c.Start(); err != nil {
		t.Fatalf("start after kill: %v", err)
	}
	db = open(t, url)
	if n := count(t, db); n != 2 {
		t.Fatalf("rows after crash recovery = %d; want 2", n)
	}
}
