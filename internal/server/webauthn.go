package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"html/template"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/providersession"
	"github.com/brokerauth/broker/storage"
	"github.com/brokerauth/broker/webauthn"
)

// WebAuthnOptions configure passkeys (SPEC §5).
type WebAuthnOptions struct {
	// RelyingParty runs the ceremonies and keeps the user's passkeys.
	RelyingParty *webauthn.RelyingParty
}

// webauthnRoutes registers the passkey routes and page parts.
//
// The JSON API (all answers JSON, every POST/PATCH/DELETE origin-checked):
//
//	POST   /webauthn/register/options  {"name", "email"?, "redirect_to"?} new account, or {} to add a
//	                                   passkey to the signed-in user (recent authentication)
//	                                   → 200 {"publicKey": …, "state"} + flow cookie
//	POST   /webauthn/register/verify   PublicKeyCredential.toJSON() plus "state" (and "name" for the
//	                                   passkey's label, "bearer"), or {"state", "credential": toJSON(), …}
//	                                   → 201 {user, session, claims, redirect_to, credential[, token]} (sign-up)
//	                                   → 201 {user, credential} (added)
//	POST   /webauthn/login/options     {} usernameless, {"name"} by username; "mediation": "conditional"
//	                                   for autofill, "reauth": true to re-authenticate the session
//	                                   → 200 {"publicKey": …, "state", "mediation"?} + flow cookie
//	POST   /webauthn/login/verify      toJSON() plus "state" (or the envelope), "bearer"?
//	                                   → 200 {user, session, claims, redirect_to[, token]}
//	GET    /webauthn/credentials       → {"credentials": [{id, name, created_at, last_used_at, backed_up, transports}]}
//	GET    /webauthn/credentials/{id}  → 200 the credential (404 when not the user's)
//	PATCH  /webauthn/credentials/{id}  {"name"} → 200 the credential
//	DELETE /webauthn/credentials/{id}  → 204 (recent authentication)
func (s *Server) webauthnRoutes() {
	s.mux.HandleFunc("POST /webauthn/register/options", s.handlePasskeyRegisterOptions)
	s.mux.HandleFunc("POST /webauthn/register/verify", s.handlePasskeyRegisterVerify)
	s.mux.HandleFunc("POST /webauthn/login/options", s.handlePasskeyLoginOptions)
	s.mux.HandleFunc("POST /webauthn/login/verify", s.handlePasskeyLoginVerify)
	s.mux.HandleFunc("GET /webauthn/credentials", s.handlePasskeyList)
	s.mux.HandleFunc("GET /webauthn/credentials/{id}", s.handlePasskeyGet)
	s.mux.HandleFunc("PATCH /webauthn/credentials/{id}", s.handlePasskeyRename)
	s.mux.HandleFunc("DELETE /webauthn/credentials/{id}", s.handlePasskeyDelete)
	s.loginParts = append(s.loginParts, s.passkeyLoginPart)
	s.accountParts = append(s.accountParts, s.passkeyAccountPart)
}

func (s *Server) passkeys() *webauthn.RelyingParty { return s.opts.WebAuthn.RelyingParty }

// passkeyError maps a passkey failure to what the client sees. It comes
// before classify because passkeys speak of keys, not passwords.
func passkeyError(err error) error {
	var he *httpError
	var ie *webauthn.InputError
	switch {
	case errors.As(err, &he):
		return he
	case errors.As(err, &ie):
		return &httpError{http.StatusBadRequest, auth.ErrInvalidRequest.Code, ie.Message, err}
	case errors.Is(err, webauthn.ErrNotFound):
		return &httpError{http.StatusNotFound, CodeNotFound, "no such passkey", err}
	case errors.Is(err, webauthn.ErrLastSignInMethod):
		return &httpError{http.StatusConflict, CodeConflict, "this passkey is your only way to sign in; add another way first", err}
	case errors.Is(err, webauthn.ErrWrongUser):
		return &httpError{http.StatusForbidden, CodeForbidden, "this passkey or request belongs to another account", err}
	case errors.Is(err, webauthn.ErrCloned):
		return &httpError{http.StatusBadRequest, auth.ErrInvalidRequest.Code,
			"this passkey's signature counter went backwards, so it may have been copied; sign in another way", err}
	case errors.Is(err, webauthn.ErrVerification):
		return &httpError{http.StatusBadRequest, auth.ErrInvalidRequest.Code, "the passkey's answer could not be verified", err}
	case errors.Is(err, auth.ErrInvalidRequest) && isPasskeyFlowError(err):
		return &httpError{http.StatusBadRequest, auth.ErrInvalidRequest.Code,
			"this passkey request is invalid, expired or was already used; please try again", err}
	case errors.Is(err, auth.ErrInvalidKeyID):
		return &httpError{http.StatusBadRequest, auth.ErrInvalidKeyID.Code, "no such passkey is registered here", err}
	case errors.Is(err, auth.ErrConflict):
		return &httpError{http.StatusConflict, CodeConflict, "that username is taken", err}
	case errors.Is(err, auth.ErrDuplicateKeyID):
		return &httpError{http.StatusConflict, auth.ErrDuplicateKeyID.Code, "this passkey is already registered", err}
	}
	return err
}

func isPasskeyFlowError(err error) bool {
	for _, e := range []error{providersession.ErrFlowMissing, providersession.ErrFlowTampered, providersession.ErrFlowProvider,
		providersession.ErrFlowPurpose, providersession.ErrFlowExpired, providersession.ErrFlowState, providersession.ErrFlowUsed} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (s *Server) passkeyFail(w http.ResponseWriter, r *http.Request, err error) {
	s.writeJSONError(w, r, passkeyError(err))
}

// passkeyOriginOK refuses cross-site browser requests; it answers itself.
func (s *Server) passkeyOriginOK(w http.ResponseWriter, r *http.Request) bool {
	if err := s.auth.CheckCrossOrigin(r); err != nil {
		s.writeJSONError(w, r, newError(http.StatusForbidden, auth.ErrInvalidRequest.Code, "cross-site request refused"))
		return false
	}
	return true
}

// readPasskeyBody reads a JSON request body; an empty body is "{}". A body that is
// not declared as JSON is 415, one that is too large 413.
func readPasskeyBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, newError(http.StatusRequestEntityTooLarge, CodeRequestTooLarge, "the request body is too large")
	} else if err != nil {
		return nil, newError(http.StatusBadRequest, auth.ErrInvalidRequest.Code, "the request body could not be read")
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return []byte("{}"), nil
	}
	if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/json" {
		return nil, newError(http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "send the body as application/json")
	}
	if err := checkJSON(b); err != nil {
		return nil, err
	}
	return b, nil
}

func decodePasskeyBody(r *http.Request, v any) error {
	b, err := readPasskeyBody(r)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return newError(http.StatusBadRequest, auth.ErrInvalidRequest.Code, "the body does not have the expected fields")
	}
	return nil
}

// passkeyVerifyBody is a verify request. The credential is either the body itself
// (PublicKeyCredential.toJSON() with "state" etc. added beside its members)
// or the "credential" member.
type passkeyVerifyBody struct {
	State      string          `json:"state"`
	Name       string          `json:"name"`
	Bearer     bool            `json:"bearer"`
	Credential json.RawMessage `json:"credential"`
}

func readPasskeyVerify(r *http.Request) (passkeyVerifyBody, error) {
	b, err := readPasskeyBody(r)
	if err != nil {
		return passkeyVerifyBody{}, err
	}
	var v passkeyVerifyBody
	if err := json.Unmarshal(b, &v); err != nil {
		return passkeyVerifyBody{}, newError(http.StatusBadRequest, auth.ErrInvalidRequest.Code, "the body does not have the expected fields")
	}
	if len(v.Credential) == 0 || bytes.Equal(v.Credential, []byte("null")) {
		v.Credential = b
	}
	if v.State == "" {
		return passkeyVerifyBody{}, newError(http.StatusBadRequest, auth.ErrInvalidRequest.Code, `"state" is required: send back the state of the options answer`)
	}
	return v, nil
}

// passkeySession returns the request's session, nil when there is none;
// only a store failure is an error.
func (s *Server) passkeySession(w http.ResponseWriter, r *http.Request) (*auth.Session, error) {
	sess, err := s.currentSession(w, r)
	if errors.Is(err, auth.ErrInvalidSessionID) {
		return nil, nil
	}
	return sess, err
}

func (s *Server) handlePasskeyRegisterOptions(w http.ResponseWriter, r *http.Request) {
	if !s.passkeyOriginOK(w, r) {
		return
	}
	var body struct {
		Name       *string `json:"name"`
		Email      string  `json:"email"`
		RedirectTo string  `json:"redirect_to"`
	}
	if err := decodePasskeyBody(r, &body); err != nil {
		s.passkeyFail(w, r, err)
		return
	}
	var (
		c   webauthn.Ceremony
		err error
	)
	if body.Name != nil {
		if err = optionalEmail(body.Email); err == nil {
			c, err = s.passkeys().BeginSignUp(r.Context(), webauthn.NewAccount{
				Username: *body.Name, Email: body.Email, RedirectTo: s.safeRedirect(body.RedirectTo),
			})
		}
		if err == nil {
			// A sign-up ceremony begins (it writes nothing yet): counted
			// with password sign-ups, per client IP.
			err = s.limitSignups(w, r)
		}
	} else {
		var sess *auth.Session
		if sess, err = s.currentSession(w, r); err == nil {
			c, err = s.passkeys().BeginAdd(r.Context(), sess)
		}
	}
	if err != nil {
		s.passkeyFail(w, r, err)
		return
	}
	http.SetCookie(w, c.Cookie)
	writeJSON(w, http.StatusOK, c)
}

// passkeyAnswer is a sign-up or login answer.
type passkeyAnswer struct {
	sessionBody
	Credential *webauthn.Passkey `json:"credential,omitempty"`
}

func (s *Server) handlePasskeyRegisterVerify(w http.ResponseWriter, r *http.Request) {
	if !s.passkeyOriginOK(w, r) {
		return
	}
	v, err := readPasskeyVerify(r)
	if err != nil {
		s.passkeyFail(w, r, err)
		return
	}
	sess, err := s.passkeySession(w, r)
	if err != nil {
		s.passkeyFail(w, r, err)
		return
	}
	reg, del, err := s.passkeys().FinishRegistration(r.Context(), r, webauthn.RegistrationResponse{
		State: v.State, Credential: v.Credential, Name: v.Name, Session: sess,
	})
	if del != nil {
		http.SetCookie(w, del)
	}
	if err != nil {
		if sess == nil {
			s.opts.Metrics.Login("webauthn", "signup_refused")
		}
		s.passkeyFail(w, r, err)
		return
	}
	s.auditEvent(r, storage.AuditEvent{Event: storage.AuditPasskeyAdded, UserID: reg.User.ID, Provider: "webauthn",
		Data: map[string]any{"credential_id": reg.Passkey.ID, "name": reg.Passkey.Name}})
	if !reg.NewUser {
		writeJSON(w, http.StatusCreated, map[string]any{"user": reg.User, "credential": reg.Passkey})
		return
	}
	s.opts.Metrics.Login("webauthn", "signup")
	s.audit(r, storage.AuditLoginSuccess, reg.User.ID, "webauthn", "signup")
	ans, err := s.startPasskeySession(w, r, reg.User.ID, v.Bearer)
	if err != nil {
		s.passkeyFail(w, r, err)
		return
	}
	ans.RedirectTo = s.safeRedirect(reg.RedirectTo)
	ans.Credential = &reg.Passkey
	writeJSON(w, http.StatusCreated, ans)
}

// startPasskeySession creates a session for a passkey sign-up or login: the
// cookie, or for bearer clients the token in the answer.
func (s *Server) startPasskeySession(w http.ResponseWriter, r *http.Request, userID string, bearer bool) (passkeyAnswer, error) {
	sess, err := s.auth.CreateSession(r.Context(), userID, auth.SessionOptions{UserAgent: truncate(r.UserAgent(), 256), IP: s.clientIP(r)})
	if err != nil {
		return passkeyAnswer{}, err
	}
	ans := passkeyAnswer{sessionBody: s.sessionBody(r.Context(), &sess)}
	if bearer {
		ans.Token = sess.Token
	} else {
		http.SetCookie(w, s.auth.CreateSessionCookie(&sess))
	}
	return ans, nil
}

func (s *Server) handlePasskeyLoginOptions(w http.ResponseWriter, r *http.Request) {
	if !s.passkeyOriginOK(w, r) {
		return
	}
	var body struct {
		Name       string `json:"name"`
		Mediation  string `json:"mediation"`
		RedirectTo string `json:"redirect_to"`
		Reauth     bool   `json:"reauth"`
	}
	if err := decodePasskeyBody(r, &body); err != nil {
		s.passkeyFail(w, r, err)
		return
	}
	req := webauthn.LoginRequest{Username: body.Name, Conditional: body.Mediation == "conditional", RedirectTo: s.safeRedirect(body.RedirectTo)}
	if body.Reauth {
		sess, err := s.passkeySession(w, r)
		if err != nil {
			s.passkeyFail(w, r, err)
			return
		}
		req.Reauth = sess // without a session, an ordinary login
	}
	c, err := s.passkeys().BeginLogin(r.Context(), req)
	if err != nil {
		s.passkeyFail(w, r, err)
		return
	}
	http.SetCookie(w, c.Cookie)
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) handlePasskeyLoginVerify(w http.ResponseWriter, r *http.Request) {
	if !s.passkeyOriginOK(w, r) {
		return
	}
	outcome := "error"
	defer func() {
		s.opts.Metrics.Login("webauthn", outcome)
		if outcome != "login" && outcome != "reauthenticated" {
			s.audit(r, storage.AuditLoginFailure, "", "webauthn", outcome)
		}
	}()
	v, err := readPasskeyVerify(r)
	if err != nil {
		outcome = "invalid_request"
		s.passkeyFail(w, r, err)
		return
	}
	sess, err := s.passkeySession(w, r)
	if err != nil {
		s.passkeyFail(w, r, err)
		return
	}
	l, del, err := s.passkeys().FinishLogin(r.Context(), r, webauthn.LoginResponse{State: v.State, Credential: v.Credential, Session: sess})
	if del != nil {
		http.SetCookie(w, del)
	}
	if err != nil {
		switch {
		case errors.Is(err, webauthn.ErrCloned):
			outcome = "cloned"
		case isPasskeyFlowError(err):
			outcome = "invalid_state"
		case errors.Is(err, auth.ErrInvalidKeyID):
			outcome = "unknown_credential"
		case errors.Is(err, auth.ErrInvalidRequest):
			outcome = "invalid_request"
		}
		s.passkeyFail(w, r, err)
		return
	}
	if l.Reauthenticated {
		outcome = "reauthenticated"
		s.audit(r, storage.AuditLoginSuccess, l.User.ID, "webauthn", outcome)
		fresh, err := s.auth.GetSession(r.Context(), sess.Token)
		if err != nil {
			s.passkeyFail(w, r, err)
			return
		}
		ans := passkeyAnswer{sessionBody: s.sessionBody(r.Context(), &fresh)}
		ans.RedirectTo = s.safeRedirect(l.RedirectTo)
		writeJSON(w, http.StatusOK, ans)
		return
	}
	ans, err := s.startPasskeySession(w, r, l.User.ID, v.Bearer)
	if err != nil {
		s.passkeyFail(w, r, err)
		return
	}
	outcome = "login"
	s.audit(r, storage.AuditLoginSuccess, l.User.ID, "webauthn", "")
	ans.RedirectTo = s.safeRedirect(l.RedirectTo)
	writeJSON(w, http.StatusOK, ans)
}

func (s *Server) handlePasskeyList(w http.ResponseWriter, r *http.Request) {
	sess, err := s.currentSession(w, r)
	if err != nil {
		s.passkeyFail(w, r, err)
		return
	}
	ps, err := s.passkeys().List(r.Context(), sess.UserID)
	if err != nil {
		s.passkeyFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"credentials": ps})
}

// handlePasskeyGet answers one of the signed-in user's passkeys; another
// user's id, or an unknown one, is 404 NOT_FOUND like PATCH and DELETE.
func (s *Server) handlePasskeyGet(w http.ResponseWriter, r *http.Request) {
	sess, err := s.currentSession(w, r)
	if err != nil {
		s.passkeyFail(w, r, err)
		return
	}
	ps, err := s.passkeys().List(r.Context(), sess.UserID)
	if err != nil {
		s.passkeyFail(w, r, err)
		return
	}
	for _, p := range ps {
		if p.ID == r.PathValue("id") {
			writeJSON(w, http.StatusOK, p)
			return
		}
	}
	s.passkeyFail(w, r, newError(http.StatusNotFound, CodeNotFound, "no such passkey"))
}

func (s *Server) handlePasskeyRename(w http.ResponseWriter, r *http.Request) {
	if !s.passkeyOriginOK(w, r) {
		return
	}
	sess, err := s.currentSession(w, r)
	if err != nil {
		s.passkeyFail(w, r, err)
		return
	}
	var body struct {
		Name *string `json:"name"`
	}
	if err := decodePasskeyBody(r, &body); err != nil {
		s.passkeyFail(w, r, err)
		return
	}
	if body.Name == nil {
		s.passkeyFail(w, r, newError(http.StatusBadRequest, auth.ErrInvalidRequest.Code, `"name" is required`))
		return
	}
	p, err := s.passkeys().Rename(r.Context(), sess.UserID, r.PathValue("id"), *body.Name)
	if err != nil {
		s.passkeyFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) handlePasskeyDelete(w http.ResponseWriter, r *http.Request) {
	if !s.passkeyOriginOK(w, r) {
		return
	}
	sess, err := s.currentSession(w, r)
	if err != nil {
		s.passkeyFail(w, r, err)
		return
	}
	if err := s.passkeys().Remove(r.Context(), sess, r.PathValue("id")); err != nil {
		s.passkeyFail(w, r, err)
		return
	}
	s.auditEvent(r, storage.AuditEvent{Event: storage.AuditPasskeyRemoved, UserID: sess.UserID, Provider: "webauthn",
		Data: map[string]any{"credential_id": r.PathValue("id")}})
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// passkeyLoginPart is the login page's passkey section: a username field
// with passkey autofill, the passkey button and a sign-up form.
func (s *Server) passkeyLoginPart(r *http.Request, redirectTo string) template.HTML {
	return s.passkeyPart("passkey_login.html", map[string]any{
		"RedirectTo": redirectTo, "Reauth": r.URL.Query().Get("reauth") == "1",
	})
}

// passkeyItem is a passkey row of the account page.
type passkeyItem struct {
	webauthn.Passkey
	Created, LastUsed string
}

// passkeyAccountPart is the account page's passkey section: the user's
// passkeys (rename, remove) and a form to add one.
func (s *Server) passkeyAccountPart(r *http.Request, sess *auth.Session) template.HTML {
	ps, err := s.passkeys().List(r.Context(), sess.UserID)
	if err != nil {
		s.log.Warn("list passkeys", "err", err)
	}
	items := make([]passkeyItem, len(ps))
	for i, p := range ps {
		items[i] = passkeyItem{Passkey: p, Created: p.CreatedAt.In(time.UTC).Format("2006-01-02 15:04"), LastUsed: "never"}
		if p.LastUsedAt != nil {
			items[i].LastUsed = p.LastUsedAt.In(time.UTC).Format("2006-01-02 15:04")
		}
	}
	return s.passkeyPart("passkey_account.html", map[string]any{"Passkeys": items, "Failed": err != nil})
}

// passkeyPart renders a page part; a failure is logged and leaves the part out.
func (s *Server) passkeyPart(name string, data any) template.HTML {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, data); err != nil {
		s.log.Error("render page part", "part", name, "err", err)
		return ""
	}
	return template.HTML(buf.String()) // rendered by html/template, so escaped
}
