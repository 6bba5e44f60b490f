// Package seal implements authenticated encryption with key rotation. The
// broker uses it to seal flow-state cookies (secrets.cookie_keys) and to
// encrypt provider tokens at rest (secrets.token_keys).
//
// A [Keyring] holds one or more 32-byte keys. It always seals with its first
// key and opens values sealed under any of them, so a key is rotated by
// putting the new key first and keeping the old one after it until nothing
// sealed under the old key is left (SPEC §8; `broker rotate-token-key`
// re-encrypts stored tokens, and uses [Keyring.NeedsReseal] to find them).
//
// A sealed value is
//
//	key id (4 bytes) || nonce (12 bytes) || AES-256-GCM ciphertext and tag (16 bytes)
//
// where the key id is the first 4 bytes of the SHA-256 of the key. It only
// says which key to try; it is authenticated together with the caller's
// additional data, so changing it makes [Keyring.Open] fail.
//
// The additional data binds a value to its purpose: a flow cookie is sealed
// with its cookie name, a stored token with its Lucia key id
// ("provider:subject") and column, so a sealed token cannot be replayed as a
// cookie, nor moved to another row or column. It is not encrypted and not
// part of the sealed value; the opener must supply the same bytes again.
//
// Nonces are random (96 bits), so one key should seal no more than 2^32
// values (NIST SP 800-38D §8.3); rotate long before that.
package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
)

// KeySize is the length of every key: AES-256.
const KeySize = 32

const (
	idSize    = 4
	nonceSize = 12 // what cipher.NewGCMWithRandomNonce prepends
	tagSize   = 16
)

// Overhead is how many bytes [Keyring.Seal] adds to the plaintext: key id,
// nonce and authentication tag.
const Overhead = idSize + nonceSize + tagSize

// ErrInvalid reports that a sealed value could not be opened: it was sealed
// under a key the ring does not hold, with other additional data, or it was
// altered or truncated. Open never says which, so it cannot serve as an
// oracle.
var ErrInvalid = errors.New("seal: invalid or tampered")

// Keyring seals with its first key and opens with any of them (rotation).
// Make one with [NewKeyring]; it is safe for concurrent use.
type Keyring struct {
	keys []key // keys[0] seals
}

type key struct {
	id   [idSize]byte
	aead cipher.AEAD
}

// NewKeyring returns a keyring over keys, the first of which seals. There
// must be at least one key, each exactly [KeySize] bytes, and no two keys may
// share a key id (which also refuses the same key listed twice). The keys
// are not retained: only the AES ciphers built from them are.
func NewKeyring(keys ...[]byte) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("seal: new keyring: no keys")
	}
	k := &Keyring{keys: make([]key, 0, len(keys))}
	for i, raw := range keys {
		if len(raw) != KeySize {
			return nil, fmt.Errorf("seal: new keyring: key %d is %d bytes; want %d", i+1, len(raw), KeySize)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, fmt.Errorf("seal: new keyring: key %d: %w", i+1, err)
		}
		aead, err := cipher.NewGCMWithRandomNonce(block)
		if err != nil {
			return nil, fmt.Errorf("seal: new keyring: key %d: %w", i+1, err)
		}
		kk := key{id: keyID(raw), aead: aead}
		for j, prev := range k.keys {
			if prev.id == kk.id {
				return nil, fmt.Errorf("seal: new keyring: key %d has the same id as key %d (listed twice?)", i+1, j+1)
			}
		}
		k.keys = append(k.keys, kk)
	}
	return k, nil
}

func keyID(raw []byte) [idSize]byte {
	sum := sha256.Sum256(raw)
	return [idSize]byte(sum[:idSize])
}

// Seal encrypts and authenticates plaintext under the ring's first key,
// binding it to additionalData, and returns key id, a random nonce and the
// ciphertext (len(plaintext) + [Overhead] bytes). Sealing the same plaintext
// twice gives different results.
func (k *Keyring) Seal(plaintext, additionalData []byte) []byte {
	p := &k.keys[0]
	out := make([]byte, idSize, idSize+nonceSize+len(plaintext)+tagSize)
	copy(out, p.id[:])
	return p.aead.Seal(out, nil, plaintext, gcmAD(p.id, additionalData))
}

// Open authenticates and decrypts a value made by [Keyring.Seal] with any
// key of the ring and the same additionalData. Every failure is [ErrInvalid].
func (k *Keyring) Open(sealed, additionalData []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, ErrInvalid
	}
	p := k.find(sealed)
	if p == nil {
		return nil, ErrInvalid
	}
	plaintext, err := p.aead.Open(nil, nil, sealed[idSize:], gcmAD(p.id, additionalData))
	if err != nil {
		return nil, ErrInvalid
	}
	return plaintext, nil
}

// NeedsReseal reports whether sealed is not sealed under the ring's first
// key: it was sealed under an older key of the ring (or under no key of the
// ring, or is not a sealed value at all). It reads only the key id and does
// not authenticate sealed; a rotation opens the value with [Keyring.Open]
// and, when this is true, seals it again.
func (k *Keyring) NeedsReseal(sealed []byte) bool {
	return len(sealed) < Overhead || !bytes.Equal(sealed[:idSize], k.keys[0].id[:])
}

// SealString is [Keyring.Seal] for text: it returns the sealed value in
// unpadded base64url (RFC 4648 §5), which is safe in cookie values, URLs and
// text columns.
func (k *Keyring) SealString(plaintext, additionalData string) string {
	return base64.RawURLEncoding.EncodeToString(k.Seal([]byte(plaintext), []byte(additionalData)))
}

// OpenString opens a value made by [Keyring.SealString]. Every failure,
// including bad base64, is [ErrInvalid].
func (k *Keyring) OpenString(s, additionalData string) (string, error) {
	sealed, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return "", ErrInvalid
	}
	plaintext, err := k.Open(sealed, []byte(additionalData))
	if err != nil {
		return "", err
	}
	return string(plaintext), nil
}

// NeedsResealString is [Keyring.NeedsReseal] for a value made by
// [Keyring.SealString]; text that is not base64url needs resealing too.
func (k *Keyring) NeedsResealString(s string) bool {
	sealed, err := base64.RawURLEncoding.DecodeString(s)
	return err != nil || k.NeedsReseal(sealed)
}

func (k *Keyring) find(sealed []byte) *key {
	for i := range k.keys {
		if bytes.Equal(sealed[:idSize], k.keys[i].id[:]) {
			return &k.keys[i]
		}
	}
	return nil
}

// gcmAD is the additional data given to GCM: the key id (so that the header
// is authenticated) followed by the caller's additional data. The id has a
// fixed length, so the split is unambiguous.
func gcmAD(id [idSize]byte, additionalData []byte) []byte {
	ad := make([]byte, 0, idSize+len(additionalData))
	ad = append(ad, id[:]...)
	return append(ad, additionalData...)
}
