package providertest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// OIDCUser is the account the OIDC fake signs in. Its claims appear in the
// id token and at userinfo.
type OIDCUser struct {
	// Subject is the sub claim. Default "oidc-user-1".
	Subject       string
	Email         string
	EmailVerified bool
	Name          string
	Picture       string
	// PreferredUsername is the preferred_username claim.
	PreferredUsername string
	// Claims are added after the standard ones and may override them:
	// custom claims such as "groups" or Google's "hd", or odd encodings
	// such as "email_verified": "true".
	Claims map[string]any
}

// OIDCOptions configure [NewOIDC]. The zero value is a well-behaved RS256
// issuer with a default user.
type OIDCOptions struct {
	// ClientID and ClientSecret are the credentials the fake accepts.
	// Defaults "oidc-client-id" and a 40-character secret.
	ClientID     string
	ClientSecret string
	// User is the account signed in. When entirely zero: subject
	// oidc-user-1, jane@example.com (verified), Jane Doe, a picture and
	// preferred_username jane.
	User OIDCUser
	// Alg signs id tokens: "RS256" (default) or "ES256". The key set always
	// holds both keys.
	Alg string
	// IssParam adds iss to authorization responses and advertises
	// authorization_response_iss_parameter_supported (RFC 9207).
	IssParam bool
	// AuthMethods is token_endpoint_auth_methods_supported. Default
	// client_secret_basic and client_secret_post (both are accepted
	// whatever this says).
	AuthMethods []string
	// TokenTTL is the lifetime of access and id tokens. Default 1h.
	TokenTTL time.Duration
	// Now is the clock for iat and exp. Default time.Now.
	Now func() time.Time
	// Keys are the signing keys; nil generates fresh ones (an RSA 2048
	// key takes a moment under -race: share one [NewKeys] across the
	// fakes of a table test).
	Keys *Keys
}

// Keys are an OIDC fake's signing keys: RS256 (kid [RSAKeyID]) and ES256
// (kid [ECKeyID]).
type Keys struct {
	RSA *rsa.PrivateKey
	EC  *ecdsa.PrivateKey
}

// NewKeys generates a fresh RSA 2048 and P-256 key pair.
func NewKeys(t testing.TB) *Keys {
	t.Helper()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("oidc fake: generate RSA key: %v", err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("oidc fake: generate EC key: %v", err)
	}
	return &Keys{RSA: rsaKey, EC: ecKey}
}

// Misbehavior makes the OIDC fake hostile or broken in one way. It applies
// to tokens minted (code exchange and refresh) and userinfo answers after it
// is set.
type Misbehavior int

// The misbehaviors. Each one must make the provider refuse the login.
const (
	// Behave is the default: everything correct.
	Behave Misbehavior = iota
	// AlgNone sends an unsigned id token (alg "none").
	AlgNone
	// HS256 signs the id token with HMAC-SHA256 keyed with the client
	// secret, as a confused or hostile issuer might.
	HS256
	// BadSignature signs with a key that is not in the key set (same kid).
	BadSignature
	// WrongIssuer sets iss to another issuer.
	WrongIssuer
	// WrongAudience sets aud to another client.
	WrongAudience
	// WrongAZP adds another client to aud and names it in azp.
	WrongAZP
	// Expired sets exp (and iat) in the past.
	Expired
	// MissingIat leaves out iat.
	MissingIat
	// FutureIat sets iat an hour ahead.
	FutureIat
	// MissingSub leaves out sub.
	MissingSub
	// WrongNonce sets a nonce other than the one given at authorization.
	WrongNonce
	// MissingNonce leaves out nonce.
	MissingNonce
	// BadAtHash sets an at_hash that does not match the access token.
	BadAtHash
	// NoIDToken leaves id_token out of the token response.
	NoIDToken
	// UserinfoSubMismatch answers userinfo with another sub.
	UserinfoSubMismatch
)

// The key ids of the fake's signing keys.
const (
	RSAKeyID = "rsa-1"
	ECKeyID  = "ec-1"
)

// OIDC is a fake OpenID Provider. Its issuer is URL. Its methods are safe
// for concurrent use.
type OIDC struct {
	// URL is the issuer identifier and base URL (http://127.0.0.1:port).
	URL string
	// ClientID and ClientSecret are the credentials the fake accepts.
	ClientID     string
	ClientSecret string

	t      testing.TB
	srv    *httptest.Server
	closed chan struct{}
	opts   OIDCOptions
	rsaKey *rsa.PrivateKey
	ecKey  *ecdsa.PrivateKey

	mu           sync.Mutex
	user         OIDCUser
	alg          string
	misbehavior  Misbehavior
	faults       map[Endpoint]Fault
	deny         string
	rotate       bool
	refreshCalls int
	otherRSA     *rsa.PrivateKey
	otherEC      *ecdsa.PrivateKey
	codes        map[string]*oidcGrant
	access       map[string]*oidcGrant
	refresh      map[string]*oidcGrant
	requests     []Request
}

type oidcGrant struct {
	clientID, redirectURI, challenge, nonce, scope string
	user                                           OIDCUser
	used                                           bool
	accessTokens                                   []string
}

// NewOIDC starts a fake OpenID Provider and closes it when the test ends.
func NewOIDC(t testing.TB, opts OIDCOptions) *OIDC {
	t.Helper()
	if opts.ClientID == "" {
		opts.ClientID = "oidc-client-id"
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = "oidc-client-secret-0123456789abcdefghijkl"
	}
	if opts.Alg == "" {
		opts.Alg = "RS256"
	}
	if opts.AuthMethods == nil {
		opts.AuthMethods = []string{"client_secret_basic", "client_secret_post"}
	}
	if opts.TokenTTL == 0 {
		opts.TokenTTL = time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Keys == nil {
		opts.Keys = NewKeys(t)
	}
	o := &OIDC{
		ClientID:     opts.ClientID,
		ClientSecret: opts.ClientSecret,
		t:            t,
		closed:       make(chan struct{}),
		opts:         opts,
		rsaKey:       opts.Keys.RSA,
		ecKey:        opts.Keys.EC,
		user:         defaultOIDCUser(opts.User),
		alg:          opts.Alg,
		faults:       map[Endpoint]Fault{},
		codes:        map[string]*oidcGrant{},
		access:       map[string]*oidcGrant{},
		refresh:      map[string]*oidcGrant{},
	}
	o.srv = httptest.NewServer(http.HandlerFunc(o.serve))
	o.URL = o.srv.URL
	t.Cleanup(func() {
		close(o.closed)
		o.srv.Close()
	})
	return o
}

func defaultOIDCUser(u OIDCUser) OIDCUser {
	if u.Subject == "" && u.Email == "" && u.Name == "" && u.Picture == "" &&
		u.PreferredUsername == "" && !u.EmailVerified && u.Claims == nil {
		return OIDCUser{
			Subject:           "oidc-user-1",
			Email:             "jane@example.com",
			EmailVerified:     true,
			Name:              "Jane Doe",
			Picture:           "https://example.com/jane.png",
			PreferredUsername: "jane",
		}
	}
	if u.Subject == "" {
		u.Subject = "oidc-user-1"
	}
	return u
}

// Client returns an HTTP client for the fake (loopback, no proxy).
func (o *OIDC) Client() *http.Client { return o.srv.Client() }

// Issuer returns the issuer identifier (URL).
func (o *OIDC) Issuer() string { return o.URL }

// SetUser changes the account signed in by later authorizations.
func (o *OIDC) SetUser(u OIDCUser) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.user = defaultOIDCUser(u)
}

// SetAlg switches id-token signing between "RS256" and "ES256".
func (o *OIDC) SetAlg(alg string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.alg = alg
}

// SetMisbehavior makes later answers hostile in way m; Behave restores.
func (o *OIDC) SetMisbehavior(m Misbehavior) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.misbehavior = m
}

// SetFault makes endpoint e (Discovery, JWKS, Token or Userinfo) fail; the
// zero Fault restores it.
func (o *OIDC) SetFault(e Endpoint, f Fault) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.faults[e] = f
}

// SetDiscoveryDown makes discovery answer 503 (down) or work (up).
func (o *OIDC) SetDiscoveryDown(down bool) {
	f := Fault{}
	if down {
		f.Status = http.StatusServiceUnavailable
	}
	o.SetFault(Discovery, f)
}

// Deny makes the authorization endpoint redirect back with error=code
// (e.g. "access_denied"); "" approves again.
func (o *OIDC) Deny(code string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.deny = code
}

// RotateRefreshTokens makes each refresh return a new refresh token and
// retire the one used, which is then refused with invalid_grant (OAuth 2.1
// rotation). Off by default: a refresh token stays valid.
func (o *OIDC) RotateRefreshTokens(on bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.rotate = on
}

// RefreshCalls counts grant_type=refresh_token requests, refused ones
// included.
func (o *OIDC) RefreshCalls() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.refreshCalls
}

// Requests returns every request received so far.
func (o *OIDC) Requests() []Request {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.requests)
}

// SignIDToken signs claims as the fake's current key would (RS256 or
// ES256), for tests that craft their own tokens.
func (o *OIDC) SignIDToken(claims map[string]any) string {
	o.mu.Lock()
	alg := o.alg
	o.mu.Unlock()
	payload, err := json.Marshal(claims)
	if err != nil {
		o.t.Fatalf("oidc fake: marshal claims: %v", err)
	}
	s, err := o.sign(alg, Behave, payload)
	if err != nil {
		o.t.Fatalf("oidc fake: sign: %v", err)
	}
	return s
}

func (o *OIDC) serve(w http.ResponseWriter, r *http.Request) {
	req := record(r)
	o.mu.Lock()
	o.requests = append(o.requests, req)
	o.mu.Unlock()

	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		if !o.fault(w, r, Discovery) {
			o.discovery(w)
		}
	case "/keys":
		if !o.fault(w, r, JWKS) {
			o.keys(w)
		}
	case "/authorize":
		o.authorize(w, r)
	case "/token":
		if !o.fault(w, r, Token) {
			o.token(w, r)
		}
	case "/userinfo":
		if !o.fault(w, r, Userinfo) {
			o.userinfo(w, r)
		}
	default:
		http.NotFound(w, r)
	}
}

func (o *OIDC) fault(w http.ResponseWriter, r *http.Request, e Endpoint) bool {
	o.mu.Lock()
	f := o.faults[e]
	o.mu.Unlock()
	switch {
	case f.Hang:
		hang(r, o.closed)
		return true
	case f.RateLimit > 0:
		w.Header().Set("Retry-After", retryAfterSeconds(f.RateLimit))
		status := f.Status
		if status == 0 {
			status = http.StatusTooManyRequests
		}
		oauthError(w, status, "rate_limited", "slow down")
		return true
	case f.Status != 0:
		oauthError(w, f.Status, "server_error", http.StatusText(f.Status))
		return true
	}
	return false
}

func (o *OIDC) discovery(w http.ResponseWriter) {
	o.mu.Lock()
	m := o.misbehavior
	o.mu.Unlock()
	algs := []string{"RS256", "ES256"}
	if m == HS256 || m == AlgNone {
		// A hostile issuer may well advertise what it sends.
		algs = append(algs, "HS256", "none")
	}
	doc := map[string]any{
		"issuer":                                o.URL,
		"authorization_endpoint":                o.URL + "/authorize",
		"token_endpoint":                        o.URL + "/token",
		"userinfo_endpoint":                     o.URL + "/userinfo",
		"jwks_uri":                              o.URL + "/keys",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": algs,
		"scopes_supported":                      []string{"openid", "email", "profile", "offline_access"},
		"token_endpoint_auth_methods_supported": o.opts.AuthMethods,
		"code_challenge_methods_supported":      []string{"S256"},
		"grant_types_supported":                 []string{"authorization_code", "refresh_token"},
		"claims_supported":                      []string{"sub", "iss", "aud", "exp", "iat", "nonce", "email", "email_verified", "name", "picture", "preferred_username"},
	}
	if o.opts.IssParam {
		doc["authorization_response_iss_parameter_supported"] = true
	}
	writeJSON(w, http.StatusOK, doc)
}

func (o *OIDC) keys(w http.ResponseWriter) {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: o.rsaKey.Public(), KeyID: RSAKeyID, Algorithm: "RS256", Use: "sig"},
		{Key: o.ecKey.Public(), KeyID: ECKeyID, Algorithm: "ES256", Use: "sig"},
	}}
	writeJSON(w, http.StatusOK, set)
}

func (o *OIDC) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != o.ClientID {
		// RFC 6749 §4.1.2.1: never redirect for an unknown client.
		http.Error(w, "unknown client_id", http.StatusBadRequest)
		return
	}
	redirectURI := q.Get("redirect_uri")
	if u, err := url.Parse(redirectURI); redirectURI == "" || err != nil || !u.IsAbs() {
		o.t.Errorf("oidc fake: authorize with redirect_uri %q", redirectURI)
		http.Error(w, "redirect_uri required", http.StatusBadRequest)
		return
	}
	back := url.Values{}
	if s := q.Get("state"); s != "" {
		back.Set("state", s)
	}
	if o.opts.IssParam {
		back.Set("iss", o.URL)
	}
	o.mu.Lock()
	deny, user := o.deny, o.user
	o.mu.Unlock()
	fail := func(code, desc string) {
		back.Set("error", code)
		back.Set("error_description", desc)
		redirectBack(w, r, redirectURI, back)
	}
	switch {
	case deny != "":
		fail(deny, "the user or the server refused")
		return
	case q.Get("response_type") != "code":
		fail("unsupported_response_type", "only code is supported")
		return
	case !slices.Contains(strings.Fields(q.Get("scope")), "openid"):
		fail("invalid_scope", "openid is required")
		return
	case q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256":
		o.t.Errorf("oidc fake: authorize without PKCE S256 (code_challenge=%q, method=%q)",
			q.Get("code_challenge"), q.Get("code_challenge_method"))
		fail("invalid_request", "PKCE S256 is required")
		return
	case q.Get("nonce") == "":
		o.t.Errorf("oidc fake: authorize without nonce")
		fail("invalid_request", "nonce is required")
		return
	}
	code := randomToken("code_")
	o.mu.Lock()
	o.codes[code] = &oidcGrant{
		clientID:    o.ClientID,
		redirectURI: redirectURI,
		challenge:   q.Get("code_challenge"),
		nonce:       q.Get("nonce"),
		scope:       q.Get("scope"),
		user:        user,
	}
	o.mu.Unlock()
	back.Set("code", code)
	redirectBack(w, r, redirectURI, back)
}

func (o *OIDC) token(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "bad form")
		return
	}
	id, secret, method := clientCredentials(r)
	switch {
	case method == "":
		o.t.Errorf("oidc fake: token request without client credentials")
		oauthError(w, http.StatusUnauthorized, "invalid_client", "client authentication required")
		return
	case method == "both":
		oauthError(w, http.StatusBadRequest, "invalid_request", "more than one client authentication method")
		return
	case !equal(id, o.ClientID) || !equal(secret, o.ClientSecret):
		oauthError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		o.codeGrant(w, r)
	case "refresh_token":
		o.refreshGrant(w, r)
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
	}
}

func (o *OIDC) codeGrant(w http.ResponseWriter, r *http.Request) {
	verifier := r.PostForm.Get("code_verifier")
	if verifier == "" {
		o.t.Errorf("oidc fake: code exchange without code_verifier (PKCE)")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	gr := o.codes[r.PostForm.Get("code")]
	switch {
	case gr == nil:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "unknown code")
		return
	case gr.used:
		for _, at := range gr.accessTokens {
			delete(o.access, at)
		}
		oauthError(w, http.StatusBadRequest, "invalid_grant", "code already used")
		return
	}
	gr.used = true
	switch {
	case gr.clientID != o.ClientID:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "code issued to another client")
	case r.PostForm.Get("redirect_uri") != gr.redirectURI:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri does not match")
	case verifier == "" || !equal(s256(verifier), gr.challenge):
		oauthError(w, http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
	default:
		o.issue(w, gr, true)
	}
}

func (o *OIDC) refreshGrant(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.refreshCalls++
	rt := r.PostForm.Get("refresh_token")
	gr := o.refresh[rt]
	if gr == nil {
		oauthError(w, http.StatusBadRequest, "invalid_grant", "refresh token unknown, revoked or already used")
		return
	}
	if o.rotate {
		delete(o.refresh, rt)
		rt = ""
	}
	o.issueWith(w, gr, false, rt)
}

// issue answers a token response for gr. o.mu is held.
func (o *OIDC) issue(w http.ResponseWriter, gr *oidcGrant, withNonce bool) {
	o.issueWith(w, gr, withNonce, "")
}

// issueWith answers a token response; keepRefresh, when set, is returned
// as the refresh token instead of a new one. o.mu is held.
func (o *OIDC) issueWith(w http.ResponseWriter, gr *oidcGrant, withNonce bool, keepRefresh string) {
	at := randomToken("at_")
	gr.accessTokens = append(gr.accessTokens, at)
	o.access[at] = gr
	rt := keepRefresh
	if rt == "" {
		rt = randomToken("rt_")
		o.refresh[rt] = gr
	}
	resp := map[string]any{
		"access_token":  at,
		"token_type":    "Bearer",
		"expires_in":    int(o.opts.TokenTTL.Seconds()),
		"refresh_token": rt,
		"scope":         gr.scope,
	}
	if o.misbehavior != NoIDToken {
		claims := o.idClaims(gr, at, withNonce)
		payload, err := json.Marshal(claims)
		if err != nil {
			oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
			return
		}
		idt, err := o.sign(o.alg, o.misbehavior, payload)
		if err != nil {
			o.t.Errorf("oidc fake: sign id token: %v", err)
			oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
			return
		}
		resp["id_token"] = idt
	}
	writeJSON(w, http.StatusOK, resp)
}

// userClaims are the user's claims as id token and userinfo carry them.
func userClaims(u OIDCUser) map[string]any {
	c := map[string]any{"sub": u.Subject}
	if u.Email != "" {
		c["email"] = u.Email
		c["email_verified"] = u.EmailVerified
	}
	for k, v := range map[string]string{"name": u.Name, "picture": u.Picture, "preferred_username": u.PreferredUsername} {
		if v != "" {
			c[k] = v
		}
	}
	maps.Copy(c, u.Claims)
	return c
}

// idClaims builds the id token's claims for gr, misbehaving as set. o.mu is
// held.
func (o *OIDC) idClaims(gr *oidcGrant, accessToken string, withNonce bool) map[string]any {
	now := o.opts.Now()
	c := userClaims(gr.user)
	c["iss"] = o.URL
	c["aud"] = o.ClientID
	c["iat"] = now.Unix()
	c["exp"] = now.Add(o.opts.TokenTTL).Unix()
	c["auth_time"] = now.Unix()
	if withNonce {
		c["nonce"] = gr.nonce
	}
	c["at_hash"] = atHash(accessToken)
	switch o.misbehavior {
	case WrongIssuer:
		c["iss"] = "https://evil.example"
	case WrongAudience:
		c["aud"] = "someone-else"
	case WrongAZP:
		c["aud"] = []string{o.ClientID, "someone-else"}
		c["azp"] = "someone-else"
	case Expired:
		c["iat"] = now.Add(-2 * time.Hour).Unix()
		c["exp"] = now.Add(-time.Hour).Unix()
	case MissingIat:
		delete(c, "iat")
	case FutureIat:
		c["iat"] = now.Add(time.Hour).Unix()
		c["exp"] = now.Add(2 * time.Hour).Unix()
	case MissingSub:
		delete(c, "sub")
	case WrongNonce:
		c["nonce"] = "not-the-nonce"
	case MissingNonce:
		delete(c, "nonce")
	case BadAtHash:
		c["at_hash"] = atHash("another access token")
	}
	return c
}

// atHash is the at_hash of an access token for RS256 and ES256 (OpenID
// Connect Core §3.1.3.6): the left half of its SHA-256, base64url.
func atHash(accessToken string) string {
	sum := sha256.Sum256([]byte(accessToken))
	return base64.RawURLEncoding.EncodeToString(sum[:len(sum)/2])
}

// sign serializes payload as a JWS, misbehaving as asked.
func (o *OIDC) sign(alg string, m Misbehavior, payload []byte) (string, error) {
	switch m {
	case AlgNone:
		enc := base64.RawURLEncoding
		return enc.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc.EncodeToString(payload) + ".", nil
	case HS256:
		return signJWS(jose.HS256, []byte(o.ClientSecret), "", payload)
	}
	var key crypto.Signer
	kid := RSAKeyID
	switch alg {
	case "RS256":
		key = o.rsaKey
		if m == BadSignature {
			if o.otherRSA == nil {
				k, err := rsa.GenerateKey(rand.Reader, 2048)
				if err != nil {
					return "", err
				}
				o.otherRSA = k
			}
			key = o.otherRSA
		}
	case "ES256":
		key, kid = o.ecKey, ECKeyID
		if m == BadSignature {
			if o.otherEC == nil {
				k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				if err != nil {
					return "", err
				}
				o.otherEC = k
			}
			key = o.otherEC
		}
	default:
		return "", fmt.Errorf("unsupported alg %q", alg)
	}
	return signJWS(jose.SignatureAlgorithm(alg), key, kid, payload)
}

func signJWS(alg jose.SignatureAlgorithm, key any, kid string, payload []byte) (string, error) {
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), kid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

func (o *OIDC) userinfo(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	gr := o.access[bearer(r)]
	m := o.misbehavior
	o.mu.Unlock()
	if gr == nil {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
		return
	}
	c := userClaims(gr.user)
	if m == UserinfoSubMismatch {
		c["sub"] = "someone-else"
	}
	writeJSON(w, http.StatusOK, c)
}
