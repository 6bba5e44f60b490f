package server

import (
	"database/sql"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the broker's Prometheus metrics, on a registry of their own
// (no global state). All methods are safe on a nil *Metrics.
type Metrics struct {
	Registry    *prometheus.Registry
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	logins      *prometheus.CounterVec
	validations *prometheus.CounterVec
	// The series of a valid forward-auth answer, resolved once.
	authOK       prometheus.Counter
	authDuration prometheus.Observer
	authValid    prometheus.Counter
}

// forwardAuthRoute is the route label of /auth.
const forwardAuthRoute = "GET /auth"

// NewMetrics returns the broker's metrics, with Go runtime and process
// collectors.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "broker_http_requests_total", Help: "HTTP requests by route pattern and status.",
		}, []string{"route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "broker_http_request_duration_seconds", Help: "HTTP request latency by route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "broker_logins_total", Help: "Provider logins by provider and outcome.",
		}, []string{"provider", "outcome"}),
		validations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "broker_session_validations_total", Help: "Forward-auth session validations by result.",
		}, []string{"result"}),
	}
	m.authOK = m.requests.WithLabelValues(forwardAuthRoute, "200")
	m.authDuration = m.duration.WithLabelValues(forwardAuthRoute)
	m.authValid = m.validations.WithLabelValues("valid")
	m.Registry.MustRegister(m.requests, m.duration, m.logins, m.validations,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// WatchDB exports the statistics of db's connection pool:
// go_sql_open_connections, go_sql_in_use_connections,
// go_sql_idle_connections, waits and closes, with db_name="broker". Call it
// once.
func (m *Metrics) WatchDB(db *sql.DB) {
	if m != nil && db != nil {
		m.Registry.MustRegister(collectors.NewDBStatsCollector(db, "broker"))
	}
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

func (m *Metrics) request(route string, status int, d time.Duration) {
	if m == nil {
		return
	}
	if route == "" {
		route = "unmatched"
	}
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}

// forwardAuth records a /auth answered by Server.serveForwardAuth as the
// middleware would record a request.
func (m *Metrics) forwardAuth(status int, d time.Duration) {
	if m == nil {
		return
	}
	if status != http.StatusOK {
		m.request(forwardAuthRoute, status, d)
		return
	}
	m.authOK.Inc()
	m.authDuration.Observe(d.Seconds())
}

func (m *Metrics) login(provider, outcome string) {
	if m != nil {
		m.logins.WithLabelValues(provider, outcome).Inc()
	}
}

// Login counts a login by provider ("password", "email", "webauthn", an
// OAuth provider id) and outcome.
func (m *Metrics) Login(provider, outcome string) { m.login(provider, outcome) }

func (m *Metrics) validation(result string) {
	switch {
	case m == nil:
	case result == "valid":
		m.authValid.Inc()
	default:
		m.validations.WithLabelValues(result).Inc()
	}
}

// handleMetrics serves /metrics on the main listener to loopback peers only.
func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	if !fromLoopback(r) {
		s.writeError(w, r, newError(http.StatusNotFound, CodeNotFound, "no such page"))
		return
	}
	s.opts.Metrics.Handler().ServeHTTP(w, r)
}
