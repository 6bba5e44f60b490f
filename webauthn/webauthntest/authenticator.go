// Package webauthntest is a software passkey authenticator for tests: it
// answers the options of the broker's /webauthn/*/options endpoints the way
// a browser with a platform authenticator would, and returns what
// PublicKeyCredential.toJSON() gives the page. Credentials are ECDSA P-256
// (ES256) resident keys with "none" attestation.
//
// It is for tests only: it keeps private keys in memory and checks nothing
// a real authenticator would ask the user.
package webauthntest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/fxamacker/cbor/v2"
)

// Authenticator flags (WebAuthn §6.1).
const (
	flagUP = 0x01
	flagUV = 0x04
	flagBE = 0x08
	flagBS = 0x10
	flagAT = 0x40
)

// Credential is a passkey held by an [Authenticator].
type Credential struct {
	ID         []byte
	RPID       string
	UserHandle []byte
	UserName   string
	Key        *ecdsa.PrivateKey
	// SignCount is the counter the next assertion increments (and reports
	// when Counter is true). Tests may set it to simulate a clone.
	SignCount uint32
}

// Authenticator is a software platform authenticator. It is safe for
// concurrent use; tests may change the exported fields between ceremonies.
type Authenticator struct {
	mu sync.Mutex
	// Origin is put into clientDataJSON ("http://localhost:8080").
	Origin string
	// UserVerified sets the UV flag (default true from [New]).
	UserVerified bool
	// BackupEligible and BackedUp set the BE and BS flags (synced passkeys).
	BackupEligible, BackedUp bool
	// Counter makes credentials count signatures; without it every
	// signature reports 0, as synced passkeys do.
	Counter bool
	// AAGUID identifies the authenticator model.
	AAGUID [16]byte
	creds  []*Credential
}

// New returns an authenticator that signs for origin, verifies the user
// and counts signatures.
func New(origin string) *Authenticator {
	return &Authenticator{Origin: origin, UserVerified: true, Counter: true,
		AAGUID: [16]byte{0xb5, 0x39, 0x76, 0x66, 0x48, 0x85, 0xaa, 0x6b, 0xce, 0xbf, 0xe5, 0x22, 0x62, 0xa4, 0x39, 0xa2}}
}

// Credentials returns the authenticator's credentials.
func (a *Authenticator) Credentials() []*Credential {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*Credential(nil), a.creds...)
}

// Remove forgets a credential.
func (a *Authenticator) Remove(c *Credential) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, x := range a.creds {
		if x == c {
			a.creds = append(a.creds[:i], a.creds[i+1:]...)
			return
		}
	}
}

var b64 = base64.RawURLEncoding

type b64bytes []byte

func (b *b64bytes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	d, err := b64.DecodeString(s)
	*b = d
	return err
}

type descriptor struct {
	ID b64bytes `json:"id"`
}

// options is the part of CredentialCreation / CredentialAssertion JSON the
// authenticator reads.
type options struct {
	PublicKey struct {
		Challenge b64bytes `json:"challenge"`
		RP        struct {
			ID string `json:"id"`
		} `json:"rp"`
		User struct {
			ID   b64bytes `json:"id"`
			Name string   `json:"name"`
		} `json:"user"`
		Exclude []descriptor `json:"excludeCredentials"`
		RPID    string       `json:"rpId"`
		Allow   []descriptor `json:"allowCredentials"`
	} `json:"publicKey"`
}

// ErrExcluded is returned by Create when the authenticator holds a
// credential of the exclude list (the browser's InvalidStateError).
var ErrExcluded = errors.New("webauthntest: authenticator already registered")

// ErrNoCredential is returned by Get when no held credential fits.
var ErrNoCredential = errors.New("webauthntest: no credential")

// Create answers creation options ({"publicKey": …}) with a new resident
// credential and returns the response as PublicKeyCredential.toJSON().
func (a *Authenticator) Create(optionsJSON []byte) ([]byte, *Credential, error) {
	var o options
	if err := json.Unmarshal(optionsJSON, &o); err != nil {
		return nil, nil, fmt.Errorf("webauthntest: creation options: %w", err)
	}
	pk := o.PublicKey
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, d := range pk.Exclude {
		for _, c := range a.creds {
			if bytes.Equal(c.ID, d.ID) {
				return nil, nil, ErrExcluded
			}
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	id := make([]byte, 32)
	rand.Read(id)
	c := &Credential{ID: id, RPID: pk.RP.ID, UserHandle: pk.User.ID, UserName: pk.User.Name, Key: key}
	if a.Counter {
		c.SignCount = 1
	}
	// A resident credential replaces one for the same user and relying party.
	kept := a.creds[:0]
	for _, x := range a.creds {
		if x.RPID != c.RPID || !bytes.Equal(x.UserHandle, c.UserHandle) {
			kept = append(kept, x)
		}
	}
	a.creds = append(kept, c)

	cose, err := coseKey(&key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	var att bytes.Buffer
	att.Write(a.AAGUID[:])
	_ = binary.Write(&att, binary.BigEndian, uint16(len(id)))
	att.Write(id)
	att.Write(cose)
	authData := a.authData(c.RPID, flagAT, c.SignCount, att.Bytes())
	attObj, err := cbor.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": authData})
	if err != nil {
		return nil, nil, err
	}
	clientData := a.clientData("webauthn.create", pk.Challenge)
	spki, err := x509PublicKey(&key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	out, err := json.Marshal(map[string]any{
		"id": b64.EncodeToString(id), "rawId": b64.EncodeToString(id), "type": "public-key",
		"authenticatorAttachment": "platform", "clientExtensionResults": map[string]any{},
		"response": map[string]any{
			"clientDataJSON":     b64.EncodeToString(clientData),
			"attestationObject":  b64.EncodeToString(attObj),
			"authenticatorData":  b64.EncodeToString(authData),
			"publicKey":          b64.EncodeToString(spki),
			"publicKeyAlgorithm": -7,
			"transports":         []string{"internal"},
		},
	})
	return out, c, err
}

// Get answers request options ({"publicKey": …}) with an assertion of the
// first held credential they allow (any of the relying party's credentials
// when allowCredentials is empty), as PublicKeyCredential.toJSON().
func (a *Authenticator) Get(optionsJSON []byte) ([]byte, error) {
	return a.GetWith(optionsJSON, nil)
}

// GetWith is [Authenticator.Get] with credential c, whether or not the
// options allow it (nil picks as Get does).
func (a *Authenticator) GetWith(optionsJSON []byte, c *Credential) ([]byte, error) {
	var o options
	if err := json.Unmarshal(optionsJSON, &o); err != nil {
		return nil, fmt.Errorf("webauthntest: request options: %w", err)
	}
	pk := o.PublicKey
	a.mu.Lock()
	defer a.mu.Unlock()
	if c == nil {
		for _, x := range a.creds {
			if x.RPID != pk.RPID {
				continue
			}
			if len(pk.Allow) == 0 {
				c = x
				break
			}
			for _, d := range pk.Allow {
				if bytes.Equal(d.ID, x.ID) {
					c = x
				}
			}
			if c != nil {
				break
			}
		}
	}
	if c == nil {
		return nil, ErrNoCredential
	}
	count := uint32(0)
	if a.Counter {
		c.SignCount++
		count = c.SignCount
	}
	authData := a.authData(c.RPID, 0, count, nil)
	clientData := a.clientData("webauthn.get", pk.Challenge)
	sum := sha256.Sum256(clientData)
	digest := sha256.Sum256(append(append([]byte{}, authData...), sum[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, c.Key, digest[:])
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{
		"id": b64.EncodeToString(c.ID), "rawId": b64.EncodeToString(c.ID), "type": "public-key",
		"authenticatorAttachment": "platform", "clientExtensionResults": map[string]any{},
		"response": map[string]any{
			"clientDataJSON":    b64.EncodeToString(clientData),
			"authenticatorData": b64.EncodeToString(authData),
			"signature":         b64.EncodeToString(sig),
			"userHandle":        b64.EncodeToString(c.UserHandle),
		},
	})
}

func (a *Authenticator) authData(rpID string, extra byte, count uint32, attested []byte) []byte {
	h := sha256.Sum256([]byte(rpID))
	flags := byte(flagUP) | extra
	if a.UserVerified {
		flags |= flagUV
	}
	if a.BackupEligible {
		flags |= flagBE
	}
	if a.BackedUp {
		flags |= flagBS
	}
	out := append([]byte{}, h[:]...)
	out = append(out, flags)
	out = binary.BigEndian.AppendUint32(out, count)
	return append(out, attested...)
}

func (a *Authenticator) clientData(typ string, challenge []byte) []byte {
	b, _ := json.Marshal(map[string]any{
		"type": typ, "challenge": b64.EncodeToString(challenge), "origin": a.Origin, "crossOrigin": false,
	})
	return b
}

// coseKey encodes an ES256 public key as a COSE_Key (RFC 9053 §7.1.1).
func coseKey(pub *ecdsa.PublicKey) ([]byte, error) {
	raw, err := pub.Bytes() // 0x04 || X || Y
	if err != nil {
		return nil, err
	}
	enc, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		return nil, err
	}
	return enc.Marshal(map[int]any{1: 2, 3: -7, -1: 1, -2: raw[1:33], -3: raw[33:65]})
}

// ReplaceOrigin returns a toJSON() response whose clientDataJSON claims
// another origin (the signature then no longer matches either).
func ReplaceOrigin(response []byte, origin string) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(response, &m); err != nil {
		return nil, err
	}
	r, _ := m["response"].(map[string]any)
	s, _ := r["clientDataJSON"].(string)
	cd, err := b64.DecodeString(s)
	if err != nil {
		return nil, err
	}
	var c map[string]any
	if err := json.Unmarshal(cd, &c); err != nil {
		return nil, err
	}
	c["origin"] = origin
	cd, _ = json.Marshal(c)
	r["clientDataJSON"] = b64.EncodeToString(cd)
	return json.Marshal(m)
}

// x509PublicKey encodes the public key as SubjectPublicKeyInfo, as
// AuthenticatorAttestationResponse.getPublicKey() gives it.
func x509PublicKey(pub *ecdsa.PublicKey) ([]byte, error) { return x509.MarshalPKIXPublicKey(pub) }
