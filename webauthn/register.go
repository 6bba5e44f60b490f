package webauthn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	gowebauthn "github.com/go-webauthn/webauthn/webauthn"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/providersession"
	"github.com/brokerauth/broker/storage"
)

// Registration modes, kept in the flow's Data["mode"].
const (
	modeSignUp = "signup"
	modeAdd    = "add"
)

// NewAccount describes an account to create with its first passkey.
type NewAccount struct {
	// Username is the new user's unique username (required).
	Username string
	// Email is optional; it is stored unverified.
	Email string
	// RedirectTo is where the page goes once signed up; the caller checks it.
	RedirectTo string
}

// BeginSignUp begins the registration of a passkey for a new account. It
// writes nothing: the username and email travel in the sealed flow until
// [RelyingParty.FinishRegistration] creates the user. A username that is
// taken already answers [auth.ErrConflict] here (and again at the finish,
// should someone take it meanwhile).
func (rp *RelyingParty) BeginSignUp(ctx context.Context, acct NewAccount) (Ceremony, error) {
	name, err := CleanUsername(acct.Username)
	if err != nil {
		return Ceremony{}, err
	}
	email, err := cleanEmail(acct.Email)
	if err != nil {
		return Ceremony{}, err
	}
	switch _, err := rp.store.GetUserByUsername(ctx, name); {
	case err == nil:
		return Ceremony{}, fmt.Errorf("webauthn: sign up: username %q is taken: %w", name, auth.ErrConflict)
	case !errors.Is(err, storage.ErrNotFound):
		return Ceremony{}, fmt.Errorf("webauthn: sign up: %w", err)
	}
	u := &user{u: storage.User{Username: &name}, handle: newHandle()}
	creation, session, err := rp.wa.BeginRegistration(u)
	if err != nil {
		return Ceremony{}, fmt.Errorf("webauthn: begin registration: %w", err)
	}
	data := map[string]string{"mode": modeSignUp, "username": name}
	if email != "" {
		data["email"] = email
	}
	return rp.begin(providersession.Flow{Purpose: PurposeRegister, RedirectTo: acct.RedirectTo, Data: data}, session, creation)
}

// BeginAdd begins the registration of another passkey for the user of
// sess, which must have authenticated recently
// ([auth.ErrReauthenticationRequired] otherwise). The user's passkeys are
// excluded, so one authenticator is not registered twice.
func (rp *RelyingParty) BeginAdd(ctx context.Context, sess *auth.Session) (Ceremony, error) {
	if sess == nil {
		return Ceremony{}, fmt.Errorf("webauthn: add passkey: %w", auth.ErrInvalidSessionID)
	}
	if err := rp.auth.RequireRecentAuth(*sess); err != nil {
		return Ceremony{}, fmt.Errorf("webauthn: add passkey: %w", err)
	}
	su, err := rp.store.GetUser(ctx, sess.UserID)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return Ceremony{}, fmt.Errorf("webauthn: add passkey: %w", auth.ErrInvalidUserID)
		}
		return Ceremony{}, fmt.Errorf("webauthn: add passkey: %w", err)
	}
	u, err := rp.loadUser(ctx, su, newHandle())
	if err != nil {
		return Ceremony{}, err
	}
	creation, session, err := rp.wa.BeginRegistration(u, gowebauthn.WithExclusions(u.descriptors()))
	if err != nil {
		return Ceremony{}, fmt.Errorf("webauthn: begin registration: %w", err)
	}
	return rp.begin(providersession.Flow{
		Purpose: PurposeRegister, UserID: sess.UserID, SessionID: sess.ID, Data: map[string]string{"mode": modeAdd},
	}, session, creation)
}

// RegistrationResponse is what the page sends back to finish a registration.
type RegistrationResponse struct {
	// State is the [Ceremony.State] of the begun registration.
	State string
	// Credential is PublicKeyCredential.toJSON() of navigator.credentials.create().
	Credential []byte
	// Name is the passkey's label; empty gives "Passkey" (or "Passkey 2", …).
	Name string
	// Session is the request's signed-in session, or nil. Adding a passkey
	// needs the session that began it, still recently authenticated.
	Session *auth.Session
}

// Registration is a finished registration.
type Registration struct {
	User    auth.User
	Passkey Passkey
	// NewUser is set when the registration created the account.
	NewUser bool
	// RedirectTo is the sign-up's redirect target, as given to BeginSignUp.
	RedirectTo string
}

// FinishRegistration verifies the authenticator's response against the
// ceremony of resp.State and stores the passkey (and for a sign-up, the
// user). The returned cookie, when not nil, deletes the flow cookie; send
// it also when there is an error. A response that does not verify is
// [auth.ErrInvalidRequest] (with [ErrVerification]); a used, expired or
// unknown ceremony is [auth.ErrInvalidRequest] with a providersession
// ErrFlow* reason.
func (rp *RelyingParty) FinishRegistration(ctx context.Context, r *http.Request, resp RegistrationResponse) (Registration, *http.Cookie, error) {
	label, err := CleanPasskeyName(resp.Name)
	if err != nil {
		return Registration{}, nil, err
	}
	f, sd, del, err := rp.take(ctx, r, PurposeRegister, resp.State)
	if err != nil {
		return Registration{}, del, err
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(resp.Credential)
	if err != nil {
		return Registration{}, del, parseError("parse registration", err)
	}
	var reg Registration
	switch f.Data["mode"] {
	case modeSignUp:
		reg, err = rp.finishSignUp(ctx, f, sd, parsed, label)
	case modeAdd:
		reg, err = rp.finishAdd(ctx, f, sd, parsed, label, resp.Session)
	default:
		err = fmt.Errorf("webauthn: registration flow without a mode: %w", auth.ErrInvalidRequest)
	}
	return reg, del, err
}

func (rp *RelyingParty) finishSignUp(ctx context.Context, f providersession.Flow, sd gowebauthn.SessionData, parsed *protocol.ParsedCredentialCreationData, label string) (Registration, error) {
	name := f.Data["username"]
	if name == "" || len(sd.UserID) == 0 {
		return Registration{}, fmt.Errorf("webauthn: sign-up flow without a username: %w", auth.ErrInvalidRequest)
	}
	u := &user{u: storage.User{Username: &name}, handle: sd.UserID}
	cred, err := rp.wa.CreateCredential(u, sd, parsed)
	if err != nil {
		return Registration{}, verifyError("finish registration", err)
	}
	if label == "" {
		label = "Passkey"
	}
	now := rp.auth.Now().UTC()
	id := auth.GenerateUserID()
	su := storage.User{
		ID: id, Username: &name, WebAuthnHandle: sd.UserID, Attributes: map[string]any{},
		CreatedAt: now, UpdatedAt: now,
	}
	if e := f.Data["email"]; e != "" {
		su.Email = &e // unverified: a passkey proves nothing about a mailbox
	}
	// The user, its handle, its key and the authenticator in one
	// transaction: a failure leaves no account behind.
	a, err := rp.storePasskey(ctx, &su, id, cred, label, now)
	if err != nil {
		return Registration{}, mapConflict("sign up", err)
	}
	au, err := rp.auth.GetUser(ctx, id)
	if err != nil {
		return Registration{}, err
	}
	return Registration{User: au, Passkey: toPasskey(a), NewUser: true, RedirectTo: f.RedirectTo}, nil
}

func (rp *RelyingParty) finishAdd(ctx context.Context, f providersession.Flow, sd gowebauthn.SessionData, parsed *protocol.ParsedCredentialCreationData, label string, sess *auth.Session) (Registration, error) {
	if sess == nil {
		return Registration{}, fmt.Errorf("webauthn: add passkey: %w", auth.ErrInvalidSessionID)
	}
	if f.UserID == "" || sess.UserID != f.UserID {
		return Registration{}, fmt.Errorf("webauthn: add passkey: %w: %w", ErrWrongUser, auth.ErrInvalidRequest)
	}
	if err := rp.auth.RequireRecentAuth(*sess); err != nil {
		return Registration{}, fmt.Errorf("webauthn: add passkey: %w", err)
	}
	su, err := rp.store.GetUser(ctx, f.UserID)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return Registration{}, fmt.Errorf("webauthn: add passkey: %w", auth.ErrInvalidUserID)
		}
		return Registration{}, fmt.Errorf("webauthn: add passkey: %w", err)
	}
	u, err := rp.loadUser(ctx, su, sd.UserID)
	if err != nil {
		return Registration{}, err
	}
	cred, err := rp.wa.CreateCredential(u, sd, parsed)
	if err != nil {
		return Registration{}, verifyError("finish registration", err)
	}
	if len(su.WebAuthnHandle) == 0 {
		// The user's first passkey: store the handle it was registered under.
		_, err := rp.store.UpdateUser(ctx, su.ID, func(x *storage.User) error {
			if len(x.WebAuthnHandle) > 0 && !bytes.Equal(x.WebAuthnHandle, sd.UserID) {
				return fmt.Errorf("webauthn: add passkey: handle set meanwhile: %w: %w", ErrWrongUser, auth.ErrInvalidRequest)
			}
			x.WebAuthnHandle = sd.UserID
			return nil
		})
		if err != nil {
			return Registration{}, mapConflict("add passkey: store handle", err)
		}
	}
	if label == "" {
		label = "Passkey"
		if n := len(u.creds); n > 0 {
			label += " " + strconv.Itoa(n+1)
		}
	}
	// The key and the authenticator in one transaction.
	a, err := rp.storePasskey(ctx, nil, su.ID, cred, label, rp.auth.Now().UTC())
	if err != nil {
		return Registration{}, mapConflict("add passkey", err)
	}
	if err := rp.auth.KeysChanged(ctx, su.ID); err != nil {
		return Registration{}, fmt.Errorf("webauthn: add passkey: %w", err)
	}
	au, err := rp.auth.GetUser(ctx, su.ID)
	if err != nil {
		return Registration{}, err
	}
	return Registration{User: au, Passkey: toPasskey(a), RedirectTo: f.RedirectTo}, nil
}

// mapConflict translates storage errors into auth errors: a taken username
// (or other unique user field) is ErrConflict, a credential or key that
// exists ErrDuplicateKeyID, a missing user ErrInvalidUserID.
func mapConflict(op string, err error) error {
	var ce *storage.ConflictError
	switch {
	case errors.As(err, &ce) && (ce.Field == storage.ConflictKey || ce.Field == storage.ConflictCredential):
		return fmt.Errorf("webauthn: %s: %w: %w", op, auth.ErrDuplicateKeyID, err)
	case errors.As(err, &ce):
		return fmt.Errorf("webauthn: %s: %w: %w", op, auth.ErrConflict, err)
	case errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("webauthn: %s: %w", op, auth.ErrInvalidUserID)
	}
	return fmt.Errorf("webauthn: %s: %w", op, err)
}

// storePasskey stores a registered credential of userID as its key and
// its authenticator named name, in one transaction with the new user u of
// a sign-up (nil when adding a passkey to an existing user), and returns
// the authenticator.
func (rp *RelyingParty) storePasskey(ctx context.Context, u *storage.User, userID string, cred *gowebauthn.Credential, name string, now time.Time) (storage.Authenticator, error) {
	key := storage.Key{
		ID: KeyID(cred.ID), UserID: userID, Provider: ProviderID, ProviderUserID: EncodeID(cred.ID),
		CreatedAt: now, UpdatedAt: now,
	}
	a := fromCredential(cred, userID, name, now)
	return a, rp.store.CreatePasskey(ctx, u, key, a)
}
