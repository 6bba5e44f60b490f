package auth_test

import (
	"strings"
	"testing"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/storage/storagetest"
)

// FuzzReadSessionCookie feeds arbitrary Cookie headers to the parser: it
// must never panic, and what it returns must be a non-empty value that
// appeared in the header.
func FuzzReadSessionCookie(f *testing.F) {
	for _, s := range []string{"auth_session=abc", "a=1; auth_session=\"x\"", ";;=;", "auth_session", "auth_session==="} {
		f.Add(s)
	}
	a, err := auth.New(storagetest.OpenSQLite(f), auth.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, header string) {
		v, ok := a.ReadSessionCookie(header)
		if ok && (v == "" || !strings.Contains(header, v)) {
			t.Fatalf("ReadSessionCookie(%q) = %q", header, v)
		}
		if !ok && v != "" {
			t.Fatalf("not ok but value %q", v)
		}
	})
}

// FuzzReadBearerToken feeds arbitrary Authorization headers to the parser.
func FuzzReadBearerToken(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer  x", "Basic x", "Bearer", "\x00Bearer x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		v, ok := auth.ReadBearerToken(header)
		if ok && (v == "" || strings.ContainsAny(v, " \t") || !strings.Contains(header, v)) {
			t.Fatalf("ReadBearerToken(%q) = %q", header, v)
		}
	})
}

// FuzzValidSessionToken checks the token shape test against a plain
// definition.
func FuzzValidSessionToken(f *testing.F) {
	f.Add(strings.Repeat("a", 40))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		want := len(s) == 40 && strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789") == ""
		if got := auth.ValidSessionToken(s); got != want {
			t.Fatalf("ValidSessionToken(%q) = %v; want %v", s, got, want)
		}
	})
}
