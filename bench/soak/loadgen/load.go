package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/brokerauth/broker/auth"
)

// Options shape the load.
type Options struct {
	// BaseURL is the broker's URL (http://127.0.0.1:port).
	BaseURL string
	// Workers is the number of concurrent clients (default 4).
	Workers int
	// LoginEvery makes one iteration in LoginEvery a GitHub login; the
	// others are validations (default 5).
	LoginEvery int
	// MaxSessions is how many sessions a worker keeps; past it, it logs
	// the oldest out (default 16).
	MaxSessions int
	// CookieName is the session cookie's name (default auth_session).
	CookieName string
}

// Stats count what the load did; they are updated while it runs.
type Stats struct {
	Requests    atomic.Int64 // HTTP requests sent
	Logins      atomic.Int64 // completed logins
	Validations atomic.Int64 // /auth and /session answers
	Logouts     atomic.Int64
	// Unexpected counts answers that were not what a healthy broker
	// answers (a 5xx, a 401 for a live session, a 200 for an unknown
	// token, a transport error).
	Unexpected atomic.Int64

	mu       sync.Mutex
	problems []string
}

// Problems returns the first unexpected answers, described.
func (s *Stats) Problems() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.problems...)
}

func (s *Stats) problem(format string, args ...any) {
	s.Unexpected.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.problems) < 20 {
		s.problems = append(s.problems, fmt.Sprintf(format, args...))
	}
}

// Run drives the load until ctx ends and returns when every worker has
// stopped. Answers cut short by ctx's end are not counted as problems.
func Run(ctx context.Context, o Options, st *Stats) {
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.LoginEvery <= 0 {
		o.LoginEvery = 5
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 16
	}
	if o.CookieName == "" {
		o.CookieName = "auth_session"
	}
	o.BaseURL = strings.TrimRight(o.BaseURL, "/")
	// One transport for all: clients that each kept their own idle
	// connections would make the broker's goroutines grow with the number
	// of logins, which is the client's leak, not the broker's.
	tr := &http.Transport{MaxIdleConns: 4 * o.Workers, MaxIdleConnsPerHost: 4 * o.Workers, IdleConnTimeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	var wg sync.WaitGroup
	for range o.Workers {
		wg.Go(func() { (&worker{o: o, st: st, tr: tr}).run(ctx) })
	}
	wg.Wait()
}

type worker struct {
	o      Options
	st     *Stats
	tr     *http.Transport
	plain  *http.Client // no cookie jar, no redirects
	tokens []string
}

func (w *worker) run(ctx context.Context) {
	w.plain = &http.Client{Transport: w.tr, Timeout: 30 * time.Second, CheckRedirect: noRedirect}
	plain := w.plain
	for ctx.Err() == nil {
		if len(w.tokens) == 0 || rand.IntN(w.o.LoginEvery) == 0 {
			w.login(ctx)
			continue
		}
		tok := w.tokens[rand.IntN(len(w.tokens))]
		switch r := rand.IntN(10); {
		case r < 7:
			w.expect(ctx, plain, "GET", "/auth", tok, 200)
		case r < 8:
			w.expect(ctx, plain, "GET", "/session", tok, 200)
		case r < 9:
			w.expect(ctx, plain, "GET", "/auth", auth.GenerateSessionToken(), 401)
		default:
			w.expect(ctx, plain, "GET", "/auth", "", 401)
		}
	}
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// do sends one request and drains the answer.
func (w *worker) do(ctx context.Context, c *http.Client, method, url, token string, hdr ...string) (*http.Response, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, "", err
	}
	if token != "" {
		req.Header.Set("Cookie", w.o.CookieName+"="+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w.st.Requests.Add(1)
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp, string(b), nil
}

func (w *worker) failed(ctx context.Context, what string, err error) {
	if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
		w.st.problem("%s: %v", what, err)
	}
}

func (w *worker) expect(ctx context.Context, c *http.Client, method, path, token string, want int) {
	resp, body, err := w.do(ctx, c, method, w.o.BaseURL+path, token, "Accept", "application/json")
	if err != nil {
		w.failed(ctx, method+" "+path, err)
		return
	}
	w.st.Validations.Add(1)
	if resp.StatusCode != want {
		w.st.problem("%s %s = %d, want %d: %.200s", method, path, resp.StatusCode, want, body)
	}
}

// login signs in through the fake GitHub as a browser would, with a cookie
// jar of its own, and keeps the session token.
func (w *worker) login(ctx context.Context) {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Transport: w.tr, Jar: jar, Timeout: 30 * time.Second, CheckRedirect: noRedirect}
	next := w.o.BaseURL + "/login/github?redirect_to=/session"
	for _, step := range []string{"login start", "authorize"} {
		resp, body, err := w.do(ctx, c, "GET", next, "")
		if err != nil {
			w.failed(ctx, step, err)
			return
		}
		if resp.StatusCode != http.StatusFound {
			w.st.problem("%s = %d: %.200s", step, resp.StatusCode, body)
			return
		}
		next = resp.Header.Get("Location")
	}
	resp, body, err := w.do(ctx, c, "GET", next, "")
	if err != nil {
		w.failed(ctx, "callback", err)
		return
	}
	var token string
	for _, ck := range resp.Cookies() {
		if ck.Name == w.o.CookieName && ck.Value != "" {
			token = ck.Value
		}
	}
	if resp.StatusCode != http.StatusFound || token == "" {
		w.st.problem("callback = %d (session cookie %t): %.200s", resp.StatusCode, token != "", body)
		return
	}
	w.st.Logins.Add(1)
	w.tokens = append(w.tokens, token)
	if len(w.tokens) > w.o.MaxSessions {
		old := w.tokens[0]
		w.tokens = w.tokens[1:]
		resp, body, err := w.do(ctx, w.plain, "POST", w.o.BaseURL+"/logout", old, "Origin", w.o.BaseURL, "Accept", "application/json")
		switch {
		case err != nil:
			w.failed(ctx, "logout", err)
		case resp.StatusCode != http.StatusNoContent:
			w.st.problem("logout = %d: %.200s", resp.StatusCode, body)
		default:
			w.st.Logouts.Add(1)
		}
	}
}
