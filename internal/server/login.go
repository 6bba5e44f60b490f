package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/providers"
	"github.com/brokerauth/broker/providersession"
	"github.com/brokerauth/broker/storage"
)

// Flow purposes.
const (
	purposeLogin  = "login"
	purposeLink   = "link"
	purposeReauth = "reauth"
)

func (s *Server) provider(r *http.Request) (*Provider, error) {
	p, ok := s.provs[r.PathValue("provider")]
	if !ok {
		return nil, newError(http.StatusNotFound, CodeNotFound, "no such provider")
	}
	return p, nil
}

func (s *Server) callbackURL(id string) string {
	return strings.TrimRight(s.opts.PublicURL, "/") + "/login/" + id + "/callback"
}

// beginFlow seals a new flow and returns the provider URL to send the
// browser to.
func (s *Server) beginFlow(w http.ResponseWriter, r *http.Request, p *Provider, f providersession.Flow) (string, error) {
	f.Provider = p.ID
	f, cookie, err := s.opts.Flows.Begin(f, providersession.OAuthTTL)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.ProviderTimeout)
	defer cancel()
	target, err := p.Provider.AuthCodeURL(ctx, providers.Attempt{
		State: f.State, CodeVerifier: f.CodeVerifier, Nonce: f.Nonce, RedirectURL: s.callbackURL(p.ID),
	})
	if err != nil {
		return "", providerFailure(err)
	}
	http.SetCookie(w, cookie)
	return target, nil
}

// handleLoginStart starts a sign-in (or, with ?reauth=1 and a session,
// a re-authentication of that session) at a provider.
func (s *Server) handleLoginStart(w http.ResponseWriter, r *http.Request) {
	p, err := s.provider(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	f := providersession.Flow{Purpose: purposeLogin, RedirectTo: s.safeRedirect(r.URL.Query().Get("redirect_to"))}
	if r.URL.Query().Get("reauth") == "1" {
		if sess, err := s.currentSession(w, r); err == nil {
			f.Purpose, f.UserID, f.SessionID = purposeReauth, sess.UserID, sess.ID
		}
	}
	target, err := s.beginFlow(w, r, p, f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	http.Redirect(w, r, target, http.StatusFound)
}

// handleLinkStart starts adding a provider identity to the signed-in user.
// It needs a recent authentication.
func (s *Server) handleLinkStart(w http.ResponseWriter, r *http.Request) {
	if err := s.auth.CheckCrossOrigin(r); err != nil {
		s.writeError(w, r, newError(http.StatusForbidden, auth.ErrInvalidRequest.Code, "cross-site request refused"))
		return
	}
	p, err := s.provider(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	sess, err := s.currentSession(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.auth.RequireRecentAuth(*sess); err != nil {
		if !wantsJSON(r) && acceptsHTML(r) {
			// Send the user through a login that re-authenticates this session.
			http.Redirect(w, r, "/login?reauth=1&redirect_to=%2Faccount", http.StatusSeeOther)
			return
		}
		s.writeError(w, r, err)
		return
	}
	target, err := s.beginFlow(w, r, p, providersession.Flow{
		Purpose: purposeLink, UserID: sess.UserID, SessionID: sess.ID, RedirectTo: s.safeRedirect(formOrQuery(r, "redirect_to", "/account")),
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if wantsJSON(r) {
		writeJSON(w, http.StatusOK, map[string]string{"redirect": target})
		return
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

func formOrQuery(r *http.Request, name, def string) string {
	if v := r.URL.Query().Get(name); v != "" {
		return v
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		if err := r.ParseForm(); err == nil {
			if v := r.PostForm.Get(name); v != "" {
				return v
			}
		}
	}
	return def
}

// providerFailure classifies an error from a provider call.
func providerFailure(err error) error {
	var pe *providers.PolicyError
	switch {
	case errors.As(err, &pe):
		return &httpError{http.StatusForbidden, CodeForbidden, pe.Error(), err}
	case errors.Is(err, providers.ErrInvalidGrant):
		return &httpError{http.StatusBadRequest, auth.ErrInvalidRequest.Code, "the sign-in could not be completed; please try again", err}
	case errors.Is(err, context.DeadlineExceeded):
		return &httpError{http.StatusBadGateway, CodeProviderError, "the sign-in provider did not answer in time; please try again later", err}
	case errors.Is(err, providers.ErrProvider):
		return &httpError{http.StatusBadGateway, CodeProviderError, "the sign-in provider failed or answered something unexpected; please try again later", err}
	case errors.Is(err, providers.ErrInvalidInput):
		return &httpError{http.StatusBadRequest, auth.ErrInvalidRequest.Code, "invalid sign-in request", err}
	}
	return &httpError{http.StatusBadGateway, CodeProviderError, "the sign-in provider failed; please try again later", err}
}

// handleCallback finishes a flow: checks the flow cookie and state, redeems
// the code, applies the provider's sign-in rule and then logs in, links or
// re-authenticates.
func (s *Server) handleCallback(w http.ResponseWriter, r *http.Request) {
	p, err := s.provider(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	outcome, flow := "error", providersession.Flow{}
	defer func() {
		s.opts.Metrics.login(p.ID, outcome)
		s.auditCallback(r, p.ID, flow, outcome) // failures; successes audit themselves
	}()

	f, clear, err := s.opts.Flows.Take(r.Context(), r, p.ID, "", q.Get("state"))
	flow = f
	if clear != nil {
		http.SetCookie(w, clear)
	}
	if err != nil {
		outcome = "invalid_state"
		if errors.Is(err, auth.ErrInvalidRequest) {
			s.writeError(w, r, &httpError{http.StatusBadRequest, auth.ErrInvalidRequest.Code, "this sign-in link is invalid, expired or was already used; please start again", err})
			return
		}
		s.writeError(w, r, err)
		return
	}
	// RFC 9207: an iss parameter must name this provider's issuer.
	if iss, ok := q["iss"]; ok {
		pi, isIssuer := p.Provider.(providers.Issuer)
		if !isIssuer || len(iss) != 1 || iss[0] != pi.Issuer() {
			outcome = "issuer_mismatch"
			s.writeError(w, r, &httpError{http.StatusBadRequest, auth.ErrInvalidRequest.Code, "the response came from an unexpected issuer", fmt.Errorf("iss %q", iss)})
			return
		}
	}
	if e := q.Get("error"); e != "" {
		outcome = "denied"
		msg := "the sign-in was cancelled or refused at the provider"
		s.writeError(w, r, &httpError{http.StatusForbidden, CodeForbidden, msg, fmt.Errorf("provider error %q", truncate(e, 64))})
		return
	}
	code := q.Get("code")
	if code == "" || len(code) > 2048 {
		outcome = "invalid_request"
		s.writeError(w, r, newError(http.StatusBadRequest, auth.ErrInvalidRequest.Code, "the provider's answer has no code"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.ProviderTimeout)
	id, err := p.Provider.Exchange(ctx, providers.Attempt{
		State: f.State, CodeVerifier: f.CodeVerifier, Nonce: f.Nonce, RedirectURL: s.callbackURL(p.ID),
	}, code)
	cancel()
	if err != nil {
		outcome = "provider_error"
		s.writeError(w, r, providerFailure(err))
		return
	}
	if p.Allow != nil {
		ok, err := p.Allow(r.Context(), id)
		if err != nil {
			s.log.Warn("sign-in rule failed", "provider", p.ID, "err", err)
		}
		if !ok {
			outcome = "forbidden"
			s.writeError(w, r, newError(http.StatusForbidden, CodeForbidden, "this account is not allowed to sign in here"))
			return
		}
	}
	ps, err := providersession.New(r.Context(), s.auth, s.opts.Vault, p.ID, id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var attrs map[string]any
	if p.Attributes != nil {
		attrs = p.Attributes(r.Context(), id)
	}
	switch f.Purpose {
	case purposeLink:
		outcome = s.finishLink(w, r, ps, f, attrs)
	case purposeReauth:
		outcome = s.finishReauth(w, r, ps, f)
	default:
		outcome = s.finishLogin(w, r, p, ps, f, attrs)
	}
}

func (s *Server) finishLogin(w http.ResponseWriter, r *http.Request, p *Provider, ps *providersession.ProviderSession, f providersession.Flow, attrs map[string]any) string {
	policy := providersession.ResolvePolicy{LinkVerifiedEmail: p.LinkVerifiedEmail, Attributes: attrs}
	u, how, err := providersession.Resolve(r.Context(), ps, policy)
	if err != nil {
		if errors.Is(err, providersession.ErrEmailOwned) {
			s.writeError(w, r, &httpError{http.StatusConflict, CodeConflict,
				"An account with this email address already exists. Sign in the way you usually do, then link " + p.DisplayName + " from your account page.", err})
			return "conflict"
		}
		s.writeError(w, r, err)
		return "error"
	}
	sess, err := s.auth.CreateSession(r.Context(), u.ID, auth.SessionOptions{UserAgent: truncate(r.UserAgent(), 256), IP: s.clientIP(r)})
	if err != nil {
		s.writeError(w, r, err)
		return "error"
	}
	s.audit(r, storage.AuditLoginSuccess, u.ID, p.ID, string(how))
	http.SetCookie(w, s.auth.CreateSessionCookie(&sess))
	http.Redirect(w, r, s.safeRedirect(f.RedirectTo), http.StatusFound)
	return string(how)
}

func (s *Server) finishLink(w http.ResponseWriter, r *http.Request, ps *providersession.ProviderSession, f providersession.Flow, attrs map[string]any) string {
	// The session that started the link must still be signed in.
	sess, err := s.currentSession(w, r)
	if err != nil || sess.UserID != f.UserID {
		s.writeError(w, r, newError(http.StatusUnauthorized, auth.ErrInvalidSessionID.Code, "sign in again to link an account"))
		return "invalid_session"
	}
	if ps.ExistingUser != nil {
		if ps.ExistingUser.ID != f.UserID {
			s.writeError(w, r, newError(http.StatusConflict, CodeConflict, "this account is already linked to another user"))
			return "conflict"
		}
		_ = ps.StoreTokens(r.Context())
	} else if _, err := ps.CreatePersistentKey(r.Context(), f.UserID); err != nil {
		if errors.Is(err, auth.ErrDuplicateKeyID) {
			s.writeError(w, r, newError(http.StatusConflict, CodeConflict, "this account is already linked to another user"))
			return "conflict"
		}
		s.writeError(w, r, err)
		return "error"
	}
	if len(attrs) > 0 {
		if _, err := s.auth.UpdateUserAttributes(r.Context(), f.UserID, attrs); err != nil {
			s.log.Warn("provider attributes not stored", "err", err)
		}
	}
	s.audit(r, storage.AuditKeyLinked, f.UserID, f.Provider, "")
	http.Redirect(w, r, s.safeRedirect(f.RedirectTo), http.StatusFound)
	return "linked"
}

func (s *Server) finishReauth(w http.ResponseWriter, r *http.Request, ps *providersession.ProviderSession, f providersession.Flow) string {
	if ps.ExistingUser == nil || ps.ExistingUser.ID != f.UserID {
		s.writeError(w, r, newError(http.StatusForbidden, CodeForbidden, "sign in with an account that belongs to you to confirm it is you"))
		return "forbidden"
	}
	if err := s.auth.Reauthenticate(r.Context(), f.SessionID); err != nil {
		s.writeError(w, r, err)
		return "error"
	}
	_ = ps.StoreTokens(r.Context())
	s.audit(r, storage.AuditLoginSuccess, f.UserID, f.Provider, "reauthenticated")
	http.Redirect(w, r, s.safeRedirect(f.RedirectTo), http.StatusFound)
	return "reauthenticated"
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
