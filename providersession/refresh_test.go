package providersession_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/providertest"
	"github.com/brokerauth/broker/providers"
	"github.com/brokerauth/broker/providers/oidc"
	"github.com/brokerauth/broker/providersession"
	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
)

// loginAt signs the fake's user in through the real provider and returns
// the identity with its tokens.
func loginAt(t *testing.T, fake *providertest.OIDC, p providers.Provider) providers.Identity {
	t.Helper()
	ctx := context.Background()
	att := providertest.NewAttempt("http://127.0.0.1/login/dex/callback")
	u, err := p.AuthCodeURL(ctx, att)
	if err != nil {
		t.Fatal(err)
	}
	back := providertest.Authorize(t, fake.Client(), u)
	id, err := p.Exchange(ctx, att, back.Query().Get("code"))
	if err != nil {
		t.Fatal(err)
	}
	if id.Tokens.RefreshToken == "" {
		t.Fatal("the fake issued no refresh token")
	}
	return id
}

// TestAccessTokenRefreshAcrossReplicas: two replicas (two Auth instances,
// two connection pools) on one PostgreSQL, 25 concurrent callers each, ask
// for the access token of a key whose token has expired. The provider
// rotates refresh tokens and refuses a reused one, so a second refresh would
// fail and log the user out: exactly one refresh must reach it, and every
// caller must get the new token.
func TestAccessTokenRefreshAcrossReplicas(t *testing.T) {
	url, schema := storagetest.PostgresSchema(t)
	ctx := context.Background()
	open := func() *sqlstore.Store {
		st, err := sqlstore.Open(ctx, url, sqlstore.WithSchema(schema), sqlstore.WithMaxOpenConns(8))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		if err := st.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		return st
	}
	stA, stB := open(), open()

	// x/oauth2 turns expires_in into Expiry on the real clock, so the
	// replicas use it too; the stored token is made to have expired.
	fake := providertest.NewOIDC(t, providertest.OIDCOptions{TokenTTL: time.Hour})
	fake.RotateRefreshTokens(true)
	p, err := oidc.Config{Issuer: fake.Issuer(), ClientID: fake.ClientID, ClientSecret: fake.ClientSecret}.
		Open(ctx, "dex", providers.Deps{HTTPClient: fake.Client()})
	if err != nil {
		t.Fatal(err)
	}
	refresher := p.(providers.Refresher)

	fA := newFixture(t, stA)
	id := loginAt(t, fake, p)
	id.Tokens.Expiry = time.Now().Add(-time.Minute)
	ps, err := providersession.New(ctx, fA.a, fA.vault, "dex", id)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := providersession.Resolve(ctx, ps, providersession.ResolvePolicy{}); err != nil {
		t.Fatal(err)
	}

	vaultA := providersession.NewTokenVault(fA.keys, stA, nil)
	vaultB := providersession.NewTokenVault(fA.keys, stB, nil)

	const perReplica = 25
	var wg sync.WaitGroup
	tokens := make([]string, 2*perReplica)
	errs := make([]error, 2*perReplica)
	for i := range 2 * perReplica {
		v := vaultA
		if i%2 == 1 {
			v = vaultB
		}
		wg.Go(func() { tokens[i], errs[i] = v.AccessToken(ctx, "dex:"+id.Subject, refresher) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
		if tokens[i] == id.Tokens.AccessToken || tokens[i] != tokens[0] {
			t.Fatalf("caller %d got %q; want the one refreshed token %q (old %q)", i, tokens[i], tokens[0], id.Tokens.AccessToken)
		}
	}
	if n := fake.RefreshCalls(); n != 1 {
		t.Fatalf("%d refreshes reached the provider; want exactly 1", n)
	}
	// The rotated refresh token was stored: the next expiry refreshes again
	// successfully (the old one would be refused as reused).
	v := providersession.NewTokenVault(fA.keys, stB, func() time.Time { return time.Now().Add(2 * time.Hour) })
	tok, err := v.AccessToken(ctx, "dex:"+id.Subject, refresher)
	if err != nil || tok == tokens[0] {
		t.Fatalf("second refresh = %q, %v; want a new token", tok, err)
	}
	if n := fake.RefreshCalls(); n != 2 {
		t.Fatalf("refresh calls = %d; want 2", n)
	}
}

// TestAccessTokenNoRefreshToken: an expired token without a refresh token
// cannot be renewed: ErrNoToken.
func TestAccessTokenNoRefreshToken(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, storagetest.OpenSQLite(t))
	id := identity("x1", "", false)
	id.Tokens.RefreshToken = ""
	ps, _ := providersession.New(ctx, f.a, f.vault, "dex", id)
	if _, _, err := providersession.Resolve(ctx, ps, providersession.ResolvePolicy{}); err != nil {
		t.Fatal(err)
	}
	// Still valid: returned without a refresher.
	if tok, err := f.vault.AccessToken(ctx, "dex:x1", nil); err != nil || tok != "at-x1" {
		t.Fatalf("valid token = %q, %v", tok, err)
	}
	f.now = f.now.Add(2 * time.Hour)
	if _, err := f.vault.AccessToken(ctx, "dex:x1", nil); !errors.Is(err, providersession.ErrNoToken) {
		t.Fatalf("expired without refresh token: %v; want ErrNoToken", err)
	}
	if _, err := f.vault.AccessToken(ctx, "dex:none", nil); err == nil {
		t.Fatal("unknown key returned a token")
	}
	_ = auth.ErrInvalidKeyID
}
