package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzLoad writes arbitrary bytes as a config file and loads and validates
// it as `broker serve` and `broker check-config` do: nothing may panic, a
// Load error is a *LoadError, and every error explains itself in at least
// one line. Inputs that name a secret file (x_file: path) are skipped: they
// make Load read it, and a path such as /dev/zero never ends.
// The seed corpus is in testdata/fuzz/FuzzLoad.
func FuzzLoad(f *testing.F) {
	for _, seed := range []string{
		"",
		"server:\n  listen: 127.0.0.1:8080\n  public_url: http://localhost:8080\ndatabase:\n  url: sqlite::memory:\npassword:\n  enabled: true\n",
		"providers:\n  oidc:\n    dex: {issuer: https://dex.example, client_id: x, client_secret: y}\nclaims:\n  role: user.attributes.role\naccess:\n  - {host: a.example, path_prefix: /admin, allow: 'claims.role == \"admin\"'}\n",
		"session: {active_period: 24, idle_period: forever}\n",
		"- a\n- b\n",
		"a: &a [*a]\n",
		"server:\n  listen: [1, 2]\n  max_body_bytes: -1\n",
		"1: 2\ntrue: null\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if readsFiles(data) {
			t.Skip("names a secret file")
		}
		path := filepath.Join(t.TempDir(), "broker.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path, nil)
		if err != nil {
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("Load error %T is not a *LoadError: %v", err, err)
			}
			if len(Explain(err)) == 0 {
				t.Fatalf("Load error explains nothing: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil && len(Explain(err)) == 0 {
			t.Fatalf("Validate error explains nothing: %v", err)
		}
	})
}

// readsFiles reports whether YAML data has a key with _file in it (in any
// case, nested or dotted) and a value, which would make Load read a file.
func readsFiles(data []byte) bool {
	var top any
	if yaml.Unmarshal(data, &top) != nil {
		return false
	}
	// names: key k with value x names a file (an empty one names none).
	names := func(k string, x any) bool {
		return strings.Contains(strings.ToLower(k), "_file") && x != nil && x != ""
	}
	var walk func(v any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if names(k, x) || walk(x) {
					return true
				}
			}
		case map[any]any:
			for k, x := range v {
				if names(fmt.Sprint(k), x) || walk(x) {
					return true
				}
			}
		case []any:
			for _, x := range v {
				if walk(x) {
					return true
				}
			}
		}
		return false
	}
	return walk(top)
}
