package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

const (
	idAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	// UserIDLength is the length of generated user ids.
	UserIDLength = 15
	// SessionTokenLength is the length of session tokens.
	SessionTokenLength = 40
)

// generateID returns n characters drawn uniformly from [a-z0-9] with
// crypto/rand. Bytes of 252 and above are rejected so that every character
// is equally likely (252 = 7 × 36).
func generateID(n int) string {
	out := make([]byte, 0, n)
	buf := make([]byte, n+n/4+8)
	for len(out) < n {
		rand.Read(buf) // never fails (crypto/rand panics on the impossible)
		for _, b := range buf {
			if b >= 252 {
				continue
			}
			out = append(out, idAlphabet[b%36])
			if len(out) == n {
				break
			}
		}
	}
	return string(out)
}

// GenerateUserID returns a new 15-character [a-z0-9] user id.
func GenerateUserID() string { return generateID(UserIDLength) }

// GenerateSessionToken returns a new 40-character [a-z0-9] session token.
func GenerateSessionToken() string { return generateID(SessionTokenLength) }

// ValidSessionToken reports whether token has the shape of a session token
// (exactly 40 characters of [a-z0-9]). Anything else is refused before any
// database round trip.
func ValidSessionToken(token string) bool {
	if len(token) != SessionTokenLength {
		return false
	}
	for i := 0; i < len(token); i++ {
		c := token[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// validSessionID reports whether id looks like a hashed session id (64
// lower-case hex characters).
func validSessionID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < 'a' || c > 'f') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// SessionIDFromToken returns the id a session is stored under: the hex
// SHA-256 of its token. The token itself is never stored.
func SessionIDFromToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// KeyID returns the id of the key that providerID's user providerUserID
// signs in with: "providerID:providerUserID".
func KeyID(providerID, providerUserID string) string {
	return providerID + ":" + providerUserID
}

// SplitKeyID splits a key id on its first colon; the provider user id may
// itself contain colons.
func SplitKeyID(id string) (providerID, providerUserID string, ok bool) {
	providerID, providerUserID, ok = strings.Cut(id, ":")
	if !ok || providerID == "" || providerUserID == "" {
		return "", "", false
	}
	return providerID, providerUserID, true
}

// checkKeyParts refuses provider ids and provider user ids that cannot form
// a key id.
func checkKeyParts(providerID, providerUserID string) error {
	if providerID == "" || strings.Contains(providerID, ":") || providerUserID == "" {
		return fmt.Errorf("key %q: %w", KeyID(providerID, providerUserID), ErrInvalidKeyID)
	}
	return nil
}
