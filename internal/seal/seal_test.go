package seal_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/brokerauth/broker/internal/seal"
)

func newKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, seal.KeySize)
	rand.Read(k)
	return k
}

func mustKeyring(t testing.TB, keys ...[]byte) *seal.Keyring {
	t.Helper()
	k, err := seal.NewKeyring(keys...)
	if err != nil {
		t.Fatalf("NewKeyring: %v", err)
	}
	return k
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, newKey(t))
	for _, tc := range []struct{ name, plaintext, ad string }{
		{"empty", "", ""},
		{"empty ad", "hello", ""},
		{"text", "gho_access_token", "key:github:42/access_token"},
		{"binary", "\x00\xff\x10 zero and high bytes", "\x00"},
		{"long", strings.Repeat("x", 10000), "cookie"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sealed := k.Seal([]byte(tc.plaintext), []byte(tc.ad))
			if got, want := len(sealed), len(tc.plaintext)+seal.Overhead; got != want {
				t.Errorf("len(Seal) = %d; want %d", got, want)
			}
			got, err := k.Open(sealed, []byte(tc.ad))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if string(got) != tc.plaintext {
				t.Errorf("Open = %q; want %q", got, tc.plaintext)
			}

			s := k.SealString(tc.plaintext, tc.ad)
			gs, err := k.OpenString(s, tc.ad)
			if err != nil {
				t.Fatalf("OpenString: %v", err)
			}
			if gs != tc.plaintext {
				t.Errorf("OpenString = %q; want %q", gs, tc.plaintext)
			}
			if strings.ContainsAny(s, "+/=") {
				t.Errorf("SealString = %q; want unpadded base64url", s)
			}
		})
	}
}

func TestSealIsRandomized(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, newKey(t))
	a, b := k.Seal([]byte("same"), nil), k.Seal([]byte("same"), nil)
	if bytes.Equal(a, b) {
		t.Errorf("two seals of one plaintext are equal (%x); want distinct nonces", a)
	}
}

func TestTamperAnyByte(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, newKey(t))
	sealed := k.Seal([]byte("the flow state"), []byte("broker_flow"))
	for i := range sealed {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			bad := bytes.Clone(sealed)
			bad[i] ^= mask
			if got, err := k.Open(bad, []byte("broker_flow")); !errors.Is(err, seal.ErrInvalid) {
				t.Fatalf("Open with byte %d ^ %#x = %q, %v; want ErrInvalid", i, mask, got, err)
			}
		}
	}
}

func TestTruncatedAndExtended(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, newKey(t))
	sealed := k.Seal([]byte("payload"), nil)
	for n := range len(sealed) {
		if _, err := k.Open(sealed[:n], nil); !errors.Is(err, seal.ErrInvalid) {
			t.Fatalf("Open of first %d bytes: err = %v; want ErrInvalid", n, err)
		}
	}
	if _, err := k.Open(append(bytes.Clone(sealed), 0), nil); !errors.Is(err, seal.ErrInvalid) {
		t.Errorf("Open with a byte appended: err = %v; want ErrInvalid", err)
	}
	for _, s := range []string{"", "!!!", "not base64 at all", k.SealString("x", "")[:10]} {
		if _, err := k.OpenString(s, ""); !errors.Is(err, seal.ErrInvalid) {
			t.Errorf("OpenString(%q): err = %v; want ErrInvalid", s, err)
		}
	}
}

func TestWrongAdditionalData(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, newKey(t))
	sealed := k.Seal([]byte("gho_token"), []byte("token:github:1:access"))
	for _, ad := range []string{"", "broker_flow", "token:github:1:refresh", "token:github:1:acces", "token:github:1:access\x00"} {
		if _, err := k.Open(sealed, []byte(ad)); !errors.Is(err, seal.ErrInvalid) {
			t.Errorf("Open with ad %q: err = %v; want ErrInvalid", ad, err)
		}
	}
	s := k.SealString("v", "broker_flow_a")
	if _, err := k.OpenString(s, "broker_flow_b"); !errors.Is(err, seal.ErrInvalid) {
		t.Errorf("OpenString with another cookie name: err = %v; want ErrInvalid", err)
	}
}

func TestWrongKey(t *testing.T) {
	t.Parallel()
	a := mustKeyring(t, newKey(t))
	b := mustKeyring(t, newKey(t))
	if _, err := b.Open(a.Seal([]byte("x"), nil), nil); !errors.Is(err, seal.ErrInvalid) {
		t.Errorf("Open under another key: err = %v; want ErrInvalid", err)
	}
}

func TestRotation(t *testing.T) {
	t.Parallel()
	oldKey, newK := newKey(t), newKey(t)
	before := mustKeyring(t, oldKey)
	after := mustKeyring(t, newK, oldKey)
	newOnly := mustKeyring(t, newK)

	sealedOld := before.Seal([]byte("old secret"), []byte("ad"))
	got, err := after.Open(sealedOld, []byte("ad"))
	if err != nil || string(got) != "old secret" {
		t.Fatalf("after rotation, Open(old) = %q, %v; want %q, nil", got, err, "old secret")
	}
	if !after.NeedsReseal(sealedOld) {
		t.Errorf("NeedsReseal(old) = false; want true")
	}
	if before.NeedsReseal(sealedOld) {
		t.Errorf("NeedsReseal under the sealing ring = true; want false")
	}

	// Reseal as rotate-token-key does; then the old key can go.
	resealed := after.Seal(got, []byte("ad"))
	if after.NeedsReseal(resealed) {
		t.Errorf("NeedsReseal(resealed) = true; want false")
	}
	if got, err := newOnly.Open(resealed, []byte("ad")); err != nil || string(got) != "old secret" {
		t.Errorf("new-key ring Open(resealed) = %q, %v; want %q, nil", got, err, "old secret")
	}
	if _, err := newOnly.Open(sealedOld, []byte("ad")); !errors.Is(err, seal.ErrInvalid) {
		t.Errorf("new-key ring Open(old) after the old key is dropped: err = %v; want ErrInvalid", err)
	}
	// A ring that lists the old key first (rollback) opens the new value.
	if _, err := mustKeyring(t, oldKey, newK).Open(resealed, []byte("ad")); err != nil {
		t.Errorf("rolled-back ring Open(new): %v", err)
	}

	s := before.SealString("text", "ad")
	if !after.NeedsResealString(s) {
		t.Errorf("NeedsResealString(old) = false; want true")
	}
	if after.NeedsResealString(after.SealString("text", "ad")) {
		t.Errorf("NeedsResealString(new) = true; want false")
	}
	for _, junk := range []string{"", "!!", "AAAA"} {
		if !after.NeedsResealString(junk) {
			t.Errorf("NeedsResealString(%q) = false; want true", junk)
		}
	}
}

func TestNewKeyringErrors(t *testing.T) {
	t.Parallel()
	k := newKey(t)
	for _, tc := range []struct {
		name string
		keys [][]byte
	}{
		{"none", nil},
		{"empty key", [][]byte{{}}},
		{"16 bytes", [][]byte{make([]byte, 16)}},
		{"31 bytes", [][]byte{make([]byte, 31)}},
		{"33 bytes", [][]byte{make([]byte, 33)}},
		{"second key bad", [][]byte{k, make([]byte, 24)}},
		{"duplicate", [][]byte{k, newKey(t), bytes.Clone(k)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := seal.NewKeyring(tc.keys...); err == nil {
				t.Errorf("NewKeyring = %v, nil; want an error", r)
			}
		})
	}
}

func TestNewKeyringDoesNotAliasKey(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	r := mustKeyring(t, key)
	sealed := r.Seal([]byte("x"), nil)
	clear(key) // the caller wipes its copy
	if _, err := r.Open(sealed, nil); err != nil {
		t.Errorf("Open after the caller cleared its key slice: %v", err)
	}
}

func BenchmarkSealOpen(b *testing.B) {
	k := mustKeyring(b, newKey(b))
	plaintext := bytes.Repeat([]byte("a"), 400) // about one flow cookie
	ad := []byte("broker_flow_abc")
	for b.Loop() {
		if _, err := k.Open(k.Seal(plaintext, ad), ad); err != nil {
			b.Fatal(err)
		}
	}
}
