package github

import "testing"

func TestNextLink(t *testing.T) {
	tests := []struct{ h, want string }{
		{"", ""},
		{`<https://api.github.com/user/orgs?page=2>; rel="next", <https://api.github.com/user/orgs?page=5>; rel="last"`, "https://api.github.com/user/orgs?page=2"},
		{`<https://api.github.com/user/orgs?page=1>; rel="prev"`, ""},
		{`<https://api.github.com/user/orgs?page=5>; rel="last", <https://api.github.com/user/orgs?page=3>; rel = "next"`, "https://api.github.com/user/orgs?page=3"},
		{`garbage; rel="next"`, ""},
	}
	for _, tt := range tests {
		if got := nextLink(tt.h); got != tt.want {
			t.Errorf("nextLink(%q) = %q; want %q", tt.h, got, tt.want)
		}
	}
}
