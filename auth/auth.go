package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/brokerauth/broker/storage"
)

// Defaults for [Options].
const (
	DefaultActivePeriod = 24 * time.Hour
	DefaultIdlePeriod   = 14 * 24 * time.Hour
	DefaultCookieName   = "auth_session"
	// DefaultTouchInterval is how stale a session's last-seen time may get
	// before validation writes it again.
	DefaultTouchInterval = 5 * time.Minute
	// RecentAuthWindow is how long after sign-in (or re-authentication) a
	// session may do sensitive things: link a provider, add or remove a
	// passkey, change a password, delete the account.
	RecentAuthWindow = 10 * time.Minute
)

// CookieOptions shape the session cookie.
type CookieOptions struct {
	Name   string // default "auth_session"
	Domain string // empty: host-only cookie
	Path   string // default "/"
	Secure bool   // set when the public URL is https
}

// Options configure an [Auth]. The zero value is usable: Lucia's defaults.
type Options struct {
	// ActivePeriod is how long a new or reset session stays active (default 24h).
	ActivePeriod time.Duration
	// IdlePeriod is how long after its active period a session can still be
	// reset (default 14 days). idle_expires = active_expires + IdlePeriod.
	IdlePeriod time.Duration
	Cookie     CookieOptions
	// Now is the clock; nil means time.Now. Tests inject one.
	Now func() time.Time
	// Passwords hashes key passwords. Nil means argon2id with OWASP's
	// parameters (DefaultArgon2Params) and a concurrency cap of GOMAXPROCS.
	Passwords *PasswordHasher
	// UserAttributes shapes User.Attributes from the stored user (Lucia's
	// getUserAttributes). Nil copies the stored attributes. It must not
	// modify the user it is given, whose attribute map the session cache
	// may share between calls; it may return that map.
	UserAttributes func(storage.User) map[string]any
	// SessionAttributes shapes Session.Attributes from the stored session
	// (Lucia's getSessionAttributes). Nil copies the stored attributes.
	// It must not modify the session it is given (see UserAttributes).
	SessionAttributes func(storage.Session) map[string]any
	// Origin is the broker's own origin ("https://auth.example.com"), trusted
	// by ValidateRequestOrigin. Empty means the request's own host.
	Origin string
	// AllowedOrigins are further trusted origins (scheme://host[:port]).
	AllowedOrigins []string
	// OriginPatterns are trusted origins with a wildcard host,
	// "https://*.example.com": any subdomain of example.com (whole labels
	// only) with that scheme and port.
	OriginPatterns []string
	// AllowedSubdomains are subdomain labels of Origin's host that are
	// trusted too ("app" trusts app.example.com); "*" trusts every subdomain.
	AllowedSubdomains []string
	// TouchInterval coalesces last-seen writes: ValidateSession writes an
	// active session's last-seen time only when it is older than this
	// (default 5m). A reset always writes.
	TouchInterval time.Duration
	// CacheSize turns on the in-process cache of validated sessions and
	// bounds it to about this many sessions (least recently used go
	// first). Zero, the default, leaves it off: every validation reads
	// the database. See [Auth.ValidateSession].
	CacheSize int
	// CacheTTL is how long a cached session is used before validation
	// reads the database again (default DefaultCacheTTL). Invalidations
	// normally remove entries long before; the TTL bounds how long a
	// change that bypassed them (a lost notification, a row edited by
	// hand) can go unseen. A session whose shared view
	// ([Auth.CachedSessionView]) is in use is re-read in the background
	// from three quarters of the TTL, so that it stays cached; its snapshot
	// is never used past the TTL all the same.
	CacheTTL time.Duration
	// Invalidations, when not nil, publishes every change that a cached
	// session in another process would otherwise hide: ended sessions,
	// deleted or changed users, re-authentication. This process's own cache
	// is always updated at once. The receiving side calls
	// [Auth.ApplyInvalidation] and [Auth.SetInvalidationFeed].
	Invalidations Invalidations
}

// Auth is the Lucia-style core: users, keys and sessions over a
// [storage.Store]. It is safe for concurrent use.
type Auth struct {
	store   storage.Store
	opts    Options
	now     func() time.Time
	pw      *PasswordHasher
	origins originPolicy
	cop     *http.CrossOriginProtection
	cache   *sessionCache // nil when Options.CacheSize is 0
	// refreshes holds a token per background refresh in flight (see
	// refreshAhead); refreshed, when set (tests), runs after each.
	refreshes chan struct{}
	refreshed func()
}

// New returns an Auth over store. It fails only on malformed options
// (an origin that is not an origin).
func New(store storage.Store, opts Options) (*Auth, error) {
	if store == nil {
		return nil, errors.New("auth: nil store")
	}
	if opts.ActivePeriod <= 0 {
		opts.ActivePeriod = DefaultActivePeriod
	}
	if opts.IdlePeriod <= 0 {
		opts.IdlePeriod = DefaultIdlePeriod
	}
	if opts.Cookie.Name == "" {
		opts.Cookie.Name = DefaultCookieName
	}
	if opts.Cookie.Path == "" {
		opts.Cookie.Path = "/"
	}
	if opts.TouchInterval <= 0 {
		opts.TouchInterval = DefaultTouchInterval
	}
	if opts.CacheSize < 0 {
		return nil, errors.New("auth: negative cache size")
	}
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = DefaultCacheTTL
	}
	a := &Auth{store: store, opts: opts, now: opts.Now, pw: opts.Passwords}
	if opts.CacheSize > 0 {
		a.cache = newSessionCache(opts.CacheSize, opts.CacheTTL)
		a.refreshes = make(chan struct{}, maxRefreshes)
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.pw == nil {
		a.pw = NewPasswordHasher(DefaultArgon2Params(), 0)
	}
	p, err := newOriginPolicy(opts.Origin, opts.AllowedOrigins, opts.AllowedSubdomains, opts.OriginPatterns)
	if err != nil {
		return nil, err
	}
	a.origins = p
	a.cop = a.CrossOriginProtection()
	return a, nil
}

// Store returns the store the Auth works on, for the layers above it
// (provider sessions, passkeys) that need more than the Lucia API.
func (a *Auth) Store() storage.Store { return a.store }

// Passwords returns the password hasher.
func (a *Auth) Passwords() *PasswordHasher { return a.pw }

// Now returns the current time on the Auth's clock.
func (a *Auth) Now() time.Time { return a.now() }

// Options returns the options in effect, defaults filled in.
func (a *Auth) Options() Options { return a.opts }

// User is a user as callers see it. Absent optional values are nil, which
// JSON renders as null.
type User struct {
	ID              string         `json:"id"`
	Username        *string        `json:"username"`
	Email           *string        `json:"email"`
	EmailVerified   bool           `json:"email_verified"`
	Name            *string        `json:"name"`
	Image           *string        `json:"image"`
	Attributes      map[string]any `json:"attributes"`
	EmailVerifiedAt *time.Time     `json:"-"`
	CreatedAt       time.Time      `json:"-"`
	UpdatedAt       time.Time      `json:"-"`
}

func (a *Auth) transformUser(u storage.User) User {
	attrs := u.Attributes
	if a.opts.UserAttributes != nil {
		attrs = a.opts.UserAttributes(u)
	}
	if attrs == nil {
		attrs = map[string]any{}
	}
	return User{
		ID:              u.ID,
		Username:        u.Username,
		Email:           u.Email,
		EmailVerified:   u.EmailVerifiedAt != nil,
		Name:            u.Name,
		Image:           u.Image,
		Attributes:      attrs,
		EmailVerifiedAt: u.EmailVerifiedAt,
		CreatedAt:       u.CreatedAt,
		UpdatedAt:       u.UpdatedAt,
	}
}

// KeySpec describes a key to create with a new user.
type KeySpec struct {
	ProviderID     string
	ProviderUserID string
	// Password, when not nil, is hashed and stored with the key.
	Password *string
	// Tokens, when not nil, are OAuth tokens stored with the key, already
	// encrypted by the caller (see providersession.TokenVault).
	Tokens *KeyTokens
}

// KeyTokens are a key's OAuth tokens as they are to be stored: the caller
// encrypts the token strings; Expiry, Scope and TokenType are stored plain.
type KeyTokens struct {
	AccessToken  *string
	RefreshToken *string
	IDToken      *string
	Expiry       *time.Time
	Scope        *string
	TokenType    *string
}

// Apply copies t onto a stored key.
func (t *KeyTokens) Apply(k *storage.Key) {
	if t == nil {
		return
	}
	k.AccessToken, k.RefreshToken, k.IDToken = t.AccessToken, t.RefreshToken, t.IDToken
	k.TokenExpiry, k.Scope, k.TokenType = t.Expiry, t.Scope, t.TokenType
}

// CreateUserOptions describe a new user (Lucia's createUser options).
type CreateUserOptions struct {
	// UserID is a custom user id; empty generates 15 characters of [a-z0-9].
	UserID string
	// Key, when not nil, is created with the user in one transaction.
	Key *KeySpec
	// Attributes hold the user's fields. The first-class ones are
	// "username", "email", "email_verified" (bool) or "email_verified_at"
	// (time.Time), "name" and "image"; every other entry is stored in the
	// user's JSON attributes.
	Attributes map[string]any
}

// CreateUser creates a user and, if given, its first key, in one
// transaction. It returns ErrDuplicateKeyID when the key exists, and an error
// matching ErrConflict when the username or verified email is taken.
func (a *Auth) CreateUser(ctx context.Context, o CreateUserOptions) (User, error) {
	now := a.now().UTC()
	id := o.UserID
	if id == "" {
		id = GenerateUserID()
	}
	u := storage.User{ID: id, CreatedAt: now, UpdatedAt: now}
	if err := applyUserAttributes(&u, o.Attributes, now); err != nil {
		return User{}, err
	}
	var key *storage.Key
	if o.Key != nil {
		k, err := a.newKey(ctx, id, o.Key.ProviderID, o.Key.ProviderUserID, o.Key.Password, now)
		if err != nil {
			return User{}, err
		}
		o.Key.Tokens.Apply(&k)
		key = &k
	}
	if err := a.store.CreateUser(ctx, u, key); err != nil {
		return User{}, mapConflict("create user", err)
	}
	return a.transformUser(u), nil
}

// GetUser returns the user with userID, or ErrInvalidUserID.
func (a *Auth) GetUser(ctx context.Context, userID string) (User, error) {
	u, err := a.store.GetUser(ctx, userID)
	if err != nil {
		return User{}, notFound(err, ErrInvalidUserID, "get user")
	}
	return a.transformUser(u), nil
}

// UpdateUserAttributes changes some fields of a user (Lucia's partial
// update): keys as in [CreateUserOptions.Attributes], a nil value clears the
// field or removes the attribute. Changing "email" clears its verification
// unless "email_verified" is given too. It returns ErrInvalidUserID for an
// unknown user, ErrInvalidRequest for a value of the wrong type, and an
// error matching ErrConflict when a unique field collides; on any error
// nothing is written.
func (a *Auth) UpdateUserAttributes(ctx context.Context, userID string, attrs map[string]any) (User, error) {
	now := a.now().UTC()
	u, err := a.store.UpdateUser(ctx, userID, func(u *storage.User) error {
		if err := applyUserAttributes(u, attrs, now); err != nil {
			return err
		}
		u.UpdatedAt = now
		return nil
	})
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return User{}, fmt.Errorf("update user %q: %w", userID, ErrInvalidUserID)
		}
		return User{}, mapConflict("update user", err)
	}
	// Cached sessions carry the user (and claims are computed from it).
	if err := a.invalidate(ctx, Invalidation{UserID: userID}); err != nil {
		return User{}, fmt.Errorf("update user: publish: %w", err)
	}
	return a.transformUser(u), nil
}

// DeleteUser deletes a user with its keys, sessions and passkeys. It
// succeeds whatever the user id.
func (a *Auth) DeleteUser(ctx context.Context, userID string) error {
	if err := a.store.DeleteUser(ctx, userID); err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	if err := a.invalidate(ctx, Invalidation{UserID: userID}); err != nil {
		return fmt.Errorf("delete user: publish: %w", err)
	}
	return nil
}

// applyUserAttributes writes Lucia-style attributes onto u.
func applyUserAttributes(u *storage.User, attrs map[string]any, now time.Time) error {
	if u.Attributes == nil {
		u.Attributes = map[string]any{}
	}
	_, verifiedGiven := attrs["email_verified"]
	_, verifiedAtGiven := attrs["email_verified_at"]
	for k, v := range attrs {
		var err error
		switch k {
		case "username":
			u.Username, err = optString(k, v)
		case "email":
			var e *string
			e, err = optString(k, v)
			if err == nil && e != nil {
				lower := strings.ToLower(strings.TrimSpace(*e))
				e = &lower
			}
			if err == nil && !verifiedGiven && !verifiedAtGiven && !sameString(u.Email, e) {
				u.EmailVerifiedAt = nil
			}
			u.Email = e
		case "email_verified":
			switch b := v.(type) {
			case nil:
				u.EmailVerifiedAt = nil
			case bool:
				if !b {
					u.EmailVerifiedAt = nil
				} else if u.EmailVerifiedAt == nil {
					t := now
					u.EmailVerifiedAt = &t
				}
			default:
				err = fmt.Errorf("attribute %q: want a boolean: %w", k, ErrInvalidRequest)
			}
		case "email_verified_at":
			switch t := v.(type) {
			case nil:
				u.EmailVerifiedAt = nil
			case time.Time:
				t = t.UTC()
				u.EmailVerifiedAt = &t
			case *time.Time:
				u.EmailVerifiedAt = t
			default:
				err = fmt.Errorf("attribute %q: want a time: %w", k, ErrInvalidRequest)
			}
		case "name":
			u.Name, err = optString(k, v)
		case "image":
			u.Image, err = optString(k, v)
		case "id", "created_at", "updated_at":
			err = fmt.Errorf("attribute %q cannot be set: %w", k, ErrInvalidRequest)
		default:
			if v == nil {
				delete(u.Attributes, k)
			} else {
				u.Attributes[k] = v
			}
		}
		if err != nil {
			return err
		}
	}
	if u.Username != nil && *u.Username == "" {
		u.Username = nil
	}
	if u.Email == nil || *u.Email == "" {
		u.Email = nil
		u.EmailVerifiedAt = nil
	}
	return nil
}

func optString(name string, v any) (*string, error) {
	switch s := v.(type) {
	case nil:
		return nil, nil
	case string:
		return &s, nil
	case *string:
		return s, nil
	default:
		return nil, fmt.Errorf("attribute %q: want a string: %w", name, ErrInvalidRequest)
	}
}

func sameString(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// ErrConflict is a uniqueness conflict other than a duplicate key: a
// username or a verified email that belongs to another user. HTTP 409.
var ErrConflict = &Error{"CONFLICT", "already in use"}

// mapConflict translates storage conflicts into auth errors; the storage
// error stays reachable through errors.As for its field.
func mapConflict(op string, err error) error {
	var ce *storage.ConflictError
	if errors.As(err, &ce) {
		if ce.Field == storage.ConflictKey {
			return fmt.Errorf("%s: %w: %w", op, ErrDuplicateKeyID, err)
		}
		return fmt.Errorf("%s: %w: %w", op, ErrConflict, err)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%s: %w", op, ErrInvalidUserID)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// notFound turns storage.ErrNotFound into sentinel and wraps anything else.
func notFound(err error, sentinel *Error, op string) error {
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%s: %w", op, sentinel)
	}
	return fmt.Errorf("%s: %w", op, err)
}
