package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/seal"
	"github.com/brokerauth/broker/providersession"
	"github.com/brokerauth/broker/storage"
	"github.com/brokerauth/broker/storage/sqlstore"
)

// cliFixture is a config file pointing at a SQLite database in a temporary
// directory, plus a store and an Auth over the same file to seed and check
// what the CLI does.
type cliFixture struct {
	t       *testing.T
	dir     string
	cfgPath string
	store   *sqlstore.Store
	auth    *auth.Auth
}

// cliConfig is what a test's configuration file says.
type cliConfig struct {
	tokenKey    string   // base64; a fresh key when empty
	tokenKeys   []string // base64, secrets.token_keys
	noMigrate   bool     // database.auto_migrate: false
	extra       string   // appended YAML
	skipSeeding bool     // do not open a store (the schema may be missing)
}

func randomKey(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func newCLIFixture(t *testing.T, cc cliConfig) *cliFixture {
	t.Helper()
	dir := t.TempDir()
	f := &cliFixture{t: t, dir: dir, cfgPath: filepath.Join(dir, "broker.yaml")}
	if cc.tokenKey == "" {
		cc.tokenKey = b64(randomKey(t))
	}
	var y strings.Builder
	y.WriteString("server:\n  public_url: http://localhost:8080\n")
	y.WriteString("database:\n  url: sqlite://" + filepath.ToSlash(filepath.Join(dir, "b.db")) + "\n")
	if cc.noMigrate {
		y.WriteString("  auto_migrate: false\n")
	} else {
		y.WriteString("  auto_migrate: true\n")
	}
	y.WriteString("secrets:\n  cookie_key: \"" + b64(randomKey(t)) + "\"\n  token_key: \"" + cc.tokenKey + "\"\n")
	if len(cc.tokenKeys) > 0 {
		y.WriteString("  token_keys:\n")
		for _, k := range cc.tokenKeys {
			y.WriteString("    - \"" + k + "\"\n")
		}
	}
	y.WriteString("password:\n  enabled: true\n")
	y.WriteString(cc.extra)
	if err := os.WriteFile(f.cfgPath, []byte(y.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if !cc.skipSeeding {
		f.openStore()
	}
	return f
}

// openStore opens (and migrates) the fixture's database for seeding and
// checks. Its clock starts an hour ago and moves a second per reading, so
// that users have distinct creation times and sessions are alive.
func (f *cliFixture) openStore() {
	t := f.t
	t.Helper()
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, "sqlite://"+filepath.ToSlash(filepath.Join(f.dir, "b.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	clock := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	a, err := auth.New(st, auth.Options{
		Now: func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			clock = clock.Add(time.Second)
			return clock
		},
		Passwords: auth.NewPasswordHasher(auth.Argon2Params{Memory: 64, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}, 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.store, f.auth = st, a
}

// run runs the CLI with --config and no environment.
func (f *cliFixture) run(args ...string) (stdout, stderr string, err error) {
	return runCLI(append([]string{"--config", f.cfgPath}, args...)...)
}

func runCLI(args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, func(string) string { return "" }, &out, &errOut)
	return out.String(), errOut.String(), err
}

// mustRun runs the CLI and fails the test on an error.
func (f *cliFixture) mustRun(args ...string) string {
	f.t.Helper()
	out, errOut, err := f.run(args...)
	if err != nil {
		f.t.Fatalf("broker %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// mustFail runs the CLI, expects an error and returns its text.
func (f *cliFixture) mustFail(args ...string) (string, string) {
	f.t.Helper()
	out, _, err := f.run(args...)
	if err == nil {
		f.t.Fatalf("broker %s: succeeded, want an error\nstdout:\n%s", strings.Join(args, " "), out)
	}
	return err.Error(), out
}

func (f *cliFixture) user(id string, attrs map[string]any) auth.User {
	f.t.Helper()
	u, err := f.auth.CreateUser(context.Background(), auth.CreateUserOptions{UserID: id, Attributes: attrs})
	if err != nil {
		f.t.Fatal(err)
	}
	return u
}

func (f *cliFixture) session(userID, ua, ip string) auth.Session {
	f.t.Helper()
	s, err := f.auth.CreateSession(context.Background(), userID, auth.SessionOptions{UserAgent: ua, IP: ip})
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func (f *cliFixture) liveSessions(userID string) []auth.Session {
	f.t.Helper()
	ss, err := f.auth.GetAllUserSessions(context.Background(), userID)
	if err != nil {
		f.t.Fatal(err)
	}
	return ss
}

func contains(t *testing.T, what, text string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("%s does not contain %q:\n%s", what, w, text)
		}
	}
}

func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var rows []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not a JSON line: %q: %v", line, err)
		}
		rows = append(rows, m)
	}
	return rows
}

func TestCLIVersion(t *testing.T) {
	out, _, err := runCLI("version")
	if err != nil || out != "broker "+version+"\n" {
		t.Fatalf("version: %q, %v", out, err)
	}
}

func TestCLIUnknownSubcommand(t *testing.T) {
	for _, args := range [][]string{{"users", "bogus"}, {"sessions", "bogus"}, {"bogus"}} {
		if _, _, err := runCLI(args...); err == nil || !strings.Contains(err.Error(), `unknown command "bogus"`) {
			t.Errorf("broker %v: %v", args, err)
		}
	}
}

func TestCLIMigrate(t *testing.T) {
	f := newCLIFixture(t, cliConfig{noMigrate: true, skipSeeding: true})
	// With auto_migrate off, the administration commands leave the schema
	// alone: on an empty database they fail.
	if msg, _ := f.mustFail("users", "list"); !strings.Contains(msg, "users") {
		t.Errorf("users list on an empty database: %s", msg)
	}
	for range 2 { // idempotent
		if out := f.mustRun("migrate"); out != "migrations applied\n" {
			t.Fatalf("migrate: %q", out)
		}
	}
	st, err := sqlstore.Open(context.Background(), "sqlite://"+filepath.ToSlash(filepath.Join(f.dir, "b.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.ListUsers(context.Background(), "", 10); err != nil {
		t.Fatalf("after migrate: %v", err)
	}
	if out := f.mustRun("users", "list", "--json"); out != "" {
		t.Errorf("users list on a migrated, empty database: %q", out)
	}
}

func TestCLIUsersList(t *testing.T) {
	f := newCLIFixture(t, cliConfig{})
	f.user("user1", map[string]any{"username": "alice", "email": "alice@example.com", "email_verified": true})
	f.user("user2", map[string]any{"email": "bob@example.com"})
	f.user("user3", nil)

	out := f.mustRun("users", "list")
	contains(t, "users list", out, "ID", "USERNAME", "EMAIL", "VERIFIED", "CREATED",
		"user1", "alice", "alice@example.com", "true", "user2", "bob@example.com", "false", "user3")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 4 {
		t.Errorf("users list: want a header and 3 rows:\n%s", out)
	}

	rows := jsonLines(t, f.mustRun("users", "list", "--json"))
	if len(rows) != 3 {
		t.Fatalf("users list --json: %d rows", len(rows))
	}
	for i, want := range []string{"user1", "user2", "user3"} {
		if rows[i]["id"] != want {
			t.Errorf("row %d: id %v, want %s (oldest first)", i, rows[i]["id"], want)
		}
		for _, k := range []string{"username", "email", "email_verified", "name", "image", "attributes", "created_at"} {
			if _, ok := rows[i][k]; !ok {
				t.Errorf("row %d lacks %q: %v", i, k, rows[i])
			}
		}
	}
	if rows[0]["email_verified"] != true || rows[1]["email_verified"] != false || rows[2]["username"] != nil {
		t.Errorf("users list --json: %v", rows)
	}

	out, errOut, err := f.run("users", "list", "--json", "--limit", "2")
	if err != nil {
		t.Fatal(err)
	}
	if rows := jsonLines(t, out); len(rows) != 2 || rows[1]["id"] != "user2" {
		t.Errorf("--limit 2: %v", rows)
	}
	contains(t, "stderr of --limit 2", errOut, "--after user2")
	if rows := jsonLines(t, f.mustRun("users", "list", "--json", "--limit", "2", "--after", "user2")); len(rows) != 1 || rows[0]["id"] != "user3" {
		t.Errorf("--after user2: %v", rows)
	}
	if rows := jsonLines(t, f.mustRun("users", "list", "--json", "--limit", "0")); len(rows) != 3 {
		t.Errorf("--limit 0: %v", rows)
	}
	if msg, _ := f.mustFail("users", "list", "--after", "nope"); !strings.Contains(msg, "AUTH_INVALID_USER_ID: no user nope") {
		t.Errorf("--after nope: %s", msg)
	}
	if msg, _ := f.mustFail("users", "list", "--limit", "-1"); !strings.Contains(msg, "--limit") {
		t.Errorf("--limit -1: %s", msg)
	}
}

func TestCLIUsersList_ManyPages(t *testing.T) {
	old := listUsersPage
	listUsersPage = 2
	t.Cleanup(func() { listUsersPage = old })
	f := newCLIFixture(t, cliConfig{})
	for i := range 7 {
		f.user(fmt.Sprintf("u%d", i), nil)
	}
	if rows := jsonLines(t, f.mustRun("users", "list", "--json", "--limit", "0")); len(rows) != 7 || rows[6]["id"] != "u6" {
		t.Errorf("--limit 0 over pages: %v", rows)
	}
	if rows := jsonLines(t, f.mustRun("users", "list", "--json", "--limit", "3", "--after", "u0")); len(rows) != 3 || rows[0]["id"] != "u1" || rows[2]["id"] != "u3" {
		t.Errorf("--limit 3 --after u0: %v", rows)
	}
	if rows := jsonLines(t, f.mustRun("users", "list", "--json", "--limit", "4", "--after", "u2")); len(rows) != 4 || rows[3]["id"] != "u6" {
		t.Errorf("--limit 4 --after u2: %v", rows)
	}
}

// seedShowUser makes alice with two keys (one with a password, one with
// sealed tokens), two sessions and a passkey; it returns the secrets that
// must never be printed.
func seedShowUser(t *testing.T, f *cliFixture) (sessions []auth.Session, secrets []string) {
	ctx := context.Background()
	f.user("alice1", map[string]any{"username": "alice", "email": "alice@example.com", "email_verified": true, "role": "admin"})
	pw := "correct horse battery"
	if _, err := f.auth.CreateKey(ctx, "alice1", "email", "alice@example.com", &pw); err != nil {
		t.Fatal(err)
	}
	ring, err := seal.NewKeyring(randomKey(t))
	if err != nil {
		t.Fatal(err)
	}
	vault := providersession.NewTokenVault(ring, f.store, nil)
	kt, _ := vault.Encrypt("github:42", providersession.Tokens{AccessToken: "gho_secret", RefreshToken: "ghr_secret"})
	if _, err := f.auth.CreateKeySpec(ctx, "alice1", auth.KeySpec{ProviderID: "github", ProviderUserID: "42", Tokens: kt}); err != nil {
		t.Fatal(err)
	}
	sessions = append(sessions, f.session("alice1", "Firefox/140", "192.0.2.1"), f.session("alice1", "curl/8", "192.0.2.2"))
	err = f.store.CreateAuthenticator(ctx, storage.Authenticator{CredentialID: []byte("cred-1"), UserID: "alice1",
		PublicKey: []byte("pk"), DeviceType: "multiDevice", Transports: []string{"internal"}, AttestationType: "none",
		Name: "laptop", CreatedAt: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	k, err := f.store.GetKey(ctx, "email:alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	secrets = []string{pw, *k.HashedPassword, *kt.AccessToken, *kt.RefreshToken, "gho_secret", "ghr_secret",
		sessions[0].Token, sessions[1].Token, b64([]byte("pk"))}
	return sessions, secrets
}

func TestCLIUsersShow(t *testing.T) {
	f := newCLIFixture(t, cliConfig{})
	sessions, secrets := seedShowUser(t, f)
	other := f.user("other1", nil)
	f.session(other.ID, "other", "198.51.100.1")

	out := f.mustRun("users", "show", "alice1", "--json")
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("users show --json prints a secret %q", s)
		}
	}
	var d struct {
		User     map[string]any   `json:"user"`
		Keys     []auth.Key       `json:"keys"`
		Sessions []map[string]any `json:"sessions"`
		Passkeys []map[string]any `json:"passkeys"`
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("users show --json: %v\n%s", err, out)
	}
	if d.User["id"] != "alice1" || d.User["username"] != "alice" || d.User["email_verified"] != true ||
		!reflect.DeepEqual(d.User["attributes"], map[string]any{"role": "admin"}) || d.User["created_at"] == nil {
		t.Errorf("user: %v", d.User)
	}
	if len(d.Keys) != 2 {
		t.Fatalf("keys: %+v", d.Keys)
	}
	byID := map[string]auth.Key{}
	for _, k := range d.Keys {
		byID[k.ID] = k
	}
	if k := byID["email:alice@example.com"]; !k.PasswordDefined || k.ProviderID != "email" {
		t.Errorf("email key: %+v", k)
	}
	if k := byID["github:42"]; k.PasswordDefined || k.ProviderID != "github" || k.ProviderUserID != "42" {
		t.Errorf("github key: %+v", k)
	}
	if len(d.Sessions) != 2 || d.Sessions[0]["id"] != sessions[0].ID || d.Sessions[0]["user_agent"] != "Firefox/140" ||
		d.Sessions[0]["ip"] != "192.0.2.1" || d.Sessions[1]["id"] != sessions[1].ID {
		t.Errorf("sessions: %v", d.Sessions)
	}
	for _, k := range []string{"created_at", "last_seen_at", "state"} {
		if d.Sessions[0][k] == nil {
			t.Errorf("session lacks %s: %v", k, d.Sessions[0])
		}
	}
	if len(d.Passkeys) != 1 || d.Passkeys[0]["name"] != "laptop" || d.Passkeys[0]["id"] != base64.RawURLEncoding.EncodeToString([]byte("cred-1")) {
		t.Errorf("passkeys: %v", d.Passkeys)
	}

	out = f.mustRun("users", "show", "alice1")
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("users show prints a secret %q", s)
		}
	}
	contains(t, "users show", out, "alice1", "alice@example.com", `{"role":"admin"}`, "keys (2)", "email:alice@example.com",
		"github:42", "sessions (2)", sessions[0].ID, sessions[1].ID, "Firefox/140", "192.0.2.2", "passkeys (1)", "laptop")
	if strings.Contains(out, "198.51.100.1") {
		t.Errorf("users show prints another user's session:\n%s", out)
	}

	msg, out := f.mustFail("users", "show", "nope")
	if msg != "AUTH_INVALID_USER_ID: no user nope" || out != "" {
		t.Errorf("unknown user: %q, stdout %q", msg, out)
	}
	if _, _, err := f.run("users", "show"); err == nil {
		t.Error("users show without an id succeeded")
	}
}

func TestCLIUsersDelete(t *testing.T) {
	f := newCLIFixture(t, cliConfig{})
	sessions, _ := seedShowUser(t, f)
	f.user("keep1", nil)
	keep := f.session("keep1", "", "")
	ctx := context.Background()

	msg, out := f.mustFail("users", "delete", "alice1")
	contains(t, "delete without --yes", msg, "--yes")
	contains(t, "delete without --yes", out, "would delete user alice1", "2 keys", "2 live sessions", "1 passkey")
	if _, err := f.store.GetUser(ctx, "alice1"); err != nil {
		t.Fatalf("delete without --yes deleted: %v", err)
	}

	out = f.mustRun("users", "delete", "alice1", "--yes")
	contains(t, "delete --yes", out, "deleted user alice1")
	if _, err := f.store.GetUser(ctx, "alice1"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("user still there: %v", err)
	}
	if ks, err := f.store.ListUserKeys(ctx, "alice1"); err != nil || len(ks) != 0 {
		t.Errorf("keys left: %v, %v", ks, err)
	}
	for _, k := range []string{"email:alice@example.com", "github:42"} {
		if _, err := f.store.GetKey(ctx, k); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("key %s left: %v", k, err)
		}
	}
	for _, s := range sessions {
		if _, err := f.store.GetSession(ctx, s.ID); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("session left: %v", err)
		}
	}
	if _, err := f.store.GetAuthenticator(ctx, []byte("cred-1")); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("passkey left: %v", err)
	}
	if _, err := f.store.GetSession(ctx, keep.ID); err != nil {
		t.Errorf("another user's session went: %v", err)
	}

	if msg, _ := f.mustFail("users", "delete", "alice1", "--yes"); msg != "AUTH_INVALID_USER_ID: no user alice1" {
		t.Errorf("deleting an unknown user: %s", msg)
	}
}

func TestCLIUsersSetAttribute(t *testing.T) {
	f := newCLIFixture(t, cliConfig{})
	f.user("user1", map[string]any{"email": "a@example.com", "email_verified": true})
	ctx := context.Background()
	get := func() auth.User {
		t.Helper()
		u, err := f.auth.GetUser(ctx, "user1")
		if err != nil {
			t.Fatal(err)
		}
		return u
	}

	out := f.mustRun("users", "set-attribute", "user1", "role", "admin")
	var printed map[string]any
	if err := json.Unmarshal([]byte(out), &printed); err != nil || printed["id"] != "user1" ||
		!reflect.DeepEqual(printed["attributes"], map[string]any{"role": "admin"}) {
		t.Errorf("set-attribute printed %q (%v)", out, err)
	}
	if got := get().Attributes["role"]; got != "admin" {
		t.Errorf("role = %#v", got)
	}
	// A string stays a string without --json-value, even when it reads as JSON.
	f.mustRun("users", "set-attribute", "user1", "level", "3")
	if got := get().Attributes["level"]; got != "3" {
		t.Errorf("level = %#v, want the string", got)
	}
	f.mustRun("users", "set-attribute", "user1", "level", "3", "--json-value")
	if got := get().Attributes["level"]; got != float64(3) {
		t.Errorf("level = %#v, want the number 3", got)
	}
	f.mustRun("users", "set-attribute", "user1", "groups", `["a","b"]`, "--json-value")
	if got := get().Attributes["groups"]; !reflect.DeepEqual(got, []any{"a", "b"}) {
		t.Errorf("groups = %#v", got)
	}
	f.mustRun("users", "set-attribute", "user1", "staff", "true", "--json-value")
	if got := get().Attributes["staff"]; got != true {
		t.Errorf("staff = %#v", got)
	}
	f.mustRun("users", "set-attribute", "user1", "role", "null", "--json-value")
	if _, ok := get().Attributes["role"]; ok {
		t.Errorf("null left role: %v", get().Attributes)
	}
	if got := get().Attributes; !reflect.DeepEqual(got, map[string]any{"level": float64(3), "groups": []any{"a", "b"}, "staff": true}) {
		t.Errorf("attributes = %#v", got)
	}

	// First-class fields go through the same call.
	f.mustRun("users", "set-attribute", "user1", "username", "Bob")
	f.mustRun("users", "set-attribute", "user1", "name", "Bob Builder")
	if u := get(); u.Username == nil || *u.Username != "Bob" || u.Name == nil || *u.Name != "Bob Builder" || !u.EmailVerified {
		t.Errorf("user = %+v", u)
	}
	f.mustRun("users", "set-attribute", "user1", "email_verified", "false")
	if get().EmailVerified {
		t.Error("email_verified false left it verified")
	}
	f.mustRun("users", "set-attribute", "user1", "email_verified", "true", "--json-value")
	if !get().EmailVerified {
		t.Error("email_verified true left it unverified")
	}
	f.mustRun("users", "set-attribute", "user1", "email", "B@Example.com")
	if u := get(); u.Email == nil || *u.Email != "b@example.com" || u.EmailVerified {
		t.Errorf("after an email change: %+v", u)
	}
	f.mustRun("users", "set-attribute", "user1", "name", "null", "--json-value")
	if u := get(); u.Name != nil {
		t.Errorf("name not cleared: %v", *u.Name)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"nope", "role", "x"}, "AUTH_INVALID_USER_ID: no user nope"},
		{[]string{"user1", "role", "[1,", "--json-value"}, "not JSON"},
		{[]string{"user1", "role", "1 2", "--json-value"}, "not JSON"},
		{[]string{"user1", "id", "x"}, "AUTH_INVALID_REQUEST"},
		{[]string{"user1", "username", "3", "--json-value"}, "AUTH_INVALID_REQUEST"},
		{[]string{"user1", "email_verified", "maybe"}, "want true or false"},
	} {
		msg, _ := f.mustFail(append([]string{"users", "set-attribute"}, c.args...)...)
		if !strings.Contains(msg, c.want) {
			t.Errorf("set-attribute %v: %q, want %q", c.args, msg, c.want)
		}
	}
	if u := get(); *u.Username != "Bob" {
		t.Errorf("a failed set-attribute wrote: %+v", u)
	}
}

func TestCLISessions(t *testing.T) {
	f := newCLIFixture(t, cliConfig{})
	f.user("user1", nil)
	f.user("user2", nil)
	s1 := f.session("user1", "Firefox/140", "192.0.2.1")
	s2 := f.session("user1", "Safari/18", "192.0.2.2")
	s3 := f.session("user1", "curl/8", "192.0.2.3")
	o1 := f.session("user2", "other", "198.51.100.1")

	out := f.mustRun("sessions", "list", "user1")
	contains(t, "sessions list", out, "ID", "STATE", "LAST SEEN", s1.ID, s2.ID, s3.ID, "Firefox/140", "192.0.2.3", "active")
	for _, s := range []auth.Session{s1, s2, s3, o1} {
		if strings.Contains(out, s.Token) {
			t.Error("sessions list prints a token")
		}
	}
	if strings.Contains(out, o1.ID) {
		t.Error("sessions list prints another user's session")
	}
	rows := jsonLines(t, f.mustRun("sessions", "list", "user1", "--json"))
	if len(rows) != 3 || rows[0]["id"] != s1.ID || rows[2]["user_agent"] != "curl/8" || rows[1]["ip"] != "192.0.2.2" {
		t.Errorf("sessions list --json: %v", rows)
	}
	if msg, _ := f.mustFail("sessions", "list", "nope"); msg != "AUTH_INVALID_USER_ID: no user nope" {
		t.Errorf("sessions list nope: %s", msg)
	}

	out = f.mustRun("sessions", "revoke", s1.ID)
	contains(t, "sessions revoke", out, "revoked session "+s1.ID+" of user user1")
	if ss := f.liveSessions("user1"); len(ss) != 2 || ss[0].ID != s2.ID {
		t.Errorf("after revoke: %v", ss)
	}
	if _, err := f.auth.ValidateSession(context.Background(), s1.Token); !errors.Is(err, auth.ErrInvalidSessionID) {
		t.Errorf("revoked session still validates: %v", err)
	}
	if msg, _ := f.mustFail("sessions", "revoke", s1.ID); msg != "AUTH_INVALID_SESSION_ID: no session "+s1.ID {
		t.Errorf("revoking it again: %s", msg)
	}
	if msg, _ := f.mustFail("sessions", "revoke", "not-a-session"); !strings.Contains(msg, "AUTH_INVALID_SESSION_ID") {
		t.Errorf("revoking garbage: %s", msg)
	}
	// A token is accepted too, and never echoed.
	f.mustRun("sessions", "revoke", s2.Token)
	if msg, _ := f.mustFail("sessions", "revoke", s2.Token); msg != "AUTH_INVALID_SESSION_ID: no session "+s2.ID {
		t.Errorf("revoking a token again: %s", msg)
	}
	if ss := f.liveSessions("user1"); len(ss) != 1 || ss[0].ID != s3.ID {
		t.Errorf("after revoking by token: %v", ss)
	}

	f.session("user1", "", "")
	out = f.mustRun("sessions", "revoke-all", "user1")
	contains(t, "revoke-all", out, "revoked 2 sessions of user user1")
	if ss := f.liveSessions("user1"); len(ss) != 0 {
		t.Errorf("after revoke-all: %v", ss)
	}
	if ss := f.liveSessions("user2"); len(ss) != 1 || ss[0].ID != o1.ID {
		t.Errorf("revoke-all touched another user: %v", ss)
	}
	if out := f.mustRun("sessions", "revoke-all", "user1"); !strings.Contains(out, "revoked 0 sessions") {
		t.Errorf("revoke-all again: %q", out)
	}
	if msg, _ := f.mustFail("sessions", "revoke-all", "nope"); msg != "AUTH_INVALID_USER_ID: no user nope" {
		t.Errorf("revoke-all nope: %s", msg)
	}
}

func TestCLIRotateTokenKey(t *testing.T) {
	old := rotateBatch
	rotateBatch = 2 // several pages
	t.Cleanup(func() { rotateBatch = old })

	keyA, keyB := randomKey(t), randomKey(t)
	// secrets.token_key comes first in the keyring, then secrets.token_keys:
	// B encrypts, A still opens.
	f := newCLIFixture(t, cliConfig{tokenKey: b64(keyB), tokenKeys: []string{b64(keyA)}})
	ctx := context.Background()
	ringA, _ := seal.NewKeyring(keyA)
	vaultA := providersession.NewTokenVault(ringA, f.store, nil)
	want := map[string]providersession.Tokens{}
	for i, tok := range []providersession.Tokens{
		{AccessToken: "at-1", RefreshToken: "rt-1", IDToken: "id-1", Scope: "openid", TokenType: "Bearer"},
		{AccessToken: "at-2"},
		{RefreshToken: "rt-3"},
		{AccessToken: "at-4", RefreshToken: "rt-4"},
		{AccessToken: "at-5", Expiry: time.Now().Add(time.Hour).UTC().Truncate(time.Second)},
	} {
		sub := strconv.Itoa(i + 1)
		keyID := auth.KeyID("github", sub)
		kt, _ := vaultA.Encrypt(keyID, tok)
		f.user("user"+sub, nil)
		if _, err := f.auth.CreateKeySpec(ctx, "user"+sub, auth.KeySpec{ProviderID: "github", ProviderUserID: sub, Tokens: kt}); err != nil {
			t.Fatal(err)
		}
		want[keyID] = tok
	}
	// A key without tokens is not counted.
	if _, err := f.auth.CreateKey(ctx, "user1", "oidc-x", "sub", nil); err != nil {
		t.Fatal(err)
	}

	out := f.mustRun("rotate-token-key")
	contains(t, "rotate-token-key", out, "re-encrypted 5 of 5 keys")

	ringB, _ := seal.NewKeyring(keyB)
	vaultB := providersession.NewTokenVault(ringB, f.store, nil)
	for id, tok := range want {
		k, err := f.store.GetKey(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		got, err := vaultB.Decrypt(k)
		if err != nil {
			t.Fatalf("%s does not open with B alone: %v", id, err)
		}
		if !got.Expiry.Equal(tok.Expiry) {
			t.Errorf("%s: expiry %v, want %v", id, got.Expiry, tok.Expiry)
		}
		got.Expiry = tok.Expiry
		if got != tok {
			t.Errorf("%s: %+v, want %+v", id, got, tok)
		}
		if _, err := vaultA.Decrypt(k); err == nil && (tok.AccessToken != "" || tok.RefreshToken != "") {
			t.Errorf("%s still opens with A", id)
		}
	}

	// Idempotent.
	out = f.mustRun("rotate-token-key")
	contains(t, "rotate-token-key again", out, "re-encrypted 0 of 5 keys")
}

func TestCLIRotateTokenKey_UnknownKey(t *testing.T) {
	keyA, keyB, keyC := randomKey(t), randomKey(t), randomKey(t)
	f := newCLIFixture(t, cliConfig{tokenKey: b64(keyB), tokenKeys: []string{b64(keyA)}})
	ctx := context.Background()
	for i, k := range [][]byte{keyA, keyC, keyA} {
		sub := strconv.Itoa(i + 1)
		ring, _ := seal.NewKeyring(k)
		kt, _ := providersession.NewTokenVault(ring, f.store, nil).Encrypt(auth.KeyID("github", sub), providersession.Tokens{AccessToken: "at"})
		f.user("user"+sub, nil)
		if _, err := f.auth.CreateKeySpec(ctx, "user"+sub, auth.KeySpec{ProviderID: "github", ProviderUserID: sub, Tokens: kt}); err != nil {
			t.Fatal(err)
		}
	}
	msg, out := f.mustFail("rotate-token-key")
	contains(t, "stdout", out, "re-encrypted 2 of 3 keys")
	contains(t, "error", msg, "1 key could not be re-encrypted", "github:2")
	if strings.Contains(msg, "github:1") || strings.Contains(msg, "github:3") {
		t.Errorf("error names keys that rotated: %s", msg)
	}
}

func TestCLICheckConfig(t *testing.T) {
	f := newCLIFixture(t, cliConfig{skipSeeding: true})
	out := f.mustRun("check-config")
	contains(t, "check-config", out, f.cfgPath, "configuration is valid")

	// Two validation problems: both named by their key.
	bad := newCLIFixture(t, cliConfig{skipSeeding: true, extra: "log:\n  format: xml\nsession:\n  active_period: -1h\n"})
	msg, out := bad.mustFail("check-config")
	if out != "" {
		t.Errorf("check-config on an invalid file printed %q", out)
	}
	contains(t, "check-config error", msg, bad.cfgPath, "invalid configuration", "log.format", "session.active_period")

	// Two load problems (unknown keys): both named with their full path.
	bad = newCLIFixture(t, cliConfig{skipSeeding: true, extra: "webauthn:\n  rp_idd: x\nemail:\n  sendr: log\n"})
	msg, _ = bad.mustFail("check-config")
	contains(t, "check-config error", msg, bad.cfgPath, "webauthn.rp_idd", "email.sendr", "unknown key")

	// A missing file names itself.
	msg, _ = (&cliFixture{t: t, cfgPath: filepath.Join(t.TempDir(), "missing.yaml")}).mustFail("check-config")
	contains(t, "check-config error", msg, "missing.yaml", "not found")
}

// TestCLIUsesOneConfigForEveryCommand checks that the administration
// commands refuse an invalid configuration the way serve does.
func TestCLIUsesOneConfigForEveryCommand(t *testing.T) {
	bad := newCLIFixture(t, cliConfig{skipSeeding: true, extra: "log:\n  format: xml\n"})
	for _, args := range [][]string{
		{"users", "list"}, {"users", "show", "x"}, {"users", "delete", "x"}, {"users", "set-attribute", "x", "a", "b"},
		{"sessions", "list", "x"}, {"sessions", "revoke", "x"}, {"sessions", "revoke-all", "x"}, {"rotate-token-key"}, {"migrate"},
	} {
		msg, _ := bad.mustFail(args...)
		contains(t, strings.Join(args, " "), msg, "log.format")
	}
}
