package providertest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/brokerauth/broker/internal/providertest"
	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// recordingTB captures Errorf so that tests can check the fakes complain
// about broken clients.
type recordingTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recordingTB) errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errs...)
}

const redirect = "http://app.test/cb?keep=1"

func githubAuthorize(t *testing.T, g *providertest.GitHub, verifier string, extra url.Values) *url.URL {
	t.Helper()
	q := url.Values{
		"client_id":    {g.ClientID},
		"redirect_uri": {redirect},
		"scope":        {"read:user user:email"},
		"state":        {"st"},
	}
	if verifier != "" {
		q.Set("code_challenge", oauth2.S256ChallengeFromVerifier(verifier))
		q.Set("code_challenge_method", "S256")
	}
	for k, v := range extra {
		q[k] = v
	}
	return providertest.Authorize(t, g.Client(), g.AuthURL()+"?"+q.Encode())
}

func post(t *testing.T, c *http.Client, u string, form url.Values, header http.Header) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, body
}

func get(t *testing.T, c *http.Client, u, token string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func TestGitHubAuthorizeRedirectsBack(t *testing.T) {
	g := providertest.NewGitHub(t, providertest.GitHubUser{})
	back := githubAuthorize(t, g, oauth2.GenerateVerifier(), nil)
	q := back.Query()
	if back.Host != "app.test" || back.Path != "/cb" || q.Get("keep") != "1" || q.Get("state") != "st" || q.Get("code") == "" {
		t.Errorf("redirect = %s; want the redirect_uri with its query, state and code", back)
	}

	g.Deny("access_denied")
	back = githubAuthorize(t, g, oauth2.GenerateVerifier(), nil)
	if q := back.Query(); q.Get("error") != "access_denied" || q.Get("state") != "st" || q.Get("code") != "" {
		t.Errorf("denied redirect = %s; want error=access_denied with state and no code", back)
	}
}

func TestGitHubTokenEndpoint(t *testing.T) {
	g := providertest.NewGitHub(t, providertest.GitHubUser{ID: 5})
	verifier := oauth2.GenerateVerifier()
	code := githubAuthorize(t, g, verifier, nil).Query().Get("code")
	form := url.Values{
		"client_id": {g.ClientID}, "client_secret": {g.ClientSecret}, "code": {code},
		"redirect_uri": {redirect}, "code_verifier": {verifier},
	}
	// Without Accept: application/json GitHub answers form-encoded.
	status, h, body := post(t, g.Client(), g.TokenURL(), form, nil)
	if status != 200 || !strings.HasPrefix(h.Get("Content-Type"), "application/x-www-form-urlencoded") {
		t.Fatalf("token: %d %s %s", status, h.Get("Content-Type"), body)
	}
	vals, _ := url.ParseQuery(string(body))
	at := vals.Get("access_token")
	if at == "" || vals.Get("scope") != "read:user,user:email" {
		t.Fatalf("token answer = %s", body)
	}
	if status, body := get(t, g.Client(), g.APIURL()+"/user", at); status != 200 || !strings.Contains(string(body), `"id":5`) {
		t.Errorf("GET /user = %d %s", status, body)
	}

	// A replayed code: 200 with error=bad_verification_code, and the
	// access token it issued is revoked.
	acceptJSON := http.Header{"Accept": {"application/json"}}
	status, _, body = post(t, g.Client(), g.TokenURL(), form, acceptJSON)
	if status != 200 || !strings.Contains(string(body), `"error":"bad_verification_code"`) {
		t.Errorf("replayed code: %d %s", status, body)
	}
	if status, _ := get(t, g.Client(), g.APIURL()+"/user", at); status != http.StatusUnauthorized {
		t.Errorf("GET /user with a revoked token = %d; want 401", status)
	}

	// A wrong verifier.
	code = githubAuthorize(t, g, verifier, nil).Query().Get("code")
	form.Set("code", code)
	form.Set("code_verifier", oauth2.GenerateVerifier())
	if _, _, body := post(t, g.Client(), g.TokenURL(), form, acceptJSON); !strings.Contains(string(body), "bad_verification_code") {
		t.Errorf("wrong verifier: %s", body)
	}
}

func TestGitHubComplainsAboutMissingPKCE(t *testing.T) {
	rec := &recordingTB{TB: t}
	g := providertest.NewGitHub(rec, providertest.GitHubUser{})
	back := githubAuthorize(t, g, "", nil)
	if back.Query().Get("error") != "invalid_request" {
		t.Errorf("authorize without PKCE: %s", back)
	}
	if _, _, body := post(t, g.Client(), g.TokenURL(), url.Values{"code": {"x"}}, nil); !strings.Contains(string(body), "incorrect_client_credentials") {
		t.Errorf("token without credentials: %s", body)
	}
	errs := rec.errors()
	if len(errs) != 2 || !strings.Contains(errs[0], "PKCE") || !strings.Contains(errs[1], "client credentials") {
		t.Errorf("t.Errorf calls = %q; want PKCE and client credentials complaints", errs)
	}
}

func oidcAuthorize(t *testing.T, o *providertest.OIDC, verifier, nonce string) *url.URL {
	t.Helper()
	q := url.Values{
		"client_id": {o.ClientID}, "redirect_uri": {redirect}, "response_type": {"code"},
		"scope": {"openid email"}, "state": {"st"}, "nonce": {nonce},
		"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"},
	}
	return providertest.Authorize(t, o.Client(), o.URL+"/authorize?"+q.Encode())
}

func TestOIDCDiscoveryAndKeys(t *testing.T) {
	o := providertest.NewOIDC(t, providertest.OIDCOptions{IssParam: true})
	ctx := gooidc.ClientContext(t.Context(), o.Client())
	p, err := gooidc.NewProvider(ctx, o.Issuer())
	if err != nil {
		t.Fatalf("go-oidc discovery: %v", err)
	}
	var meta struct {
		Userinfo string `json:"userinfo_endpoint"`
		IssParam bool   `json:"authorization_response_iss_parameter_supported"`
	}
	if err := p.Claims(&meta); err != nil || meta.Userinfo != o.URL+"/userinfo" || !meta.IssParam {
		t.Errorf("discovery = %+v, %v", meta, err)
	}
	for _, alg := range []string{"RS256", "ES256"} {
		o.SetAlg(alg)
		raw := o.SignIDToken(map[string]any{"iss": o.Issuer(), "aud": o.ClientID, "sub": "x", "exp": 4102444800, "iat": 1})
		v := p.VerifierContext(ctx, &gooidc.Config{ClientID: o.ClientID, SupportedSigningAlgs: []string{alg}})
		if _, err := v.Verify(ctx, raw); err != nil {
			t.Errorf("%s token does not verify against the JWKS: %v", alg, err)
		}
	}

	o.SetDiscoveryDown(true)
	if status, _ := get(t, o.Client(), o.URL+"/.well-known/openid-configuration", ""); status != http.StatusServiceUnavailable {
		t.Errorf("discovery while down = %d; want 503", status)
	}
}

func TestOIDCFlow(t *testing.T) {
	o := providertest.NewOIDC(t, providertest.OIDCOptions{IssParam: true, Keys: providertest.NewKeys(t)})
	verifier := oauth2.GenerateVerifier()
	back := oidcAuthorize(t, o, verifier, "n-1")
	if q := back.Query(); q.Get("iss") != o.Issuer() || q.Get("state") != "st" || q.Get("code") == "" || q.Get("keep") != "1" {
		t.Fatalf("redirect = %s; want code, state, iss and the redirect_uri's query", back)
	}
	form := url.Values{
		"grant_type": {"authorization_code"}, "code": {back.Query().Get("code")},
		"redirect_uri": {redirect}, "code_verifier": {verifier},
	}
	basic := http.Header{"Authorization": {"Basic " + basicAuth(o.ClientID, o.ClientSecret)}}
	status, h, body := post(t, o.Client(), o.URL+"/token", form, basic)
	if status != 200 || h.Get("Cache-Control") != "no-store" {
		t.Fatalf("token: %d %s", status, body)
	}
	var tok struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
		IDToken      string `json:"id_token"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.IDToken == "" {
		t.Fatalf("token answer %s: %v", body, err)
	}
	ctx := gooidc.ClientContext(context.Background(), o.Client())
	p, err := gooidc.NewProvider(ctx, o.Issuer())
	if err != nil {
		t.Fatal(err)
	}
	idt, err := p.VerifierContext(ctx, &gooidc.Config{ClientID: o.ClientID}).Verify(ctx, tok.IDToken)
	if err != nil {
		t.Fatalf("id token: %v", err)
	}
	if idt.Nonce != "n-1" || idt.Subject != "oidc-user-1" || idt.IssuedAt.IsZero() || idt.VerifyAccessToken(tok.AccessToken) != nil {
		t.Errorf("id token = %+v; want nonce n-1, sub, iat and a matching at_hash", idt)
	}
	if status, body := get(t, o.Client(), o.URL+"/userinfo", tok.AccessToken); status != 200 || !strings.Contains(string(body), `"sub":"oidc-user-1"`) {
		t.Errorf("userinfo = %d %s", status, body)
	}

	// Replay: invalid_grant, and the access token is revoked.
	if status, _, body := post(t, o.Client(), o.URL+"/token", form, basic); status != 400 || !strings.Contains(string(body), "invalid_grant") {
		t.Errorf("replayed code = %d %s", status, body)
	}
	if status, _ := get(t, o.Client(), o.URL+"/userinfo", tok.AccessToken); status != http.StatusUnauthorized {
		t.Errorf("userinfo with a revoked token = %d; want 401", status)
	}

	// Refresh with rotation: the old refresh token is refused.
	o.RotateRefreshTokens(true)
	refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}}
	if status, _, body := post(t, o.Client(), o.URL+"/token", refresh, basic); status != 200 || strings.Contains(string(body), tok.RefreshToken) {
		t.Errorf("refresh = %d %s; want a new refresh token", status, body)
	}
	if status, _, body := post(t, o.Client(), o.URL+"/token", refresh, basic); status != 400 || !strings.Contains(string(body), "invalid_grant") {
		t.Errorf("reused refresh token = %d %s; want invalid_grant", status, body)
	}
	if got := o.RefreshCalls(); got != 2 {
		t.Errorf("RefreshCalls = %d; want 2", got)
	}

	// Deny: error with state and iss, no code.
	o.Deny("access_denied")
	back = oidcAuthorize(t, o, verifier, "n-2")
	if q := back.Query(); q.Get("error") != "access_denied" || q.Get("iss") != o.Issuer() || q.Get("code") != "" {
		t.Errorf("denied redirect = %s", back)
	}
}

func TestOIDCRefusesWrongPKCEAndClient(t *testing.T) {
	rec := &recordingTB{TB: t}
	o := providertest.NewOIDC(rec, providertest.OIDCOptions{})
	verifier := oauth2.GenerateVerifier()
	basic := http.Header{"Authorization": {"Basic " + basicAuth(o.ClientID, o.ClientSecret)}}

	code := oidcAuthorize(t, o, verifier, "n").Query().Get("code")
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "code_verifier": {oauth2.GenerateVerifier()}}
	if status, _, body := post(t, o.Client(), o.URL+"/token", form, basic); status != 400 || !strings.Contains(string(body), "PKCE") {
		t.Errorf("wrong verifier = %d %s", status, body)
	}

	code = oidcAuthorize(t, o, verifier, "n").Query().Get("code")
	form.Set("code", code)
	form.Set("code_verifier", verifier)
	wrong := http.Header{"Authorization": {"Basic " + basicAuth(o.ClientID, "nope")}}
	if status, _, body := post(t, o.Client(), o.URL+"/token", form, wrong); status != 401 || !strings.Contains(string(body), "invalid_client") {
		t.Errorf("wrong secret = %d %s", status, body)
	}
	if n := len(rec.errors()); n != 0 {
		t.Errorf("t.Errorf for a wrong (not missing) verifier or secret: %q", rec.errors())
	}
	if status, _, _ := post(t, o.Client(), o.URL+"/token", form, nil); status != 401 {
		t.Errorf("no client credentials = %d; want 401", status)
	}
	if errs := rec.errors(); len(errs) != 1 || !strings.Contains(errs[0], "client credentials") {
		t.Errorf("t.Errorf calls = %q; want one about client credentials", errs)
	}
}

func basicAuth(id, secret string) string {
	r := &http.Request{Header: http.Header{}}
	r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}
