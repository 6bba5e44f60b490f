package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/mail"
	"github.com/brokerauth/broker/storage"
)

// EmailOptions configure email magic links (SPEC §6) and the other mail
// the broker sends: the address confirmation of a password sign-up and the
// password-reset link (those two need [PasswordOptions] as well).
//
// Every message is prepared and sent in the background, after the HTTP
// answer: the answer to "send me a link" is the same, and takes the same
// time, whether or not the address belongs to anyone. Sending is
// rate-limited per address and per client IP (MaxSends per SendWindow),
// in the database, so the limits hold across replicas.
type EmailOptions struct {
	// Sender delivers messages (required): [mail.NewSMTP] in production,
	// [mail.NewLogSender] in development.
	Sender mail.Sender
	// Templates render them; nil means [mail.DefaultTemplates].
	Templates *mail.Templates
	// LinkTTL is how long a link works (default 10 minutes).
	LinkTTL time.Duration
	// MaxSends messages may go to one address, and be asked for from one
	// client IP, per SendWindow (defaults 5 and 1 hour: limits.email_sends).
	MaxSends   int
	SendWindow time.Duration
	// SendTimeout bounds the preparation and delivery of one message
	// (default 30s).
	SendTimeout time.Duration
	// MaxInFlight caps the messages being prepared or sent at once
	// (default 64); beyond it a message is dropped and logged, and the
	// client still gets its usual answer.
	MaxInFlight int

	bg *background // set by emailRoutes
}

// Verification-token identifiers. A login link's identifier is the address
// itself (as in Auth.js); the others carry a prefix, so that a token made
// for one purpose never works for another.
const (
	resetPrefix  = "reset:"
	verifyPrefix = "verify:"
)

// emailRoutes registers the email-link routes and the login page's form.
func (s *Server) emailRoutes() {
	e := *s.opts.Email
	if e.Templates == nil {
		e.Templates = mail.DefaultTemplates()
	}
	if e.LinkTTL <= 0 {
		e.LinkTTL = 10 * time.Minute
	}
	if e.MaxSends <= 0 {
		e.MaxSends = 5
	}
	if e.SendWindow <= 0 {
		e.SendWindow = time.Hour
	}
	if e.SendTimeout <= 0 {
		e.SendTimeout = 30 * time.Second
	}
	if e.MaxInFlight <= 0 {
		e.MaxInFlight = 64
	}
	e.bg = newBackground(e.MaxInFlight)
	s.opts.Email = &e
	s.mux.HandleFunc("POST /login/email", s.handleEmailLogin)
	s.mux.HandleFunc("GET /login/email/callback", s.handleEmailCallback)
	s.loginParts = append(s.loginParts, s.emailLoginPart)
}

func (s *Server) emailLoginPart(r *http.Request, redirectTo string) template.HTML {
	return s.part("part-email.html", map[string]any{"RedirectTo": redirectTo})
}

// part renders a page section from web/.
func (s *Server) part(name string, data any) template.HTML {
	var b bytes.Buffer
	if err := pages.ExecuteTemplate(&b, name, data); err != nil {
		s.log.Error("render page part", "part", name, "err", err)
		return ""
	}
	return template.HTML(b.String())
}

// --- POST /login/email, GET /login/email/callback ---

type emailLoginInput struct {
	Email      string `json:"email"`
	RedirectTo string `json:"redirect_to"`
}

// handleEmailLogin answers 202 (JSON) or 303 to /login?sent=1 (form)
// whatever the address, and sends a sign-in link in the background.
func (s *Server) handleEmailLogin(w http.ResponseWriter, r *http.Request) {
	var in emailLoginInput
	if !s.readInput(w, r, &in) {
		return
	}
	email, ok := s.inputEmail(w, r, in.Email, errBadEmail)
	if !ok {
		return
	}
	redirectTo := s.safeRedirect(in.RedirectTo)
	s.sendLink(w, r, email, mail.KindLogin, "/login?sent=1", func(ctx context.Context) (string, error) {
		return s.newLink(ctx, email, email, redirectTo, "/login/email/callback")
	})
}

// handleEmailCallback signs in with a login link: the verified owner of
// the address, else the password sign-up that holds it unverified (which
// the link claims), else a new user with the address verified.
func (s *Server) handleEmailCallback(w http.ResponseWriter, r *http.Request) {
	outcome := "error"
	defer func() {
		s.opts.Metrics.Login("email", outcome)
		if outcome == "error" || outcome == "invalid_token" {
			s.audit(r, storage.AuditLoginFailure, "", "email", outcome)
		}
	}()
	email, token, ok := linkParams(r.URL.Query())
	if !ok {
		outcome = "invalid_token"
		s.writeError(w, r, errBadLink)
		return
	}
	vt, err := s.useLink(r.Context(), "", email, token) // a login link's identifier is the address
	if err != nil {
		if err == errBadLink {
			outcome = "invalid_token"
		}
		s.writeError(w, r, err)
		return
	}
	u, how, err := s.emailLinkUser(r.Context(), email)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	sess, err := s.newSession(r, u.ID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	outcome = how
	if how == linkClaimed {
		s.audit(r, storage.AuditEmailVerified, u.ID, "email", linkClaimed)
	}
	s.audit(r, storage.AuditLoginSuccess, u.ID, "email", how)
	http.SetCookie(w, s.auth.CreateSessionCookie(sess))
	http.Redirect(w, r, s.safeRedirect(vt.RedirectTo), http.StatusFound)
}

var errBadLink = newError(http.StatusBadRequest, auth.ErrInvalidRequest.Code,
	"this link is invalid, has expired or was already used; ask for a new one")

// Outcomes of an email-link sign-in (metrics).
const (
	linkExisting = "existing"
	linkClaimed  = "claimed"
	linkCreated  = "created"
)

// errNotClaimable: the holder of the address's password key no longer
// holds the address.
var errNotClaimable = errors.New("password key holder does not hold the address")

// emailLinkUser returns who a login link for email (whose mailbox the
// clicker controls) signs in:
//
//  1. the verified owner of the address;
//  2. else the user holding the password key email:<address> with the
//     address unverified (a password sign-up that was never confirmed):
//     the link proves the address, so the account becomes the mailbox
//     owner's. Its password is removed and its sessions end first,
//     because whoever signed up may not be the mailbox owner (the
//     "pre-hijacking" attack); the owner can set a new password at once;
//  3. else a new user with the address verified and a key email:<address>
//     without a password.
//
// Concurrent callers for one address end up with the same user: the
// verified-email uniqueness rule makes one creation win, and the others
// find it on their next turn.
func (s *Server) emailLinkUser(ctx context.Context, email string) (auth.User, string, error) {
	keyID := auth.KeyID("email", email)
	for range 3 {
		owner, err := s.store.GetUserByEmail(ctx, email)
		if err == nil {
			u, err := s.auth.GetUser(ctx, owner.ID)
			return u, linkExisting, err
		}
		if !errors.Is(err, storage.ErrNotFound) {
			return auth.User{}, "", fmt.Errorf("email link: %w", err)
		}
		k, err := s.store.GetKey(ctx, keyID)
		keyExists := err == nil
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return auth.User{}, "", fmt.Errorf("email link: %w", err)
		}
		if keyExists {
			u, err := s.claimAddress(ctx, k.UserID, email)
			switch {
			case err == nil:
				return u, linkClaimed, nil
			case errors.Is(err, storage.ErrAlreadyExists):
				continue // verified by someone else meanwhile: they own it
			case !errors.Is(err, errNotClaimable):
				return auth.User{}, "", fmt.Errorf("email link: %w", err)
			}
		}
		o := auth.CreateUserOptions{Attributes: map[string]any{"email": email, "email_verified": true}}
		if !keyExists {
			o.Key = &auth.KeySpec{ProviderID: "email", ProviderUserID: email}
		}
		u, err := s.auth.CreateUser(ctx, o)
		switch {
		case err == nil:
			return u, linkCreated, nil
		case errors.Is(err, auth.ErrConflict), errors.Is(err, auth.ErrDuplicateKeyID):
			continue // a concurrent link or sign-up won: look again
		default:
			return auth.User{}, "", err
		}
	}
	return auth.User{}, "", fmt.Errorf("email link: no stable owner of the address after 3 attempts")
}

// claimAddress makes userID the verified owner of email, which it holds
// unverified. Its password key's password is removed and all its sessions
// end before the address is marked verified, so that at no moment a
// verified account carries a password or session set by someone who never
// proved the address. It returns errNotClaimable when the user
// does not hold email (any more), and a storage.ErrAlreadyExists conflict
// when another user holds it verified.
func (s *Server) claimAddress(ctx context.Context, userID, email string) (auth.User, error) {
	u, err := s.store.GetUser(ctx, userID)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return auth.User{}, errNotClaimable
		}
		return auth.User{}, err
	}
	if u.Email == nil || *u.Email != email {
		return auth.User{}, errNotClaimable
	}
	if u.EmailVerifiedAt == nil {
		_, err := s.store.UpdateKey(ctx, auth.KeyID("email", email), func(k *storage.Key) error {
			if k.UserID != userID {
				return errNotClaimable
			}
			k.HashedPassword = nil
			k.UpdatedAt = s.now().UTC()
			return nil
		})
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return auth.User{}, err
		}
		if _, err := s.auth.InvalidateAllUserSessions(ctx, userID); err != nil {
			return auth.User{}, err
		}
	}
	if err := s.verifyEmail(ctx, userID, email); err != nil {
		return auth.User{}, err
	}
	return s.auth.GetUser(ctx, userID)
}

// verifyEmail marks email verified on userID in one transaction, unless the
// user no longer holds it (errNotClaimable). Another verified owner makes
// it fail with a storage.ErrAlreadyExists conflict and write nothing: the
// address is never taken from its owner.
func (s *Server) verifyEmail(ctx context.Context, userID, email string) error {
	now := s.now().UTC()
	_, err := s.store.UpdateUser(ctx, userID, func(u *storage.User) error {
		if u.Email == nil || *u.Email != email {
			return errNotClaimable
		}
		if u.EmailVerifiedAt == nil {
			u.EmailVerifiedAt = &now
			u.UpdatedAt = now
		}
		return nil
	})
	if errors.Is(err, storage.ErrNotFound) {
		return errNotClaimable
	}
	return err
}

// --- links and tokens ---

// newLinkToken returns a fresh link token: 32 random bytes, base64url.
func newLinkToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// validLinkToken reports whether token has the shape of newLinkToken's,
// so that junk never reaches the database.
func validLinkToken(token string) bool {
	if len(token) != 43 {
		return false
	}
	for i := 0; i < len(token); i++ {
		c := token[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// hashLinkToken is what the database keeps of a link token: its SHA-256.
func hashLinkToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// newLink stores a token for identifier (with redirectTo) and returns the
// link to path that carries it: {public_url}{path}?token=…&email=….
func (s *Server) newLink(ctx context.Context, identifier, email, redirectTo, path string) (string, error) {
	token := newLinkToken()
	now := s.now().UTC()
	err := s.store.CreateVerificationToken(ctx, storage.VerificationToken{
		Identifier: identifier, TokenHash: hashLinkToken(token),
		Expires: now.Add(s.opts.Email.LinkTTL), RedirectTo: redirectTo, CreatedAt: now,
	})
	if err != nil {
		return "", fmt.Errorf("store link token: %w", err)
	}
	q := url.Values{"token": {token}, "email": {email}}
	return strings.TrimRight(s.opts.PublicURL, "/") + path + "?" + q.Encode(), nil
}

// useLink consumes the token of a link form (identifier prefix + email).
func (s *Server) useLink(ctx context.Context, prefix, email, token string) (storage.VerificationToken, error) {
	if !validLinkToken(token) {
		return storage.VerificationToken{}, errBadLink
	}
	vt, err := s.store.UseVerificationToken(ctx, prefix+email, hashLinkToken(token), s.now().UTC())
	if errors.Is(err, storage.ErrNotFound) {
		return storage.VerificationToken{}, errBadLink
	}
	return vt, err
}

// --- background delivery ---

// background runs message deliveries after the HTTP answer, at most
// cap(slots) at once, and lets [Server.FlushEmail] wait for them.
type background struct {
	slots chan struct{}
	mu    sync.Mutex
	n     int
	idle  chan struct{} // closed while n == 0
}

func newBackground(max int) *background {
	idle := make(chan struct{})
	close(idle)
	return &background{slots: make(chan struct{}, max), idle: idle}
}

func (b *background) start() bool {
	select {
	case b.slots <- struct{}{}:
	default:
		return false
	}
	b.mu.Lock()
	if b.n == 0 {
		b.idle = make(chan struct{})
	}
	b.n++
	b.mu.Unlock()
	return true
}

func (b *background) done() {
	b.mu.Lock()
	b.n--
	if b.n == 0 {
		close(b.idle)
	}
	b.mu.Unlock()
	<-b.slots
}

// FlushEmail waits until the messages being prepared or sent in the
// background are done, or ctx ends. Tests use it; a shutdown may too.
func (s *Server) FlushEmail(ctx context.Context) error {
	if s.opts.Email == nil || s.opts.Email.bg == nil {
		return nil
	}
	b := s.opts.Email.bg
	b.mu.Lock()
	idle := b.idle
	b.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// mailLater prepares (link creates the token; "" sends nothing) and sends a
// message of kind to email in the background, with its own deadline, so
// that neither the database work of an existing account nor the SMTP
// dialogue shows in the answer's timing. Failures are logged without the
// link.
func (s *Server) mailLater(reqCtx context.Context, kind mail.Kind, link func(ctx context.Context) (string, error), email string) {
	e := s.opts.Email
	rid := requestID(reqCtx)
	if !e.bg.start() {
		s.log.Warn("email dropped: too many messages in flight", "kind", kind, "request_id", rid)
		return
	}
	go func() {
		defer e.bg.done()
		defer func() {
			if v := recover(); v != nil {
				s.log.Error("email: panic", "kind", kind, "request_id", rid, "panic", fmt.Sprint(v))
			}
		}()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(reqCtx), e.SendTimeout)
		defer cancel()
		l, err := link(ctx)
		if err != nil || l == "" {
			if err != nil {
				s.log.Warn("email not sent", "kind", kind, "request_id", rid, "err", err)
			}
			return
		}
		m, err := e.Templates.Render(kind, mail.Data{Email: email, Link: l, Site: s.site(), Expires: e.LinkTTL})
		if err == nil {
			err = e.Sender.Send(ctx, m)
		}
		if err != nil {
			s.log.Warn("email not sent", "kind", kind, "request_id", rid, "err", err)
			return
		}
		s.log.Info("email sent", "kind", kind, "request_id", rid)
	}()
}

// site is the broker's host name, for messages.
func (s *Server) site() string {
	if u, err := url.Parse(s.opts.PublicURL); err == nil && u.Host != "" {
		return u.Hostname()
	}
	return "the broker"
}

// --- rate limits ---

// clientBucket is the client IP for rate limits: the address, or its /64
// for IPv6 (one subscriber usually holds a whole /64).
func (s *Server) clientBucket(r *http.Request) string {
	ip := s.clientIP(r)
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return "unknown"
	}
	if a.Is6() && !a.Is4In6() {
		return netip.PrefixFrom(a, 64).Masked().String()
	}
	return a.String()
}

// hitLimit adds n to bucket and reports whether it is now past max, and
// in how long its window ends.
func (s *Server) hitLimit(ctx context.Context, bucket string, n, max int, window time.Duration) (over bool, retry time.Duration, err error) {
	now := s.now()
	c, reset, err := s.store.HitRateLimit(ctx, bucket, n, window, now)
	if err != nil {
		return false, 0, fmt.Errorf("rate limit: %w", err)
	}
	return c > max, reset.Sub(now), nil
}

// tooMany answers 429 RATE_LIMITED with Retry-After (whole seconds, at
// least 1).
func tooMany(w http.ResponseWriter, retry time.Duration, msg string) error {
	secs := max(int(math.Ceil(retry.Seconds())), 1)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return newError(http.StatusTooManyRequests, CodeRateLimited, msg)
}

// hitLimits counts one attempt in each bucket in turn, stopping at the
// first that is past max (over, with the time until its window ends) or
// that fails.
func (s *Server) hitLimits(ctx context.Context, buckets []string, max int, window time.Duration) (over bool, retry time.Duration, err error) {
	for _, b := range buckets {
		if over, retry, err = s.hitLimit(ctx, b, 1, max, window); err != nil || over {
			return over, retry, err
		}
	}
	return false, 0, nil
}

// limitSignups counts one sign-up attempt of r's client IP (signup-ip:,
// IPv6 per /64) and returns the 429 to answer past Options.MaxSignups (or
// the database's error).
func (s *Server) limitSignups(w http.ResponseWriter, r *http.Request) error {
	over, retry, err := s.hitLimit(r.Context(), "signup-ip:"+s.clientBucket(r), 1, s.opts.MaxSignups, s.opts.SignupWindow)
	if err == nil && over {
		err = tooMany(w, retry, "too many sign-ups from this network; try again later")
	}
	return err
}

// limitSends counts one message to email asked for by the client: per
// client IP first (so that one client cannot use up an address's budget
// beyond its own), then per address.
func (s *Server) limitSends(r *http.Request, email string) (over bool, retry time.Duration, err error) {
	e := s.opts.Email
	return s.hitLimits(r.Context(), []string{"mail-ip:" + s.clientBucket(r), "mail-to:" + email}, e.MaxSends, e.SendWindow)
}

// sendLink answers a request for a link to email (see answerSent; sentPage
// for forms) and mails it in the background (see mailLater), within the
// sending limits: past them it answers 429.
func (s *Server) sendLink(w http.ResponseWriter, r *http.Request, email string, kind mail.Kind, sentPage string, link func(ctx context.Context) (string, error)) {
	over, retry, err := s.limitSends(r, email)
	if err == nil && over {
		err = tooMany(w, retry, "too many emails asked for; try again later")
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.mailLater(r.Context(), kind, link, email)
	answerSent(w, r, sentPage)
}
