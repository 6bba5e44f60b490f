package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/brokerauth/broker/providersession"
	"github.com/brokerauth/broker/storage"
)

// The audit log (storage.Audit): the handlers record sign-ins and their
// failures, logouts, revoked sessions, passkey and password changes as they
// happen, each with the time, the user (when known), the client's address
// and user agent.
//
// Recording never fails a request: a write that fails is logged as a
// warning (and counted) and the request goes on. It is synchronous (one
// INSERT on the sign-in and account paths, none on /auth and /session),
// bounded by auditTimeout and detached from the client's cancellation, so
// that a client hanging up does not lose the row.
//
// Nothing secret is recorded: never a token, password or hash. A failed
// password sign-in names the user when the address belongs to one, and
// otherwise keeps only a short SHA-256 prefix of the key id
// ("email:<address>") as data "key": enough to see repeated attempts on one
// name, without storing what was typed into the address field (sometimes a
// password).

// auditTimeout bounds one audit write.
const auditTimeout = 5 * time.Second

// maxAuditUserAgent is how much of a user agent the log keeps, in bytes.
const maxAuditUserAgent = 256

// auditMetrics are the audit log's Prometheus counters.
type auditMetrics struct {
	events   *prometheus.CounterVec // broker_audit_events_total{event}
	failures prometheus.Counter     // broker_audit_write_failures_total
}

// newAuditMetrics registers the audit counters in m's registry (or finds
// them there, when another Server registered them first); nil without
// metrics.
func newAuditMetrics(m *Metrics) *auditMetrics {
	if m == nil || m.Registry == nil {
		return nil
	}
	a := &auditMetrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "broker_audit_events_total", Help: "Audit events recorded, by event (counted whether or not the database write succeeded).",
		}, []string{"event"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "broker_audit_write_failures_total", Help: "Audit events that could not be written to the database.",
		}),
	}
	if err := m.Registry.Register(a.events); err != nil {
		are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err)
		if !ok {
			return nil
		}
		a.events = are.ExistingCollector.(*prometheus.CounterVec)
	}
	if err := m.Registry.Register(a.failures); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			a.failures = are.ExistingCollector.(prometheus.Counter)
		}
	}
	return a
}

// audit records event about userID ("" when unknown) for request r:
// provider is the sign-in method or provider, reason why (a failure) or
// how (a success), "" when none.
func (s *Server) audit(r *http.Request, event, userID, provider, reason string) {
	s.auditEvent(r, storage.AuditEvent{Event: event, UserID: userID, Provider: provider, Reason: reason})
}

// auditEvent records e for request r, setting its time, client address and
// user agent. A failure is logged, never returned.
func (s *Server) auditEvent(r *http.Request, e storage.AuditEvent) {
	e.Time = s.now().UTC()
	e.IP = s.clientIP(r)
	e.UserAgent = cleanText(r.UserAgent(), maxAuditUserAgent)
	if m := s.auditMetrics; m != nil {
		m.events.WithLabelValues(e.Event).Inc()
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditTimeout)
	defer cancel()
	if err := s.store.AppendAudit(ctx, e); err != nil {
		if m := s.auditMetrics; m != nil {
			m.failures.Inc()
		}
		s.log.Warn("audit event not recorded", "event", e.Event, "user_id", e.UserID,
			"request_id", requestID(r.Context()), "err", err)
	}
}

// cleanText makes client-supplied text fit for the log: at most n bytes,
// cut on a character boundary, valid UTF-8 and without control characters.
func cleanText(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 {
		r, size := utf8.DecodeLastRuneInString(s)
		if r != utf8.RuneError || size > 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s
}

// auditKeyHash is what the log keeps of a key id a failed sign-in named:
// the first 16 hex digits of its SHA-256.
func auditKeyHash(keyID string) string {
	sum := sha256.Sum256([]byte(keyID))
	return hex.EncodeToString(sum[:8])
}

// auditPasswordFailure records a failed password check of the key
// email:<email> (userID: its owner, "" when unknown) with its outcome
// (loginOutcome). data, when not nil, adds details.
func (s *Server) auditPasswordFailure(r *http.Request, email, userID, outcome string, data map[string]any) {
	reason := outcome
	switch outcome {
	case "invalid":
		reason = "invalid_password"
	case "outdated":
		reason = "outdated_password"
	}
	if data == nil {
		data = map[string]any{}
	}
	data["key"] = auditKeyHash("email:" + email)
	s.auditEvent(r, storage.AuditEvent{Event: storage.AuditLoginFailure, UserID: userID, Provider: "password", Reason: reason, Data: data})
}

// callbackSucceeded reports whether outcome is one of a provider callback's
// successes: finishLogin's (the providersession outcomes), finishLink's
// ("linked") or finishReauth's ("reauthenticated"). Those audit themselves.
func callbackSucceeded(outcome string) bool {
	switch providersession.Outcome(outcome) {
	case providersession.OutcomeExisting, providersession.OutcomeLinked, providersession.OutcomeCreated, "reauthenticated":
		return true
	}
	return false
}

// auditCallback records a failed provider callback: login.failure with the
// outcome as reason, the flow's user (link and re-authentication flows
// have one) and, for those, its purpose.
func (s *Server) auditCallback(r *http.Request, provider string, f providersession.Flow, outcome string) {
	if callbackSucceeded(outcome) {
		return
	}
	e := storage.AuditEvent{Event: storage.AuditLoginFailure, UserID: f.UserID, Provider: provider, Reason: outcome}
	if f.Purpose == purposeLink || f.Purpose == purposeReauth {
		e.Data = map[string]any{"purpose": f.Purpose}
	}
	s.auditEvent(r, e)
}
