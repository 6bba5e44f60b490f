package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/scrypt"
	"golang.org/x/text/unicode/norm"
)

// Limits on argon2id parameters, for hashes being verified and for the
// parameters a PasswordHasher hashes with.
const (
	argonMaxMemory     = 1 << 20 // KiB: 1 GiB
	argonMaxIterations = 100
	// argonMaxWork bounds memory × iterations (KiB passes, 4 GiB): an
	// encoded hash may be large in one dimension, not in both.
	argonMaxWork    = 4 << 20
	argonMinSaltLen = 8 // the argon2 minimum
	argonMaxSaltLen = 64
	argonMinKeyLen  = 16
	argonMaxKeyLen  = 128
	argonVersion    = 19 // 0x13; version 16 hashes are refused
)

// Lucia v2 scrypt parameters (fixed by Lucia).
const (
	scryptN         = 16384
	scryptRS2       = 16 // "s2:" hashes
	scryptRLegacy   = 8  // "<salt>:<hex>" hashes
	scryptP         = 1
	scryptKeyLen    = 64
	scryptMaxSaltLn = 128 // Lucia's salts are 16 characters
)

// Argon2Params are argon2id cost parameters.
type Argon2Params struct {
	Memory      uint32 // KiB
	Iterations  uint32
	Parallelism uint8
	SaltLength  uint32
	KeyLength   uint32
}

// DefaultArgon2Params returns OWASP's recommended argon2id parameters
// (m=19456 KiB (19 MiB), t=2, p=1) with a 16-byte salt and a 32-byte key.
func DefaultArgon2Params() Argon2Params {
	return Argon2Params{Memory: 19456, Iterations: 2, Parallelism: 1, SaltLength: 16, KeyLength: 32}
}

// argonCheckParams reports whether p is within the limits Verify accepts.
func argonCheckParams(p Argon2Params) error {
	switch {
	case p.Iterations < 1 || p.Iterations > argonMaxIterations:
		return fmt.Errorf("iterations %d out of range [1, %d]", p.Iterations, argonMaxIterations)
	case p.Parallelism < 1:
		return errors.New("parallelism must be at least 1")
	case p.Memory < 8*uint32(p.Parallelism) || p.Memory > argonMaxMemory:
		return fmt.Errorf("memory %d KiB out of range [8×parallelism, %d]", p.Memory, argonMaxMemory)
	case uint64(p.Memory)*uint64(p.Iterations) > argonMaxWork:
		return fmt.Errorf("memory × iterations %d exceeds %d", uint64(p.Memory)*uint64(p.Iterations), argonMaxWork)
	case p.SaltLength < argonMinSaltLen || p.SaltLength > argonMaxSaltLen:
		return fmt.Errorf("salt length %d out of range [%d, %d]", p.SaltLength, argonMinSaltLen, argonMaxSaltLen)
	case p.KeyLength < argonMinKeyLen || p.KeyLength > argonMaxKeyLen:
		return fmt.Errorf("key length %d out of range [%d, %d]", p.KeyLength, argonMinKeyLen, argonMaxKeyLen)
	}
	return nil
}

// PasswordHasher hashes and verifies passwords. It is safe for concurrent
// use. The zero value is not usable; use [NewPasswordHasher].
//
// New hashes are argon2id, encoded as PHC strings that carry their
// parameters:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>
//
// (salt and hash in unpadded standard base64). Verify also accepts Lucia
// v2's scrypt formats, so users imported from a Lucia database keep their
// passwords:
//
//	s2:<salt>:<hex>  scrypt(N=16384, r=16, p=1, 64-byte key), Lucia v2
//	<salt>:<hex>     the same with r=8, Lucia's legacy format
//
// where salt is the salt string's own UTF-8 bytes and hex is lower-case.
// Those verify normally but always report that they need a rehash, as does
// an argon2id hash with parameters other than the hasher's current ones.
// Everything else (bcrypt from early Lucia betas, argon2i/argon2d, argon2
// version 16, unknown schemes, garbage) cannot be verified and is reported
// as [ErrOutdatedPassword]: the user must reset the password.
//
// Unicode: every password is normalized to NFKC before it is hashed or
// verified, for argon2id exactly as Lucia does for scrypt. A password typed
// with full-width characters, ligatures or decomposed accents ("ｐａｓｓ",
// "ﬁ", "e\u0301") therefore matches its compatibility form ("pass", "fi",
// "é"), Hash and Verify always agree, and Lucia hashes keep verifying.
// The consequence is that an argon2id hash produced elsewhere from a
// non-normalized non-ASCII password does not verify; ASCII is unaffected.
//
// Denial of service: an encoded hash is decoded strictly (canonical base64
// and decimal, parameters in the order m,t,p, nothing else) and its
// parameters are bounded before any work is done (the limits listed at
// [NewPasswordHasher]). Out-of-range parameters are reported as
// [ErrOutdatedPassword] and never run. On top of that each [PasswordHasher] runs at most a fixed
// number of hash/verify operations at once.
type PasswordHasher struct {
	params   Argon2Params
	paramErr error // non-nil when params are outside the accepted limits
	sem      chan struct{}

	// Instrumentation for tests: operations holding a slot and callers
	// waiting for one, and a hook run while holding a slot just before the
	// expensive work (nil in production).
	pwActive  atomic.Int64
	pwWaiting atomic.Int64
	pwHook    func(pwOp)
}

// pwOp describes one expensive operation, for the test hook.
type pwOp struct {
	kind   pwKind
	params Argon2Params // argon2id only
}

// NewPasswordHasher returns a hasher that hashes with p and runs at most
// maxConcurrent hash/verify operations at once (<= 0 means
// runtime.GOMAXPROCS(0)); further callers wait (respecting their context)
// so a burst of logins cannot exhaust memory: peak memory is about
// maxConcurrent × p.Memory KiB (32 MiB per Lucia s2 verification).
//
// p must be within the limits Verify accepts for stored hashes (memory
// 8×p.Parallelism KiB to 1 GiB, 1 to 100 iterations, memory × iterations
// at most 4 GiB, salt 8 to 64 bytes, key 16 to 128 bytes); otherwise Hash
// returns an error and DummyVerify does nothing.
func NewPasswordHasher(p Argon2Params, maxConcurrent int) *PasswordHasher {
	if maxConcurrent <= 0 {
		maxConcurrent = runtime.GOMAXPROCS(0)
	}
	h := &PasswordHasher{params: p, sem: make(chan struct{}, maxConcurrent)}
	if err := argonCheckParams(p); err != nil {
		h.paramErr = fmt.Errorf("auth: invalid argon2id parameters: %w", err)
	}
	return h
}

// Params returns the parameters new hashes are made with.
func (h *PasswordHasher) Params() Argon2Params { return h.params }

// pwAcquire waits for a free slot, or for ctx to end.
func (h *PasswordHasher) pwAcquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case h.sem <- struct{}{}:
	default:
		h.pwWaiting.Add(1)
		select {
		case h.sem <- struct{}{}:
			h.pwWaiting.Add(-1)
		case <-ctx.Done():
			h.pwWaiting.Add(-1)
			return ctx.Err()
		}
	}
	h.pwActive.Add(1)
	return nil
}

func (h *PasswordHasher) pwRelease() {
	h.pwActive.Add(-1)
	<-h.sem
}

// pwRun runs f in a slot.
func (h *PasswordHasher) pwRun(ctx context.Context, op pwOp, f func()) error {
	if err := h.pwAcquire(ctx); err != nil {
		return err
	}
	defer h.pwRelease()
	if h.pwHook != nil {
		h.pwHook(op)
	}
	f()
	return nil
}

func pwNormalize(password string) []byte {
	return []byte(norm.NFKC.String(password))
}

// Hash returns the PHC string
// "$argon2id$v=19$m=...,t=...,p=...$<salt b64 raw std>$<hash b64 raw std>"
// of NFKC(password) with a fresh random salt.
func (h *PasswordHasher) Hash(ctx context.Context, password string) (string, error) {
	if h.paramErr != nil {
		return "", h.paramErr
	}
	p := h.params
	salt := make([]byte, p.SaltLength)
	rand.Read(salt) // never fails (crypto/rand, Go 1.24+)
	var key []byte
	err := h.pwRun(ctx, pwOp{kind: pwArgon2id, params: p}, func() {
		key = argon2.IDKey(pwNormalize(password), salt, p.Iterations, p.Memory, p.Parallelism, p.KeyLength)
	})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argonVersion, p.Memory, p.Iterations, p.Parallelism,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// Verify checks password against an encoded hash. ok is false for a wrong
// password (err nil). needsRehash is true when the hash verified but uses
// anything other than h's current scheme and parameters (weaker or merely
// different argon2id parameters, salt or key length; Lucia's scrypt
// formats): the caller should store a fresh [PasswordHasher.Hash].
//
// err wraps [ErrOutdatedPassword] for a hash the broker cannot verify at
// all (bcrypt "$2a$"/"$2b$"/"$2y$", argon2i/argon2d, an unknown "$...$"
// scheme, argon2id parameters beyond the limits, garbage, empty), and is
// ctx.Err() when ctx ends before a slot is free.
func (h *PasswordHasher) Verify(ctx context.Context, encoded, password string) (ok, needsRehash bool, err error) {
	d, err := pwDecode(encoded)
	if err != nil {
		return false, false, err
	}
	var got []byte
	err = h.pwRun(ctx, d.op(), func() { got = d.derive(password) })
	if err != nil {
		return false, false, err
	}
	if subtle.ConstantTimeCompare(got, d.key) != 1 {
		return false, false, nil
	}
	return true, d.kind != pwArgon2id || d.params != h.params, nil
}

// DummyVerify spends the same work as a [PasswordHasher.Verify] with the
// current parameters against a fixed hash, so that callers can make an
// unknown account (or a key without a password) cost the same as a wrong
// password. It returns early when ctx ends while waiting for a slot.
func (h *PasswordHasher) DummyVerify(ctx context.Context, password string) {
	if h.paramErr != nil {
		return
	}
	d := pwDecoded{
		kind:   pwArgon2id,
		params: h.params,
		salt:   make([]byte, h.params.SaltLength),
		key:    make([]byte, h.params.KeyLength),
	}
	var got []byte
	if h.pwRun(ctx, d.op(), func() { got = d.derive(password) }) == nil {
		subtle.ConstantTimeCompare(got, d.key)
	}
}

// pwKind is a verifiable hash scheme.
type pwKind int

const (
	pwArgon2id pwKind = iota + 1
	pwScryptS2
	pwScryptLegacy
)

// pwDecoded is a parsed, bounds-checked encoded hash.
type pwDecoded struct {
	kind   pwKind
	params Argon2Params // argon2id: SaltLength/KeyLength are the decoded lengths
	salt   []byte
	key    []byte
}

func (d pwDecoded) op() pwOp { return pwOp{kind: d.kind, params: d.params} }

// derive computes the key for password under d's scheme, salt and params.
func (d pwDecoded) derive(password string) []byte {
	pw := pwNormalize(password)
	switch d.kind {
	case pwArgon2id:
		p := d.params
		return argon2.IDKey(pw, d.salt, p.Iterations, p.Memory, p.Parallelism, p.KeyLength)
	case pwScryptS2, pwScryptLegacy:
		r := scryptRS2
		if d.kind == pwScryptLegacy {
			r = scryptRLegacy
		}
		key, err := scrypt.Key(pw, d.salt, scryptN, r, scryptP, scryptKeyLen)
		if err != nil { // unreachable: the parameters are constant and valid
			panic("auth: scrypt: " + err.Error())
		}
		return key
	}
	panic("auth: unknown password hash kind")
}

func pwOutdated(reason string) error {
	return fmt.Errorf("%w: %s", ErrOutdatedPassword, reason)
}

// pwDecode parses encoded strictly. Errors wrap ErrOutdatedPassword and
// never quote the hash.
func pwDecode(encoded string) (pwDecoded, error) {
	if encoded == "" {
		return pwDecoded{}, pwOutdated("empty password hash")
	}
	if encoded[0] == '$' {
		return argonDecode(encoded)
	}
	return scryptDecode(encoded)
}

func argonDecode(encoded string) (pwDecoded, error) {
	parts := strings.Split(encoded, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
	if len(parts) < 2 {
		return pwDecoded{}, pwOutdated("malformed hash")
	}
	switch scheme := parts[1]; scheme {
	case "argon2id":
	case "2a", "2b", "2x", "2y", "2":
		return pwDecoded{}, pwOutdated("bcrypt hashes are not supported")
	case "argon2i", "argon2d":
		return pwDecoded{}, pwOutdated(scheme + " hashes are not supported")
	default:
		return pwDecoded{}, pwOutdated("unknown password hash scheme")
	}
	if len(parts) != 6 {
		return pwDecoded{}, pwOutdated("malformed argon2id hash")
	}
	if parts[2] != "v="+strconv.Itoa(argonVersion) {
		return pwDecoded{}, pwOutdated("unsupported argon2id version")
	}
	kv := strings.Split(parts[3], ",")
	if len(kv) != 3 {
		return pwDecoded{}, pwOutdated("malformed argon2id parameters")
	}
	var vals [3]uint32
	for i, name := range [3]string{"m=", "t=", "p="} {
		s, found := strings.CutPrefix(kv[i], name)
		v, ok := argonParseUint(s)
		if !found || !ok {
			return pwDecoded{}, pwOutdated("malformed argon2id parameters")
		}
		vals[i] = v
	}
	if vals[2] > 255 {
		return pwDecoded{}, pwOutdated("argon2id parallelism out of range")
	}
	salt, ok1 := argonDecodeB64(parts[4], argonMaxSaltLen)
	key, ok2 := argonDecodeB64(parts[5], argonMaxKeyLen)
	if !ok1 || !ok2 {
		return pwDecoded{}, pwOutdated("malformed argon2id salt or hash")
	}
	p := Argon2Params{
		Memory:      vals[0],
		Iterations:  vals[1],
		Parallelism: uint8(vals[2]),
		SaltLength:  uint32(len(salt)),
		KeyLength:   uint32(len(key)),
	}
	if err := argonCheckParams(p); err != nil {
		return pwDecoded{}, pwOutdated("argon2id parameters refused: " + err.Error())
	}
	return pwDecoded{kind: pwArgon2id, params: p, salt: salt, key: key}, nil
}

// argonParseUint parses a canonical decimal uint32: digits only, no sign,
// no leading zero.
func argonParseUint(s string) (uint32, bool) {
	if s == "" || len(s) > 10 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 10, 32)
	return uint32(v), err == nil
}

// argonDecodeB64 decodes canonical unpadded standard base64 of at most maxLen
// bytes. (The decoder alone would skip '\r' and '\n' and, without Strict,
// accept non-zero trailing bits.)
func argonDecodeB64(s string, maxLen int) ([]byte, bool) {
	if s == "" || len(s) > base64.RawStdEncoding.EncodedLen(maxLen) {
		return nil, false
	}
	b, err := base64.RawStdEncoding.Strict().DecodeString(s)
	if err != nil || base64.RawStdEncoding.EncodeToString(b) != s {
		return nil, false
	}
	return b, true
}

// scryptDecode parses Lucia's formats the way Lucia's validateScryptHash
// splits them: two ':'-separated parts are legacy (r=8), three with "s2"
// first are v2 (r=16), anything else is unknown.
func scryptDecode(encoded string) (pwDecoded, error) {
	parts := strings.Split(encoded, ":")
	var d pwDecoded
	var salt, hexKey string
	switch {
	case len(parts) == 2:
		d.kind, salt, hexKey = pwScryptLegacy, parts[0], parts[1]
	case len(parts) == 3 && parts[0] == "s2":
		d.kind, salt, hexKey = pwScryptS2, parts[1], parts[2]
	default:
		return pwDecoded{}, pwOutdated("unknown password hash format")
	}
	if salt == "" || len(salt) > scryptMaxSaltLn {
		return pwDecoded{}, pwOutdated("malformed scrypt salt")
	}
	key, ok := scryptDecodeHex(hexKey)
	if !ok {
		return pwDecoded{}, pwOutdated("malformed scrypt hash")
	}
	d.salt, d.key = []byte(salt), key
	return d, nil
}

// scryptDecodeHex decodes exactly scryptKeyLen bytes of lower-case hex (Lucia
// compares hex strings, so upper-case never verified there either).
func scryptDecodeHex(s string) ([]byte, bool) {
	if len(s) != 2*scryptKeyLen {
		return nil, false
	}
	key := make([]byte, scryptKeyLen)
	for i := range key {
		hi, ok1 := scryptHexNibble(s[2*i])
		lo, ok2 := scryptHexNibble(s[2*i+1])
		if !ok1 || !ok2 {
			return nil, false
		}
		key[i] = hi<<4 | lo
	}
	return key, true
}

func scryptHexNibble(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
