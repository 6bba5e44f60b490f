package webauthn

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/go-webauthn/webauthn/protocol"
	gowebauthn "github.com/go-webauthn/webauthn/webauthn"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/providersession"
	"github.com/brokerauth/broker/storage"
)

// LoginRequest describes a login to begin.
type LoginRequest struct {
	// Username names the user (case-insensitively); empty begins a
	// usernameless login (discoverable credentials).
	Username string
	// Conditional asks for conditional mediation (autofill on the username
	// field). The options then say "mediation": "conditional".
	Conditional bool
	// RedirectTo is where the page goes once signed in; the caller checks it.
	RedirectTo string
	// Reauth, when not nil, makes this login re-authenticate that session
	// (see [auth.Auth.Reauthenticate]) instead of starting a new one; the
	// passkey must then belong to the session's user.
	Reauth *auth.Session
}

// BeginLogin begins a login. With a username, the options allow exactly
// that user's passkeys; a name without passkeys is [auth.ErrInvalidKeyID].
func (rp *RelyingParty) BeginLogin(ctx context.Context, req LoginRequest) (Ceremony, error) {
	f := providersession.Flow{Purpose: PurposeLogin, RedirectTo: req.RedirectTo}
	if req.Reauth != nil {
		f.UserID, f.SessionID = req.Reauth.UserID, req.Reauth.ID
	}
	mediation := protocol.MediationDefault
	if req.Conditional {
		mediation = protocol.MediationConditional
	}
	var (
		assertion *protocol.CredentialAssertion
		session   *gowebauthn.SessionData
		err       error
	)
	if req.Username == "" {
		assertion, session, err = rp.wa.BeginDiscoverableMediatedLogin(mediation)
	} else {
		name, cerr := CleanUsername(req.Username)
		if cerr != nil {
			return Ceremony{}, cerr
		}
		su, gerr := rp.store.GetUserByUsername(ctx, name)
		if errors.Is(gerr, storage.ErrNotFound) {
			return Ceremony{}, fmt.Errorf("webauthn: begin login: no user %q: %w", name, auth.ErrInvalidKeyID)
		} else if gerr != nil {
			return Ceremony{}, fmt.Errorf("webauthn: begin login: %w", gerr)
		}
		u, lerr := rp.loadUser(ctx, su, nil)
		if lerr != nil {
			return Ceremony{}, lerr
		}
		if len(u.handle) == 0 || len(u.creds) == 0 {
			return Ceremony{}, fmt.Errorf("webauthn: begin login: user %q has no passkey: %w", name, auth.ErrInvalidKeyID)
		}
		assertion, session, err = rp.wa.BeginMediatedLogin(u, mediation)
	}
	if err != nil {
		return Ceremony{}, fmt.Errorf("webauthn: begin login: %w", err)
	}
	return rp.begin(f, session, assertion)
}

// LoginResponse is what the page sends back to finish a login.
type LoginResponse struct {
	// State is the [Ceremony.State] of the begun login.
	State string
	// Credential is PublicKeyCredential.toJSON() of navigator.credentials.get().
	Credential []byte
	// Session is the request's signed-in session, or nil; a
	// re-authentication needs the session it began with.
	Session *auth.Session
}

// Login is a finished login. The caller creates the session (it knows the
// client's address and user agent), unless Reauthenticated.
type Login struct {
	User    auth.User
	Passkey Passkey
	// RedirectTo is the login's redirect target, as given to BeginLogin.
	RedirectTo string
	// Reauthenticated is set when the login re-authenticated the request's
	// session (LoginRequest.Reauth) rather than asking for a new one.
	Reauthenticated bool
}

// FinishLogin verifies an assertion against the ceremony of resp.State,
// records the passkey's use (sign count, backup state, last used) and
// returns whom it signs in. Errors: an unknown credential, or one whose
// Lucia key is gone, is [auth.ErrInvalidKeyID]; a response that does not
// verify [auth.ErrInvalidRequest] with [ErrVerification]; a counter that
// did not increase [auth.ErrInvalidRequest] with [ErrCloned]; a used,
// expired or unknown ceremony [auth.ErrInvalidRequest] with an ErrFlow*
// reason. The returned cookie, when not nil, deletes the flow cookie; send
// it also when there is an error.
func (rp *RelyingParty) FinishLogin(ctx context.Context, r *http.Request, resp LoginResponse) (Login, *http.Cookie, error) {
	f, sd, del, err := rp.take(ctx, r, PurposeLogin, resp.State)
	if err != nil {
		return Login{}, del, err
	}
	l, err := rp.finishLogin(ctx, f, sd, resp)
	return l, del, err
}

func (rp *RelyingParty) finishLogin(ctx context.Context, f providersession.Flow, sd gowebauthn.SessionData, resp LoginResponse) (Login, error) {
	parsed, err := protocol.ParseCredentialRequestResponseBytes(resp.Credential)
	if err != nil {
		return Login{}, parseError("parse assertion", err)
	}
	var (
		owner   *user
		cred    *gowebauthn.Credential
		lookErr error // a store failure inside go-webauthn's callback
	)
	if len(sd.UserID) == 0 {
		// Usernameless: the credential and its user handle say who it is.
		handler := func(rawID, userHandle []byte) (gowebauthn.User, error) {
			owner, lookErr = rp.discover(ctx, rawID, userHandle)
			if lookErr != nil {
				return nil, lookErr
			}
			return owner, nil
		}
		_, cred, err = rp.wa.ValidatePasskeyLogin(handler, sd, parsed)
	} else {
		su, gerr := rp.store.GetUserByWebAuthnHandle(ctx, sd.UserID)
		if gerr != nil {
			return Login{}, notFound("login", gerr, auth.ErrInvalidKeyID)
		}
		if owner, err = rp.loadUser(ctx, su, nil); err != nil {
			return Login{}, err
		}
		cred, err = rp.wa.ValidateLogin(owner, sd, parsed)
	}
	if lookErr != nil && auth.CodeOf(lookErr) == "UNKNOWN_ERROR" {
		return Login{}, lookErr // the database, not the user
	}
	if err != nil {
		return Login{}, verifyError("login", err)
	}
	if cred.Authenticator.CloneWarning {
		return Login{}, fmt.Errorf("webauthn: login: credential %s: %w: %w", EncodeID(cred.ID), ErrCloned, auth.ErrInvalidRequest)
	}
	key, err := rp.auth.UseKey(ctx, ProviderID, EncodeID(cred.ID), nil)
	if err != nil {
		return Login{}, fmt.Errorf("webauthn: login: %w", err)
	}
	if key.UserID != owner.u.ID {
		return Login{}, fmt.Errorf("webauthn: login: key of another user: %w", auth.ErrInvalidKeyID)
	}
	a, err := rp.store.UpdateAuthenticatorCounter(ctx, cred.ID, cred.Authenticator.SignCount, cred.Flags.BackupState, rp.auth.Now().UTC())
	if errors.Is(err, storage.ErrConsumed) {
		// Another login used this counter value meanwhile: the same
		// assertion counter twice, as a clone would present it.
		return Login{}, fmt.Errorf("webauthn: login: credential %s: %w: %w", EncodeID(cred.ID), ErrCloned, auth.ErrInvalidRequest)
	}
	if err != nil {
		return Login{}, notFound("login: record use", err, auth.ErrInvalidKeyID)
	}
	out := Login{Passkey: toPasskey(a), RedirectTo: f.RedirectTo}
	if f.SessionID != "" {
		if resp.Session == nil || resp.Session.ID != f.SessionID || owner.u.ID != f.UserID {
			return Login{}, fmt.Errorf("webauthn: re-authenticate: %w: %w", ErrWrongUser, auth.ErrInvalidRequest)
		}
		if err := rp.auth.Reauthenticate(ctx, f.SessionID); err != nil {
			return Login{}, err
		}
		out.Reauthenticated = true
	}
	if out.User, err = rp.auth.GetUser(ctx, owner.u.ID); err != nil {
		return Login{}, err
	}
	return out, nil
}

// discover finds the user of a discoverable credential: the credential must
// exist and belong to the user with that handle.
func (rp *RelyingParty) discover(ctx context.Context, rawID, userHandle []byte) (*user, error) {
	a, err := rp.store.GetAuthenticator(ctx, rawID)
	if err != nil {
		return nil, notFound("login", err, auth.ErrInvalidKeyID)
	}
	su, err := rp.store.GetUserByWebAuthnHandle(ctx, userHandle)
	if err != nil {
		return nil, notFound("login", err, auth.ErrInvalidKeyID)
	}
	if a.UserID != su.ID {
		return nil, fmt.Errorf("webauthn: login: credential and user handle disagree: %w", auth.ErrInvalidKeyID)
	}
	return rp.loadUser(ctx, su, nil)
}

// notFound maps storage.ErrNotFound to sentinel and wraps anything else.
func notFound(op string, err error, sentinel *auth.Error) error {
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("webauthn: %s: %w", op, sentinel)
	}
	return fmt.Errorf("webauthn: %s: %w", op, err)
}
