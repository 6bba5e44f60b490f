package providersession

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/seal"
	"github.com/brokerauth/broker/storage"
)

// Lifetimes of a flow, to pass to [FlowStore.Begin].
const (
	// OAuthTTL is how long an OAuth or OIDC login attempt may take.
	OAuthTTL = 10 * time.Minute
	// PasskeyTTL is how long a passkey ceremony may take (SPEC §5).
	PasskeyTTL = 5 * time.Minute
)

// MaxCookieBytes is the largest flow cookie [FlowStore.Begin] will make,
// counting the whole Set-Cookie value (name, value and attributes). Browsers
// keep at least 4096 bytes per cookie (RFC 6265 §6.1) and silently drop
// larger ones, which would only show up later as a missing cookie.
const MaxCookieBytes = 4096

// DefaultCookieName is the default [FlowOptions.CookieName].
const DefaultCookieName = "broker_flow"

// hostPrefix is the cookie-name prefix that makes browsers refuse the cookie
// unless it is Secure, has Path=/ and no Domain, so that a sibling subdomain
// cannot plant a flow cookie of its own (RFC 6265bis §4.1.3.2).
const hostPrefix = "__Host-"

// Why [FlowStore.Take] refused a flow. Each is returned together with
// [auth.ErrInvalidRequest], so errors.Is(err, auth.ErrInvalidRequest) holds
// for all of them and auth.CodeOf gives AUTH_INVALID_REQUEST; errors.Is with
// one of these tells the reasons apart (for the error page and the log).
var (
	// ErrFlowMissing: the request carries no flow cookie at all (the flow
	// was never started in this browser, expired there, or was cleared).
	ErrFlowMissing = errors.New("providersession: no flow cookie")
	// ErrFlowTampered: the cookie does not open: altered, truncated, sealed
	// under a key that is no longer configured, or moved to another name.
	ErrFlowTampered = errors.New("providersession: flow cookie invalid or tampered")
	// ErrFlowProvider: the flow was started for another provider (mix-up
	// attack, RFC 9700 §4.4).
	ErrFlowProvider = errors.New("providersession: flow started for another provider")
	// ErrFlowPurpose: the flow was started for another purpose.
	ErrFlowPurpose = errors.New("providersession: flow started for another purpose")
	// ErrFlowExpired: the flow's lifetime is over.
	ErrFlowExpired = errors.New("providersession: flow expired")
	// ErrFlowState: no state was given, or it matches none of the
	// request's flow cookies (while there are some), or not the state
	// sealed inside the cookie.
	ErrFlowState = errors.New("providersession: state mismatch")
	// ErrFlowUsed: the flow was already taken once (a replayed cookie).
	ErrFlowUsed = errors.New("providersession: flow already used")
)

// ErrFlowTooLarge is returned by [FlowStore.Begin] when the sealed flow
// would not fit in a cookie of [MaxCookieBytes]; keep [Flow.Data] and
// [Flow.WebAuthn] small. It is a server-side fault, not the user's.
var ErrFlowTooLarge = errors.New("providersession: flow too large for a cookie")

// Flow is the state of one login attempt (OAuth or passkey ceremony). It
// travels sealed in a cookie; no process memory holds it.
type Flow struct {
	// ID is random; Take records it as consumed so the flow finishes once.
	ID string
	// Provider is the provider id this flow was started for (mix-up defence).
	Provider string
	// Purpose is what the flow is for: "login", "link", "reauth",
	// "webauthn-register", "webauthn-login", ...
	Purpose string
	// State is the OAuth state (32 random bytes, base64url). For passkey
	// ceremonies it is the flow handle the page sends back (see package doc).
	State string
	// CodeVerifier is the PKCE verifier (RFC 7636), from oauth2.GenerateVerifier.
	CodeVerifier string
	// Nonce is the OIDC nonce (32 random bytes, base64url).
	Nonce string
	// RedirectTo is where to send the browser when the flow succeeds.
	RedirectTo string
	// UserID is, for link, reauth and passkey-add flows, the signed-in
	// user that started it.
	UserID string
	// SessionID is the hashed id of the session that started it (link,
	// reauth); optional.
	SessionID string
	// WebAuthn is go-webauthn's SessionData, as JSON, for passkey
	// ceremonies. Valid JSON is kept as JSON inside the cookie and comes
	// back from Take compacted (insignificant whitespace removed); other
	// bytes come back as given.
	WebAuthn []byte
	// Data holds small extras (e.g. the new account's name and email for a
	// passkey sign-up). Everything counts against [MaxCookieBytes].
	Data map[string]string
	// Started is when Begin ran, and Expires is Started plus the lifetime.
	Started time.Time
	Expires time.Time
}

// wireFlow is the sealed JSON form of a Flow: short names, because every
// byte is sent with each request while the cookie lives.
type wireFlow struct {
	ID           string            `json:"i"`
	Provider     string            `json:"p"`
	Purpose      string            `json:"u"`
	State        string            `json:"s"`
	CodeVerifier string            `json:"v,omitempty"`
	Nonce        string            `json:"n,omitempty"`
	RedirectTo   string            `json:"r,omitempty"`
	UserID       string            `json:"uid,omitempty"`
	SessionID    string            `json:"sid,omitempty"`
	WebAuthn     json.RawMessage   `json:"w,omitempty"`  // when it is JSON (go-webauthn's SessionData)
	WebAuthnRaw  []byte            `json:"wb,omitempty"` // otherwise, base64
	Data         map[string]string `json:"d,omitempty"`
	Started      int64             `json:"t"` // Unix microseconds
	Expires      int64             `json:"e"` // Unix microseconds
}

// FlowOptions configures a [FlowStore].
type FlowOptions struct {
	// Keyring seals and opens flow cookies (secrets.cookie_keys). Required.
	Keyring *seal.Keyring
	// Consumed records taken flows, so a copied cookie cannot finish twice.
	// Required.
	Consumed storage.FlowStates
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// CookieName is the prefix of the flow cookies' names; the default is
	// [DefaultCookieName]. When Secure is set and Path is "/", "__Host-" is
	// put in front of it.
	CookieName string
	// Secure sets the Secure attribute; set it when the public URL is https.
	Secure bool
	// Path is the cookies' Path; the default is "/".
	Path string
}

// FlowStore seals flows into cookies and takes them back, once. Any replica
// holding the same keys can finish a flow another replica began. It is safe
// for concurrent use.
type FlowStore struct {
	keys     *seal.Keyring
	consumed storage.FlowStates
	now      func() time.Time
	prefix   string // cookie name up to the state tag, ending in "_"
	secure   bool
	path     string
}

// NewFlowStore returns a FlowStore. It panics when o.Keyring or o.Consumed
// is nil or the cookie name or path is unusable, since those are wiring
// mistakes.
func NewFlowStore(o FlowOptions) *FlowStore {
	if o.Keyring == nil || o.Consumed == nil {
		panic("providersession: NewFlowStore needs a Keyring and a Consumed store")
	}
	s := &FlowStore{keys: o.Keyring, consumed: o.Consumed, now: o.Now, secure: o.Secure, path: o.Path}
	if s.now == nil {
		s.now = time.Now
	}
	if s.path == "" {
		s.path = "/"
	}
	name := o.CookieName
	if name == "" {
		name = DefaultCookieName
	}
	if s.secure && s.path == "/" && !strings.HasPrefix(name, hostPrefix) {
		name = hostPrefix + name
	}
	if strings.HasPrefix(name, hostPrefix) && (!s.secure || s.path != "/") {
		panic("providersession: a __Host- cookie name needs Secure and Path \"/\"")
	}
	s.prefix = name + "_"
	probe := &http.Cookie{Name: s.cookieName("state"), Value: "x", Path: s.path}
	if err := probe.Valid(); err != nil {
		panic("providersession: NewFlowStore: " + err.Error())
	}
	return s
}

// cookieName is the name of the cookie that holds the flow with this state:
// the prefix and 16 base64url characters (96 bits) of the state's SHA-256.
// Naming cookies by state lets several flows run side by side (two tabs),
// and lets Take find the right one from the state alone.
func (s *FlowStore) cookieName(state string) string {
	sum := sha256.Sum256([]byte(state))
	return s.prefix + base64.RawURLEncoding.EncodeToString(sum[:12])
}

// Begin starts a flow: it fills in f's ID, State, CodeVerifier and Nonce
// (random; any values given are replaced), Started (now) and Expires
// (Started + ttl; use [OAuthTTL] or [PasskeyTTL]), seals it and returns it
// with the Set-Cookie to send. f.Provider and f.Purpose are required. The
// error is [ErrFlowTooLarge] when the cookie would exceed [MaxCookieBytes].
func (s *FlowStore) Begin(f Flow, ttl time.Duration) (Flow, *http.Cookie, error) {
	if f.Provider == "" || f.Purpose == "" {
		return Flow{}, nil, errors.New("providersession: begin flow: provider and purpose are required")
	}
	if ttl < time.Second {
		return Flow{}, nil, fmt.Errorf("providersession: begin flow: ttl %v is too short", ttl)
	}
	f.ID = randomString(16)
	f.State = randomString(32)
	f.CodeVerifier = oauth2.GenerateVerifier()
	f.Nonce = randomString(32)
	f.Started = s.now().UTC().Truncate(time.Microsecond) // what the wire form keeps
	f.Expires = f.Started.Add(ttl)

	w := wireFlow{
		ID: f.ID, Provider: f.Provider, Purpose: f.Purpose, State: f.State,
		CodeVerifier: f.CodeVerifier, Nonce: f.Nonce, RedirectTo: f.RedirectTo,
		UserID: f.UserID, SessionID: f.SessionID, Data: f.Data,
		Started: f.Started.UnixMicro(), Expires: f.Expires.UnixMicro(),
	}
	// SessionData is JSON already; embedding it as is rather than as base64
	// keeps a passkey cookie about a quarter smaller.
	if json.Valid(f.WebAuthn) {
		w.WebAuthn = f.WebAuthn
	} else {
		w.WebAuthnRaw = f.WebAuthn
	}
	plain, err := json.Marshal(w)
	if err != nil {
		return Flow{}, nil, fmt.Errorf("providersession: begin flow: %w", err)
	}
	name := s.cookieName(f.State)
	c := s.cookie(name, s.keys.SealString(string(plain), name), int((ttl+time.Second-1)/time.Second))
	if n := len(c.String()); n > MaxCookieBytes {
		return Flow{}, nil, fmt.Errorf("%w (%s %s flow: cookie of %d bytes)", ErrFlowTooLarge, f.Provider, f.Purpose, n)
	}
	return f, c, nil
}

// Take finishes a flow. It finds the flow cookie for state in r, opens it,
// and checks that it was started for provider and (unless purpose is "")
// for purpose, that it has not expired and that state equals the flow's
// state (in constant time). An empty state never matches: there is no way
// to skip the check. It then records the flow's ID as consumed, so the same
// cookie cannot finish a second flow, and returns the flow with a cookie
// that deletes the flow cookie.
//
// A refused flow returns an error that wraps [auth.ErrInvalidRequest] and
// one of the ErrFlow* reasons; if a flow cookie was found, the returned
// cookie deletes it and should be sent. When recording the flow fails for
// any other reason than [storage.ErrConsumed], that error is returned as is
// (a 503, not the user's fault) with no cookie, so the user may retry.
func (s *FlowStore) Take(ctx context.Context, r *http.Request, provider, purpose, state string) (Flow, *http.Cookie, error) {
	if state == "" {
		return Flow{}, nil, refuse(ErrFlowState, "no state given")
	}
	name := s.cookieName(state)
	c, err := r.Cookie(name)
	if err != nil {
		// Other flow cookies but none for this state: the state was
		// changed, or belongs to a flow started in another browser.
		if n := s.countFlowCookies(r); n > 0 {
			return Flow{}, nil, refuse(ErrFlowState, fmt.Sprintf("state matches none of %d flow cookies", n))
		}
		return Flow{}, nil, refuse(ErrFlowMissing, "no cookie "+name)
	}
	del := s.cookie(name, "", -1)

	plain, err := s.keys.OpenString(c.Value, name)
	if err != nil {
		return Flow{}, del, refuse(ErrFlowTampered, "")
	}
	var w wireFlow
	if err := json.Unmarshal([]byte(plain), &w); err != nil {
		// Sealed by us, so this is a format change between versions.
		return Flow{}, del, refuse(ErrFlowTampered, "decode: "+err.Error())
	}
	f := Flow{
		ID: w.ID, Provider: w.Provider, Purpose: w.Purpose, State: w.State,
		CodeVerifier: w.CodeVerifier, Nonce: w.Nonce, RedirectTo: w.RedirectTo,
		UserID: w.UserID, SessionID: w.SessionID, WebAuthn: w.WebAuthnRaw, Data: w.Data,
		Started: time.UnixMicro(w.Started).UTC(), Expires: time.UnixMicro(w.Expires).UTC(),
	}
	if len(w.WebAuthn) > 0 {
		f.WebAuthn = []byte(w.WebAuthn)
	}
	if f.Provider != provider {
		return Flow{}, del, refuse(ErrFlowProvider, fmt.Sprintf("started for %q, finished at %q", f.Provider, provider))
	}
	if purpose != "" && f.Purpose != purpose {
		return Flow{}, del, refuse(ErrFlowPurpose, fmt.Sprintf("started for %q, finished for %q", f.Purpose, purpose))
	}
	if !s.now().Before(f.Expires) {
		return Flow{}, del, refuse(ErrFlowExpired, "expired at "+f.Expires.Format(time.RFC3339))
	}
	// The cookie name is derived from state and authenticated as additional
	// data, so a mismatch here means a forged name; compare anyway, and
	// never let an empty stored state pass.
	if f.State == "" || subtle.ConstantTimeCompare([]byte(f.State), []byte(state)) != 1 {
		return Flow{}, del, refuse(ErrFlowState, "")
	}
	if f.ID == "" {
		return Flow{}, del, refuse(ErrFlowTampered, "no flow id")
	}
	// Keep the record a little past the flow's own expiry, so that a replica
	// whose clock lags the sweeper's still finds it.
	if err := s.consumed.ConsumeFlowState(ctx, f.ID, f.Expires.Add(consumeMargin)); err != nil {
		if errors.Is(err, storage.ErrConsumed) {
			return Flow{}, del, refuse(ErrFlowUsed, "")
		}
		return Flow{}, nil, fmt.Errorf("providersession: take flow: record consumed: %w", err)
	}
	return f, del, nil
}

// countFlowCookies counts the request's cookies that are named like flow
// cookies of this store.
func (s *FlowStore) countFlowCookies(r *http.Request) int {
	n := 0
	for _, c := range r.Cookies() {
		if strings.HasPrefix(c.Name, s.prefix) {
			n++
		}
	}
	return n
}

// consumeMargin is how long a consumed-flow record outlives the flow.
const consumeMargin = time.Minute

// cookie returns a flow cookie; maxAge < 0 deletes it.
func (s *FlowStore) cookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     s.path,
		MaxAge:   maxAge,
		Secure:   s.secure,
		HttpOnly: true,
		// Lax, not Strict: the callback is a top-level cross-site GET
		// redirect from the provider, which Strict would send cookieless.
		SameSite: http.SameSiteLaxMode,
	}
}

// refuse returns a Take failure: reason and auth.ErrInvalidRequest, both
// reachable with errors.Is, and detail for the log.
func refuse(reason error, detail string) error {
	if detail != "" {
		return fmt.Errorf("%w (%s): %w", reason, detail, auth.ErrInvalidRequest)
	}
	return fmt.Errorf("%w: %w", reason, auth.ErrInvalidRequest)
}

// randomString returns n random bytes in unpadded base64url.
func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}
