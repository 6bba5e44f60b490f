package sqlstore_test

import (
	"testing"

	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
)

// TestRateLimitAcrossStores hits one rate-limit bucket concurrently
// through two Stores on one database (two connection pools, as two broker
// replicas have) and checks that every hit counted once.
func TestRateLimitAcrossStores(t *testing.T) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		url := storagetest.SQLiteURL(t)
		storagetest.HitRateLimitConcurrently(t, "login-ip:192.0.2.1", 24, openMigrated(t, url), openMigrated(t, url))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		url, schema := storagetest.PostgresSchema(t)
		a := openMigrated(t, url, sqlstore.WithSchema(schema), sqlstore.WithMaxOpenConns(4))
		b := openMigrated(t, url, sqlstore.WithSchema(schema), sqlstore.WithMaxOpenConns(4))
		storagetest.HitRateLimitConcurrently(t, "login-ip:192.0.2.1", 24, a, b)
	})
}
