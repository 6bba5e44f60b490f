package webauthn

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/go-webauthn/webauthn/protocol"
	gowebauthn "github.com/go-webauthn/webauthn/webauthn"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/providersession"
	"github.com/brokerauth/broker/storage"
)

// ProviderID is the provider id of passkey keys ("webauthn:<credential id>")
// and flows.
const ProviderID = "webauthn"

// Flow purposes.
const (
	PurposeRegister = "webauthn-register"
	PurposeLogin    = "webauthn-login"
)

// Limits on what users type.
const (
	MaxUsernameLength = 64  // characters
	MaxEmailLength    = 254 // bytes (RFC 5321)
	MaxPasskeyName    = 64  // characters
	handleLength      = 64  // bytes of a WebAuthn user handle
)

// Errors besides the auth sentinels. Each is returned wrapped together with
// the auth error that gives its HTTP code, so errors.Is works with both.
var (
	// ErrNotFound: the user has no passkey with that id.
	ErrNotFound = errors.New("webauthn: no such passkey")
	// ErrLastSignInMethod: removing this passkey would leave the user no
	// way to sign in.
	ErrLastSignInMethod = errors.New("webauthn: the last way to sign in cannot be removed")
	// ErrCloned: the authenticator's signature counter went backwards (or
	// stood still above 0): it may be a clone. Wrapped with auth.ErrInvalidRequest.
	ErrCloned = errors.New("webauthn: signature counter did not increase (cloned authenticator?)")
	// ErrVerification: the authenticator's response did not verify
	// (challenge, origin, relying party, signature, user verification, ...).
	// Wrapped with auth.ErrInvalidRequest.
	ErrVerification = errors.New("webauthn: response did not verify")
	// ErrWrongUser: the ceremony was begun by another signed-in user, or for
	// another user than the one the passkey belongs to. Wrapped with
	// auth.ErrInvalidRequest.
	ErrWrongUser = errors.New("webauthn: ceremony belongs to another user")
)

// Config configures the relying party (webauthn.* in the broker's config).
type Config struct {
	// RPID is the relying party id, a domain ("example.com", "localhost").
	RPID string
	// RPName is shown by the browser while registering.
	RPName string
	// Origins are the origins the ceremonies may run on
	// ("https://auth.example.com").
	Origins []string
	// UserVerification is "required" (the default), "preferred" or
	// "discouraged".
	UserVerification string
}

// RelyingParty runs passkey ceremonies for an [auth.Auth]. It is safe for
// concurrent use.
type RelyingParty struct {
	wa    *gowebauthn.WebAuthn
	auth  *auth.Auth
	store storage.Store
	flows *providersession.FlowStore
	uv    protocol.UserVerificationRequirement
}

// New returns a RelyingParty. flows keeps the ceremonies' state.
func New(cfg Config, a *auth.Auth, flows *providersession.FlowStore) (*RelyingParty, error) {
	if a == nil || flows == nil {
		return nil, errors.New("webauthn: New needs an Auth and a FlowStore")
	}
	uv := protocol.VerificationRequired
	switch cfg.UserVerification {
	case "", "required":
	case "preferred":
		uv = protocol.VerificationPreferred
	case "discouraged":
		uv = protocol.VerificationDiscouraged
	default:
		return nil, fmt.Errorf("webauthn: user verification %q: want required, preferred or discouraged", cfg.UserVerification)
	}
	if cfg.RPName == "" {
		cfg.RPName = cfg.RPID
	}
	rk := true
	wa, err := gowebauthn.New(&gowebauthn.Config{
		RPID:          cfg.RPID,
		RPDisplayName: cfg.RPName,
		RPOrigins:     cfg.Origins,
		// "none": the broker does not judge authenticator makes, and
		// asking for attestation only adds a privacy prompt.
		AttestationPreference: protocol.PreferNoAttestation,
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			RequireResidentKey: &rk,
			ResidentKey:        protocol.ResidentKeyRequirementRequired,
			UserVerification:   uv,
		},
		// The browser's timeout matches the flow's lifetime; the flow
		// cookie's expiry is what the server enforces.
		Timeouts: gowebauthn.TimeoutsConfig{
			Login:        gowebauthn.TimeoutConfig{Timeout: providersession.PasskeyTTL, TimeoutUVD: providersession.PasskeyTTL},
			Registration: gowebauthn.TimeoutConfig{Timeout: providersession.PasskeyTTL, TimeoutUVD: providersession.PasskeyTTL},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("webauthn: %w", err)
	}
	return &RelyingParty{wa: wa, auth: a, store: a.Store(), flows: flows, uv: uv}, nil
}

// Ceremony is a begun registration or login: what the page needs to call
// the browser, and the flow cookie to set.
type Ceremony struct {
	// Options is go-webauthn's *protocol.CredentialCreation or
	// *protocol.CredentialAssertion ({"publicKey": …, "mediation"?: …}).
	Options any
	// State is the flow's handle; Finish needs it back.
	State string
	// Cookie holds the sealed ceremony state; set it on the response.
	Cookie *http.Cookie
}

// MarshalJSON renders the options with the state beside them:
// {"publicKey": {…}, "state": "…"} (and "mediation" for conditional UI).
func (c Ceremony) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(c.Options)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	st, _ := json.Marshal(c.State)
	m["state"] = st
	return json.Marshal(m)
}

// begin seals a flow holding session (go-webauthn's SessionData).
func (rp *RelyingParty) begin(f providersession.Flow, session *gowebauthn.SessionData, options any) (Ceremony, error) {
	sd, err := json.Marshal(session)
	if err != nil {
		return Ceremony{}, fmt.Errorf("webauthn: encode session: %w", err)
	}
	f.Provider = ProviderID
	f.WebAuthn = sd
	f, cookie, err := rp.flows.Begin(f, providersession.PasskeyTTL)
	if err != nil {
		return Ceremony{}, fmt.Errorf("webauthn: %w", err)
	}
	return Ceremony{Options: options, State: f.State, Cookie: cookie}, nil
}

// take finishes the flow of state and decodes its SessionData. The cookie,
// when not nil, deletes the flow cookie and should be sent also on error.
func (rp *RelyingParty) take(ctx context.Context, r *http.Request, purpose, state string) (providersession.Flow, gowebauthn.SessionData, *http.Cookie, error) {
	var sd gowebauthn.SessionData
	f, del, err := rp.flows.Take(ctx, r, ProviderID, purpose, state)
	if err != nil {
		return f, sd, del, err
	}
	if err := json.Unmarshal(f.WebAuthn, &sd); err != nil {
		return f, sd, del, fmt.Errorf("webauthn: decode session: %v: %w", err, auth.ErrInvalidRequest)
	}
	return f, sd, del, nil
}

// verifyError translates a go-webauthn error. go-webauthn's WithDetails
// copies its sentinels, so errors.Is does not work on them: read the type
// with errors.As. Errors that already carry an auth code (from our own
// lookups inside go-webauthn's callbacks) keep it.
func verifyError(op string, err error) error {
	if err == nil {
		return nil
	}
	var unknown *protocol.ErrorUnknownCredential
	if errors.As(err, &unknown) {
		return fmt.Errorf("webauthn: %s: unknown credential: %w", op, auth.ErrInvalidKeyID)
	}
	var ae *auth.Error
	if errors.As(err, &ae) {
		return fmt.Errorf("webauthn: %s: %w", op, err)
	}
	var pe *protocol.Error
	if errors.As(err, &pe) {
		detail := pe.Details
		if pe.DevInfo != "" {
			detail += " (" + pe.DevInfo + ")"
		}
		return fmt.Errorf("webauthn: %s: %s: %s: %w: %w", op, pe.Type, detail, ErrVerification, auth.ErrInvalidRequest)
	}
	return fmt.Errorf("webauthn: %s: %w", op, err)
}

// parseError translates a failure to parse an authenticator's response:
// whatever go-webauthn reports (a protocol error, or a bare JSON, base64
// or CBOR error), it is the input's fault, never the broker's.
func parseError(op string, err error) error {
	if e := verifyError(op, err); auth.CodeOf(e) != "UNKNOWN_ERROR" {
		return e
	}
	return fmt.Errorf("webauthn: %s: %v: %w: %w", op, err, ErrVerification, auth.ErrInvalidRequest)
}

// InputError is input the user can correct (a username with spaces, a
// passkey name that is too long). Message is safe to show; the error
// matches [auth.ErrInvalidRequest].
type InputError struct{ Message string }

func (e *InputError) Error() string { return "webauthn: " + e.Message }

// Unwrap returns auth.ErrInvalidRequest.
func (e *InputError) Unwrap() error { return auth.ErrInvalidRequest }

// invalid returns an [InputError].
func invalid(format string, args ...any) error {
	return &InputError{Message: fmt.Sprintf(format, args...)}
}

// EncodeID renders a credential id as the API shows it: base64url without
// padding.
func EncodeID(id []byte) string { return base64.RawURLEncoding.EncodeToString(id) }

// DecodeID parses a credential id of the API. It accepts padded base64url too.
func DecodeID(s string) ([]byte, bool) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) == 0 || len(b) > 1023 {
		return nil, false
	}
	return b, true
}

// KeyID returns the Lucia key id of a passkey: "webauthn:<base64url id>".
func KeyID(credentialID []byte) string { return auth.KeyID(ProviderID, EncodeID(credentialID)) }

// CleanUsername trims a username and checks it: 1 to 64 characters, no
// spaces or control characters. Usernames are unique case-insensitively.
func CleanUsername(s string) (string, error) {
	s = strings.TrimSpace(s)
	n := utf8.RuneCountInString(s)
	if n == 0 {
		return "", invalid("a username is required")
	}
	if n > MaxUsernameLength || !utf8.ValidString(s) {
		return "", invalid("the username is longer than %d characters", MaxUsernameLength)
	}
	for _, c := range s {
		if unicode.IsSpace(c) || unicode.IsControl(c) || c == unicode.ReplacementChar {
			return "", invalid("the username may not contain spaces or control characters")
		}
	}
	return s, nil
}

// cleanEmail trims and lower-cases an optional email address and checks its
// shape (one @, something on either side, no spaces).
func cleanEmail(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return "", nil
	}
	local, domain, ok := strings.Cut(s, "@")
	if !ok || local == "" || domain == "" || strings.Contains(domain, "@") || len(s) > MaxEmailLength ||
		strings.ContainsFunc(s, func(c rune) bool { return unicode.IsSpace(c) || unicode.IsControl(c) }) {
		return "", invalid("the email address is not valid")
	}
	return s, nil
}

// CleanPasskeyName trims a passkey's label and checks it: at most 64
// characters, no control characters. Empty is allowed (a default is used).
func CleanPasskeyName(s string) (string, error) {
	s = strings.TrimSpace(s)
	if !utf8.ValidString(s) || utf8.RuneCountInString(s) > MaxPasskeyName {
		return "", invalid("the passkey name is longer than %d characters", MaxPasskeyName)
	}
	if strings.ContainsFunc(s, unicode.IsControl) {
		return "", invalid("the passkey name may not contain control characters")
	}
	return s, nil
}

// newHandle returns a fresh random user handle.
func newHandle() []byte {
	b := make([]byte, handleLength)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return b
}
