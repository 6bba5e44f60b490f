package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"
)

// FuzzVerifyHash feeds arbitrary encoded hashes to Verify. It must never
// panic, must refuse (as ErrOutdatedPassword) exactly what pwDecode
// refuses, must never run argon2id beyond the limits, and only accepts
// argon2id strings in their canonical form. The seed corpus is in
// testdata/fuzz/FuzzVerifyHash.
func FuzzVerifyHash(f *testing.F) {
	for _, seed := range [][2]string{
		{"$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "password"},
		{"$argon2id$v=19$m=16,t=2,p=2$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAA", ""},
		{"$argon2id$v=19$m=1048576,t=4,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "x"},
		{"$argon2i$v=19$m=64,t=1,p=1$c29tZXNhbHQ$AAAAAAAAAAAAAAAAAAAAAA", "x"},
		{"$2b$12$KIXQJQ2Hn3xZRV5EHzGgAe5V3E1Yhb9h8m0nRkOeqW3d1QmNQ9kDy", "x"},
		{"s2:abcdefghijklmnop:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", "x"},
		{"abcdefghijklmnop:00", "x"},
		{"", ""},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, encoded, password string) {
		h := NewPasswordHasher(pwCheapParams, 1)
		ran := false
		h.pwHook = func(op pwOp) {
			ran = true
			if op.kind == pwArgon2id {
				if err := argonCheckParams(op.params); err != nil {
					t.Fatalf("argon2id ran with refused params %+v: %v", op.params, err)
				}
			}
		}

		d, decErr := pwDecode(encoded)
		if decErr == nil {
			if d.kind == pwArgon2id {
				p := d.params
				if err := argonCheckParams(p); err != nil {
					t.Fatalf("pwDecode accepted params %+v: %v", p, err)
				}
				canon := fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", p.Memory, p.Iterations, p.Parallelism,
					base64.RawStdEncoding.EncodeToString(d.salt), base64.RawStdEncoding.EncodeToString(d.key))
				if canon != encoded {
					t.Fatalf("pwDecode accepted non-canonical %q (canonical %q)", encoded, canon)
				}
				if uint64(p.Memory)*uint64(p.Iterations) > 512 || p.Parallelism > 4 {
					return // valid but too slow to run per fuzz input
				}
			} else {
				return // scrypt: valid, fixed 16/32 MiB cost; covered by the Lucia vectors
			}
		}

		ok, rehash, err := h.Verify(context.Background(), encoded, password)
		switch {
		case decErr != nil:
			if !errors.Is(err, ErrOutdatedPassword) || ok || rehash || ran {
				t.Fatalf("Verify(%q) = %v, %v, %v (ran %v); want ErrOutdatedPassword without work", encoded, ok, rehash, err, ran)
			}
		case err != nil:
			t.Fatalf("Verify(%q) = %v after a successful decode", encoded, err)
		case !ran:
			t.Fatalf("Verify(%q) answered without running", encoded)
		case !ok && rehash:
			t.Fatalf("Verify(%q) = false but needsRehash", encoded)
		case ok && rehash != (d.params != pwCheapParams):
			t.Fatalf("Verify(%q) needsRehash = %v for params %+v", encoded, rehash, d.params)
		}
	})
}
