package webauthn_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/seal"
	"github.com/brokerauth/broker/internal/testclock"
	"github.com/brokerauth/broker/providersession"
	"github.com/brokerauth/broker/storage"
	"github.com/brokerauth/broker/storage/storagetest"
	"github.com/brokerauth/broker/webauthn"
	"github.com/brokerauth/broker/webauthn/webauthntest"
)

const origin = "https://login.example.com"

type clock = testclock.Clock

type env struct {
	t     *testing.T
	clock *clock
	store storage.Store
	auth  *auth.Auth
	rp    *webauthn.RelyingParty
	authn *webauthntest.Authenticator
	// published holds the cache invalidations the Auth published.
	published *published
}

// published records the cache invalidations an Auth publishes.
type published struct {
	mu   sync.Mutex
	evs  []auth.Invalidation
	fail error // when set, Publish fails with it (and records nothing)
}

func (p *published) Publish(_ context.Context, ev auth.Invalidation) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return p.fail
	}
	p.evs = append(p.evs, ev)
	return nil
}

// failWith makes Publish fail with err (nil: work again).
func (p *published) failWith(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail = err
}

// take returns the invalidations published since the last take.
func (p *published) take() []auth.Invalidation {
	p.mu.Lock()
	defer p.mu.Unlock()
	evs := p.evs
	p.evs = nil
	return evs
}

func newEnv(t *testing.T, uv string) *env {
	t.Helper()
	return newEnvWith(t, uv, nil)
}

// newEnvWith is newEnv whose Auth (and so the relying party) works on
// wrap(store) when wrap is not nil.
func newEnvWith(t *testing.T, uv string, wrap func(storage.Store) storage.Store) *env {
	t.Helper()
	e := &env{t: t, clock: testclock.New(time.Now().UTC()), store: storagetest.OpenSQLite(t), published: &published{}}
	var err error
	st := e.store
	if wrap != nil {
		st = wrap(st)
	}
	e.auth, err = auth.New(st, auth.Options{Now: e.clock.Now, Origin: origin, Invalidations: e.published})
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	rand.Read(key)
	ring, err := seal.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	flows := providersession.NewFlowStore(providersession.FlowOptions{Keyring: ring, Consumed: e.store, Now: e.clock.Now, Secure: true})
	e.rp, err = webauthn.New(webauthn.Config{RPID: "login.example.com", RPName: "Example", Origins: []string{origin}, UserVerification: uv}, e.auth, flows)
	if err != nil {
		t.Fatal(err)
	}
	e.authn = webauthntest.New(origin)
	return e
}

// request is a request that carries the flow cookie c.
func request(c *http.Cookie) *http.Request {
	r := httptest.NewRequest(http.MethodPost, origin+"/webauthn", nil)
	if c != nil {
		r.AddCookie(c)
	}
	return r
}

func optionsJSON(t *testing.T, c webauthn.Ceremony) []byte {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signUp registers a new account with a passkey of e.authn.
func (e *env) signUp(name, email string) (webauthn.Registration, *webauthntest.Credential) {
	e.t.Helper()
	c, err := e.rp.BeginSignUp(context.Background(), webauthn.NewAccount{Username: name, Email: email})
	if err != nil {
		e.t.Fatalf("BeginSignUp: %v", err)
	}
	resp, cred, err := e.authn.Create(optionsJSON(e.t, c))
	if err != nil {
		e.t.Fatal(err)
	}
	reg, del, err := e.rp.FinishRegistration(context.Background(), request(c.Cookie), webauthn.RegistrationResponse{State: c.State, Credential: resp})
	if err != nil {
		e.t.Fatalf("FinishRegistration: %v", err)
	}
	if del == nil || del.MaxAge >= 0 {
		e.t.Errorf("FinishRegistration: got cookie %v; want one that deletes the flow cookie", del)
	}
	return reg, cred
}

// login runs a login ceremony; cred picks the credential (nil: the
// authenticator's choice).
func (e *env) login(req webauthn.LoginRequest, cred *webauthntest.Credential, sess *auth.Session) (webauthn.Login, error) {
	e.t.Helper()
	c, err := e.rp.BeginLogin(context.Background(), req)
	if err != nil {
		return webauthn.Login{}, err
	}
	resp, err := e.authn.GetWith(optionsJSON(e.t, c), cred)
	if err != nil {
		e.t.Fatal(err)
	}
	l, _, err := e.rp.FinishLogin(context.Background(), request(c.Cookie), webauthn.LoginResponse{State: c.State, Credential: resp, Session: sess})
	return l, err
}

func (e *env) users() int {
	e.t.Helper()
	us, err := e.store.ListUsers(context.Background(), "", 100)
	if err != nil {
		e.t.Fatal(err)
	}
	return len(us)
}

func TestSignUpOptionsShape(t *testing.T) {
	e := newEnv(t, "")
	c, err := e.rp.BeginSignUp(context.Background(), webauthn.NewAccount{Username: "  Alice ", Email: "Alice@Example.COM"})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		PublicKey struct {
			RP        struct{ ID, Name string }
			User      struct{ ID, Name, DisplayName string }
			Challenge string
			Selection struct {
				RequireResidentKey bool   `json:"requireResidentKey"`
				ResidentKey        string `json:"residentKey"`
				UserVerification   string `json:"userVerification"`
			} `json:"authenticatorSelection"`
			Attestation string
			Timeout     int
		} `json:"publicKey"`
		State string `json:"state"`
	}
	if err := json.Unmarshal(optionsJSON(t, c), &got); err != nil {
		t.Fatal(err)
	}
	pk := got.PublicKey
	if pk.RP.ID != "login.example.com" || pk.RP.Name != "Example" {
		t.Errorf("rp = %+v; want login.example.com / Example", pk.RP)
	}
	if pk.User.Name != "Alice" || pk.User.DisplayName != "Alice" || len(pk.User.ID) != 86 {
		t.Errorf("user = %+v; want name Alice and a 64-byte base64url id", pk.User)
	}
	if !pk.Selection.RequireResidentKey || pk.Selection.ResidentKey != "required" || pk.Selection.UserVerification != "required" {
		t.Errorf("authenticatorSelection = %+v; want resident key and user verification required", pk.Selection)
	}
	if pk.Attestation != "none" || pk.Timeout != 300000 || len(pk.Challenge) < 22 {
		t.Errorf("attestation %q, timeout %d, challenge %q", pk.Attestation, pk.Timeout, pk.Challenge)
	}
	if got.State == "" || got.State != c.State {
		t.Errorf("state = %q; want the ceremony's %q", got.State, c.State)
	}
	if c.Cookie == nil || !c.Cookie.HttpOnly || c.Cookie.MaxAge != 300 {
		t.Errorf("cookie = %v; want HttpOnly, 5 minutes", c.Cookie)
	}
	if n := e.users(); n != 0 {
		t.Errorf("users after BeginSignUp: got %d; want 0", n)
	}
}

func TestSignUpAndLogin(t *testing.T) {
	e := newEnv(t, "")
	reg, cred := e.signUp("alice", "Alice@Example.com")
	if !reg.NewUser || reg.User.Username == nil || *reg.User.Username != "alice" {
		t.Fatalf("registration = %+v", reg)
	}
	if reg.User.Email == nil || *reg.User.Email != "alice@example.com" || reg.User.EmailVerified {
		t.Errorf("email = %v verified %v; want alice@example.com unverified", reg.User.Email, reg.User.EmailVerified)
	}
	if reg.Passkey.ID != webauthn.EncodeID(cred.ID) || reg.Passkey.Name != "Passkey" {
		t.Errorf("passkey = %+v", reg.Passkey)
	}
	keys, err := e.auth.GetAllUserKeys(context.Background(), reg.User.ID)
	if err != nil || len(keys) != 1 || keys[0].ID != webauthn.KeyID(cred.ID) {
		t.Errorf("keys = %v, %v; want [%s]", keys, err, webauthn.KeyID(cred.ID))
	}
	a, err := e.store.GetAuthenticator(context.Background(), cred.ID)
	if err != nil {
		t.Fatal(err)
	}
	if a.UserID != reg.User.ID || a.SignCount != 1 || a.DeviceType != webauthn.DeviceSingle ||
		!slices.Equal(a.Transports, []string{"internal"}) || a.AttestationType != "none" || len(a.AAGUID) != 16 {
		t.Errorf("authenticator = %+v", a)
	}

	t.Run("usernameless", func(t *testing.T) {
		l, err := e.login(webauthn.LoginRequest{}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if l.User.ID != reg.User.ID || l.Passkey.LastUsedAt == nil || l.Reauthenticated {
			t.Errorf("login = %+v", l)
		}
	})
	t.Run("by username, any case", func(t *testing.T) {
		c, err := e.rp.BeginLogin(context.Background(), webauthn.LoginRequest{Username: "ALICE"})
		if err != nil {
			t.Fatal(err)
		}
		var o struct {
			PublicKey struct {
				Allow []struct{ ID string } `json:"allowCredentials"`
				UV    string                `json:"userVerification"`
			} `json:"publicKey"`
		}
		json.Unmarshal(optionsJSON(t, c), &o)
		if len(o.PublicKey.Allow) != 1 || o.PublicKey.Allow[0].ID != webauthn.EncodeID(cred.ID) || o.PublicKey.UV != "required" {
			t.Errorf("options = %+v; want allowCredentials [%s] and UV required", o.PublicKey, webauthn.EncodeID(cred.ID))
		}
		l, err := e.login(webauthn.LoginRequest{Username: "Alice"}, nil, nil)
		if err != nil || l.User.ID != reg.User.ID {
			t.Errorf("login = %+v, %v", l, err)
		}
	})
	t.Run("conditional", func(t *testing.T) {
		c, err := e.rp.BeginLogin(context.Background(), webauthn.LoginRequest{Conditional: true})
		if err != nil {
			t.Fatal(err)
		}
		var o map[string]any
		json.Unmarshal(optionsJSON(t, c), &o)
		if o["mediation"] != "conditional" {
			t.Errorf("options = %v; want mediation conditional", o)
		}
	})
	t.Run("unknown username", func(t *testing.T) {
		_, err := e.rp.BeginLogin(context.Background(), webauthn.LoginRequest{Username: "bob"})
		if !errors.Is(err, auth.ErrInvalidKeyID) {
			t.Errorf("got %v; want ErrInvalidKeyID", err)
		}
	})
}

func TestSignUpConflicts(t *testing.T) {
	e := newEnv(t, "")
	e.signUp("alice", "")
	if _, err := e.rp.BeginSignUp(context.Background(), webauthn.NewAccount{Username: "ALICE"}); !errors.Is(err, auth.ErrConflict) {
		t.Errorf("BeginSignUp for a taken name: got %v; want ErrConflict", err)
	}
	for _, bad := range []string{"", "a b", "x\x00", string(make([]rune, 65))} {
		if _, err := e.rp.BeginSignUp(context.Background(), webauthn.NewAccount{Username: bad}); !errors.Is(err, auth.ErrInvalidRequest) {
			t.Errorf("BeginSignUp(%q): got %v; want ErrInvalidRequest", bad, err)
		}
	}
	if _, err := e.rp.BeginSignUp(context.Background(), webauthn.NewAccount{Username: "carol", Email: "not-an-email"}); !errors.Is(err, auth.ErrInvalidRequest) {
		t.Errorf("BeginSignUp with a bad email: got %v; want ErrInvalidRequest", err)
	}

	// Two sign-ups for one name begun before either finishes: the second
	// finish is a conflict and leaves nothing behind.
	c1, _ := e.rp.BeginSignUp(context.Background(), webauthn.NewAccount{Username: "bob"})
	c2, _ := e.rp.BeginSignUp(context.Background(), webauthn.NewAccount{Username: "Bob"})
	r1, _, _ := e.authn.Create(optionsJSON(t, c1))
	r2, _, _ := e.authn.Create(optionsJSON(t, c2))
	if _, _, err := e.rp.FinishRegistration(context.Background(), request(c1.Cookie), webauthn.RegistrationResponse{State: c1.State, Credential: r1}); err != nil {
		t.Fatal(err)
	}
	_, _, err := e.rp.FinishRegistration(context.Background(), request(c2.Cookie), webauthn.RegistrationResponse{State: c2.State, Credential: r2})
	if !errors.Is(err, auth.ErrConflict) {
		t.Errorf("second sign-up for bob: got %v; want ErrConflict", err)
	}
	if n := e.users(); n != 2 {
		t.Errorf("users: got %d; want 2 (alice, bob)", n)
	}
}

func TestRegistrationRefusals(t *testing.T) {
	e := newEnv(t, "")
	begin := func(t *testing.T, name string) webauthn.Ceremony {
		t.Helper()
		c, err := e.rp.BeginSignUp(context.Background(), webauthn.NewAccount{Username: name})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	t.Run("replayed", func(t *testing.T) {
		c := begin(t, "dave")
		resp, _, _ := e.authn.Create(optionsJSON(t, c))
		rr := webauthn.RegistrationResponse{State: c.State, Credential: resp}
		if _, _, err := e.rp.FinishRegistration(context.Background(), request(c.Cookie), rr); err != nil {
			t.Fatal(err)
		}
		_, _, err := e.rp.FinishRegistration(context.Background(), request(c.Cookie), rr)
		if !errors.Is(err, providersession.ErrFlowUsed) || !errors.Is(err, auth.ErrInvalidRequest) {
			t.Errorf("replay: got %v; want ErrFlowUsed", err)
		}
		if n := e.users(); n != 1 {
			t.Errorf("users: got %d; want 1", n)
		}
	})
	cases := []struct {
		name   string
		mutate func(c webauthn.Ceremony, resp []byte) (*http.Request, webauthn.RegistrationResponse)
		want   error
	}{
		{"other origin", func(c webauthn.Ceremony, resp []byte) (*http.Request, webauthn.RegistrationResponse) {
			bad, _ := webauthntest.ReplaceOrigin(resp, "https://evil.example")
			return request(c.Cookie), webauthn.RegistrationResponse{State: c.State, Credential: bad}
		}, webauthn.ErrVerification},
		{"wrong state", func(c webauthn.Ceremony, resp []byte) (*http.Request, webauthn.RegistrationResponse) {
			return request(c.Cookie), webauthn.RegistrationResponse{State: c.State + "x", Credential: resp}
		}, providersession.ErrFlowState},
		{"no cookie", func(c webauthn.Ceremony, resp []byte) (*http.Request, webauthn.RegistrationResponse) {
			return request(nil), webauthn.RegistrationResponse{State: c.State, Credential: resp}
		}, providersession.ErrFlowMissing},
		{"garbage", func(c webauthn.Ceremony, resp []byte) (*http.Request, webauthn.RegistrationResponse) {
			return request(c.Cookie), webauthn.RegistrationResponse{State: c.State, Credential: []byte(`{"id":"x"}`)}
		}, webauthn.ErrVerification},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := e.rp.BeginSignUp(context.Background(), webauthn.NewAccount{Username: "erin"})
			if err != nil {
				t.Fatal(err)
			}
			resp, _, _ := e.authn.Create(optionsJSON(t, c))
			r, rr := tc.mutate(c, resp)
			_, _, err = e.rp.FinishRegistration(context.Background(), r, rr)
			if !errors.Is(err, tc.want) || !errors.Is(err, auth.ErrInvalidRequest) {
				t.Errorf("got %v; want %v and ErrInvalidRequest", err, tc.want)
			}
		})
	}
	t.Run("user not verified", func(t *testing.T) {
		e.authn.UserVerified = false
		defer func() { e.authn.UserVerified = true }()
		c := begin(t, "fred")
		resp, _, _ := e.authn.Create(optionsJSON(t, c))
		_, _, err := e.rp.FinishRegistration(context.Background(), request(c.Cookie), webauthn.RegistrationResponse{State: c.State, Credential: resp})
		if !errors.Is(err, webauthn.ErrVerification) {
			t.Errorf("got %v; want ErrVerification", err)
		}
	})
	t.Run("expired", func(t *testing.T) {
		c := begin(t, "gina")
		resp, _, _ := e.authn.Create(optionsJSON(t, c))
		e.clock.Advance(providersession.PasskeyTTL + time.Second)
		_, _, err := e.rp.FinishRegistration(context.Background(), request(c.Cookie), webauthn.RegistrationResponse{State: c.State, Credential: resp})
		if !errors.Is(err, providersession.ErrFlowExpired) {
			t.Errorf("got %v; want ErrFlowExpired", err)
		}
	})
	if n := e.users(); n != 1 {
		t.Errorf("users: got %d; want only dave", n)
	}
}

func TestUserVerificationPreferred(t *testing.T) {
	e := newEnv(t, "preferred")
	e.authn.UserVerified = false
	e.signUp("frank", "")
	if _, err := e.login(webauthn.LoginRequest{}, nil, nil); err != nil {
		t.Errorf("login without UV when preferred: %v", err)
	}
	if _, err := webauthn.New(webauthn.Config{RPID: "x.example", Origins: []string{"https://x.example"}, UserVerification: "sometimes"}, e.auth, nil); err == nil {
		t.Error("New accepted a nil FlowStore and a bad user verification")
	}
}

func TestLoginRefusals(t *testing.T) {
	e := newEnv(t, "")
	reg, cred := e.signUp("grace", "")

	t.Run("user not verified", func(t *testing.T) {
		e.authn.UserVerified = false
		defer func() { e.authn.UserVerified = true }()
		if _, err := e.login(webauthn.LoginRequest{}, nil, nil); !errors.Is(err, webauthn.ErrVerification) {
			t.Errorf("got %v; want ErrVerification", err)
		}
	})
	t.Run("other origin", func(t *testing.T) {
		c, _ := e.rp.BeginLogin(context.Background(), webauthn.LoginRequest{})
		resp, _ := e.authn.Get(optionsJSON(t, c))
		bad, _ := webauthntest.ReplaceOrigin(resp, "https://evil.example")
		_, _, err := e.rp.FinishLogin(context.Background(), request(c.Cookie), webauthn.LoginResponse{State: c.State, Credential: bad})
		if !errors.Is(err, webauthn.ErrVerification) || !errors.Is(err, auth.ErrInvalidRequest) {
			t.Errorf("got %v; want ErrVerification", err)
		}
	})
	t.Run("replayed", func(t *testing.T) {
		c, _ := e.rp.BeginLogin(context.Background(), webauthn.LoginRequest{})
		resp, _ := e.authn.Get(optionsJSON(t, c))
		lr := webauthn.LoginResponse{State: c.State, Credential: resp}
		if _, _, err := e.rp.FinishLogin(context.Background(), request(c.Cookie), lr); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.rp.FinishLogin(context.Background(), request(c.Cookie), lr); !errors.Is(err, providersession.ErrFlowUsed) {
			t.Errorf("replay: got %v; want ErrFlowUsed", err)
		}
	})
	t.Run("registration flow used for login", func(t *testing.T) {
		c, _ := e.rp.BeginSignUp(context.Background(), webauthn.NewAccount{Username: "heidi"})
		l, _ := e.rp.BeginLogin(context.Background(), webauthn.LoginRequest{})
		resp, _ := e.authn.Get(optionsJSON(t, l))
		_, _, err := e.rp.FinishLogin(context.Background(), request(c.Cookie), webauthn.LoginResponse{State: c.State, Credential: resp})
		if !errors.Is(err, providersession.ErrFlowPurpose) {
			t.Errorf("got %v; want ErrFlowPurpose", err)
		}
	})
	t.Run("sign count regression", func(t *testing.T) {
		if _, err := e.login(webauthn.LoginRequest{}, cred, nil); err != nil {
			t.Fatal(err)
		}
		before, _ := e.store.GetAuthenticator(context.Background(), cred.ID)
		cred.SignCount = 1 // the clone reports 2, the stored counter is higher
		_, err := e.login(webauthn.LoginRequest{}, cred, nil)
		if !errors.Is(err, webauthn.ErrCloned) || !errors.Is(err, auth.ErrInvalidRequest) {
			t.Errorf("got %v; want ErrCloned", err)
		}
		cred.SignCount = before.SignCount - 1 // the same counter again
		if _, err := e.login(webauthn.LoginRequest{}, cred, nil); !errors.Is(err, webauthn.ErrCloned) {
			t.Errorf("equal counter: got %v; want ErrCloned", err)
		}
		after, _ := e.store.GetAuthenticator(context.Background(), cred.ID)
		if after.SignCount != before.SignCount {
			t.Errorf("stored counter %d after refusals; want %d kept", after.SignCount, before.SignCount)
		}
		cred.SignCount = before.SignCount + 10
		if _, err := e.login(webauthn.LoginRequest{}, cred, nil); err != nil {
			t.Errorf("higher counter: %v", err)
		}
	})
	t.Run("unknown credential", func(t *testing.T) {
		stranger := webauthntest.New(origin)
		c, _ := e.rp.BeginSignUp(context.Background(), webauthn.NewAccount{Username: "ivan"})
		stranger.Create(optionsJSON(t, c)) // registered with the authenticator, never finished
		l, _ := e.rp.BeginLogin(context.Background(), webauthn.LoginRequest{})
		resp, err := stranger.Get(optionsJSON(t, l))
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = e.rp.FinishLogin(context.Background(), request(l.Cookie), webauthn.LoginResponse{State: l.State, Credential: resp})
		if !errors.Is(err, auth.ErrInvalidKeyID) {
			t.Errorf("got %v; want ErrInvalidKeyID", err)
		}
	})
	_ = reg
}

func TestSyncedPasskeyZeroCounter(t *testing.T) {
	e := newEnv(t, "")
	e.authn.Counter = false
	e.authn.BackupEligible, e.authn.BackedUp = true, true
	_, cred := e.signUp("judy", "")
	for i := range 3 {
		if _, err := e.login(webauthn.LoginRequest{}, cred, nil); err != nil {
			t.Fatalf("login %d with a 0 counter: %v", i, err)
		}
	}
	a, _ := e.store.GetAuthenticator(context.Background(), cred.ID)
	if a.SignCount != 0 || !a.BackupEligible || !a.BackedUp || a.DeviceType != webauthn.DeviceMulti {
		t.Errorf("authenticator = %+v; want counter 0, backed up, multiDevice", a)
	}
	ps, _ := e.rp.List(context.Background(), a.UserID)
	if len(ps) != 1 || !ps[0].BackedUp {
		t.Errorf("list = %+v", ps)
	}
}

func TestAddRenameRemove(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	reg, first := e.signUp("kim", "")
	sess, err := e.auth.CreateSession(ctx, reg.User.ID, auth.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	second := webauthntest.New(origin) // another device

	add := func(a *webauthntest.Authenticator, s *auth.Session, name string) (webauthn.Registration, error) {
		c, err := e.rp.BeginAdd(ctx, s)
		if err != nil {
			return webauthn.Registration{}, err
		}
		resp, _, err := a.Create(optionsJSON(t, c))
		if err != nil {
			return webauthn.Registration{}, err
		}
		r, _, err := e.rp.FinishRegistration(ctx, request(c.Cookie), webauthn.RegistrationResponse{State: c.State, Credential: resp, Name: name, Session: s})
		return r, err
	}

	t.Run("the same authenticator is excluded", func(t *testing.T) {
		if _, err := add(e.authn, &sess, ""); !errors.Is(err, webauthntest.ErrExcluded) {
			t.Errorf("got %v; want the authenticator to refuse (excludeCredentials)", err)
		}
	})
	var added webauthn.Registration
	t.Run("add", func(t *testing.T) {
		e.clock.Advance(time.Second) // so that the list's order is known
		e.published.take()
		added, err = add(second, &sess, "  Laptop ")
		if err != nil {
			t.Fatal(err)
		}
		// Claims may list the user's keys: their cached sessions go.
		if evs := e.published.take(); !slices.Contains(evs, auth.Invalidation{UserID: reg.User.ID}) {
			t.Errorf("published %v on adding a passkey; want the user's invalidation", evs)
		}
		if added.NewUser || added.User.ID != reg.User.ID || added.Passkey.Name != "Laptop" {
			t.Errorf("registration = %+v", added)
		}
		l, err := e.login(webauthn.LoginRequest{}, second.Credentials()[0], nil)
		if err != nil || l.User.ID != reg.User.ID {
			t.Errorf("login with the second passkey: %+v, %v", l, err)
		}
	})
	t.Run("add with publishing failing", func(t *testing.T) {
		// The passkey is stored and this process's cache dropped the
		// user's sessions; the caller hears that other replicas were not
		// told.
		errPublish := errors.New("publish: connection refused")
		e.published.failWith(errPublish)
		defer e.published.failWith(nil)
		third := webauthntest.New(origin)
		if _, err := add(third, &sess, "Phone"); !errors.Is(err, errPublish) {
			t.Fatalf("got %v; want the publish error", err)
		}
		e.published.failWith(nil)
		l, err := e.login(webauthn.LoginRequest{}, third.Credentials()[0], nil)
		if err != nil || l.User.ID != reg.User.ID {
			t.Errorf("login with the passkey added while publishing failed: %+v, %v", l, err)
		}
		// Removing it, likewise: removed, and the caller hears of it.
		e.published.failWith(errPublish)
		if err := e.rp.Remove(ctx, &sess, webauthn.EncodeID(third.Credentials()[0].ID)); !errors.Is(err, errPublish) {
			t.Fatalf("remove with publishing failing: got %v; want the publish error", err)
		}
		e.published.failWith(nil)
		if _, err := e.login(webauthn.LoginRequest{}, third.Credentials()[0], nil); !errors.Is(err, auth.ErrInvalidKeyID) {
			t.Errorf("login with the passkey removed while publishing failed: got %v; want ErrInvalidKeyID", err)
		}
	})
	t.Run("add by another session's flow", func(t *testing.T) {
		other, _ := e.signUp("leo", "")
		os, _ := e.auth.CreateSession(ctx, other.User.ID, auth.SessionOptions{})
		c, _ := e.rp.BeginAdd(ctx, &sess)
		resp, _, _ := webauthntest.New(origin).Create(optionsJSON(t, c))
		_, _, err := e.rp.FinishRegistration(ctx, request(c.Cookie), webauthn.RegistrationResponse{State: c.State, Credential: resp, Session: &os})
		if !errors.Is(err, webauthn.ErrWrongUser) {
			t.Errorf("got %v; want ErrWrongUser", err)
		}
	})
	t.Run("add needs recent authentication", func(t *testing.T) {
		e.clock.Advance(auth.RecentAuthWindow + time.Minute)
		old, _ := e.auth.GetSession(ctx, sess.Token)
		if _, err := add(webauthntest.New(origin), &old, ""); !errors.Is(err, auth.ErrReauthenticationRequired) {
			t.Errorf("got %v; want ErrReauthenticationRequired", err)
		}
		if err := e.rp.Remove(ctx, &old, added.Passkey.ID); !errors.Is(err, auth.ErrReauthenticationRequired) {
			t.Errorf("remove: got %v; want ErrReauthenticationRequired", err)
		}
		// Re-authenticate with a passkey login bound to the session.
		l, err := e.login(webauthn.LoginRequest{Reauth: &old}, first, &old)
		if err != nil || !l.Reauthenticated {
			t.Fatalf("re-authentication: %+v, %v", l, err)
		}
		fresh, _ := e.auth.GetSession(ctx, sess.Token)
		if err := e.auth.RequireRecentAuth(fresh); err != nil {
			t.Errorf("after re-authentication: %v", err)
		}
		sess = fresh
	})
	t.Run("re-authentication with another user's passkey", func(t *testing.T) {
		stranger := webauthntest.New(origin)
		e2 := *e
		e2.authn = stranger
		e2.signUp("mallory", "")
		c, _ := e.rp.BeginLogin(ctx, webauthn.LoginRequest{Reauth: &sess})
		resp, _ := stranger.Get(optionsJSON(t, c))
		_, _, err := e.rp.FinishLogin(ctx, request(c.Cookie), webauthn.LoginResponse{State: c.State, Credential: resp, Session: &sess})
		if !errors.Is(err, webauthn.ErrWrongUser) {
			t.Errorf("got %v; want ErrWrongUser", err)
		}
	})
	t.Run("list", func(t *testing.T) {
		ps, err := e.rp.List(ctx, reg.User.ID)
		if err != nil || len(ps) != 2 || ps[0].ID != webauthn.EncodeID(first.ID) || ps[1].Name != "Laptop" {
			t.Errorf("list = %+v, %v", ps, err)
		}
	})
	t.Run("rename", func(t *testing.T) {
		p, err := e.rp.Rename(ctx, reg.User.ID, webauthn.EncodeID(first.ID), "Phone")
		if err != nil || p.Name != "Phone" {
			t.Errorf("rename = %+v, %v", p, err)
		}
		other, _ := e.store.GetUserByUsername(ctx, "leo")
		if _, err := e.rp.Rename(ctx, other.ID, webauthn.EncodeID(first.ID), "Mine"); !errors.Is(err, webauthn.ErrNotFound) {
			t.Errorf("rename another user's passkey: got %v; want ErrNotFound", err)
		}
		if _, err := e.rp.Rename(ctx, reg.User.ID, "%%%", "x"); !errors.Is(err, webauthn.ErrNotFound) {
			t.Errorf("rename a malformed id: got %v; want ErrNotFound", err)
		}
		if _, err := e.rp.Rename(ctx, reg.User.ID, webauthn.EncodeID(first.ID), " "); !errors.Is(err, auth.ErrInvalidRequest) {
			t.Errorf("rename to blank: got %v; want ErrInvalidRequest", err)
		}
	})
	t.Run("remove", func(t *testing.T) {
		other, _ := e.store.GetUserByUsername(ctx, "leo")
		os, _ := e.auth.CreateSession(ctx, other.ID, auth.SessionOptions{})
		if err := e.rp.Remove(ctx, &os, webauthn.EncodeID(first.ID)); !errors.Is(err, webauthn.ErrNotFound) {
			t.Errorf("remove another user's passkey: got %v; want ErrNotFound", err)
		}
		e.published.take()
		if err := e.rp.Remove(ctx, &sess, webauthn.EncodeID(first.ID)); err != nil {
			t.Fatal(err)
		}
		if evs := e.published.take(); !slices.Contains(evs, auth.Invalidation{UserID: reg.User.ID}) {
			t.Errorf("published %v on removing a passkey; want the user's invalidation", evs)
		}
		if _, err := e.login(webauthn.LoginRequest{}, first, nil); !errors.Is(err, auth.ErrInvalidKeyID) {
			t.Errorf("login with the removed passkey: got %v; want ErrInvalidKeyID", err)
		}
		if keys := mustKeys(t, e, reg.User.ID); len(keys) != 1 || keys[0] != webauthn.KeyID(second.Credentials()[0].ID) {
			t.Errorf("keys after remove = %v", keys)
		}
		err := e.rp.Remove(ctx, &sess, added.Passkey.ID)
		if !errors.Is(err, webauthn.ErrLastSignInMethod) || !errors.Is(err, auth.ErrConflict) {
			t.Errorf("remove the last passkey: got %v; want ErrLastSignInMethod", err)
		}
	})
}

func mustKeys(t *testing.T, e *env, userID string) []string {
	t.Helper()
	ks, err := e.auth.GetAllUserKeys(context.Background(), userID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range ks {
		out = append(out, k.ID)
	}
	return out
}

func TestAddForUserWithoutPasskey(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	u, err := e.auth.CreateUser(ctx, auth.CreateUserOptions{
		Key:        &auth.KeySpec{ProviderID: "github", ProviderUserID: "42"},
		Attributes: map[string]any{"email": "nina@example.com", "email_verified": true, "name": "Nina"},
	})
	if err != nil {
		t.Fatal(err)
	}
	sess, _ := e.auth.CreateSession(ctx, u.ID, auth.SessionOptions{})
	c, err := e.rp.BeginAdd(ctx, &sess)
	if err != nil {
		t.Fatal(err)
	}
	var o struct {
		PublicKey struct {
			User struct{ Name, DisplayName string }
		} `json:"publicKey"`
	}
	json.Unmarshal(optionsJSON(t, c), &o)
	if o.PublicKey.User.Name != "nina@example.com" || o.PublicKey.User.DisplayName != "Nina" {
		t.Errorf("user = %+v; want the email as name and Nina as display name", o.PublicKey.User)
	}
	if su, _ := e.store.GetUser(ctx, u.ID); len(su.WebAuthnHandle) != 0 {
		t.Errorf("BeginAdd stored a handle already")
	}
	resp, cred, _ := e.authn.Create(optionsJSON(t, c))
	if _, _, err := e.rp.FinishRegistration(ctx, request(c.Cookie), webauthn.RegistrationResponse{State: c.State, Credential: resp, Session: &sess}); err != nil {
		t.Fatal(err)
	}
	if su, _ := e.store.GetUser(ctx, u.ID); len(su.WebAuthnHandle) != 64 {
		t.Errorf("handle = %x; want 64 bytes", su.WebAuthnHandle)
	}
	if l, err := e.login(webauthn.LoginRequest{}, cred, nil); err != nil || l.User.ID != u.ID {
		t.Errorf("login = %+v, %v", l, err)
	}
	// Now the user has two keys; removing the passkey is allowed.
	if err := e.rp.Remove(ctx, &sess, webauthn.EncodeID(cred.ID)); err != nil {
		t.Errorf("remove: %v", err)
	}
}

// racingStore records every authenticator use twice when race is set: a
// concurrent login presenting the same counter commits first.
type racingStore struct {
	storage.Store
	race atomic.Bool
}

func (r *racingStore) UpdateAuthenticatorCounter(ctx context.Context, id []byte, n uint32, backedUp bool, at time.Time) (storage.Authenticator, error) {
	if r.race.Load() {
		if _, err := r.Store.UpdateAuthenticatorCounter(ctx, id, n, backedUp, at); err != nil {
			return storage.Authenticator{}, err
		}
	}
	return r.Store.UpdateAuthenticatorCounter(ctx, id, n, backedUp, at)
}

// TestLoginCounterRace: of two logins that present the same signature
// counter at once (a clone), the one that records its use second is
// refused, although both passed go-webauthn's check against the counter
// they had read.
func TestLoginCounterRace(t *testing.T) {
	var rs *racingStore
	e := newEnvWith(t, "preferred", func(s storage.Store) storage.Store {
		rs = &racingStore{Store: s}
		return rs
	})
	_, cred := e.signUp("ivan", "")
	if _, err := e.login(webauthn.LoginRequest{}, cred, nil); err != nil {
		t.Fatalf("a login without a race: %v", err)
	}
	rs.race.Store(true)
	_, err := e.login(webauthn.LoginRequest{}, cred, nil)
	if !errors.Is(err, webauthn.ErrCloned) || !errors.Is(err, auth.ErrInvalidRequest) {
		t.Fatalf("the login that lost the race: %v; want ErrCloned", err)
	}
}
