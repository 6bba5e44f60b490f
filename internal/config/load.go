package config

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts the name of every environment variable that overrides a
// key: BROKER_SERVER_LISTEN overrides server.listen.
const EnvPrefix = "BROKER_"

// Files [Dev] keeps in its directory.
const (
	DevDatabaseFile = "broker.db"           // the SQLite database
	DevSecretsFile  = "broker-secrets.json" // generated keys, mode 0600
)

// EnvName returns the environment variable that overrides key, e.g.
// BROKER_PROVIDERS_OIDC_DEX_CLIENT_SECRET for
// providers.oidc.dex.client_secret.
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))
}

// LoadError is returned by [Load] and [Dev] when the configuration cannot be
// read: the file is missing or not YAML, a key is unknown, a value has the
// wrong type, or a secret file cannot be read. Err is a single error or an
// [errors.Join] of [*FieldError] values.
type LoadError struct {
	File string // the config file; empty in development mode
	Err  error
}

// Error returns one line per problem, each naming the file.
func (e *LoadError) Error() string { return strings.Join(Explain(e), "\n") }

// Unwrap returns Err.
func (e *LoadError) Unwrap() error { return e.Err }

func (e *LoadError) prefix() string {
	if e.File == "" {
		return "development config: "
	}
	return "config file " + e.File + ": "
}

// problem is a file-level error with a short message that still unwraps to
// its cause (fs.ErrNotExist and the like).
type problem struct {
	msg string
	err error
}

func (p *problem) Error() string { return p.msg }
func (p *problem) Unwrap() error { return p.err }

// Load reads the YAML file at path over [Defaults], applies BROKER_*
// overrides read through getenv (nil means no environment), reads the _file
// secrets and decodes the keyrings. It does not call [Config.Validate]. Every
// error is a [*LoadError] naming the file.
func Load(path string, getenv func(string) string) (*Config, error) {
	fail := func(err error) (*Config, error) { return nil, &LoadError{File: path, Err: err} }
	if path == "" {
		return fail(errors.New("no file name given"))
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fail(&problem{"not found", err})
	case err != nil:
		return fail(&problem{"cannot read: " + err.Error(), err})
	}
	var top any
	if err := yaml.Unmarshal(data, &top); err != nil {
		return fail(&problem{"not YAML: " + strings.TrimPrefix(err.Error(), "yaml: "), err})
	}
	file, ok := stringKeys(top).(map[string]any)
	if top != nil && !ok {
		return fail(errors.New("not a YAML mapping of keys (server:, database:, …)"))
	}
	unknown := unknownKeys("", file, reflect.TypeFor[Config]())
	v := viper.New()
	if err := v.MergeConfigMap(dropNulls(file, reflect.TypeFor[Config]()).(map[string]any)); err != nil {
		return fail(err)
	}
	c, err := build(v, getenv, filepath.Dir(path), nil, nil, unknown)
	if err != nil {
		return fail(err)
	}
	c.Source = path
	return c, nil
}

// Dev returns the development-mode configuration used when there is no
// config file (SPEC §8): SQLite at dir/broker.db with auto_migrate,
// http://localhost:8080, passkeys (rp_id localhost), passwords, email links
// through the log sender and text logs. The cookie and token keys are
// generated on the first call and kept in dir/broker-secrets.json (mode 0600)
// so that sessions and sealed tokens survive a restart. BROKER_* variables
// read through getenv still override everything; when they move the listener
// or the public URL, the passkey origin and rp_id follow unless they are
// overridden too. dir is created when missing; "" means the working
// directory.
func Dev(dir string, getenv func(string) string) (*Config, error) {
	fail := func(err error) (*Config, error) { return nil, &LoadError{Err: err} }
	if dir == "" {
		dir = "."
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(err)
	}
	keys, err := devSecrets(filepath.Join(dir, DevSecretsFile))
	if err != nil {
		return fail(err)
	}
	dev := map[string]any{
		"database.url":          sqliteURL(filepath.Join(dir, DevDatabaseFile)),
		"database.auto_migrate": true,
		"secrets.cookie_key":    keys.CookieKey,
		"secrets.token_key":     keys.TokenKey,
		"webauthn.rp_id":        "localhost",
		"webauthn.origins":      []string{"http://localhost:8080"},
		"password.enabled":      true,
		"email.sender":          "log",
		"email.from":            "Broker <login@localhost>",
		"log.format":            "text",
	}
	c, err := build(viper.New(), getenv, "", dev, devFollow, nil)
	if err != nil {
		return fail(err)
	}
	c.Dev = true
	return c, nil
}

// devFollow keeps the development defaults coherent when the environment
// moves the listener or the public URL: passkeys only work on the origin the
// browser sees.
func devFollow(v *viper.Viper, fromEnv map[string]string) {
	if _, ok := fromEnv["server.public_url"]; !ok {
		if _, port, err := net.SplitHostPort(v.GetString("server.listen")); err == nil && port != "8080" && port != "0" {
			v.Set("server.public_url", "http://localhost:"+port)
		}
	}
	pub, err := url.Parse(v.GetString("server.public_url"))
	if err != nil || pub.Host == "" {
		return
	}
	if _, ok := fromEnv["webauthn.origins"]; !ok {
		v.Set("webauthn.origins", []string{pub.Scheme + "://" + pub.Host})
	}
	if _, ok := fromEnv["webauthn.rp_id"]; !ok {
		v.Set("webauthn.rp_id", pub.Hostname())
	}
}

// sqliteURL spells a file path the way SPEC §8 writes SQLite URLs.
func sqliteURL(path string) string {
	path = filepath.ToSlash(path)
	if strings.HasPrefix(path, "/") {
		return "sqlite://" + path
	}
	return "sqlite:" + path
}

type devKeys struct {
	CookieKey string `json:"cookie_key"`
	TokenKey  string `json:"token_key"`
}

// devSecrets reads the development keys at path, or generates and writes
// them. The file appears atomically (written aside, then hard-linked into
// place), so two brokers starting at once agree on one set of keys.
func devSecrets(path string) (devKeys, error) {
	read := func() (devKeys, error) {
		var k devKeys
		data, err := os.ReadFile(path)
		if err != nil {
			return k, err
		}
		if err := json.Unmarshal(data, &k); err != nil {
			return k, fmt.Errorf("%s: not JSON: %w", path, err)
		}
		for name, s := range map[string]string{"cookie_key": k.CookieKey, "token_key": k.TokenKey} {
			if _, err := decodeKey(s); err != nil {
				return k, fmt.Errorf("%s: %s %v (delete the file to generate new keys)", path, name, err)
			}
		}
		return k, nil
	}
	k, err := read()
	if !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	k = devKeys{CookieKey: newKey(), TokenKey: newKey()}
	data, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return k, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".broker-secrets-*") // mode 0600
	if err != nil {
		return k, err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(append(data, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return k, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return k, err
	}
	switch err := os.Link(tmp.Name(), path); {
	case errors.Is(err, fs.ErrExist):
		return read() // another broker got there first
	case err != nil:
		// No hard links on this file system: a rename may clobber a racing
		// writer's file, which only matters when two start at once.
		if err := os.Rename(tmp.Name(), path); err != nil {
			return k, fmt.Errorf("write %s: %w", path, err)
		}
	}
	return k, nil
}

func newKey() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand since Go 1.24)
	return base64.StdEncoding.EncodeToString(b)
}

// build layers defaults (and extra defaults), the config already read into v
// and the environment, then decodes into a Config. follow, when set, runs
// after the environment is applied.
//
// unknown are the unknown keys of the file, reported together with the
// values that do not decode.
func build(v *viper.Viper, getenv func(string) string, base string, extra map[string]any,
	follow func(*viper.Viper, map[string]string), unknown []error) (*Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	setDefaults(v, "", reflect.ValueOf(*Defaults()))
	if instances, ok := v.Get("providers.oidc").(map[string]any); ok {
		for name := range instances {
			setDefaults(v, "providers.oidc."+name, reflect.ValueOf(DefaultOIDC(name)))
		}
	}
	for k, val := range extra {
		v.SetDefault(k, val)
	}
	fromEnv := applyEnv(v, getenv)
	if follow != nil {
		follow(v, fromEnv)
	}

	var c Config
	err := v.UnmarshalExact(&c, viper.DecodeHook(mapstructure.DecodeHookFuncType(decodeHook)))
	if err != nil || len(unknown) > 0 {
		errs := unknown
		decodeErrors(err, fromEnv, &errs, len(unknown) > 0)
		return nil, errors.Join(errs...)
	}
	if errs := c.readSecretFiles(base, fromEnv); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	c.CookieKeys = keyring(c.Secrets.CookieKey, c.Secrets.CookieKeys)
	c.TokenKeys = keyring(c.Secrets.TokenKey, c.Secrets.TokenKeys)
	return &c, nil
}

// setDefaults registers every leaf of the struct val under prefix. Maps and
// lists of structs (claims, attributes, oidc, access) have no scalar default:
// their entries come from the file.
func setDefaults(v *viper.Viper, prefix string, val reflect.Value) {
	t := val.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("mapstructure")
		if tag == "" || tag == "-" {
			continue
		}
		key := joinKey(prefix, tag)
		fv := val.Field(i)
		switch {
		case f.Type.Kind() == reflect.Struct:
			setDefaults(v, key, fv)
		case f.Type.Kind() == reflect.Map,
			f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
		default:
			v.SetDefault(key, fv.Interface())
		}
	}
}

func joinKey(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// applyEnv overrides every known key whose variable getenv returns non-empty
// (an empty value counts as unset, as in viper) and returns key → variable
// for the keys it set.
func applyEnv(v *viper.Viper, getenv func(string) string) map[string]string {
	fromEnv := map[string]string{}
	for _, key := range v.AllKeys() {
		name := EnvName(key)
		if val := getenv(name); val != "" {
			v.Set(key, val)
			fromEnv[key] = name
		}
	}
	return fromEnv
}

var (
	durationType    = reflect.TypeFor[time.Duration]()
	stringSliceType = reflect.TypeFor[[]string]()
)

// decodeHook reads Go durations (refusing bare numbers, which would be
// nanoseconds) and comma-separated lists (from the environment).
func decodeHook(from, to reflect.Type, data any) (any, error) {
	switch {
	case to == durationType:
		switch d := data.(type) {
		case string:
			dur, err := time.ParseDuration(strings.TrimSpace(d))
			if err != nil {
				return nil, fmt.Errorf("%q is not a duration; write one such as 90s, 15m or 24h", d)
			}
			return dur, nil
		case time.Duration:
			return d, nil
		case nil:
			return d, nil
		case int, int64, uint64, float64:
			return nil, fmt.Errorf("%v has no unit; write a duration such as 90s, 15m or 24h", d)
		default:
			return nil, fmt.Errorf("want a duration such as 90s, 15m or 24h, got %s", valueName(d))
		}
	case to == stringSliceType && from.Kind() == reflect.String:
		items := []string{}
		for item := range strings.SplitSeq(data.(string), ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
		return items, nil
	}
	return data, nil
}

// unknownKeys walks the merged settings against the Config type and reports
// every key it does not have, with its full path.
func unknownKeys(path string, data any, t reflect.Type) []error {
	var errs []error
	switch t.Kind() {
	case reflect.Struct:
		m, ok := data.(map[string]any)
		if !ok || t == durationType {
			return nil
		}
		fields := map[string]reflect.Type{}
		var names []string
		for i := range t.NumField() {
			tag := t.Field(i).Tag.Get("mapstructure")
			if tag != "" && tag != "-" {
				fields[tag] = t.Field(i).Type
				names = append(names, tag)
			}
		}
		for _, k := range sortedKeys(m) {
			ft, ok := fields[strings.ToLower(k)]
			if !ok {
				errs = append(errs, &FieldError{Path: joinKey(path, k), Problem: "unknown key" + suggest(k, names)})
				continue
			}
			errs = append(errs, unknownKeys(joinKey(path, k), m[k], ft)...)
		}
	case reflect.Map:
		if m, ok := data.(map[string]any); ok {
			for _, k := range sortedKeys(m) {
				errs = append(errs, unknownKeys(joinKey(path, k), m[k], t.Elem())...)
			}
		}
	case reflect.Slice:
		if s, ok := data.([]any); ok {
			for i, item := range s {
				errs = append(errs, unknownKeys(fmt.Sprintf("%s[%d]", path, i), item, t.Elem())...)
			}
		}
	}
	return errs
}

// stringKeys turns YAML mappings with non-string keys (1:, true:) into
// string-keyed ones, so that viper and the checks see one kind of map.
func stringKeys(data any) any {
	switch d := data.(type) {
	case map[string]any:
		for k, v := range d {
			d[k] = stringKeys(v)
		}
		return d
	case map[any]any:
		m := make(map[string]any, len(d))
		for k, v := range d {
			m[fmt.Sprint(k)] = stringKeys(v)
		}
		return m
	case []any:
		for i, v := range d {
			d[i] = stringKeys(v)
		}
	}
	return data
}

// dropNulls removes keys the file leaves empty (listen: with no value), so
// that their defaults apply, and turns an empty block (server:, or an OIDC
// instance dex:) into an empty mapping, so that it still exists and its
// defaults and environment overrides apply below it. Viper would otherwise
// keep the null as a value that hides every default under it.
func dropNulls(data any, t reflect.Type) any {
	switch d := data.(type) {
	case nil:
		return map[string]any{}
	case map[string]any:
		for k, v := range d {
			ft := childType(t, k)
			switch {
			case v != nil:
				d[k] = dropNulls(v, ft)
			case ft != nil && (ft.Kind() == reflect.Struct && ft != durationType || ft.Kind() == reflect.Map):
				d[k] = map[string]any{}
			default:
				delete(d, k)
			}
		}
	case []any:
		var elem reflect.Type
		if t != nil && t.Kind() == reflect.Slice {
			elem = t.Elem()
		}
		for i, v := range d {
			if v != nil {
				d[i] = dropNulls(v, elem)
			}
		}
	}
	return data
}

// childType is the type of key k under a value of type t, or nil when unknown.
func childType(t reflect.Type, k string) reflect.Type {
	if t == nil {
		return nil
	}
	switch t.Kind() {
	case reflect.Map:
		return t.Elem()
	case reflect.Struct:
		for i := range t.NumField() {
			if t.Field(i).Tag.Get("mapstructure") == strings.ToLower(k) {
				return t.Field(i).Type
			}
		}
	}
	return nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// suggest names the known key closest to k, when one is close.
func suggest(k string, known []string) string {
	best, bestD := "", 3
	for _, name := range known {
		if d := distance(strings.ToLower(k), name); d < bestD {
			best, bestD = name, d
		}
	}
	if best == "" {
		return ""
	}
	return " (did you mean " + best + "?)"
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var mapIndex = regexp.MustCompile(`\[([^\]]*)\]`)

// decodeErrors flattens mapstructure's errors into one [*FieldError] per key,
// with paths spelled as in the file (providers.oidc.dex.issuer, access[0].host).
//
// With skipUnused, mapstructure's own unknown-key errors are left out: the
// caller has reported those keys already, with better paths.
func decodeErrors(err error, fromEnv map[string]string, out *[]error, skipUnused bool) {
	if err == nil {
		return
	}
	if de, ok := err.(*mapstructure.DecodeError); ok {
		inner := de.Unwrap()
		var nested *mapstructure.DecodeError
		if _, joined := inner.(interface{ Unwrap() []error }); joined || errors.As(inner, &nested) {
			decodeErrors(inner, fromEnv, out, skipUnused)
			return
		}
		if skipUnused && strings.HasPrefix(inner.Error(), "has invalid keys") {
			return
		}
		path := mapIndex.ReplaceAllStringFunc(de.Name(), func(s string) string {
			k := s[1 : len(s)-1]
			if strings.Trim(k, "0123456789") == "" {
				return s
			}
			return "." + k
		})
		msg := describe(inner)
		if name, ok := fromEnv[path]; ok {
			msg = "from " + name + ": " + msg
		}
		*out = append(*out, &FieldError{Path: path, Problem: msg})
		return
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			decodeErrors(e, fromEnv, out, skipUnused)
		}
		return
	}
	if u := errors.Unwrap(err); u != nil {
		decodeErrors(u, fromEnv, out, skipUnused)
		return
	}
	*out = append(*out, err)
}

func describe(err error) string {
	var ute *mapstructure.UnconvertibleTypeError
	if errors.As(err, &ute) {
		return fmt.Sprintf("want %s, got %s", typeName(ute.Expected.Type()), valueName(ute.Value))
	}
	var pe *mapstructure.ParseError
	if errors.As(err, &pe) {
		return fmt.Sprintf("cannot read %q as %s", fmt.Sprint(pe.Value), typeName(pe.Expected.Type()))
	}
	return err.Error()
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping of keys"
	}
	return t.String()
}

func valueName(v any) string {
	switch v.(type) {
	case []any:
		return "a list"
	case map[string]any, map[any]any:
		return "a mapping of keys"
	case nil:
		return "nothing"
	}
	return fmt.Sprintf("%q", fmt.Sprint(v))
}

// readSecretFiles replaces every x_file by the contents of its file. A
// relative path from the file is relative to base (the file's directory).
func (c *Config) readSecretFiles(base string, fromEnv map[string]string) []error {
	var errs []error
	read := func(fileKey, valueKey, file string, set bool) (string, bool) {
		if file == "" {
			return "", false
		}
		if set {
			errs = append(errs, &FieldError{Path: fileKey, Problem: "set either " + valueKey + " or " + fileKey + ", not both"})
			return "", false
		}
		if _, env := fromEnv[fileKey]; !env && base != "" && !filepath.IsAbs(file) {
			file = filepath.Join(base, file)
		}
		data, err := os.ReadFile(file)
		if err != nil {
			errs = append(errs, &FieldError{Path: fileKey, Problem: "cannot read: " + err.Error()})
			return "", false
		}
		s := strings.TrimSpace(string(data))
		if s == "" {
			errs = append(errs, &FieldError{Path: fileKey, Problem: file + " is empty"})
			return "", false
		}
		return s, true
	}
	one := func(prefix, name string, value *string, file string) {
		if s, ok := read(prefix+name+"_file", prefix+name, file, *value != ""); ok {
			*value = s
		}
	}
	list := func(prefix, name string, value *[]string, file string) {
		if s, ok := read(prefix+name+"_file", prefix+name, file, len(*value) > 0); ok {
			*value = strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
		}
	}
	s := &c.Secrets
	one("database.", "url", &c.Database.URL, c.Database.URLFile)
	one("secrets.", "cookie_key", &s.CookieKey, s.CookieKeyFile)
	list("secrets.", "cookie_keys", &s.CookieKeys, s.CookieKeysFile)
	one("secrets.", "token_key", &s.TokenKey, s.TokenKeyFile)
	list("secrets.", "token_keys", &s.TokenKeys, s.TokenKeysFile)
	one("providers.github.", "client_secret", &c.Providers.GitHub.ClientSecret, c.Providers.GitHub.ClientSecretFile)
	one("providers.google.", "client_secret", &c.Providers.Google.ClientSecret, c.Providers.Google.ClientSecretFile)
	for _, name := range sortedNames(c.Providers.OIDC) {
		p := c.Providers.OIDC[name]
		one("providers.oidc."+name+".", "client_secret", &p.ClientSecret, p.ClientSecretFile)
		c.Providers.OIDC[name] = p
	}
	one("email.smtp.", "password", &c.Email.SMTP.Password, c.Email.SMTP.PasswordFile)
	return errs
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// decodeKey reads a 32-byte key written in standard or URL-safe base64,
// padded or not.
func decodeKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != 32 {
				return nil, fmt.Errorf("must be base64 of 32 bytes, not %d (generate one with: openssl rand -base64 32)", len(b))
			}
			return b, nil
		}
	}
	return nil, errors.New("is not base64 (generate a key with: openssl rand -base64 32)")
}

// keyring decodes first then rest, skipping empty, invalid and repeated keys
// ([Config.Validate] reports the invalid ones).
func keyring(first string, rest []string) [][]byte {
	var ring [][]byte
	for _, s := range append([]string{first}, rest...) {
		b, err := decodeKey(s)
		if s == "" || err != nil {
			continue
		}
		dup := false
		for _, k := range ring {
			dup = dup || bytes.Equal(k, b)
		}
		if !dup {
			ring = append(ring, b)
		}
	}
	return ring
}
