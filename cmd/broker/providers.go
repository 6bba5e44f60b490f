package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sort"

	"github.com/brokerauth/broker/internal/config"
	"github.com/brokerauth/broker/internal/rules"
	"github.com/brokerauth/broker/internal/server"
	"github.com/brokerauth/broker/providers"
	"github.com/brokerauth/broker/providers/github"
	"github.com/brokerauth/broker/providers/google"
	"github.com/brokerauth/broker/providers/oidc"
)

// providerSpec is one enabled provider: its plugin configuration and the
// broker-side rules around it.
type providerSpec struct {
	id, name          string
	cfg               providers.Config
	allow             string
	attributes        map[string]string
	linkVerifiedEmail bool
}

// providerSpecs maps the configuration onto provider plugins: the
// explicit registry of provider types (no init() registration).
func providerSpecs(cfg *config.Config) []providerSpec {
	var out []providerSpec
	if g := cfg.Providers.GitHub; g.ClientID != "" {
		out = append(out, providerSpec{id: "github", name: "GitHub",
			cfg: github.Config{ClientID: g.ClientID, ClientSecret: g.ClientSecret, Scopes: g.Scopes,
				AuthURL: g.AuthURL, TokenURL: g.TokenURL, APIURL: g.APIURL},
			allow: g.Allow, attributes: g.Attributes, linkVerifiedEmail: g.LinkVerifiedEmail})
	}
	if g := cfg.Providers.Google; g.ClientID != "" {
		out = append(out, providerSpec{id: "google", name: "Google",
			cfg: google.Config{ClientID: g.ClientID, ClientSecret: g.ClientSecret, Issuer: g.Issuer, Scopes: g.Scopes,
				HostedDomain: g.HostedDomain},
			allow: g.Allow, attributes: g.Attributes, linkVerifiedEmail: g.LinkVerifiedEmail})
	}
	names := make([]string, 0, len(cfg.Providers.OIDC))
	for n := range cfg.Providers.OIDC {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		o := cfg.Providers.OIDC[n]
		display := o.DisplayName
		if display == "" {
			display = n
		}
		out = append(out, providerSpec{id: n, name: display,
			cfg: oidc.Config{Issuer: o.Issuer, ClientID: o.ClientID, ClientSecret: o.ClientSecret, Scopes: o.Scopes,
				ClaimMapping: oidc.ClaimMapping{UserID: o.ClaimMapping.UserID, Email: o.ClaimMapping.Email,
					Name: o.ClaimMapping.Name, Picture: o.ClaimMapping.Picture},
				Userinfo: o.UserInfo, DisplayName: display},
			allow: o.Allow, attributes: o.Attributes, linkVerifiedEmail: o.LinkVerifiedEmail})
	}
	return out
}

// openProviders opens every enabled provider. OpenID Connect discovery is
// lazy, so an issuer that is down does not stop the start.
func openProviders(ctx context.Context, cfg *config.Config, client *http.Client, log *slog.Logger) ([]server.Provider, error) {
	var out []server.Provider
	for _, sp := range providerSpecs(cfg) {
		p, err := sp.cfg.Open(ctx, sp.id, providers.Deps{HTTPClient: client, Logger: log.With("provider", sp.id)})
		if err != nil {
			return nil, fmt.Errorf("providers.%s: %w", sp.id, err)
		}
		path := "providers." + sp.id
		if _, ok := cfg.Providers.OIDC[sp.id]; ok {
			path = "providers.oidc." + sp.id
		}
		ir, err := rules.CompileIdentity(sp.allow, sp.attributes, path)
		if err != nil {
			return nil, err
		}
		plog := log.With("provider", sp.id)
		out = append(out, server.Provider{
			ID: sp.id, DisplayName: sp.name, Provider: p, LinkVerifiedEmail: sp.linkVerifiedEmail,
			Allow: ir.Allow,
			Attributes: func(ctx context.Context, id providers.Identity) map[string]any {
				attrs, errs := ir.Attributes(ctx, id)
				for _, e := range errs {
					plog.Warn("provider attribute left out", "err", e)
				}
				return attrs
			},
		})
	}
	return out, nil
}
