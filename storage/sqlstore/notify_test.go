package sqlstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
)

// feed records what a subscription hears.
type feed struct {
	msgs chan string
	ups  chan struct{}
	down chan error
}

func newFeed() *feed {
	return &feed{msgs: make(chan string, 100), ups: make(chan struct{}, 100), down: make(chan error, 100)}
}

func (f *feed) handlers() sqlstore.FeedHandlers {
	return sqlstore.FeedHandlers{
		Message: func(p string) { f.msgs <- p },
		Up:      func() { f.ups <- struct{}{} },
		Down:    func(err error) { f.down <- err },
	}
}

func (f *feed) waitUp(t *testing.T, why string) {
	t.Helper()
	select {
	case <-f.ups:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the subscription did not report Up within 10s", why)
	}
}

func (f *feed) waitMessage(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-f.msgs:
		if got != want {
			t.Fatalf("message %q; want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("message %q did not arrive within 10s", want)
	}
}

func (f *feed) noMessage(t *testing.T, why string) {
	t.Helper()
	select {
	case got := <-f.msgs:
		t.Fatalf("%s: got message %q; want none", why, got)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestNotify: two stores on one schema (two replicas): what one sends,
// the other hears, in order; a store on another schema hears nothing.
func TestNotify(t *testing.T) {
	t.Parallel()
	url, schema := storagetest.PostgresSchema(t)
	a := openMigrated(t, url, sqlstore.WithSchema(schema), sqlstore.WithMaxOpenConns(2))
	b := openMigrated(t, url, sqlstore.WithSchema(schema), sqlstore.WithMaxOpenConns(2))
	other := storagetest.OpenPostgres(t)
	ctx := t.Context()

	ch, err := a.NotifyChannel(ctx)
	if err != nil || ch != "broker_invalidate."+schema {
		t.Fatalf("NotifyChannel = %q, %v; want broker_invalidate.%s", ch, err, schema)
	}
	fb, fo := newFeed(), newFeed()
	if err := b.Subscribe(ctx, fb.handlers()); err != nil {
		t.Fatal(err)
	}
	if err := other.Subscribe(ctx, fo.handlers()); err != nil {
		t.Fatal(err)
	}
	fb.waitUp(t, "first connection")
	fo.waitUp(t, "other schema")
	for _, m := range []string{"s:one", "u:two", "s:three"} {
		if err := a.Notify(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []string{"s:one", "u:two", "s:three"} {
		fb.waitMessage(t, m)
	}
	fo.noMessage(t, "a store on another schema")
	// The sender hears itself too when it listens (harmless: its own
	// cache already applied the event).
	fa := newFeed()
	if err := a.Subscribe(ctx, fa.handlers()); err != nil {
		t.Fatal(err)
	}
	fa.waitUp(t, "sender's own subscription")
	if err := a.Notify(ctx, "s:four"); err != nil {
		t.Fatal(err)
	}
	fa.waitMessage(t, "s:four")
	fb.waitMessage(t, "s:four")
}

// TestNotifyReconnect kills the listening connection's backend: the
// subscription reports Down, reconnects by itself and reports Up (the
// cache flush), and hears what is sent afterwards. What was sent while it
// was down is lost, which is why Up must flush.
func TestNotifyReconnect(t *testing.T) {
	t.Parallel()
	url, schema := storagetest.PostgresSchema(t)
	a := openMigrated(t, url, sqlstore.WithSchema(schema), sqlstore.WithMaxOpenConns(2))
	b := openMigrated(t, url, sqlstore.WithSchema(schema), sqlstore.WithMaxOpenConns(2))
	ctx := t.Context()
	fb := newFeed()
	if err := b.Subscribe(ctx, fb.handlers()); err != nil {
		t.Fatal(err)
	}
	fb.waitUp(t, "first connection")
	ch, _ := b.NotifyChannel(ctx)
	for round := range 2 {
		var killed int
		err := a.DB().GetContext(ctx, &killed, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, ch)
		if err != nil || killed != 1 {
			t.Fatalf("round %d: killed %d listening backends (%v); want 1", round, killed, err)
		}
		start := time.Now()
		select {
		case err := <-fb.down:
			t.Logf("round %d: Down after %v: %v", round, time.Since(start).Round(time.Millisecond), err)
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: no Down within 10s of killing the listener", round)
		}
		fb.waitUp(t, "after the kill")
		t.Logf("round %d: Up (flush) %v after the kill", round, time.Since(start).Round(time.Millisecond))
		msg := "s:after-" + strings.Repeat("x", round+1)
		if err := a.Notify(ctx, msg); err != nil {
			t.Fatal(err)
		}
		fb.waitMessage(t, msg)
	}
}

// TestNotifyClose: closing the store ends its subscriptions.
func TestNotifyClose(t *testing.T) {
	t.Parallel()
	url, schema := storagetest.PostgresSchema(t)
	s, err := sqlstore.Open(t.Context(), url, sqlstore.WithSchema(schema), sqlstore.WithMaxOpenConns(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	f := newFeed()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if err := s.Subscribe(ctx, f.handlers()); err != nil {
		t.Fatal(err)
	}
	f.waitUp(t, "first connection")
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close took %v", d)
	}
	if err := s.Subscribe(ctx, f.handlers()); err == nil {
		t.Fatal("Subscribe on a closed store succeeded")
	}
}

func TestNotifySQLite(t *testing.T) {
	t.Parallel()
	s := storagetest.OpenSQLite(t)
	if err := s.Notify(t.Context(), "s:x"); err != nil {
		t.Fatalf("Notify on SQLite = %v; want nil (nobody else to tell)", err)
	}
	if err := s.Subscribe(t.Context(), sqlstore.FeedHandlers{}); !errors.Is(err, sqlstore.ErrNotifyUnsupported) {
		t.Fatalf("Subscribe on SQLite = %v; want ErrNotifyUnsupported", err)
	}
}
