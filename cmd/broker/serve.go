package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/brokerauth/broker/internal/coarsedeadline"
	"github.com/brokerauth/broker/internal/config"
	"github.com/brokerauth/broker/internal/fastlane"
	"github.com/brokerauth/broker/internal/gcfloor"
	"github.com/brokerauth/broker/internal/server"
)

// deadlineResolution is how late a connection deadline may fire (see
// coarsedeadline): the server's timeouts are seconds long.
const deadlineResolution = 250 * time.Millisecond

// gcHeapFloor is the heap size below which the collector does not run
// (see gcfloor), unless GOGC is set in the environment.
const gcHeapFloor = 64 << 20

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
			defer c.tuneGC()()
			return c.serve(cmd.Context(), cfg, nil)
		},
	}
}

// tuneGC starts the collector's heap floor (see gcfloor) unless the
// operator set GOGC, and returns what stops it.
func (c *cli) tuneGC() (stop func()) {
	if c.getenv("GOGC") != "" {
		return func() {}
	}
	return gcfloor.Start(gcHeapFloor).Stop
}

// listen wraps a listener the broker serves HTTP on: connection deadlines
// are coarse (see coarsedeadline).
func listen(ln net.Listener) net.Listener {
	return coarsedeadline.Wrap(ln, deadlineResolution)
}

func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler: h,
		// The whole request, body included, within the header timeout:
		// net/http then sets one read deadline per request, not two.
		// Bodies are small (server.max_body_bytes).
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// httpServer is what serve runs: an *http.Server, or the fast lane in
// front of one.
type httpServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// newFastLane puts the fast lane (see fastlane) in front of hs: it answers
// keep-alive GET /auth itself, with hs's handler and timeouts, and hands
// every connection that asks for anything else to hs.
func newFastLane(hs *http.Server, log *slog.Logger) *fastlane.Server {
	return &fastlane.Server{
		Handler:           hs.Handler,
		Match:             server.IsForwardAuth,
		Fallback:          hs,
		IdleTimeout:       hs.IdleTimeout,
		ReadHeaderTimeout: hs.ReadHeaderTimeout,
		WriteTimeout:      hs.WriteTimeout,
		Log:               log,
	}
}

// registerLaneMetrics exports the lane's counts: how many requests it
// answered, and how many connections it handed to net/http (a proxy that
// does not keep its connections to the broker alive, or sends other
// requests on them, shows up there).
func registerLaneMetrics(reg prometheus.Registerer, lane *fastlane.Server) error {
	for _, c := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "broker_fastlane_requests_total",
			Help: "GET /auth requests answered on the fast lane (server.fast_auth).",
		}, func() float64 { return float64(lane.Stats().Answered) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "broker_fastlane_handoffs_total",
			Help: "Connections the fast lane handed to net/http: they asked for something other than a keep-alive GET /auth.",
		}, func() float64 { return float64(lane.Stats().HandedOff) }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// serve runs the broker until ctx ends, then drains in-flight requests for
// up to server.shutdown_grace. ready, when not nil, receives the bound
// address once the listener is up (tests use it).
func (c *cli) serve(ctx context.Context, cfg *config.Config, ready chan<- string) error {
	log := c.logger(cfg)
	if cfg.Dev {
		log.Warn("development mode: no configuration file; SQLite database and generated secrets are in the working directory. Do not use this in production.")
	}
	ap, err := buildApp(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer ap.store.Close()
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return err
	}
	log.Info("broker listening: open "+cfg.Server.PublicURL+"/login to sign in", "addr", ln.Addr().String(),
		"providers", cfg.ProvidersEnabled(), "passwords", cfg.PasswordEnabled(), "email_links", cfg.EmailEnabled(), "passkeys", cfg.WebAuthnEnabled())

	mainHTTP := newHTTPServer(ap.server.Handler(), log)
	var main httpServer = mainHTTP
	if cfg.Server.FastAuth {
		lane := newFastLane(mainHTTP, log)
		if err := registerLaneMetrics(ap.metrics.Registry, lane); err != nil {
			ln.Close()
			return err
		}
		main = lane
	}
	servers := []httpServer{main}
	listeners := []net.Listener{listen(ln)}
	if cfg.Server.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.Server.MetricsListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("server.metrics_listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", ap.metrics.Handler())
		servers = append(servers, newHTTPServer(mux, log))
		listeners = append(listeners, listen(mln))
		log.Info("metrics listening", "addr", mln.Addr().String())
	}
	sweepCtx, stopSweep := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSweep()
	go server.Sweep(sweepCtx, ap.store, log, server.SweepOptions{AuditRetention: cfg.Audit.Retention})

	if ready != nil {
		ready <- ln.Addr().String()
	}
	errc := make(chan error, len(servers))
	for i, hs := range servers {
		go func() { errc <- hs.Serve(listeners[i]) }()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", cfg.Server.ShutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownGrace)
	defer cancel()
	var errs []error
	for _, hs := range servers {
		if err := hs.Shutdown(sctx); err != nil {
			errs = append(errs, fmt.Errorf("shutdown: %w", err))
		}
	}
	for range servers {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	// Mail accepted before the shutdown (sign-in links, resets) is still
	// sent, within the same grace period.
	if err := ap.server.FlushEmail(sctx); err != nil {
		errs = append(errs, fmt.Errorf("flush email: %w", err))
	}
	return errors.Join(errs...)
}
