package server

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/mail"
	"github.com/brokerauth/broker/storage"
)

// PasswordOptions configure password sign-up and login (SPEC §6): keys
// "email:<lower-cased address>" holding argon2id hashes (through the
// [auth.Auth]'s [auth.PasswordHasher], whose concurrency cap bounds the
// memory a burst of logins can take).
//
// Failed logins are counted in the database per key and per client IP
// (MaxFailures per FailureWindow, fixed windows), so every replica sees
// them; past the limit a login answers 429 with Retry-After before any
// hashing. An unknown address costs the same as a wrong password: the same
// queries and one argon2id verification.
type PasswordOptions struct {
	// MinLength is the shortest password accepted, in characters after
	// NFKC normalization (default 8, NIST SP 800-63B's minimum; smaller
	// values are raised to 8).
	MinLength int
	// MaxLength is the longest (default 256), so long passphrases fit.
	MaxLength int
	// MaxFailures failed logins are allowed per key and per client IP in
	// FailureWindow (defaults 5 and 15 minutes: limits.login_failures).
	MaxFailures   int
	FailureWindow time.Duration
}

//go:embed web/common-passwords.txt
var commonPasswordsText string

// commonPasswords is the embedded list, lower-cased.
var commonPasswords = func() map[string]bool {
	m := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(commonPasswordsText))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			m[strings.ToLower(norm.NFKC.String(l))] = true
		}
	}
	return m
}()

// passwordRoutes registers the password routes and page parts. The reset
// and address-confirmation routes need email (EmailOptions) too.
func (s *Server) passwordRoutes() {
	p := *s.opts.Passwords
	if p.MinLength < 8 {
		p.MinLength = 8
	}
	if p.MaxLength <= 0 {
		p.MaxLength = 256
	}
	p.MaxLength = max(p.MaxLength, p.MinLength)
	if p.MaxFailures <= 0 {
		p.MaxFailures = 5
	}
	if p.FailureWindow <= 0 {
		p.FailureWindow = 15 * time.Minute
	}
	s.opts.Passwords = &p
	s.mux.HandleFunc("POST /signup/password", s.handleSignup)
	s.mux.HandleFunc("POST /login/password", s.handlePasswordLogin)
	s.mux.HandleFunc("POST /account/password", s.handleChangePassword)
	if s.opts.Email != nil {
		s.mux.HandleFunc("GET /account/password/reset", s.handleResetPage)
		s.mux.HandleFunc("POST /account/password/reset", s.handleResetRequest)
		s.mux.HandleFunc("POST /account/password/reset/confirm", s.handleResetConfirm)
		s.mux.HandleFunc("GET /signup/password/verify", s.handleVerifyPage)
		s.mux.HandleFunc("POST /signup/password/verify", s.handleVerify)
	}
	s.loginParts = append(s.loginParts, s.passwordLoginPart)
	s.accountParts = append(s.accountParts, s.passwordAccountPart)
}

// checkNewPassword applies the rules of NIST SP 800-63B §5.1.1.2 to a new
// password for the account of email: at least MinLength and at most
// MaxLength characters (Unicode code points after NFKC normalization, the
// form it is hashed in; spaces and any printable character allowed, no
// composition rules), not on the list of common passwords (compared
// case-insensitively), not one character repeated, and not the email
// address or its local part. It returns a 422 AUTH_INVALID_PASSWORD with a
// message that says what to change.
func (p *PasswordOptions) checkNewPassword(password, email string) error {
	refuse := func(format string, args ...any) error {
		return newError(http.StatusUnprocessableEntity, auth.ErrInvalidPassword.Code, fmt.Sprintf(format, args...))
	}
	if !utf8.ValidString(password) {
		return refuse("the password is not valid text")
	}
	pw := norm.NFKC.String(password)
	for _, c := range pw {
		if unicode.IsControl(c) {
			return refuse("the password must not contain control characters")
		}
	}
	n := utf8.RuneCountInString(pw)
	if n < p.MinLength {
		return refuse("use at least %d characters; a few unrelated words make a strong password", p.MinLength)
	}
	if n > p.MaxLength {
		return refuse("use at most %d characters", p.MaxLength)
	}
	lower := strings.ToLower(pw)
	if commonPasswords[lower] {
		return refuse("this password is one of the most common ones; choose another (a few unrelated words make a strong password)")
	}
	first, _ := utf8.DecodeRuneInString(lower)
	if strings.Trim(lower, string(first)) == "" {
		return refuse("the password must not be one character repeated")
	}
	if local, _, _ := strings.Cut(email, "@"); email != "" && (lower == email || lower == local) {
		return refuse("the password must not be your email address")
	}
	return nil
}

// --- sign-up and login ---

type passwordInput struct {
	Email      string `json:"email"`
	Password   string `json:"password"`
	RedirectTo string `json:"redirect_to"`
	Bearer     bool   `json:"bearer"`
}

// handleSignup creates a user with an unverified email and a password key
// email:<address>, signs it in and, with email on, sends a link that
// confirms the address. It never touches the verified owner of the
// address: an address held verified answers 409 CONFLICT.
func (s *Server) handleSignup(w http.ResponseWriter, r *http.Request) {
	outcome := "error"
	defer func() { s.opts.Metrics.Login("password", outcome) }()
	var in passwordInput
	if !s.readInput(w, r, &in) {
		return
	}
	email, ok := s.inputEmail(w, r, in.Email, errBadEmail)
	if !ok {
		return
	}
	if err := s.opts.Passwords.checkNewPassword(in.Password, email); err != nil {
		outcome = "refused_password"
		s.writeError(w, r, err)
		return
	}
	ctx := r.Context()
	// Every attempt counts, before any work (a 409 tells whether an
	// address has an account, so those are limited too).
	if err := s.limitSignups(w, r); err != nil {
		if he, ok := errors.AsType[*httpError](err); ok && he.Code == CodeRateLimited {
			outcome = "rate_limited"
		}
		s.writeError(w, r, err)
		return
	}
	keyID := auth.KeyID("email", email)
	errDup := newError(http.StatusConflict, auth.ErrDuplicateKeyID.Code, "an account with this email address already has a password; sign in instead")
	k, err := s.store.GetKey(ctx, keyID)
	keyExists := err == nil
	switch {
	case keyExists && k.HashedPassword != nil:
		outcome = "duplicate"
		s.writeError(w, r, errDup)
		return
	case err != nil && !errors.Is(err, storage.ErrNotFound):
		s.writeError(w, r, err)
		return
	}
	if _, err := s.store.GetUserByEmail(ctx, email); err == nil {
		outcome = "conflict"
		s.writeError(w, r, newError(http.StatusConflict, CodeConflict,
			"this email address belongs to an existing account; sign in with an email link and set a password from your account page"))
		return
	} else if !errors.Is(err, storage.ErrNotFound) {
		s.writeError(w, r, err)
		return
	}
	if keyExists {
		outcome = "duplicate"
		s.writeError(w, r, errDup)
		return
	}
	u, err := s.auth.CreateUser(ctx, auth.CreateUserOptions{
		Key:        &auth.KeySpec{ProviderID: "email", ProviderUserID: email, Password: &in.Password},
		Attributes: map[string]any{"email": email},
	})
	if err != nil {
		if errors.Is(err, auth.ErrDuplicateKeyID) {
			outcome = "duplicate"
			err = errDup
		}
		s.writeError(w, r, err)
		return
	}
	sess, err := s.newSession(r, u.ID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.opts.Email != nil {
		s.sendConfirmation(r, email)
	}
	s.audit(r, storage.AuditLoginSuccess, u.ID, "password", "signup")
	outcome = "signup"
	s.signedIn(w, r, http.StatusCreated, sess, s.safeRedirect(in.RedirectTo), in.Bearer && jsonBody(r))
}

// sendConfirmation mails the link that confirms a new sign-up's address,
// within the sending limits (over them, no mail: the address stays
// unconfirmed until an email link or a password reset proves it).
func (s *Server) sendConfirmation(r *http.Request, email string) {
	if over, _, err := s.limitSends(r, email); err != nil || over {
		s.log.Info("address confirmation not sent", "request_id", requestID(r.Context()), "over_limit", over, "err", errString(err))
		return
	}
	s.mailLater(r.Context(), mail.KindVerify, func(ctx context.Context) (string, error) {
		return s.newLink(ctx, verifyPrefix+email, email, "", "/signup/password/verify")
	}, email)
}

// handlePasswordLogin signs in with email and password. Unknown address
// and wrong password give the same 400 AUTH_INVALID_PASSWORD after the same
// work; past the failure limit, 429.
func (s *Server) handlePasswordLogin(w http.ResponseWriter, r *http.Request) {
	outcome := "error"
	defer func() { s.opts.Metrics.Login("password", outcome) }()
	var in passwordInput
	if !s.readInput(w, r, &in) {
		return
	}
	email := strings.ToLower(strings.TrimSpace(in.Email))
	if email == "" || in.Password == "" {
		s.writeError(w, r, newError(http.StatusBadRequest, auth.ErrInvalidRequest.Code, "enter your email address and password"))
		return
	}
	userID, err := s.checkPassword(w, r, email, in.Password)
	if err != nil {
		outcome = loginOutcome(err)
		s.auditPasswordFailure(r, email, userID, outcome, nil)
		s.writeError(w, r, err)
		return
	}
	bearer := in.Bearer && jsonBody(r)
	sess, err := s.loginSession(w, r, userID, bearer)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.audit(r, storage.AuditLoginSuccess, userID, "password", "")
	outcome = "success"
	s.signedIn(w, r, http.StatusOK, sess, s.safeRedirect(in.RedirectTo), bearer)
}

func loginOutcome(err error) string {
	if he, ok := errors.AsType[*httpError](err); ok && he.Code == CodeRateLimited {
		return "rate_limited"
	}
	switch auth.CodeOf(err) {
	case auth.ErrInvalidPassword.Code:
		return "invalid"
	case auth.ErrOutdatedPassword.Code:
		return "outdated"
	}
	return "error"
}

// Rate-limit buckets of password checks.
func loginIPBucket(client string) string { return "login-ip:" + client }
func loginKeyBucket(email string) string { return "login-key:" + auth.KeyID("email", email) }

// checkPassword checks password against the key email:<email> under the
// failure limits and returns the key's user. With an error it returns ""
// or, for a wrong password of an existing key, the key's user (for the
// audit log; it does not sign in).
//
// The attempt is counted before any hashing, per client IP and then per
// key, in the database: past the limit it answers 429 with Retry-After
// (an error to write) and does no work, whichever replica counted the
// failures. A success takes its own attempt back from the IP's count and
// clears the key's, so only failures add up. An unknown address, or a key
// without a password, costs what a wrong password costs: the same key
// reads and one argon2id verification (DummyVerify), so neither the answer
// nor its timing tells whether an account exists.
func (s *Server) checkPassword(w http.ResponseWriter, r *http.Request, email, password string) (string, error) {
	p := s.opts.Passwords
	ctx := r.Context()
	ipB, keyB := loginIPBucket(s.clientBucket(r)), loginKeyBucket(email)
	over, retry, err := s.hitLimits(ctx, []string{ipB, keyB}, p.MaxFailures, p.FailureWindow)
	if err != nil {
		return "", err
	}
	if over {
		return "", tooMany(w, retry, "too many failed sign-ins; try again later")
	}
	k, err := s.auth.GetKey(ctx, "email", email)
	switch {
	case err == nil && k.PasswordDefined:
		// UseKey reads the key again, verifies, and replaces a hash that
		// is no longer preferred (weaker argon2id, Lucia's scrypt).
		if _, err := s.auth.UseKey(ctx, "email", email, &password); err != nil {
			return k.UserID, err
		}
	case err == nil || errors.Is(err, auth.ErrInvalidKeyID):
		_, _ = s.store.GetKey(ctx, auth.KeyID("email", email)) // the read UseKey would make
		s.auth.Passwords().DummyVerify(ctx, password)
		return "", fmt.Errorf("password login: no password for this address: %w", auth.ErrInvalidPassword)
	default:
		return "", err
	}
	s.clearLoginFailures(ctx, email)
	if _, _, err := s.hitLimit(ctx, ipB, -1, p.MaxFailures, p.FailureWindow); err != nil {
		s.log.Warn("rate limit not given back", "err", err)
	}
	return k.UserID, nil
}

// loginSession returns the session a successful login signs in with: the
// request's own cookie session when it belongs to the same user (it is
// re-authenticated instead of doubled), otherwise a new one.
func (s *Server) loginSession(w http.ResponseWriter, r *http.Request, userID string, bearer bool) (*auth.Session, error) {
	if !bearer {
		if _, src := s.auth.Token(r); src == auth.TokenCookie {
			if cur, err := s.currentSession(w, r); err == nil && cur.UserID == userID {
				if err := s.auth.Reauthenticate(r.Context(), cur.ID); err != nil {
					return nil, err
				}
				cur.AuthenticatedAt = s.auth.Now().UTC()
				return cur, nil
			}
		}
	}
	return s.newSession(r, userID)
}

// clearLoginFailures forgets the failed logins counted on email's key.
func (s *Server) clearLoginFailures(ctx context.Context, email string) {
	if err := s.store.ResetRateLimit(ctx, loginKeyBucket(email)); err != nil {
		s.log.Warn("rate limit not reset", "err", err)
	}
}

// signedIn answers a successful sign-in: to JSON clients status with
// {user, session, claims, redirect_to} (and "token" without a cookie for
// bearer clients), to forms the cookie and 303 to redirectTo.
func (s *Server) signedIn(w http.ResponseWriter, r *http.Request, status int, sess *auth.Session, redirectTo string, bearer bool) {
	asJSON := answersJSON(r)
	if !asJSON || !bearer {
		http.SetCookie(w, s.auth.CreateSessionCookie(sess))
	}
	if !asJSON {
		http.Redirect(w, r, redirectTo, http.StatusSeeOther)
		return
	}
	body := s.sessionBody(r.Context(), sess)
	body.RedirectTo = redirectTo
	if bearer {
		body.Token = sess.Token
	}
	writeJSON(w, status, body)
}

// --- POST /account/password ---

type changePasswordInput struct {
	Current string `json:"current_password"`
	New     string `json:"new_password"`
}

// handleChangePassword changes (or first sets) the signed-in user's
// password. It needs a recent authentication and, when the user has a
// password, the current one (counted like a login). The user's other
// sessions end; this one stays.
func (s *Server) handleChangePassword(w http.ResponseWriter, r *http.Request) {
	sess := s.stateChange(w, r)
	if sess == nil {
		return
	}
	var in changePasswordInput
	if !s.decode(w, r, &in) {
		return
	}
	form := !answersJSON(r)
	if err := s.auth.RequireRecentAuth(*sess); err != nil {
		if form {
			http.Redirect(w, r, "/login?reauth=1&redirect_to=%2Faccount", http.StatusSeeOther)
			return
		}
		s.writeError(w, r, err)
		return
	}
	ctx := r.Context()
	email, hasPassword, err := s.passwordAddress(ctx, sess.User)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if hasPassword {
		if in.Current == "" {
			s.writeError(w, r, newError(http.StatusBadRequest, auth.ErrInvalidPassword.Code, "enter your current password"))
			return
		}
		if _, err := s.checkPassword(w, r, email, in.Current); err != nil {
			s.auditPasswordFailure(r, email, sess.UserID, loginOutcome(err), map[string]any{"during": "password_change"})
			if auth.CodeOf(err) == auth.ErrInvalidPassword.Code {
				err = &httpError{http.StatusBadRequest, auth.ErrInvalidPassword.Code, "the current password is wrong", err}
			}
			s.writeError(w, r, err)
			return
		}
	}
	if err := s.opts.Passwords.checkNewPassword(in.New, email); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.setPasswordKey(ctx, sess.UserID, email, in.New); err != nil {
		s.writeError(w, r, err)
		return
	}
	all, err := s.auth.GetAllUserSessions(ctx, sess.UserID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ended := 0
	for _, x := range all {
		if x.ID != sess.ID {
			if err := s.auth.InvalidateSessionID(ctx, sess.UserID, x.ID); err != nil && !errors.Is(err, auth.ErrInvalidSessionID) {
				s.writeError(w, r, err)
				return
			}
			ended++
		}
	}
	s.auditEvent(r, storage.AuditEvent{Event: storage.AuditPasswordChanged, UserID: sess.UserID, Provider: "password",
		Data: map[string]any{"other_sessions_ended": ended}})
	if form {
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// passwordAddress returns the address of u's password key (the key on u's
// own address first) and whether it holds a password. A user without such
// a key may set a password on its email address once that is verified;
// otherwise it is 400 AUTH_INVALID_REQUEST.
func (s *Server) passwordAddress(ctx context.Context, u auth.User) (string, bool, error) {
	keys, err := s.auth.GetAllUserKeys(ctx, u.ID)
	if err != nil {
		return "", false, err
	}
	var found *auth.Key
	for i, k := range keys {
		if k.ProviderID != "email" {
			continue
		}
		if found == nil || (u.Email != nil && k.ProviderUserID == *u.Email) {
			found = &keys[i]
		}
	}
	if found != nil {
		return found.ProviderUserID, found.PasswordDefined, nil
	}
	if u.Email == nil || !u.EmailVerified {
		return "", false, newError(http.StatusBadRequest, auth.ErrInvalidRequest.Code,
			"a password needs a confirmed email address; sign in with an email link first")
	}
	return *u.Email, false, nil
}

// errKeyHeld: the password key of an address belongs to another user.
var errKeyHeld = errors.New("password key held by another user")

// setPasswordKey stores password on userID's key email:<email>, creating
// the key when missing. userID must be the verified owner of the address,
// or be proving it right now (a reset link): a key on the address held by
// another user was made by someone who never proved it (an unconfirmed
// sign-up), so it is taken over. The hash is computed before any write.
func (s *Server) setPasswordKey(ctx context.Context, userID, email, password string) error {
	h, err := s.auth.Passwords().Hash(ctx, password)
	if err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	id := auth.KeyID("email", email)
	for range 3 {
		now := s.now().UTC()
		_, err := s.store.UpdateKey(ctx, id, func(k *storage.Key) error {
			if k.UserID != userID {
				return errKeyHeld
			}
			k.HashedPassword, k.UpdatedAt = &h, now
			return nil
		})
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errKeyHeld):
			k, gerr := s.store.GetKey(ctx, id)
			if gerr == nil && k.UserID != userID {
				s.log.Info("password key taken over by the owner of the address", "key_user_id", k.UserID, "user_id", userID)
				// auth.DeleteKey invalidates whoever held the key when it went.
				if err := s.auth.DeleteKey(ctx, "email", email); err != nil {
					return fmt.Errorf("set password: %w", err)
				}
			}
		case !errors.Is(err, storage.ErrNotFound):
			return fmt.Errorf("set password: %w", err)
		}
		err = s.store.CreateKey(ctx, storage.Key{
			ID: id, UserID: userID, Provider: "email", ProviderUserID: email, HashedPassword: &h, CreatedAt: now, UpdatedAt: now,
		})
		if err == nil {
			if err := s.auth.KeysChanged(ctx, userID); err != nil {
				return fmt.Errorf("set password: %w", err)
			}
			return nil
		}
		if !errors.Is(err, storage.ErrAlreadyExists) {
			return fmt.Errorf("set password: %w", err)
		}
		// Created concurrently: go round and update or take it over.
	}
	return fmt.Errorf("set password: key %s keeps changing", id)
}

// --- password reset ---

// errNoAccount: no account can be reset or confirmed for the address.
var errNoAccount = errors.New("no account for the address")

// errNoAccountNow answers a link whose address no account uses any more.
var errNoAccountNow = newError(http.StatusBadRequest, auth.ErrInvalidRequest.Code, "no account uses this email address any more")

// resetTarget returns whose password a reset link for email sets: the
// verified owner of the address, else the user holding its password key
// with the address unverified (the link proves the address, so it is
// verified on the way). Anyone else: errNoAccount.
func (s *Server) resetTarget(ctx context.Context, email string) (string, error) {
	owner, err := s.store.GetUserByEmail(ctx, email)
	if err == nil {
		return owner.ID, nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return "", err
	}
	k, err := s.store.GetKey(ctx, auth.KeyID("email", email))
	if errors.Is(err, storage.ErrNotFound) {
		return "", errNoAccount
	}
	if err != nil {
		return "", err
	}
	u, err := s.store.GetUser(ctx, k.UserID)
	if err != nil || u.Email == nil || *u.Email != email {
		return "", errNoAccount
	}
	return u.ID, nil
}

type resetRequestInput struct {
	Email      string `json:"email"`
	RedirectTo string `json:"redirect_to"`
}

// handleResetRequest answers 202 (JSON) or 303 to the reset page (form)
// whatever the address, and mails a reset link in the background when an
// account uses it.
func (s *Server) handleResetRequest(w http.ResponseWriter, r *http.Request) {
	var in resetRequestInput
	if !s.readInput(w, r, &in) {
		return
	}
	email, ok := s.inputEmail(w, r, in.Email, errBadEmail)
	if !ok {
		return
	}
	redirectTo := s.safeRedirect(in.RedirectTo)
	s.sendLink(w, r, email, mail.KindReset, "/account/password/reset?sent=1", func(ctx context.Context) (string, error) {
		if _, err := s.resetTarget(ctx, email); err != nil {
			if errors.Is(err, errNoAccount) {
				return "", nil
			}
			return "", err
		}
		return s.newLink(ctx, resetPrefix+email, email, redirectTo, "/account/password/reset")
	})
}

// handleResetPage shows the form that asks for a reset link or, when the
// URL carries a link's token, the form that sets the new password. The
// page does not use the token (mail scanners open links); the form's POST
// does.
func (s *Server) handleResetPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	data := map[string]any{"MinLength": s.opts.Passwords.MinLength, "Sent": q.Get("sent") == "1"}
	if q.Get("token") != "" {
		email, token, ok := linkParams(q)
		if !ok {
			s.writeError(w, r, errBadLink)
			return
		}
		data["Choose"], data["Token"], data["Email"] = true, token, email
	}
	s.render(w, r, "reset.html", data)
}

type resetConfirmInput struct {
	Token    string `json:"token"`
	Email    string `json:"email"`
	Password string `json:"new_password"`
	Bearer   bool   `json:"bearer"`
}

// handleResetConfirm uses a reset link: it sets the new password on the
// account (see resetTarget), confirms the address, ends all the account's
// sessions and signs this browser in with a new one.
func (s *Server) handleResetConfirm(w http.ResponseWriter, r *http.Request) {
	var in resetConfirmInput
	if !s.readInput(w, r, &in) {
		return
	}
	email, ok := s.inputEmail(w, r, in.Email, errBadLink)
	if !ok {
		return
	}
	if err := s.opts.Passwords.checkNewPassword(in.Password, email); err != nil {
		if !answersJSON(r) && validLinkToken(in.Token) {
			// Show the form again: the token is not used yet.
			s.renderStatus(w, r, http.StatusUnprocessableEntity, "reset.html", map[string]any{"MinLength": s.opts.Passwords.MinLength,
				"Choose": true, "Token": in.Token, "Email": email, "Error": classify(err).Message})
			return
		}
		s.writeError(w, r, err)
		return
	}
	ctx := r.Context()
	vt, err := s.useLink(ctx, resetPrefix, email, in.Token)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	userID, err := s.resetTarget(ctx, email)
	if errors.Is(err, errNoAccount) {
		err = errNoAccountNow
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.setPasswordKey(ctx, userID, email, in.Password); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.verifyEmail(ctx, userID, email); err != nil && !errors.Is(err, errNotClaimable) {
		// Verified by another user meanwhile: the password is set, the
		// address stays theirs.
		s.log.Warn("address not confirmed by reset", "user_id", userID, "err", err)
	}
	ended, err := s.auth.InvalidateAllUserSessions(ctx, userID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.auditEvent(r, storage.AuditEvent{Event: storage.AuditPasswordReset, UserID: userID, Provider: "email",
		Data: map[string]any{"sessions_ended": len(ended)}})
	s.clearLoginFailures(ctx, email)
	sess, err := s.newSession(r, userID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.audit(r, storage.AuditLoginSuccess, userID, "email", "password_reset")
	s.signedIn(w, r, http.StatusOK, sess, s.safeRedirect(vt.RedirectTo), in.Bearer && jsonBody(r))
}

// --- confirming a sign-up's address ---

// handleVerifyPage shows a button that confirms the address; like the
// reset page it leaves the token alone (mail scanners open links).
func (s *Server) handleVerifyPage(w http.ResponseWriter, r *http.Request) {
	email, token, ok := linkParams(r.URL.Query())
	if !ok {
		s.writeError(w, r, errBadLink)
		return
	}
	s.render(w, r, "confirm.html", map[string]any{"Token": token, "Email": email})
}

type verifyInput struct {
	Token string `json:"token"`
	Email string `json:"email"`
}

// handleVerify confirms the address of a password sign-up. It does not
// sign in: whoever opens the link proves the mailbox, not the password. An
// address that another user holds verified answers 409 CONFLICT and stays
// theirs.
func (s *Server) handleVerify(w http.ResponseWriter, r *http.Request) {
	var in verifyInput
	if !s.readInput(w, r, &in) {
		return
	}
	email, ok := s.inputEmail(w, r, in.Email, errBadLink)
	if !ok {
		return
	}
	ctx := r.Context()
	if _, err := s.useLink(ctx, verifyPrefix, email, in.Token); err != nil {
		s.writeError(w, r, err)
		return
	}
	k, err := s.store.GetKey(ctx, auth.KeyID("email", email))
	if err == nil {
		err = s.verifyEmail(ctx, k.UserID, email)
	}
	switch {
	case errors.Is(err, storage.ErrNotFound), errors.Is(err, errNotClaimable):
		err = errNoAccountNow
	case errors.Is(err, storage.ErrAlreadyExists):
		err = &httpError{http.StatusConflict, CodeConflict, "this email address is already confirmed by another account", err}
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.audit(r, storage.AuditEmailVerified, k.UserID, "email", "signup")
	if answersJSON(r) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.render(w, r, "confirm.html", map[string]any{"Done": true, "Email": email})
}

// --- pages ---

// renderStatus is render with a status other than 200.
func (s *Server) renderStatus(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	var b bytes.Buffer
	if err := pages.ExecuteTemplate(&b, name, data); err != nil {
		s.log.Error("render page", "page", name, "err", err)
		s.writeError(w, r, newError(http.StatusServiceUnavailable, CodeServiceUnavailable, "the page could not be shown"))
		return
	}
	s.securityHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

func (s *Server) passwordLoginPart(r *http.Request, redirectTo string) template.HTML {
	return s.part("part-password.html", map[string]any{
		"RedirectTo": redirectTo, "MinLength": s.opts.Passwords.MinLength, "Reset": s.opts.Email != nil,
		"Divider": s.opts.Email != nil || len(s.opts.Providers) > 0,
	})
}

func (s *Server) passwordAccountPart(r *http.Request, sess *auth.Session) template.HTML {
	email, has, err := s.passwordAddress(r.Context(), sess.User)
	if err != nil && classify(err).Status >= 500 {
		s.log.Warn("account page: password section", "err", err)
		return ""
	}
	return s.part("part-account-password.html", map[string]any{
		"Email": email, "HasPassword": has, "CanSet": err == nil, "MinLength": s.opts.Passwords.MinLength,
	})
}
