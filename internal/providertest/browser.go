package providertest

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"testing"

	"github.com/brokerauth/broker/providers"
	"golang.org/x/oauth2"
)

// NewAttempt returns a fresh Attempt (random state, PKCE verifier and nonce)
// for the callback redirectURL, as providersession would mint it.
func NewAttempt(redirectURL string) providers.Attempt {
	return providers.Attempt{
		State:        random(),
		CodeVerifier: oauth2.GenerateVerifier(),
		Nonce:        random(),
		RedirectURL:  redirectURL,
	}
}

func random() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Authorize plays the browser at the provider: it GETs authCodeURL with
// client (which must reach the fake) and returns the URL the provider
// redirected back to, without following it. The caller reads code, state,
// error and iss from its query. It fails the test when the answer is not a
// redirect.
func Authorize(t testing.TB, client *http.Client, authCodeURL string) *url.URL {
	t.Helper()
	c := *client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Get(authCodeURL)
	if err != nil {
		t.Fatalf("authorize: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: got status %d; want 302", resp.StatusCode)
	}
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("authorize: %v", errors.Join(errors.New("no Location"), err))
	}
	return loc
}
