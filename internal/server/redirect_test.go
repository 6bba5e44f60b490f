package server_test

import (
	"testing"
)

// TestRedirectToSafety: after a login the browser lands on redirect_to only
// when it is a path on the broker or a URL on an allowed origin; anything
// else lands on redirect.default.
func TestRedirectToSafety(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{GitHub: &githubSetup{}, RedirectDefault: "/home"})
	def := h.url + "/home"
	for _, tc := range []struct {
		redirectTo, want string
	}{
		{"//evil.example", def},
		{"//evil.example/path", def},
		{`/\evil.example`, def},
		{`\\evil.example`, def},
		{"/\t/evil.example", def},
		{"https://allowed.example.evil.example/", def},
		{"https://allowed.example@evil.example/", def},
		{"https://evil.example/?x=https://allowed.example", def},
		{"javascript:alert(1)", def},
		{"JavaScript:alert(1)", def},
		{"data:text/html,<script>alert(1)</script>", def},
		{"https://evil.example", def},
		{"http://allowed.example/", def}, // scheme is part of the origin
		{"https:evil.example", def},
		{"evil.example", def},
		{"", def},
		{"https://allowed.example/dashboard?tab=1", "https://allowed.example/dashboard?tab=1"},
		{"https://app.example.com/", "https://app.example.com/"},
		{"/after?x=1#frag", h.url + "/after?x=1#frag"},
		{"/", h.url + "/"},
	} {
		b := h.browser()
		r := b.login("github", tc.redirectTo)
		if got := r.location(t).String(); got != tc.want {
			t.Errorf("redirect_to %q: landed on %q; want %q", tc.redirectTo, got, tc.want)
		}
	}
	h.wantUsers(1)
}
