package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/config"
	"github.com/brokerauth/broker/internal/rules"
	"github.com/brokerauth/broker/internal/seal"
	"github.com/brokerauth/broker/internal/server"
	"github.com/brokerauth/broker/providersession"
	"github.com/brokerauth/broker/storage"
	"github.com/brokerauth/broker/storage/sqlstore"
)

// app is a wired broker: everything `serve` runs.
type app struct {
	cfg     *config.Config
	log     *slog.Logger
	store   *sqlstore.Store
	auth    *auth.Auth
	server  *server.Server
	metrics *server.Metrics
	vault   *providersession.TokenVault
}

// newAuth builds the core from the configuration.
func newAuth(cfg *config.Config, st storage.Store) (*auth.Auth, error) {
	pub, err := url.Parse(cfg.Server.PublicURL)
	if err != nil {
		return nil, fmt.Errorf("server.public_url: %w", err)
	}
	var exact []string
	for _, o := range cfg.Redirect.AllowedOrigins {
		if !strings.Contains(o, "*.") {
			exact = append(exact, o)
		}
	}
	exact = append(exact, cfg.WebAuthn.Origins...)
	var inv auth.Invalidations
	if n, ok := st.(notifier); ok {
		inv = storeInvalidations{n}
	}
	return auth.New(st, auth.Options{
		ActivePeriod: cfg.Session.ActivePeriod,
		IdlePeriod:   cfg.Session.IdlePeriod,
		Cookie: auth.CookieOptions{
			Name:   cfg.Session.CookieName,
			Domain: cfg.Session.CookieDomain,
			Secure: pub.Scheme == "https",
		},
		Origin:         pub.Scheme + "://" + pub.Host,
		AllowedOrigins: exact,
		OriginPatterns: wildcardOrigins(cfg.Redirect.AllowedOrigins),
		CacheSize:      cfg.Session.CacheSize,
		CacheTTL:       cfg.Session.CacheTTL,
		Invalidations:  inv,
	})
}

// notifier and subscriber are the optional abilities of a store to tell
// the other processes on the database about invalidations (sqlstore:
// PostgreSQL NOTIFY/LISTEN; on SQLite, Notify does nothing and Subscribe
// returns sqlstore.ErrNotifyUnsupported).
type notifier interface {
	Notify(ctx context.Context, payload string) error
}

type subscriber interface {
	Subscribe(ctx context.Context, h sqlstore.FeedHandlers) error
}

// storeInvalidations publishes the core's cache invalidations through the
// store.
type storeInvalidations struct{ n notifier }

func (s storeInvalidations) Publish(ctx context.Context, ev auth.Invalidation) error {
	return s.n.Notify(ctx, ev.String())
}

// subscribeInvalidations applies the invalidations other processes publish
// to a's session cache. Until the subscription is listening, and whenever
// it is not, the cache is empty and unused: validations read the database.
func subscribeInvalidations(ctx context.Context, a *auth.Auth, st storage.Store, log *slog.Logger) error {
	sub, ok := st.(subscriber)
	if !ok {
		return nil
	}
	a.SetInvalidationFeed(false)
	err := sub.Subscribe(ctx, sqlstore.FeedHandlers{
		Message: func(payload string) {
			if ev, ok := auth.ParseInvalidation(payload); ok {
				a.ApplyInvalidation(ev)
			} else {
				log.Warn("session cache: unreadable invalidation", "payload", payload)
			}
		},
		Up: func() {
			a.SetInvalidationFeed(true)
			log.Info("session cache on: listening for invalidations")
		},
		Down: func(err error) {
			a.SetInvalidationFeed(false)
			if ctx.Err() == nil {
				log.Warn("session cache off until the invalidation feed is back", "err", err)
			}
		},
	})
	if errors.Is(err, sqlstore.ErrNotifyUnsupported) {
		// One process owns an SQLite database: its own invalidations are
		// all there are (the admin CLI's are seen after the cache TTL).
		a.SetInvalidationFeed(true)
		return nil
	}
	return err
}

func wildcardOrigins(origins []string) []string {
	var out []string
	for _, o := range origins {
		if strings.Contains(o, "*.") {
			out = append(out, o)
		}
	}
	return out
}

// buildApp opens the store (migrating when configured) and wires the core,
// providers and HTTP server.
func buildApp(ctx context.Context, cfg *config.Config, log *slog.Logger) (*app, error) {
	st, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			st.Close()
		}
	}()
	if cfg.Database.AutoMigrate {
		if err := st.Migrate(ctx); err != nil {
			return nil, err
		}
	}
	a, err := newAuth(cfg, st)
	if err != nil {
		return nil, err
	}
	if err := subscribeInvalidations(ctx, a, st, log); err != nil {
		return nil, err
	}
	if len(cfg.CookieKeys) == 0 || len(cfg.TokenKeys) == 0 {
		return nil, errors.New("secrets: cookie and token keys are required")
	}
	cookieRing, err := seal.NewKeyring(cfg.CookieKeys...)
	if err != nil {
		return nil, fmt.Errorf("secrets.cookie_keys: %w", err)
	}
	tokenRing, err := seal.NewKeyring(cfg.TokenKeys...)
	if err != nil {
		return nil, fmt.Errorf("secrets.token_keys: %w", err)
	}
	pub, _ := url.Parse(cfg.Server.PublicURL)
	flows := providersession.NewFlowStore(providersession.FlowOptions{
		Keyring: cookieRing, Consumed: st, Secure: pub.Scheme == "https",
	})
	vault := providersession.NewTokenVault(tokenRing, st, nil)
	client := &http.Client{Timeout: cfg.Server.ProviderTimeout + 5*time.Second}
	provs, err := openProviders(ctx, cfg, client, log)
	if err != nil {
		return nil, err
	}
	claims, err := rules.CompileClaims(cfg.Claims)
	if err != nil {
		return nil, err
	}
	rs := make([]rules.Rule, len(cfg.Access))
	for i, r := range cfg.Access {
		rs[i] = rules.Rule{Host: r.Host, PathPrefix: r.PathPrefix, Allow: r.Allow}
	}
	access, err := rules.CompileAccess(rs)
	if err != nil {
		return nil, err
	}
	metrics := server.NewMetrics()
	metrics.WatchDB(st.DB().DB)
	// Keys cost a database read, once per cached session snapshot (a key
	// change invalidates it): load them only for the expressions that may
	// use them. The server reads them for the access rules.
	claimsNeedKeys, accessNeedKeys := exprsMention(cfg, "keys")
	claimKeys := func(ctx context.Context, userID string) []auth.Key {
		if !claimsNeedKeys {
			return nil
		}
		ks, err := a.GetAllUserKeys(ctx, userID)
		if err != nil {
			log.Warn("keys for claims", "err", err)
			// Claims computed without the keys answer this request only.
			server.ClaimsTransient(ctx)
		}
		return ks
	}
	opts := server.Options{
		Auth:            a,
		Store:           st,
		Log:             log,
		PublicURL:       strings.TrimRight(cfg.Server.PublicURL, "/"),
		RedirectDefault: cfg.Redirect.Default,
		MaxBodyBytes:    cfg.Server.MaxBodyBytes,
		MaxSignups:      cfg.Limits.Signups.Max,
		SignupWindow:    cfg.Limits.Signups.Window,
		OriginAllowed:   cfg.Redirect.AllowsOrigin,
		TrustedProxies:  cfg.Server.TrustedProxyPrefixes(),
		Providers:       provs,
		Flows:           flows,
		Vault:           vault,
		ProviderTimeout: cfg.Server.ProviderTimeout,
		Metrics:         metrics,
		// /metrics is on the main listener, for loopback peers, only when
		// no metrics listener of its own is configured.
		MetricsOnMainListener: cfg.Server.MetricsListen == "",
		AccessKeys:            accessNeedKeys,
	}
	if len(cfg.Claims) > 0 {
		opts.Claims = func(ctx context.Context, s *auth.Session) map[string]any {
			// Without the request's cancellation CEL skips the per-call
			// setup of an interruptible evaluation (a tenth of a cached
			// /auth); its cost limit still bounds every expression.
			out, errs := claims.Eval(context.WithoutCancel(ctx), s.User, claimKeys(ctx, s.UserID), s)
			for _, e := range errs {
				log.Warn("claim left out", "user_id", s.UserID, "err", e)
			}
			return out
		}
	}
	if len(cfg.Access) > 0 {
		opts.Access = func(ctx context.Context, req server.AccessRequest) (bool, error) {
			allowed, _, err := access.Decide(ctx, rules.AccessInput{
				User: req.Session.User, Keys: req.Keys, Session: req.Session,
				Claims: req.Claims, Host: req.Host, Path: req.Path, Method: req.Method,
			})
			return allowed, err
		}
	}
	deps := featureDeps{cfg: cfg, log: log, auth: a, store: st, flows: flows, metrics: metrics}
	if opts.WebAuthn, err = webauthnOptions(deps); err != nil {
		return nil, err
	}
	if opts.Passwords, err = passwordOptions(deps); err != nil {
		return nil, err
	}
	if opts.Email, err = emailOptions(deps); err != nil {
		return nil, err
	}
	srv, err := server.New(opts)
	if err != nil {
		return nil, err
	}
	ok = true
	return &app{cfg: cfg, log: log, store: st, auth: a, server: srv, metrics: metrics, vault: vault}, nil
}

// featureDeps are what the optional features (passkeys, passwords, email
// links) are wired from.
type featureDeps struct {
	cfg     *config.Config
	log     *slog.Logger
	auth    *auth.Auth
	store   *sqlstore.Store
	flows   *providersession.FlowStore
	metrics *server.Metrics
}

// exprsMention reports whether any claim expression, and whether any
// access expression, uses name.
func exprsMention(cfg *config.Config, name string) (claims, access bool) {
	for _, e := range cfg.Claims {
		claims = claims || strings.Contains(e, name)
	}
	for _, r := range cfg.Access {
		access = access || strings.Contains(r.Allow, name)
	}
	return claims, access
}
