package webauthn_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/seal"
	"github.com/brokerauth/broker/providersession"
	"github.com/brokerauth/broker/storage/storagetest"
	"github.com/brokerauth/broker/webauthn"
	"github.com/brokerauth/broker/webauthn/webauthntest"
)

// Fuzz targets for the authenticator responses a page sends back
// (PublicKeyCredential.toJSON() of a registration or an assertion). Each
// input goes to FinishRegistration or FinishLogin with the state and flow
// cookie of a ceremony begun for it, so it reaches go-webauthn's parsing
// and our lookups behind it. An input must never panic and never finish a
// ceremony (its challenge is fresh and random), and the error must carry
// an auth code: an error without one is what the server answers 503, a
// fault of the broker rather than of the input. The seed corpora are in
// testdata/fuzz/<Name>/; the runtime seeds add real responses of a known
// passkey, so that lookups find its user.

const fuzzOrigin = "https://login.example.com"

type fuzzRP struct {
	rp    *webauthn.RelyingParty
	auth  *auth.Auth
	sess  auth.Session // alice's, recently authenticated
	authn *webauthntest.Authenticator
}

func newFuzzRP(f *testing.F) *fuzzRP {
	f.Helper()
	store := storagetest.OpenSQLite(f)
	now := time.Now().UTC()
	clock := func() time.Time { return now } // stands still: alice's session stays recent
	a, err := auth.New(store, auth.Options{Now: clock, Origin: fuzzOrigin})
	if err != nil {
		f.Fatal(err)
	}
	key := make([]byte, 32)
	rand.Read(key)
	ring, err := seal.NewKeyring(key)
	if err != nil {
		f.Fatal(err)
	}
	flows := providersession.NewFlowStore(providersession.FlowOptions{Keyring: ring, Consumed: store, Now: clock, Secure: true})
	rp, err := webauthn.New(webauthn.Config{RPID: "login.example.com", RPName: "Example", Origins: []string{fuzzOrigin}}, a, flows)
	if err != nil {
		f.Fatal(err)
	}
	fr := &fuzzRP{rp: rp, auth: a, authn: webauthntest.New(fuzzOrigin)}
	// alice signs up with a passkey.
	c, err := rp.BeginSignUp(context.Background(), webauthn.NewAccount{Username: "alice", Email: "alice@example.com"})
	if err != nil {
		f.Fatal(err)
	}
	resp, _, err := fr.authn.Create(fuzzOptions(f, c))
	if err != nil {
		f.Fatal(err)
	}
	reg, _, err := rp.FinishRegistration(context.Background(), fuzzRequest(c.Cookie), webauthn.RegistrationResponse{State: c.State, Credential: resp})
	if err != nil {
		f.Fatal(err)
	}
	if fr.sess, err = a.CreateSession(context.Background(), reg.User.ID, auth.SessionOptions{}); err != nil {
		f.Fatal(err)
	}
	return fr
}

func fuzzOptions(t testing.TB, c webauthn.Ceremony) []byte {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fuzzRequest(c *http.Cookie) *http.Request {
	r := httptest.NewRequest(http.MethodPost, fuzzOrigin+"/webauthn", nil)
	r.AddCookie(c)
	return r
}

// wantClientError fails unless err is an error of the input's (one with
// an auth code) and the flow cookie is deleted.
func wantClientError(t *testing.T, op string, err error, del *http.Cookie) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s accepted a fuzzed response", op)
	}
	if auth.CodeOf(err) == "UNKNOWN_ERROR" {
		t.Fatalf("%s: error without an auth code (a 503): %v", op, err)
	}
	if del == nil || del.MaxAge >= 0 {
		t.Fatalf("%s: flow cookie not deleted (%v)", op, del)
	}
}

// FuzzRegistrationResponse feeds arbitrary registration responses (and
// passkey names) to FinishRegistration, for a sign-up or, with add, for
// adding a passkey to alice.
func FuzzRegistrationResponse(f *testing.F) {
	fr := newFuzzRP(f)
	// A real registration response (of another ceremony, so its challenge
	// does not match), the same for adding one, and junk.
	for _, add := range []bool{false, true} {
		var c webauthn.Ceremony
		var err error
		if add {
			c, err = fr.rp.BeginAdd(context.Background(), &fr.sess)
		} else {
			c, err = fr.rp.BeginSignUp(context.Background(), webauthn.NewAccount{Username: "bob"})
		}
		if err != nil {
			f.Fatal(err)
		}
		resp, _, err := webauthntest.New(fuzzOrigin).Create(fuzzOptions(f, c))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(resp, "Laptop", add)
	}
	f.Add([]byte(`{}`), "", false)
	f.Add([]byte(`{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{"clientDataJSON":"e30","attestationObject":"oA"}}`), "x", true)
	f.Fuzz(func(t *testing.T, resp []byte, name string, add bool) {
		ctx := context.Background()
		var (
			c    webauthn.Ceremony
			err  error
			sess *auth.Session
		)
		if add {
			sess = &fr.sess
			c, err = fr.rp.BeginAdd(ctx, sess)
		} else {
			c, err = fr.rp.BeginSignUp(ctx, webauthn.NewAccount{Username: "newcomer"})
		}
		if err != nil {
			t.Fatal(err)
		}
		_, del, err := fr.rp.FinishRegistration(ctx, fuzzRequest(c.Cookie), webauthn.RegistrationResponse{
			State: c.State, Credential: resp, Name: name, Session: sess,
		})
		if _, nameErr := webauthn.CleanPasskeyName(name); nameErr != nil {
			// Refused before the flow is taken: no cookie to delete.
			if err == nil || auth.CodeOf(err) == "UNKNOWN_ERROR" {
				t.Fatalf("FinishRegistration with name %q: %v", name, err)
			}
			return
		}
		wantClientError(t, "FinishRegistration", err, del)
	})
}

// FuzzAssertionResponse feeds arbitrary assertion responses to
// FinishLogin, for a usernameless login or, with byName, alice's.
func FuzzAssertionResponse(f *testing.F) {
	fr := newFuzzRP(f)
	// A real assertion by alice's passkey (for another ceremony), and junk.
	c, err := fr.rp.BeginLogin(context.Background(), webauthn.LoginRequest{})
	if err != nil {
		f.Fatal(err)
	}
	resp, err := fr.authn.Get(fuzzOptions(f, c))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(resp, false)
	f.Add(resp, true)
	f.Add([]byte(`{}`), false)
	f.Add([]byte(`{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{"clientDataJSON":"e30","authenticatorData":"","signature":"","userHandle":"AAAA"}}`), true)
	f.Fuzz(func(t *testing.T, resp []byte, byName bool) {
		ctx := context.Background()
		req := webauthn.LoginRequest{}
		if byName {
			req.Username = "alice"
		}
		c, err := fr.rp.BeginLogin(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		_, del, err := fr.rp.FinishLogin(ctx, fuzzRequest(c.Cookie), webauthn.LoginResponse{State: c.State, Credential: resp})
		wantClientError(t, "FinishLogin", err, del)
	})
}
