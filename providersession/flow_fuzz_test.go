package providersession

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/seal"
)

// fuzzNow is the fuzz store's clock, fixed, so that the sealed seeds of
// testdata/fuzz/FuzzTake (sealed under fuzzCookieKey) stay valid.
var fuzzNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// fuzzCookieKey is fixed for the same reason.
var fuzzCookieKey = bytes.Repeat([]byte{0x07}, seal.KeySize)

// FuzzTake feeds Take arbitrary Cookie headers and states, and arbitrary
// plaintext sealed (under the store's key) into the cookie named for the
// state, which is what a forger cannot make but a format change or a bug
// could: the opened JSON is parsed and checked. Take must never panic; a
// refusal is always AUTH_INVALID_REQUEST (the consumed-flow store here
// never fails) with a deletion cookie when a flow cookie was found; and a
// flow it returns matches the state and provider, has not expired, and
// cannot be taken again.
func FuzzTake(f *testing.F) {
	ring, err := seal.NewKeyring(fuzzCookieKey)
	if err != nil {
		f.Fatal(err)
	}
	now := func() time.Time { return fuzzNow }
	s := NewFlowStore(FlowOptions{Keyring: ring, Consumed: &memFlowStates{}, Now: now})
	f.Add("state1", `{"i":"id1","p":"github","u":"login","s":"state1","t":1893553445000000,"e":1893554045000000}`, "")
	f.Add("state1", `{"i":"id1","p":"github","u":"login","s":"state1","w":{"challenge":"x"},"d":{"mode":"signup"},"t":0,"e":9223372036854775807}`, "a=b")
	f.Add("state1", `{"i":"","p":"github","u":"login","s":"state1","t":0,"e":1893554045000000}`, "")
	f.Add("x", `{"p":"google"}`, "broker_flow_x=1; broker_flow_y=2")
	f.Add("x", "", "broker_flow_LPJNul-wow4m6Dsq=garbage")
	f.Add("", "", "")
	f.Add("s", "not json", `broker_flow_="; ;;=`)
	f.Fuzz(func(t *testing.T, state, plain, header string) {
		r := httptest.NewRequest(http.MethodGet, "/login/github/callback", nil)
		if header != "" {
			r.Header.Set("Cookie", header)
		}
		name := s.cookieName(state)
		if plain != "" {
			r.AddCookie(&http.Cookie{Name: name, Value: ring.SealString(plain, name)})
		}
		fl, del, err := s.Take(context.Background(), r, "github", "", state)
		if err != nil {
			if !errors.Is(err, auth.ErrInvalidRequest) {
				t.Fatalf("Take refused without AUTH_INVALID_REQUEST: %v", err)
			}
			if del != nil && (del.Name != name || del.MaxAge >= 0) {
				t.Fatalf("Take: deletion cookie %v for %s", del, name)
			}
			return
		}
		if state == "" || fl.State != state || fl.Provider != "github" || fl.ID == "" || !now().Before(fl.Expires) {
			t.Fatalf("Take(%q) returned %+v", state, fl)
		}
		if del == nil || del.Name != name || del.MaxAge >= 0 {
			t.Fatalf("Take: deletion cookie %v for %s", del, name)
		}
		if _, _, err := s.Take(context.Background(), r, "github", "", state); !errors.Is(err, ErrFlowUsed) {
			t.Fatalf("second Take of %q: %v; want ErrFlowUsed", state, err)
		}
	})
}
