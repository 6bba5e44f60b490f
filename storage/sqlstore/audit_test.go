package sqlstore_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/brokerauth/broker/storage"
	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
)

// TestAuditAcrossStores appends audit events concurrently through two
// Stores on one database (as two replicas do) and checks that every one is
// kept, once, with distinct increasing ids.
func TestAuditAcrossStores(t *testing.T) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		url := storagetest.SQLiteURL(t)
		appendAcross(t, openMigrated(t, url), openMigrated(t, url))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		url, schema := storagetest.PostgresSchema(t)
		a := openMigrated(t, url, sqlstore.WithSchema(schema), sqlstore.WithMaxOpenConns(4))
		b := openMigrated(t, url, sqlstore.WithSchema(schema), sqlstore.WithMaxOpenConns(4))
		appendAcross(t, a, b)
	})
}

func appendAcross(t *testing.T, a, b *sqlstore.Store) {
	const n = 40
	now := time.Now()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		st := a
		if i%2 == 1 {
			st = b
		}
		wg.Go(func() {
			errs[i] = st.AppendAudit(t.Context(), storage.AuditEvent{Time: now, Event: storage.AuditLogout, UserID: fmt.Sprint("u", i)})
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("AppendAudit = %v", err)
		}
	}
	es, err := b.ListAudit(t.Context(), storage.AuditFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]bool{}
	for i, e := range es {
		if i > 0 && e.ID <= es[i-1].ID {
			t.Errorf("ids not increasing: %d after %d", e.ID, es[i-1].ID)
		}
		users[e.UserID] = true
	}
	if len(es) != n || len(users) != n {
		t.Errorf("ListAudit = %d events of %d users; want %d of %d", len(es), len(users), n, n)
	}
}
