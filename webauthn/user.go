package webauthn

import (
	"context"
	"fmt"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	gowebauthn "github.com/go-webauthn/webauthn/webauthn"

	"github.com/brokerauth/broker/storage"
)

// Device types, as Auth.js and SimpleWebAuthn name them.
const (
	DeviceSingle = "singleDevice"
	DeviceMulti  = "multiDevice"
)

// user adapts a stored user to go-webauthn's User interface.
type user struct {
	u      storage.User
	handle []byte
	creds  []storage.Authenticator
}

var _ gowebauthn.User = (*user)(nil)

func (u *user) WebAuthnID() []byte { return u.handle }

// WebAuthnName is what authenticators show in account pickers: the
// username, else the email, else the user id.
func (u *user) WebAuthnName() string {
	switch {
	case u.u.Username != nil && *u.u.Username != "":
		return *u.u.Username
	case u.u.Email != nil && *u.u.Email != "":
		return *u.u.Email
	}
	return u.u.ID
}

func (u *user) WebAuthnDisplayName() string {
	if u.u.Name != nil && *u.u.Name != "" {
		return *u.u.Name
	}
	return u.WebAuthnName()
}

func (u *user) WebAuthnCredentials() []gowebauthn.Credential {
	out := make([]gowebauthn.Credential, len(u.creds))
	for i, a := range u.creds {
		out[i] = toCredential(a)
	}
	return out
}

// descriptors lists the user's credentials for allowCredentials or
// excludeCredentials.
func (u *user) descriptors() []protocol.CredentialDescriptor {
	out := make([]protocol.CredentialDescriptor, len(u.creds))
	for i, a := range u.creds {
		c := toCredential(a)
		out[i] = c.Descriptor()
	}
	return out
}

// loadUser returns the adapter for a stored user with its credentials. A
// user without a handle yet gets handle (which the caller stores when a
// passkey is added); nil handle leaves it empty.
func (rp *RelyingParty) loadUser(ctx context.Context, u storage.User, handle []byte) (*user, error) {
	creds, err := rp.store.ListAuthenticatorsByUserID(ctx, u.ID)
	if err != nil {
		return nil, fmt.Errorf("webauthn: list authenticators: %w", err)
	}
	h := u.WebAuthnHandle
	if len(h) == 0 {
		h = handle
	}
	return &user{u: u, handle: h, creds: creds}, nil
}

// toCredential maps a stored authenticator to go-webauthn's Credential.
func toCredential(a storage.Authenticator) gowebauthn.Credential {
	var flags protocol.AuthenticatorFlags = protocol.FlagUserPresent
	if a.BackupEligible {
		flags |= protocol.FlagBackupEligible
	}
	if a.BackedUp {
		flags |= protocol.FlagBackupState
	}
	transports := make([]protocol.AuthenticatorTransport, len(a.Transports))
	for i, t := range a.Transports {
		transports[i] = protocol.AuthenticatorTransport(t)
	}
	return gowebauthn.Credential{
		ID:        a.CredentialID,
		PublicKey: a.PublicKey,
		// attestation_type keeps the attestation statement format ("none",
		// "packed", "fido-u2f"), which is what go-webauthn reads back (the
		// FIDO AppID extension applies to fido-u2f credentials only).
		AttestationFormat: a.AttestationType,
		Transport:         transports,
		Flags:             gowebauthn.NewCredentialFlags(flags),
		Authenticator: gowebauthn.Authenticator{
			AAGUID:    a.AAGUID,
			SignCount: a.SignCount,
		},
	}
}

// fromCredential maps a freshly registered credential to a stored authenticator.
func fromCredential(c *gowebauthn.Credential, userID, name string, now time.Time) storage.Authenticator {
	transports := make([]string, len(c.Transport))
	for i, t := range c.Transport {
		transports[i] = string(t)
	}
	device := DeviceSingle
	if c.Flags.BackupEligible {
		device = DeviceMulti
	}
	format := c.AttestationFormat
	if format == "" {
		format = c.AttestationType
	}
	return storage.Authenticator{
		CredentialID:    c.ID,
		UserID:          userID,
		PublicKey:       c.PublicKey,
		SignCount:       c.Authenticator.SignCount,
		BackupEligible:  c.Flags.BackupEligible,
		BackedUp:        c.Flags.BackupState,
		DeviceType:      device,
		Transports:      transports,
		AAGUID:          c.Authenticator.AAGUID,
		AttestationType: format,
		Name:            name,
		CreatedAt:       now,
	}
}

// Passkey is a passkey as the API shows it (GET /webauthn/credentials).
type Passkey struct {
	// ID is the credential id, base64url without padding.
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	// BackedUp says the passkey is synced (backup state flag).
	BackedUp   bool     `json:"backed_up"`
	Transports []string `json:"transports"`
	// DeviceType is "singleDevice" or "multiDevice" (backup eligible).
	DeviceType string `json:"-"`
}

// toPasskey maps a stored authenticator to its API form.
func toPasskey(a storage.Authenticator) Passkey {
	t := a.Transports
	if t == nil {
		t = []string{}
	}
	p := Passkey{
		ID: EncodeID(a.CredentialID), Name: a.Name, CreatedAt: a.CreatedAt.UTC(), BackedUp: a.BackedUp,
		Transports: t, DeviceType: a.DeviceType,
	}
	if a.LastUsedAt != nil {
		lu := a.LastUsedAt.UTC()
		p.LastUsedAt = &lu
	}
	return p
}
