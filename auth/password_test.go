package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// pwCheapParams keeps tests fast (64 KiB, one pass).
var pwCheapParams = Argon2Params{Memory: 64, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}

var pwPHC = regexp.MustCompile(`^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$`)

func pwMustHash(t testing.TB, h *PasswordHasher, password string) string {
	t.Helper()
	enc, err := h.Hash(context.Background(), password)
	if err != nil {
		t.Fatalf("Hash: %v", err)
	}
	return enc
}

func TestPasswordHashVerifyRoundTrip(t *testing.T) {
	ctx := context.Background()
	h := NewPasswordHasher(pwCheapParams, 2)
	if h.Params() != pwCheapParams {
		t.Fatalf("Params() = %+v, want %+v", h.Params(), pwCheapParams)
	}
	for _, pw := range []string{"correct horse battery staple", "", "pässwörd ✓ 密码", strings.Repeat("x", 1000)} {
		enc := pwMustHash(t, h, pw)
		m := pwPHC.FindStringSubmatch(enc)
		if m == nil {
			t.Fatalf("Hash = %q, not a PHC argon2id string", enc)
		}
		if m[1] != "64" || m[2] != "1" || m[3] != "1" {
			t.Errorf("Hash = %q, want m=64,t=1,p=1", enc)
		}
		salt, _ := base64.RawStdEncoding.DecodeString(m[4])
		key, _ := base64.RawStdEncoding.DecodeString(m[5])
		if len(salt) != 16 || len(key) != 32 {
			t.Errorf("salt %d bytes, key %d bytes; want 16, 32", len(salt), len(key))
		}
		ok, rehash, err := h.Verify(ctx, enc, pw)
		if !ok || rehash || err != nil {
			t.Errorf("Verify(Hash(%q)) = %v, %v, %v; want true, false, nil", pw, ok, rehash, err)
		}
	}
	// Fresh salt every time.
	if a, b := pwMustHash(t, h, "same"), pwMustHash(t, h, "same"); a == b {
		t.Errorf("two hashes of the same password are equal: %q", a)
	}
}

func TestPasswordNFKC(t *testing.T) {
	// Hash and Verify both normalize to NFKC, like Lucia.
	ctx := context.Background()
	h := NewPasswordHasher(pwCheapParams, 1)
	cases := []struct{ typed, equivalent string }{
		{"ｐａｓｓ", "pass"},               // full-width
		{"\ufb01sh", "fish"},           // ligature
		{"cafe\u0301", "caf\u00e9"},    // decomposed vs composed
		{"\u2460\u2461", "12"},         // circled digits
		{"A\u030angstrom", "Ångstrom"}, // combining ring
	}
	for _, c := range cases {
		for _, pair := range [][2]string{{c.typed, c.equivalent}, {c.equivalent, c.typed}} {
			enc := pwMustHash(t, h, pair[0])
			for _, try := range pair {
				if ok, _, err := h.Verify(ctx, enc, try); !ok || err != nil {
					t.Errorf("Verify(Hash(%q), %q) = %v, %v; want true", pair[0], try, ok, err)
				}
			}
		}
	}
}

func TestPasswordWrongPassword(t *testing.T) {
	ctx := context.Background()
	h := NewPasswordHasher(pwCheapParams, 1)
	enc := pwMustHash(t, h, "right")
	for _, wrong := range []string{"wrong", "", "Right", "right ", "righ"} {
		ok, rehash, err := h.Verify(ctx, enc, wrong)
		if ok || rehash || err != nil {
			t.Errorf("Verify(%q) = %v, %v, %v; want false, false, nil", wrong, ok, rehash, err)
		}
	}
}

func TestPasswordNeedsRehash(t *testing.T) {
	ctx := context.Background()
	current := NewPasswordHasher(pwCheapParams, 2)

	stronger := pwCheapParams
	stronger.Memory, stronger.Iterations = 128, 2
	longerKey := pwCheapParams
	longerKey.KeyLength = 64
	shortSalt := pwCheapParams
	shortSalt.SaltLength = 8
	parallel := pwCheapParams
	parallel.Parallelism = 2
	weaker := pwCheapParams
	weaker.Memory = 32

	for name, p := range map[string]Argon2Params{
		"weaker memory": weaker, "stronger": stronger, "key length": longerKey,
		"salt length": shortSalt, "parallelism": parallel,
	} {
		enc := pwMustHash(t, NewPasswordHasher(p, 1), "pw")
		ok, rehash, err := current.Verify(ctx, enc, "pw")
		if !ok || !rehash || err != nil {
			t.Errorf("%s: Verify = %v, %v, %v; want true, true, nil", name, ok, rehash, err)
		}
		// A wrong password never asks for a rehash.
		if ok, rehash, err := current.Verify(ctx, enc, "nope"); ok || rehash || err != nil {
			t.Errorf("%s: Verify(wrong) = %v, %v, %v; want false, false, nil", name, ok, rehash, err)
		}
	}

	// Same params: no rehash, even from another hasher instance.
	enc := pwMustHash(t, NewPasswordHasher(pwCheapParams, 1), "pw")
	if ok, rehash, err := current.Verify(ctx, enc, "pw"); !ok || rehash || err != nil {
		t.Errorf("same params: Verify = %v, %v, %v; want true, false, nil", ok, rehash, err)
	}
}

func TestPasswordDefaultParams(t *testing.T) {
	want := Argon2Params{Memory: 19456, Iterations: 2, Parallelism: 1, SaltLength: 16, KeyLength: 32}
	if got := DefaultArgon2Params(); got != want {
		t.Fatalf("DefaultArgon2Params() = %+v, want %+v", got, want)
	}
	h := NewPasswordHasher(DefaultArgon2Params(), 0)
	enc := pwMustHash(t, h, "correct horse battery staple")
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("default hash = %q, want prefix $argon2id$v=19$m=19456,t=2,p=1$", enc)
	}
	m := pwPHC.FindStringSubmatch(enc)
	if m == nil || len(m[4]) != 22 || len(m[5]) != 43 { // 16 and 32 bytes, unpadded
		t.Errorf("default hash = %q, want a 16-byte salt and 32-byte key", enc)
	}
	ok, rehash, err := h.Verify(context.Background(), enc, "correct horse battery staple")
	if !ok || rehash || err != nil {
		t.Errorf("Verify = %v, %v, %v; want true, false, nil", ok, rehash, err)
	}
	if got := cap(h.sem); got != runtime.GOMAXPROCS(0) {
		t.Errorf("maxConcurrent 0 gave %d slots, want GOMAXPROCS %d", got, runtime.GOMAXPROCS(0))
	}
}

// pwLuciaVectors mirrors testdata/lucia_vectors.json, generated with Node.js
// (see its command field), independently of this package.
type pwLuciaVectors struct {
	Comment string `json:"comment"`
	Command string `json:"command"`
	Vectors []struct {
		Format   string `json:"format"`
		Password string `json:"password"`
		NFKC     string `json:"nfkc"`
		Salt     string `json:"salt"`
		R        int    `json:"r"`
		Encoded  string `json:"encoded"`
	} `json:"vectors"`
}

func TestPasswordLuciaVectors(t *testing.T) {
	t.Parallel() // scrypt (16-32 MiB, slow under -race) overlaps with other tests
	raw, err := os.ReadFile("testdata/lucia_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var file pwLuciaVectors
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(file.Command, "scryptSync") {
		t.Errorf("lucia_vectors.json does not record its node command")
	}
	counts := map[string]int{}
	nonASCII := map[string]bool{}
	ctx := context.Background()
	h := NewPasswordHasher(pwCheapParams, 0)
	var wg sync.WaitGroup
	for _, v := range file.Vectors {
		counts[v.Format]++
		if v.Password != v.NFKC {
			nonASCII[v.Format] = true
		}
		d, err := pwDecode(v.Encoded)
		if err != nil {
			t.Fatalf("%s vector %q: %v", v.Format, v.Encoded, err)
		}
		wantKind, wantR := map[string]pwKind{"s2": pwScryptS2, "legacy": pwScryptLegacy}[v.Format], map[string]int{"s2": 16, "legacy": 8}[v.Format]
		if d.kind != wantKind || v.R != wantR || string(d.salt) != v.Salt {
			t.Errorf("%s vector decoded as kind %d salt %q (r=%d)", v.Format, d.kind, d.salt, v.R)
		}
		check := func(password string, wantOK bool) {
			defer wg.Done()
			ok, rehash, err := h.Verify(ctx, v.Encoded, password)
			if err != nil || ok != wantOK || rehash != wantOK {
				t.Errorf("%s Verify(%q, %q) = %v, %v, %v; want %v, %v, nil", v.Format, v.Encoded, password, ok, rehash, err, wantOK, wantOK)
			}
		}
		// v.Password is typed as is; node hashed v.NFKC, so the non-ASCII
		// vectors prove that Verify normalizes. (scrypt is slow under -race:
		// one wrong password per format.)
		wg.Add(1)
		go check(v.Password, true)
		if counts[v.Format] == 1 {
			wg.Add(1)
			go check(v.Password+"!", false)
		}
	}
	wg.Wait()
	if counts["s2"] < 2 || counts["legacy"] < 2 || !nonASCII["s2"] || !nonASCII["legacy"] {
		t.Errorf("want >= 2 vectors per format, each with a password NFKC changes; got %v, %v", counts, nonASCII)
	}
}

func TestPasswordVerifyOutdated(t *testing.T) {
	ctx := context.Background()
	h := NewPasswordHasher(pwCheapParams, 1)
	h.pwHook = func(op pwOp) { t.Errorf("work ran for an unverifiable hash: %+v", op) }
	const (
		salt = "c29tZXNhbHRzb21lc2FsdA"                      // 16 bytes
		key  = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" // 32 bytes
		hex  = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	)
	cases := map[string]string{
		"empty":             "",
		"garbage":           "hello world",
		"bcrypt 2a":         "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
		"bcrypt 2b":         "$2b$12$KIXQJQ2Hn3xZRV5EHzGgAe5V3E1Yhb9h8m0nRkOeqW3d1QmNQ9kDy",
		"bcrypt 2y":         "$2y$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
		"argon2i":           "$argon2i$v=19$m=64,t=1,p=1$" + salt + "$" + key,
		"argon2d":           "$argon2d$v=19$m=64,t=1,p=1$" + salt + "$" + key,
		"unknown scheme":    "$pbkdf2-sha256$29000$N2ZmOBU$ZWQ",
		"dollar only":       "$",
		"version 16":        "$argon2id$v=16$m=64,t=1,p=1$" + salt + "$" + key,
		"no version":        "$argon2id$m=64,t=1,p=1$" + salt + "$" + key,
		"memory > 1 GiB":    "$argon2id$v=19$m=1048577,t=1,p=1$" + salt + "$" + key,
		"memory huge":       "$argon2id$v=19$m=4294967295,t=1,p=1$" + salt + "$" + key,
		"memory overflow":   "$argon2id$v=19$m=4294967296,t=1,p=1$" + salt + "$" + key,
		"work cap":          "$argon2id$v=19$m=1048576,t=5,p=1$" + salt + "$" + key,
		"iterations > 100":  "$argon2id$v=19$m=64,t=101,p=1$" + salt + "$" + key,
		"iterations 0":      "$argon2id$v=19$m=64,t=0,p=1$" + salt + "$" + key,
		"parallelism 0":     "$argon2id$v=19$m=64,t=1,p=0$" + salt + "$" + key,
		"parallelism 256":   "$argon2id$v=19$m=4096,t=1,p=256$" + salt + "$" + key,
		"memory < 8p":       "$argon2id$v=19$m=15,t=1,p=2$" + salt + "$" + key,
		"leading zero":      "$argon2id$v=19$m=064,t=1,p=1$" + salt + "$" + key,
		"sign":              "$argon2id$v=19$m=+64,t=1,p=1$" + salt + "$" + key,
		"param order":       "$argon2id$v=19$t=1,m=64,p=1$" + salt + "$" + key,
		"extra param":       "$argon2id$v=19$m=64,t=1,p=1,keyid=abc$" + salt + "$" + key,
		"salt too short":    "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$" + key,
		"salt too long":     "$argon2id$v=19$m=64,t=1,p=1$" + strings.Repeat("A", 88) + "$" + key,
		"key too short":     "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$AAAAAAAAAAAAAAAAAAAA",
		"key too long":      "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + strings.Repeat("A", 172),
		"padded base64":     "$argon2id$v=19$m=64,t=1,p=1$" + salt + "==$" + key,
		"newline base64":    "$argon2id$v=19$m=64,t=1,p=1$" + salt[:8] + "\n" + salt[8:] + "$" + key,
		"url base64":        "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + strings.Repeat("_", 43),
		"non-canonical":     "$argon2id$v=19$m=64,t=1,p=1$" + salt[:21] + "B$" + key,
		"empty salt":        "$argon2id$v=19$m=64,t=1,p=1$$" + key,
		"trailing field":    "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + key + "$",
		"s3 scheme":         "s3:abcdefghijklmnop:" + hex,
		"too many colons":   "s2:abc:def:" + hex,
		"upper-case hex":    "s2:abcdefghijklmnop:" + strings.ToUpper(hex),
		"short hex":         "s2:abcdefghijklmnop:" + hex[:126],
		"odd hex":           "abcdefghijklmnop:" + hex[:127],
		"non-hex":           "abcdefghijklmnop:" + hex[:126] + "zz",
		"empty salt s2":     "s2::" + hex,
		"empty salt legacy": ":" + hex,
		"long salt":         strings.Repeat("s", 129) + ":" + hex,
	}
	for name, enc := range cases {
		ok, rehash, err := h.Verify(ctx, enc, "password")
		if !errors.Is(err, ErrOutdatedPassword) || ok || rehash {
			t.Errorf("%s: Verify(%q) = %v, %v, %v; want ErrOutdatedPassword", name, enc, ok, rehash, err)
			continue
		}
		if CodeOf(err) != "AUTH_OUTDATED_PASSWORD" {
			t.Errorf("%s: CodeOf = %q", name, CodeOf(err))
		}
		if len(enc) > 8 && strings.Contains(err.Error(), enc) {
			t.Errorf("%s: error %q quotes the hash", name, err)
		}
	}

	// The limits themselves are accepted (decoding only: running 1 GiB is not a unit test).
	for _, enc := range []string{
		"$argon2id$v=19$m=1048576,t=4,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=40000,t=100,p=255$" + salt + "$" + key,
		"$argon2id$v=19$m=16,t=1,p=2$c2FsdHNhbHQ$" + "AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=19$m=64,t=1,p=1$" + strings.Repeat("A", 86) + "$" + strings.Repeat("A", 171),
	} {
		if _, err := pwDecode(enc); err != nil {
			t.Errorf("pwDecode(%q) = %v, want accepted", enc, err)
		}
	}
}

func TestPasswordInvalidHasherParams(t *testing.T) {
	bad := DefaultArgon2Params()
	bad.Memory = 2 << 20 // 2 GiB
	h := NewPasswordHasher(bad, 1)
	h.pwHook = func(op pwOp) { t.Errorf("work ran with refused params: %+v", op) }
	if enc, err := h.Hash(context.Background(), "pw"); err == nil {
		t.Errorf("Hash with 2 GiB memory = %q, want an error", enc)
	}
	h.DummyVerify(context.Background(), "pw")
	// Verification of stored hashes still works, and asks for a rehash.
	enc := pwMustHash(t, NewPasswordHasher(pwCheapParams, 1), "pw")
	if ok, rehash, err := NewPasswordHasher(bad, 1).Verify(context.Background(), enc, "pw"); !ok || !rehash || err != nil {
		t.Errorf("Verify = %v, %v, %v; want true, true, nil", ok, rehash, err)
	}
}

func TestPasswordDummyVerify(t *testing.T) {
	h := NewPasswordHasher(pwCheapParams, 1)
	var ops []pwOp
	h.pwHook = func(op pwOp) { ops = append(ops, op) }
	h.DummyVerify(context.Background(), "whatever")
	enc := pwMustHash(t, NewPasswordHasher(pwCheapParams, 1), "pw")
	if _, _, err := h.Verify(context.Background(), enc, "wrong"); err != nil {
		t.Fatal(err)
	}
	if len(ops) != 2 || ops[0] != ops[1] || ops[0] != (pwOp{kind: pwArgon2id, params: pwCheapParams}) {
		t.Errorf("DummyVerify and Verify did different work: %+v", ops)
	}
}

// TestPasswordConcurrencyCap checks, without sleeping, that at most
// maxConcurrent operations hold a slot: two operations are parked inside
// the hook while every other caller is seen waiting for a slot.
func TestPasswordConcurrencyCap(t *testing.T) {
	const maxConcurrent, callers = 2, 16
	h := NewPasswordHasher(pwCheapParams, maxConcurrent)
	enc := pwMustHash(t, h, "pw")

	var peak, inside atomic.Int64
	entered := make(chan struct{}, callers)
	gate := make(chan struct{})
	h.pwHook = func(pwOp) {
		n := inside.Add(1)
		defer inside.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		entered <- struct{}{}
		<-gate
	}

	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			var err error
			switch i % 3 {
			case 0:
				_, err = h.Hash(ctx, "pw")
			case 1:
				var ok bool
				ok, _, err = h.Verify(ctx, enc, "pw")
				if err == nil && !ok {
					t.Error("Verify = false")
				}
			default:
				h.DummyVerify(ctx, "pw")
			}
			if err != nil {
				t.Error(err)
			}
		})
	}

	<-entered
	<-entered
	for h.pwWaiting.Load() != callers-maxConcurrent {
		runtime.Gosched()
	}
	// Everyone is now either parked in the hook (holding a slot) or blocked
	// waiting for one; nobody else can have entered.
	if got := h.pwActive.Load(); got != maxConcurrent {
		t.Errorf("active = %d with every other caller waiting, want %d", got, maxConcurrent)
	}
	select {
	case <-entered:
		t.Errorf("a third operation entered while %d held the slots", maxConcurrent)
	default:
	}

	close(gate)
	wg.Wait()
	if got := len(entered); got != callers-maxConcurrent {
		t.Errorf("%d operations ran after the gate opened, want %d", got, callers-maxConcurrent)
	}
	if p := peak.Load(); p > maxConcurrent || p < 1 {
		t.Errorf("peak concurrency %d, want <= %d", p, maxConcurrent)
	}
	if a, w := h.pwActive.Load(), h.pwWaiting.Load(); a != 0 || w != 0 {
		t.Errorf("after all done: active %d, waiting %d", a, w)
	}
}

func TestPasswordContextCancelWhileWaiting(t *testing.T) {
	h := NewPasswordHasher(pwCheapParams, 1)
	enc := pwMustHash(t, h, "pw")

	entered := make(chan struct{})
	gate := make(chan struct{})
	var once sync.Once
	h.pwHook = func(pwOp) {
		first := false
		once.Do(func() { first = true })
		if first {
			close(entered)
			<-gate
		}
	}
	holder := make(chan error, 1)
	go func() {
		_, err := h.Hash(context.Background(), "pw")
		holder <- err
	}()
	<-entered // the only slot is taken

	for _, op := range []string{"Hash", "Verify", "DummyVerify"} {
		ctx, cancel := context.WithCancel(context.Background())
		res := make(chan error, 1)
		go func() {
			var err error
			switch op {
			case "Hash":
				_, err = h.Hash(ctx, "pw")
			case "Verify":
				_, _, err = h.Verify(ctx, enc, "pw")
			default:
				h.DummyVerify(ctx, "pw")
				err = ctx.Err()
			}
			res <- err
		}()
		for h.pwWaiting.Load() != 1 {
			runtime.Gosched()
		}
		cancel()
		if err := <-res; err != context.Canceled || err != ctx.Err() {
			t.Errorf("%s cancelled while waiting: err = %v, want ctx.Err() (context.Canceled)", op, err)
		}
	}
	if w := h.pwWaiting.Load(); w != 0 {
		t.Errorf("waiting = %d after cancellations", w)
	}

	// An already-ended context fails fast without taking a slot.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Hash(ctx, "pw"); err != context.Canceled {
		t.Errorf("Hash(cancelled) err = %v", err)
	}
	if _, _, err := h.Verify(ctx, enc, "pw"); err != context.Canceled {
		t.Errorf("Verify(cancelled) err = %v", err)
	}

	close(gate)
	if err := <-holder; err != nil {
		t.Errorf("holder: %v", err)
	}
}

func BenchmarkHashDefault(b *testing.B) {
	h := NewPasswordHasher(DefaultArgon2Params(), 0)
	ctx := context.Background()
	for b.Loop() {
		if _, err := h.Hash(ctx, "correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}
