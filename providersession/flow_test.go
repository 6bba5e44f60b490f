package providersession

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/seal"
	"github.com/brokerauth/broker/internal/testclock"
	"github.com/brokerauth/broker/storage"
	"github.com/brokerauth/broker/storage/storagetest"
)

// memFlowStates is a storage.FlowStates for the unit tests, so that they
// test this package alone; TestReplayAcrossReplicasSQLite runs the replay
// defence against the real store. ConsumeFlowState is atomic (LoadOrStore),
// as the real stores' insert-unique is.
type memFlowStates struct {
	m     sync.Map // id -> expires
	calls atomic.Int64
}

func (m *memFlowStates) ConsumeFlowState(ctx context.Context, id string, expires time.Time) error {
	m.calls.Add(1)
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, loaded := m.m.LoadOrStore(id, expires); loaded {
		return storage.ErrConsumed
	}
	return nil
}

func (m *memFlowStates) DeleteExpiredFlowStates(_ context.Context, now time.Time, limit int) (int64, error) {
	var n int64
	m.m.Range(func(k, v any) bool {
		if int(n) < limit && !v.(time.Time).After(now) {
			m.m.Delete(k)
			n++
		}
		return true
	})
	return n, nil
}

// failingFlowStates is a database that is down.
type failingFlowStates struct{ err error }

func (f failingFlowStates) ConsumeFlowState(context.Context, string, time.Time) error { return f.err }
func (f failingFlowStates) DeleteExpiredFlowStates(context.Context, time.Time, int) (int64, error) {
	return 0, f.err
}

var t0 = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)

// clock is a settable clock for FlowOptions.Now.
type clock = testclock.Clock

func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, seal.KeySize)
	rand.Read(k)
	return k
}

func newKeyring(t *testing.T, keys ...[]byte) *seal.Keyring {
	t.Helper()
	k, err := seal.NewKeyring(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type fixture struct {
	store    *FlowStore
	consumed *memFlowStates
	clock    *clock
}

// newFixture returns a store over a fresh key, an in-memory consumed set and
// a clock at t0. edit may change the options.
func newFixture(t *testing.T, edit func(*FlowOptions)) fixture {
	t.Helper()
	fx := fixture{consumed: &memFlowStates{}, clock: testclock.New(t0)}
	o := FlowOptions{Keyring: newKeyring(t, newKey(t)), Consumed: fx.consumed, Now: fx.clock.Now}
	if edit != nil {
		edit(&o)
	}
	fx.store = NewFlowStore(o)
	return fx
}

func (fx fixture) begin(t *testing.T, f Flow, ttl time.Duration) (Flow, *http.Cookie) {
	t.Helper()
	f, c, err := fx.store.Begin(f, ttl)
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	return f, c
}

// callback is the browser's request to the callback: the flow cookies it
// holds, and state in the query.
func callback(state string, cookies ...*http.Cookie) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/login/github/callback?code=c&state="+url.QueryEscape(state), nil)
	for _, c := range cookies {
		r.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	return r
}

// wantRefused checks that err is an invalid request for reason.
func wantRefused(t *testing.T, err, reason error) {
	t.Helper()
	if !errors.Is(err, auth.ErrInvalidRequest) {
		t.Errorf("err = %v; want auth.ErrInvalidRequest", err)
	}
	if !errors.Is(err, reason) {
		t.Errorf("err = %v; want %v", err, reason)
	}
	if got := auth.CodeOf(err); got != "AUTH_INVALID_REQUEST" {
		t.Errorf("CodeOf(err) = %q; want AUTH_INVALID_REQUEST", got)
	}
}

// wantDeletes checks that c deletes the flow cookie named name.
func wantDeletes(t *testing.T, c *http.Cookie, name string) {
	t.Helper()
	if c == nil {
		t.Fatalf("cookie = nil; want one that deletes %s", name)
	}
	if c.Name != name || c.MaxAge >= 0 || c.Value != "" {
		t.Errorf("cookie = %s; want %s deleted (empty, Max-Age<0)", c, name)
	}
}

var loginFlow = Flow{
	Provider:   "github",
	Purpose:    "login",
	RedirectTo: "/dashboard?tab=1",
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, nil)
	in := Flow{
		Provider:   "webauthn",
		Purpose:    "webauthn-register",
		RedirectTo: "https://app.example.com/after",
		UserID:     "user_1",
		SessionID:  "ab12cd",
		WebAuthn:   []byte(`{"challenge":"abc","rpId":"localhost","user_id":"AAEC","userVerification":"required"}`),
		Data:       map[string]string{"name": "ada", "email": "ada@example.com"},
		// Begin replaces these.
		ID: "caller-id", State: "caller-state", CodeVerifier: "v", Nonce: "n",
		Started: t0.Add(-time.Hour), Expires: t0.Add(time.Hour),
	}
	begun, c := fx.begin(t, in, PasskeyTTL)

	for name, v := range map[string]string{"ID": begun.ID, "State": begun.State, "CodeVerifier": begun.CodeVerifier, "Nonce": begun.Nonce} {
		if v == "" || v == "caller-id" || v == "caller-state" || v == "v" || v == "n" {
			t.Errorf("begun.%s = %q; want a fresh random value", name, v)
		}
	}
	for name, tc := range map[string]struct {
		v    string
		want int
	}{"State": {begun.State, 43}, "CodeVerifier": {begun.CodeVerifier, 43}, "Nonce": {begun.Nonce, 43}, "ID": {begun.ID, 22}} {
		if len(tc.v) != tc.want {
			t.Errorf("len(begun.%s) = %d; want %d (%q)", name, len(tc.v), tc.want, tc.v)
		}
	}
	if want := t0.Truncate(time.Microsecond); !begun.Started.Equal(want) {
		t.Errorf("Started = %v; want %v", begun.Started, want)
	}
	if want := begun.Started.Add(PasskeyTTL); !begun.Expires.Equal(want) {
		t.Errorf("Expires = %v; want %v", begun.Expires, want)
	}

	fx.clock.Advance(4 * time.Minute)
	got, del, err := fx.store.Take(t.Context(), callback(begun.State, c), "webauthn", "webauthn-register", begun.State)
	if err != nil {
		t.Fatalf("Take: %v", err)
	}
	if diff := cmp.Diff(begun, got); diff != "" {
		t.Errorf("Take returned another flow than Begin (-begun +taken):\n%s", diff)
	}
	wantDeletes(t, del, c.Name)
	if v, ok := fx.consumed.m.Load(begun.ID); !ok {
		t.Errorf("flow id %q not recorded as consumed", begun.ID)
	} else if exp := v.(time.Time); exp.Before(begun.Expires) {
		t.Errorf("consumed record expires %v; want not before the flow's expiry %v", exp, begun.Expires)
	}
}

func TestBeginIsRandom(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, nil)
	a, ca := fx.begin(t, loginFlow, OAuthTTL)
	b, cb := fx.begin(t, loginFlow, OAuthTTL)
	if a.ID == b.ID || a.State == b.State || a.CodeVerifier == b.CodeVerifier || a.Nonce == b.Nonce {
		t.Errorf("two flows share a secret:\n%+v\n%+v", a, b)
	}
	if ca.Name == cb.Name {
		t.Errorf("two flows share cookie name %s", ca.Name)
	}
	for _, secret := range []string{a.State, a.CodeVerifier, a.Nonce, a.RedirectTo} {
		if strings.Contains(ca.String(), secret) {
			t.Errorf("cookie %s shows %q in clear", ca, secret)
		}
	}
}

func TestTakeRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// take runs Take on a fresh login flow for github started at t0.
		take       func(t *testing.T, fx fixture, f Flow, c *http.Cookie) (*http.Cookie, error)
		reason     error
		wantDelete bool // the answer deletes the flow cookie
		// deletesOther: the cookie deleted is the one the state named,
		// not the flow's own.
		deletesOther bool
	}{
		{
			name: "state mismatch",
			take: func(t *testing.T, fx fixture, f Flow, c *http.Cookie) (*http.Cookie, error) {
				other, _ := fx.begin(t, loginFlow, OAuthTTL) // a real state, of a flow this browser does not have
				_, del, err := fx.store.Take(t.Context(), callback(other.State, c), "github", "login", other.State)
				return del, err
			},
			reason: ErrFlowState,
		},
		{
			name: "state altered",
			take: func(t *testing.T, fx fixture, f Flow, c *http.Cookie) (*http.Cookie, error) {
				st := f.State[:len(f.State)-1] + "A"
				if st == f.State {
					st = f.State[:len(f.State)-1] + "B"
				}
				_, del, err := fx.store.Take(t.Context(), callback(st, c), "github", "login", st)
				return del, err
			},
			reason: ErrFlowState,
		},
		{
			name: "empty state given",
			take: func(t *testing.T, fx fixture, f Flow, c *http.Cookie) (*http.Cookie, error) {
				_, del, err := fx.store.Take(t.Context(), callback("", c), "github", "login", "")
				return del, err
			},
			reason: ErrFlowState,
		},
		{
			name: "missing cookie",
			take: func(t *testing.T, fx fixture, f Flow, c *http.Cookie) (*http.Cookie, error) {
				_, del, err := fx.store.Take(t.Context(), callback(f.State), "github", "login", f.State)
				return del, err
			},
			reason: ErrFlowMissing,
		},
		{
			name: "tampered cookie",
			take: func(t *testing.T, fx fixture, f Flow, c *http.Cookie) (*http.Cookie, error) {
				v := []byte(c.Value)
				i := len(v) / 2
				if v[i] == 'A' {
					v[i] = 'B'
				} else {
					v[i] = 'A'
				}
				bad := &http.Cookie{Name: c.Name, Value: string(v)}
				_, del, err := fx.store.Take(t.Context(), callback(f.State, bad), "github", "login", f.State)
				return del, err
			},
			reason:     ErrFlowTampered,
			wantDelete: true,
		},
		{
			name: "truncated cookie",
			take: func(t *testing.T, fx fixture, f Flow, c *http.Cookie) (*http.Cookie, error) {
				bad := &http.Cookie{Name: c.Name, Value: c.Value[:len(c.Value)-4]}
				_, del, err := fx.store.Take(t.Context(), callback(f.State, bad), "github", "login", f.State)
				return del, err
			},
			reason:     ErrFlowTampered,
			wantDelete: true,
		},
		{
			name: "cookie moved to another flow's name",
			take: func(t *testing.T, fx fixture, f Flow, c *http.Cookie) (*http.Cookie, error) {
				other, oc := fx.begin(t, loginFlow, OAuthTTL)
				moved := &http.Cookie{Name: oc.Name, Value: c.Value}
				_, del, err := fx.store.Take(t.Context(), callback(other.State, moved), "github", "login", other.State)
				return del, err
			},
			reason:       ErrFlowTampered,
			wantDelete:   true,
			deletesOther: true,
		},
		{
			name: "sealed under an unknown key",
			take: func(t *testing.T, fx fixture, f Flow, c *http.Cookie) (*http.Cookie, error) {
				foreign := NewFlowStore(FlowOptions{Keyring: newKeyring(t, newKey(t)), Consumed: fx.consumed, Now: fx.clock.Now})
				ff, fc, err := foreign.Begin(loginFlow, OAuthTTL)
				if err != nil {
					t.Fatal(err)
				}
				_, del, err := fx.store.Take(t.Context(), callback(ff.State, fc), "github", "login", ff.State)
				return del, err
			},
			reason:       ErrFlowTampered,
			wantDelete:   true,
			deletesOther: true,
		},
		{
			name: "expired",
			take: func(t *testing.T, fx fixture, f Flow, c *http.Cookie) (*http.Cookie, error) {
				fx.clock.Set(f.Expires)
				_, del, err := fx.store.Take(t.Context(), callback(f.State, c), "github", "login", f.State)
				return del, err
			},
			reason:     ErrFlowExpired,
			wantDelete: true,
		},
		{
			name: "long expired",
			take: func(t *testing.T, fx fixture, f Flow, c *http.Cookie) (*http.Cookie, error) {
				fx.clock.Advance(24 * time.Hour)
				_, del, err := fx.store.Take(t.Context(), callback(f.State, c), "github", "login", f.State)
				return del, err
			},
			reason:     ErrFlowExpired,
			wantDelete: true,
		},
		{
			name: "wrong provider (mix-up)",
			take: func(t *testing.T, fx fixture, f Flow, c *http.Cookie) (*http.Cookie, error) {
				_, del, err := fx.store.Take(t.Context(), callback(f.State, c), "google", "login", f.State)
				return del, err
			},
			reason:     ErrFlowProvider,
			wantDelete: true,
		},
		{
			name: "wrong purpose",
			take: func(t *testing.T, fx fixture, f Flow, c *http.Cookie) (*http.Cookie, error) {
				_, del, err := fx.store.Take(t.Context(), callback(f.State, c), "github", "link", f.State)
				return del, err
			},
			reason:     ErrFlowPurpose,
			wantDelete: true,
		},
		{
			name: "replay after Take",
			take: func(t *testing.T, fx fixture, f Flow, c *http.Cookie) (*http.Cookie, error) {
				if _, _, err := fx.store.Take(t.Context(), callback(f.State, c), "github", "login", f.State); err != nil {
					t.Fatalf("first Take: %v", err)
				}
				// The cookie was copied before the browser deleted it.
				_, del, err := fx.store.Take(t.Context(), callback(f.State, c), "github", "login", f.State)
				return del, err
			},
			reason:     ErrFlowUsed,
			wantDelete: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fx := newFixture(t, nil)
			f, c := fx.begin(t, loginFlow, OAuthTTL)
			del, err := tc.take(t, fx, f, c)
			wantRefused(t, err, tc.reason)
			switch {
			case tc.wantDelete && tc.deletesOther:
				if del == nil || del.Name == c.Name || !strings.HasPrefix(del.Name, "broker_flow_") || del.MaxAge >= 0 {
					t.Errorf("cookie = %v; want another flow cookie deleted", del)
				}
			case tc.wantDelete:
				wantDeletes(t, del, c.Name)
			default:
				if del != nil {
					t.Errorf("cookie = %s; want nil (no flow cookie was found)", del)
				}
			}
		})
	}
}

func TestTakeBeforeExpiry(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, nil)
	f, c := fx.begin(t, loginFlow, OAuthTTL)
	fx.clock.Set(f.Expires.Add(-time.Microsecond))
	if _, _, err := fx.store.Take(t.Context(), callback(f.State, c), "github", "login", f.State); err != nil {
		t.Errorf("Take a microsecond before expiry: %v", err)
	}
}

func TestTakeAnyPurpose(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, nil)
	f, c := fx.begin(t, Flow{Provider: "github", Purpose: "link", UserID: "u1"}, OAuthTTL)
	got, _, err := fx.store.Take(t.Context(), callback(f.State, c), "github", "", f.State)
	if err != nil {
		t.Fatalf("Take with purpose \"\": %v", err)
	}
	if got.Purpose != "link" || got.UserID != "u1" {
		t.Errorf("Take = purpose %q, user %q; want link, u1", got.Purpose, got.UserID)
	}
}

// A refused attempt must not use up the flow: only a Take that passes every
// check records it.
func TestRefusalDoesNotConsume(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, nil)
	f, c := fx.begin(t, loginFlow, OAuthTTL)
	for _, try := range []struct{ provider, purpose, state string }{
		{"google", "login", f.State},
		{"github", "reauth", f.State},
		{"github", "login", ""},
		{"github", "login", "forged"},
	} {
		if _, _, err := fx.store.Take(t.Context(), callback(try.state, c), try.provider, try.purpose, try.state); err == nil {
			t.Fatalf("Take(%+v) succeeded; want refused", try)
		}
	}
	if n := fx.consumed.calls.Load(); n != 0 {
		t.Errorf("ConsumeFlowState called %d times by refused Takes; want 0", n)
	}
	if _, _, err := fx.store.Take(t.Context(), callback(f.State, c), "github", "login", f.State); err != nil {
		t.Errorf("Take after refused attempts: %v", err)
	}
}

// forge seals w under the store's key into the cookie for state, as only
// someone holding the key could: it reaches the checks behind the seal.
func forge(t *testing.T, s *FlowStore, state string, w wireFlow) *http.Cookie {
	t.Helper()
	b, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	name := s.cookieName(state)
	return &http.Cookie{Name: name, Value: s.keys.SealString(string(b), name)}
}

func TestSealedStateChecked(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, nil)
	w := wireFlow{ID: "id1", Provider: "github", Purpose: "login", Expires: t0.Add(time.Minute).UnixMicro()}

	// A stored state that differs from the one the cookie is named after.
	w.State = "the-sealed-state"
	c := forge(t, fx.store, "the-given-state", w)
	_, _, err := fx.store.Take(t.Context(), callback("the-given-state", c), "github", "login", "the-given-state")
	wantRefused(t, err, ErrFlowState)

	// An empty stored state never means "skip the check".
	w.State = ""
	c = forge(t, fx.store, "x", w)
	_, _, err = fx.store.Take(t.Context(), callback("x", c), "github", "login", "x")
	wantRefused(t, err, ErrFlowState)

	// Nor does an empty state on both sides.
	c = forge(t, fx.store, "", w)
	_, _, err = fx.store.Take(t.Context(), callback("", c), "github", "login", "")
	wantRefused(t, err, ErrFlowState)

	// A flow without an id cannot be recorded as used, so it is refused.
	w.State, w.ID = "s", ""
	c = forge(t, fx.store, "s", w)
	_, _, err = fx.store.Take(t.Context(), callback("s", c), "github", "login", "s")
	wantRefused(t, err, ErrFlowTampered)

	// Not JSON inside a valid seal.
	name := fx.store.cookieName("s")
	c = &http.Cookie{Name: name, Value: fx.store.keys.SealString("not json", name)}
	_, _, err = fx.store.Take(t.Context(), callback("s", c), "github", "login", "s")
	wantRefused(t, err, ErrFlowTampered)

	if n := fx.consumed.calls.Load(); n != 0 {
		t.Errorf("ConsumeFlowState called %d times; want 0", n)
	}
}

func TestConcurrentTakeOnce(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, nil)
	f, c := fx.begin(t, loginFlow, OAuthTTL)
	const n = 16
	var wg sync.WaitGroup
	var ok, used atomic.Int64
	for range n {
		wg.Go(func() {
			_, _, err := fx.store.Take(context.Background(), callback(f.State, c), "github", "login", f.State)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrFlowUsed):
				used.Add(1)
			default:
				t.Errorf("Take: %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 || used.Load() != n-1 {
		t.Errorf("%d Takes succeeded and %d found it used; want 1 and %d", ok.Load(), used.Load(), n-1)
	}
}

type ctxKey struct{}

type ctxCheckingFlowStates struct {
	memFlowStates
	sawValue atomic.Bool
}

func (c *ctxCheckingFlowStates) ConsumeFlowState(ctx context.Context, id string, expires time.Time) error {
	c.sawValue.Store(ctx.Value(ctxKey{}) == "marker")
	return c.memFlowStates.ConsumeFlowState(ctx, id, expires)
}

func TestStorageFailure(t *testing.T) {
	t.Parallel()
	dbDown := errors.New("dial tcp 127.0.0.1:5432: connection refused")
	fx := newFixture(t, func(o *FlowOptions) { o.Consumed = failingFlowStates{dbDown} })
	f, c := fx.begin(t, loginFlow, OAuthTTL)
	_, del, err := fx.store.Take(t.Context(), callback(f.State, c), "github", "login", f.State)
	if !errors.Is(err, dbDown) {
		t.Errorf("err = %v; want the storage error", err)
	}
	if errors.Is(err, auth.ErrInvalidRequest) {
		t.Errorf("err = %v is an invalid request; want a server fault", err)
	}
	if del != nil {
		t.Errorf("cookie = %s; want nil, so the user can retry", del)
	}

	// The caller's context reaches the store.
	cs := &ctxCheckingFlowStates{}
	fx = newFixture(t, func(o *FlowOptions) { o.Consumed = cs })
	f, c = fx.begin(t, loginFlow, OAuthTTL)
	ctx := context.WithValue(t.Context(), ctxKey{}, "marker")
	if _, _, err := fx.store.Take(ctx, callback(f.State, c), "github", "login", f.State); err != nil {
		t.Fatalf("Take: %v", err)
	}
	if !cs.sawValue.Load() {
		t.Errorf("ConsumeFlowState did not get the caller's context")
	}
}

func TestKeyRotation(t *testing.T) {
	t.Parallel()
	oldKey, newK := newKey(t), newKey(t)
	consumed := &memFlowStates{}
	clk := testclock.New(t0)
	before := NewFlowStore(FlowOptions{Keyring: newKeyring(t, oldKey), Consumed: consumed, Now: clk.Now})
	after := NewFlowStore(FlowOptions{Keyring: newKeyring(t, newK, oldKey), Consumed: consumed, Now: clk.Now})
	dropped := NewFlowStore(FlowOptions{Keyring: newKeyring(t, newK), Consumed: consumed, Now: clk.Now})

	// A flow begun before the rotation finishes after it (on any replica).
	f, c, err := before.Begin(loginFlow, OAuthTTL)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := after.Take(t.Context(), callback(f.State, c), "github", "login", f.State); err != nil {
		t.Errorf("Take of an old-key flow after rotation: %v", err)
	}
	// Flows begun after it are sealed under the new key.
	f, c, err = after.Begin(loginFlow, OAuthTTL)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := dropped.Take(t.Context(), callback(f.State, c), "github", "login", f.State); err != nil {
		t.Errorf("Take of a new-key flow by a new-key-only store: %v", err)
	}
	// Once the old key is dropped, its flows no longer open.
	f, c, err = before.Begin(loginFlow, OAuthTTL)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = dropped.Take(t.Context(), callback(f.State, c), "github", "login", f.State)
	wantRefused(t, err, ErrFlowTampered)
}

func TestCookieAttributes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		opts       func(*FlowOptions)
		ttl        time.Duration
		wantPrefix string
		wantPath   string
		wantSecure bool
		wantMaxAge int
	}{
		{"defaults", nil, OAuthTTL, "broker_flow_", "/", false, 600},
		{"secure gets __Host-", func(o *FlowOptions) { o.Secure = true }, OAuthTTL, "__Host-broker_flow_", "/", true, 600},
		{"passkey ttl", nil, PasskeyTTL, "broker_flow_", "/", false, 300},
		{"odd ttl rounds up", nil, 1500 * time.Millisecond, "broker_flow_", "/", false, 2},
		{"custom name and path", func(o *FlowOptions) { o.CookieName, o.Path = "auth_flow", "/auth/" }, OAuthTTL, "auth_flow_", "/auth/", false, 600},
		{"secure with a path: no __Host-", func(o *FlowOptions) { o.Secure, o.Path = true, "/auth/" }, OAuthTTL, "broker_flow_", "/auth/", true, 600},
		{"__Host- given", func(o *FlowOptions) { o.Secure, o.CookieName = true, "__Host-f" }, OAuthTTL, "__Host-f_", "/", true, 600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fx := newFixture(t, tc.opts)
			f, c := fx.begin(t, loginFlow, tc.ttl)
			check := func(what string, c *http.Cookie, maxAge int) {
				t.Helper()
				if !strings.HasPrefix(c.Name, tc.wantPrefix) || len(c.Name) != len(tc.wantPrefix)+16 {
					t.Errorf("%s Name = %q; want %q and 16 characters", what, c.Name, tc.wantPrefix)
				}
				if c.Path != tc.wantPath {
					t.Errorf("%s Path = %q; want %q", what, c.Path, tc.wantPath)
				}
				if c.Secure != tc.wantSecure {
					t.Errorf("%s Secure = %v; want %v", what, c.Secure, tc.wantSecure)
				}
				if !c.HttpOnly {
					t.Errorf("%s HttpOnly = false; want true", what)
				}
				if c.SameSite != http.SameSiteLaxMode {
					t.Errorf("%s SameSite = %v; want Lax", what, c.SameSite)
				}
				if c.MaxAge != maxAge {
					t.Errorf("%s MaxAge = %d; want %d", what, c.MaxAge, maxAge)
				}
				if c.Domain != "" {
					t.Errorf("%s Domain = %q; want host-only", what, c.Domain)
				}
				if err := c.Valid(); err != nil {
					t.Errorf("%s is not a valid cookie: %v", what, err)
				}
			}
			check("Begin cookie", c, tc.wantMaxAge)
			// What a browser sends back parses and finishes the flow.
			r := httptest.NewRequest(http.MethodGet, "/cb", nil)
			r.Header.Set("Cookie", c.Name+"="+c.Value)
			_, del, err := fx.store.Take(t.Context(), r, "github", "login", f.State)
			if err != nil {
				t.Fatalf("Take: %v", err)
			}
			check("Take cookie", del, -1)
			if del.Name != c.Name {
				t.Errorf("Take cookie Name = %q; want %q", del.Name, c.Name)
			}
		})
	}
}

func TestCoexistingFlows(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, nil)
	gh, ghc := fx.begin(t, Flow{Provider: "github", Purpose: "login"}, OAuthTTL)
	gg, ggc := fx.begin(t, Flow{Provider: "google", Purpose: "login"}, OAuthTTL)
	tab2, tab2c := fx.begin(t, Flow{Provider: "github", Purpose: "link", UserID: "u1"}, OAuthTTL)
	pk, pkc := fx.begin(t, Flow{Provider: "webauthn", Purpose: "webauthn-login", WebAuthn: []byte(`{}`)}, PasskeyTTL)
	jar := []*http.Cookie{ghc, ggc, tab2c, pkc} // the browser holds all four

	// They finish in any order, each finding its own cookie by its state.
	for _, tc := range []struct {
		f        Flow
		c        *http.Cookie
		provider string
	}{{gg, ggc, "google"}, {pk, pkc, "webauthn"}, {gh, ghc, "github"}, {tab2, tab2c, "github"}} {
		got, del, err := fx.store.Take(t.Context(), callback(tc.f.State, jar...), tc.provider, "", tc.f.State)
		if err != nil {
			t.Fatalf("Take %s %s: %v", tc.provider, tc.f.Purpose, err)
		}
		if got.ID != tc.f.ID || got.Purpose != tc.f.Purpose {
			t.Errorf("Take %s = flow %s/%s; want %s/%s", tc.provider, got.ID, got.Purpose, tc.f.ID, tc.f.Purpose)
		}
		wantDeletes(t, del, tc.c.Name)
	}
}

func TestBeginErrors(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, nil)
	for _, tc := range []struct {
		name string
		f    Flow
		ttl  time.Duration
		want error // nil: any error
	}{
		{"no provider", Flow{Purpose: "login"}, OAuthTTL, nil},
		{"no purpose", Flow{Provider: "github"}, OAuthTTL, nil},
		{"zero ttl", loginFlow, 0, nil},
		{"negative ttl", loginFlow, -time.Minute, nil},
		{"too large", Flow{Provider: "github", Purpose: "login", Data: map[string]string{"x": strings.Repeat("a", 3000)}}, OAuthTTL, ErrFlowTooLarge},
		{"too large webauthn", Flow{Provider: "webauthn", Purpose: "webauthn-login", WebAuthn: make([]byte, 2500)}, PasskeyTTL, ErrFlowTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, c, err := fx.store.Begin(tc.f, tc.ttl)
			if err == nil {
				t.Fatalf("Begin = %+v, %v, nil; want an error", f, c)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err = %v; want %v", err, tc.want)
			}
			if c != nil {
				t.Errorf("cookie = %v; want nil", c)
			}
		})
	}
}

// TestCookieSize keeps the documented typical sizes honest.
func TestCookieSize(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, func(o *FlowOptions) { o.Secure = true })
	_, c := fx.begin(t, Flow{Provider: "google", Purpose: "login", RedirectTo: "https://app.example.com/some/page?x=1"}, OAuthTTL)
	if n := len(c.String()); n > 600 {
		t.Errorf("OAuth flow cookie is %d bytes; want about 500 (package doc)", n)
	}
	t.Logf("OAuth flow cookie: %d bytes", len(c.String()))
	// A passkey login with go-webauthn SessionData and a few allowed credentials.
	sd := []byte(`{"challenge":"` + strings.Repeat("c", 43) + `","rpId":"login.example.com","user_id":"` + strings.Repeat("u", 86) +
		`","allowed_credentials":["` + strings.Repeat("a", 43) + `","` + strings.Repeat("b", 43) + `"],"expires":"2026-03-14T15:14:26Z","userVerification":"required"}`)
	_, c = fx.begin(t, Flow{Provider: "webauthn", Purpose: "webauthn-login", WebAuthn: sd}, PasskeyTTL)
	if n := len(c.String()); n > 1200 {
		t.Errorf("passkey flow cookie is %d bytes; want under 1200", n)
	}
	t.Logf("passkey flow cookie: %d bytes", len(c.String()))
}

func TestNewFlowStorePanics(t *testing.T) {
	t.Parallel()
	kr := newKeyring(t, newKey(t))
	for _, tc := range []struct {
		name string
		o    FlowOptions
	}{
		{"no keyring", FlowOptions{Consumed: &memFlowStates{}}},
		{"no store", FlowOptions{Keyring: kr}},
		{"__Host- without Secure", FlowOptions{Keyring: kr, Consumed: &memFlowStates{}, CookieName: "__Host-flow"}},
		{"bad cookie name", FlowOptions{Keyring: kr, Consumed: &memFlowStates{}, CookieName: "flow state"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("NewFlowStore(%+v) did not panic", tc.o)
				}
			}()
			NewFlowStore(tc.o)
		})
	}
}

func TestWebAuthnBytes(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, nil)
	for _, tc := range []struct {
		name    string
		in, out []byte
	}{
		{"none", nil, nil},
		{"empty", []byte{}, nil},
		{"session data", []byte(`{"challenge":"Zm9v","rpId":"localhost","user_id":"AAEC"}`), nil},
		{"indented JSON comes back compacted", []byte("{\n  \"challenge\": \"Zm9v\"\n}\n"), []byte(`{"challenge":"Zm9v"}`)},
		{"null", []byte("null"), nil},
		{"not JSON", []byte{0, 1, 2, 0xff, '{'}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.out
			if want == nil {
				want = tc.in
			}
			f, c := fx.begin(t, Flow{Provider: "webauthn", Purpose: "webauthn-login", WebAuthn: tc.in}, PasskeyTTL)
			got, _, err := fx.store.Take(t.Context(), callback(f.State, c), "webauthn", "webauthn-login", f.State)
			if err != nil {
				t.Fatalf("Take: %v", err)
			}
			if string(got.WebAuthn) != string(want) {
				t.Errorf("WebAuthn = %q; want %q", got.WebAuthn, want)
			}
		})
	}
}

// TestReplayAcrossReplicasSQLite runs the replay defence on the real store:
// two replicas share the secrets and one database, a flow begun on one
// finishes on the other, and the copied cookie is refused on both.
func TestReplayAcrossReplicasSQLite(t *testing.T) {
	t.Parallel()
	db := storagetest.OpenSQLite(t)
	clk := testclock.New(t0)
	kr := newKeyring(t, newKey(t))
	a := NewFlowStore(FlowOptions{Keyring: kr, Consumed: db, Now: clk.Now, Secure: true})
	b := NewFlowStore(FlowOptions{Keyring: kr, Consumed: db, Now: clk.Now, Secure: true})

	f, c, err := a.Begin(loginFlow, OAuthTTL)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Take(t.Context(), callback(f.State, c), "github", "login", f.State); err != nil {
		t.Fatalf("Take on replica b: %v", err)
	}
	for name, s := range map[string]*FlowStore{"a": a, "b": b} {
		_, del, err := s.Take(t.Context(), callback(f.State, c), "github", "login", f.State)
		wantRefused(t, err, ErrFlowUsed)
		if del == nil || del.MaxAge >= 0 {
			t.Errorf("replay on %s: cookie = %v; want the flow cookie deleted", name, del)
		}
	}

	// Sweeping at the flow's expiry keeps the record: the cookie is still
	// within its lifetime for a replica whose clock lags a little.
	if _, err := db.DeleteExpiredFlowStates(t.Context(), f.Expires, 100); err != nil {
		t.Fatal(err)
	}
	clk.Set(f.Expires.Add(-time.Second))
	_, _, err = a.Take(t.Context(), callback(f.State, c), "github", "login", f.State)
	wantRefused(t, err, ErrFlowUsed)

	// Concurrent callbacks with one cookie: exactly one wins.
	clk.Set(t0)
	f, c, err = a.Begin(loginFlow, OAuthTTL)
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	var ok, used atomic.Int64
	for i := range n {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			_, _, err := s.Take(t.Context(), callback(f.State, c), "github", "login", f.State)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrFlowUsed):
				used.Add(1)
			default:
				t.Errorf("Take: %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 || used.Load() != n-1 {
		t.Errorf("%d Takes succeeded and %d found it used; want 1 and %d", ok.Load(), used.Load(), n-1)
	}
}
