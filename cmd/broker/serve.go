package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/config"
	"github.com/brokerauth/broker/internal/server"
	"github.com/brokerauth/broker/storage"
)

func (c *cli) serveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the broker",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.loadConfig()
			if err != nil {
				return err
			}
			return c.serve(cmd.Context(), cfg, nil)
		},
	}
}

// newAuth builds the core from the configuration.
func newAuth(cfg *config.Config, st storage.Store) (*auth.Auth, error) {
	pub, err := url.Parse(cfg.Server.PublicURL)
	if err != nil {
		return nil, fmt.Errorf("server.public_url: %w", err)
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
		AllowedOrigins: cfg.Redirect.AllowedOrigins,
	})
}

// serve runs the broker until ctx ends, then drains in-flight requests for
// up to server.shutdown_grace. ready, when not nil, receives the bound
// address once the listener is up (tests use it).
func (c *cli) serve(ctx context.Context, cfg *config.Config, ready chan<- string) error {
	log := c.logger(cfg)
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	if cfg.Database.AutoMigrate {
		if err := st.Migrate(ctx); err != nil {
			return err
		}
	}
	a, err := newAuth(cfg, st)
	if err != nil {
		return err
	}
	srv, err := server.New(server.Options{
		Auth:            a,
		Store:           st,
		Log:             log,
		PublicURL:       cfg.Server.PublicURL,
		RedirectDefault: cfg.Redirect.Default,
		MaxBodyBytes:    cfg.Server.MaxBodyBytes,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if cfg.Dev {
		log.Warn("development mode: no configuration file, SQLite database and generated secrets in the working directory; do not use in production")
	}
	log.Info("broker listening", "addr", ln.Addr().String(), "login", cfg.Server.PublicURL+"/login", "providers", cfg.ProvidersEnabled(),
		"passwords", cfg.PasswordEnabled(), "email_links", cfg.EmailEnabled(), "passkeys", cfg.WebAuthnEnabled())
	if ready != nil {
		ready <- ln.Addr().String()
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", cfg.Server.ShutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownGrace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
