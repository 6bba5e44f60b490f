package fastlane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// handler answers like a forward-auth endpoint, and on /auth?case=…
// exercises what a handler can do to a response.
func handler(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	switch r.URL.Query().Get("case") {
	case "":
		if r.Header.Get("Cookie") == "" {
			h.Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"AUTH_INVALID_SESSION_ID"}`+"\n")
			return
		}
		h["X-Auth-User-Id"] = []string{"u1"}
		h["X-Auth-Email"] = []string{"a@example.com"}
		h["Cache-Control"] = []string{"no-store"}
		w.WriteHeader(http.StatusOK)
	case "echo": // what the handler saw of the request
		fmt.Fprintf(w, "host=%q uri=%q remote-set=%v cookie=%q fwd=%q ctx=%v",
			r.Host, r.RequestURI, r.RemoteAddr != "", r.Header.Get("Cookie"),
			r.Header.Get("X-Forwarded-Uri"), r.Context() != nil)
	case "values":
		h["X-Multi"] = []string{"one", "two"}
		h["X-Injected"] = []string{"a\r\nSet-Cookie: evil=1", " padded\t"}
		h["Bad Name"] = []string{"dropped"}
		h["X-Empty"] = nil
		h["Set-Cookie"] = []string{"a=1", "b=2"}
		w.WriteHeader(http.StatusOK)
	case "sniff":
		w.Write([]byte("<html><body>hello</body></html>"))
	case "redirect":
		http.Redirect(w, r, "/login?redirect_to=x", http.StatusFound)
	case "nobody":
		h.Set("Content-Length", "10")
		h.Set("Transfer-Encoding", "chunked")
		w.WriteHeader(http.StatusNoContent)
		_, err := w.Write([]byte("x"))
		if !errors.Is(err, http.ErrBodyNotAllowed) {
			panic("Write after 204: " + fmt.Sprint(err))
		}
	case "304":
		h.Set("Content-Type", "text/plain")
		h.Set("ETag", `"x"`)
		w.WriteHeader(http.StatusNotModified)
	case "length":
		h.Set("Content-Length", "5")
		w.Write([]byte("hello"))
	case "late": // changes after WriteHeader are not sent
		h.Set("X-Before", "1")
		w.WriteHeader(http.StatusAccepted)
		h.Set("X-After", "1")
		w.WriteHeader(http.StatusTeapot) // superfluous
		w.Write([]byte("body"))
	case "status":
		w.WriteHeader(299)
	case "date":
		h.Set("Date", "Thu, 01 Jan 1970 00:00:00 GMT")
		h["Content-Type"] = nil // set to nothing: not sniffed
		w.Write([]byte("<html>"))
	case "close":
		h.Set("Connection", "close")
		w.Write([]byte("bye"))
	case "nothing":
	}
}

// exchange sends raw on a new connection to addr, half-closes it, and
// returns everything the server sends until it closes.
func exchange(t testing.TB, addr, raw string) string {
	t.Helper()
	return exchangeIn(t, addr, raw, len(raw))
}

// exchangeInPieces is exchange sending raw one byte per write.
func exchangeInPieces(t testing.TB, addr, raw string) string {
	t.Helper()
	return exchangeIn(t, addr, raw, 1)
}

// exchangeIn is exchange sending raw in writes of at most piece bytes.
func exchangeIn(t testing.TB, addr, raw string, piece int) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	for rest := raw; rest != ""; {
		n := min(piece, len(rest))
		if _, err := io.WriteString(c, rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	c.(*net.TCPConn).CloseWrite()
	out, err := io.ReadAll(c)
	if err != nil && !isReset(err) {
		t.Fatalf("reading the answer to %q: %v", raw, err)
	}
	return string(out)
}

// isReset reports a connection reset: net/http closes a connection with
// unread input after some errors, which the client may see as a reset.
func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

var dateRE = regexp.MustCompile(`Date: [A-Za-z]{3}, \d\d [A-Za-z]{3} \d{4} \d\d:\d\d:\d\d GMT`)

// badRequest is net/http's answer to a malformed request.
const badRequest = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request"

// normalize masks the time in Date, and drops a final 400 answer: when
// the client ends its input halfway through a request that follows others
// on the connection, net/http answers 400 or only closes, depending on
// whether its background read saw the end first.
func normalize(s string) string {
	return strings.TrimSuffix(dateRE.ReplaceAllString(s, "Date: <now>"), badRequest)
}

// servers starts the reference (net/http alone) and the lane in front of
// net/http, both with h, and returns their addresses and the lane.
func servers(t testing.TB, h http.Handler, configure func(*Server)) (ref, lane string, s *Server) {
	t.Helper()
	rln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	quiet := log.New(io.Discard, "", 0)
	hs := &http.Server{Handler: h, ErrorLog: quiet}
	go hs.Serve(rln)
	t.Cleanup(func() { hs.Close() })

	lln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s = &Server{
		Handler:  h,
		Match:    func(r *http.Request) bool { return r.Method == http.MethodGet && r.URL.Path == "/auth" },
		Fallback: &http.Server{Handler: h, ErrorLog: quiet},
	}
	if configure != nil {
		configure(s)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(lln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v; want http.ErrServerClosed", err)
		}
	})
	return rln.Addr().String(), lln.Addr().String(), s
}

const get = "GET /auth HTTP/1.1\r\nHost: broker\r\nCookie: auth_session=t\r\n\r\n"

// cases are request streams that both servers must answer alike; lane
// says whether the lane answers any of them itself (so a case that should
// be handed off is not answered by the lane by mistake, and the other way
// round).
var cases = []struct {
	name, raw string
	lane      int // requests the lane answers
}{
	{"hot", get, 1},
	{"anonymous", "GET /auth HTTP/1.1\r\nHost: broker\r\n\r\n", 1},
	{"echo", "GET /auth?case=echo HTTP/1.1\r\nHost: broker:8080\r\nCookie: c=1\r\nX-Forwarded-Uri: /app?x=1\r\n\r\n", 1},
	{"values", "GET /auth?case=values HTTP/1.1\r\nHost: b\r\n\r\n", 1},
	{"sniff", "GET /auth?case=sniff HTTP/1.1\r\nHost: b\r\n\r\n", 1},
	{"redirect", "GET /auth?case=redirect HTTP/1.1\r\nHost: b\r\n\r\n", 1},
	{"204", "GET /auth?case=nobody HTTP/1.1\r\nHost: b\r\n\r\n", 1},
	{"304", "GET /auth?case=304 HTTP/1.1\r\nHost: b\r\n\r\n", 1},
	{"length", "GET /auth?case=length HTTP/1.1\r\nHost: b\r\n\r\n", 1},
	{"late", "GET /auth?case=late HTTP/1.1\r\nHost: b\r\n\r\n", 1},
	{"status", "GET /auth?case=status HTTP/1.1\r\nHost: b\r\n\r\n", 1},
	{"date", "GET /auth?case=date HTTP/1.1\r\nHost: b\r\n\r\n", 1},
	{"nothing", "GET /auth?case=nothing HTTP/1.1\r\nHost: b\r\n\r\n", 1},
	{"handler closes", "GET /auth?case=close HTTP/1.1\r\nHost: b\r\n\r\n" + get, 1},
	{"client closes", "GET /auth HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n" + get, 1},
	{"keep-alive token", "GET /auth HTTP/1.1\r\nHost: b\r\nConnection: keep-alive\r\n\r\n", 1},
	{"pipelined", get + get + "GET /auth?case=sniff HTTP/1.1\r\nHost: b\r\n\r\n", 3},
	{"handed off midway", get + "POST /auth HTTP/1.1\r\nHost: b\r\nContent-Length: 4\r\n\r\nbody" + get, 1},
	{"other path", "GET /session HTTP/1.1\r\nHost: b\r\n\r\n" + get, 0},
	{"other method", "HEAD /auth HTTP/1.1\r\nHost: b\r\n\r\n", 0},
	{"body", "GET /auth HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nabc" + get, 0},
	{"empty length", "GET /auth HTTP/1.1\r\nHost: b\r\nContent-Length: 0\r\n\r\n", 0},
	{"chunked", "GET /auth HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 0},
	{"smuggle", "GET /auth HTTP/1.1\r\nHost: b\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + get, 0},
	{"expect", "GET /auth HTTP/1.1\r\nHost: b\r\nExpect: 100-continue\r\n\r\n", 0},
	{"upgrade", "GET /auth HTTP/1.1\r\nHost: b\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 0},
	{"http/1.0", "GET /auth HTTP/1.0\r\nHost: b\r\n\r\n", 0},
	{"http/1.0 keep-alive", "GET /auth HTTP/1.0\r\nHost: b\r\nConnection: keep-alive\r\n\r\n", 0},
	{"http/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0},
	{"no host", "GET /auth HTTP/1.1\r\nCookie: a=1\r\n\r\n", 0},
	{"two hosts", "GET /auth HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 0},
	{"bad host", "GET /auth HTTP/1.1\r\nHost: a b\r\n\r\n", 0},
	{"absolute form", "GET http://b/auth HTTP/1.1\r\nHost: b\r\n\r\n", 0},
	{"bare LF", "GET /auth HTTP/1.1\nHost: b\n\n", 0},
	{"bare LF ending", "GET /auth HTTP/1.1\r\nHost: b\r\n\n" + get, 0},
	{"bare LF later", get + "GET /auth HTTP/1.1\nHost: b\n\n", 1},
	{"space before colon", "GET /auth HTTP/1.1\r\nHost : b\r\n\r\n", 0},
	{"folded", "GET /auth HTTP/1.1\r\nHost: b\r\nX-A: 1\r\n 2\r\n\r\n", 1}, // the parser joins the lines
	{"folded host", "GET /auth HTTP/1.1\r\nHost: b\r\n c\r\n\r\n", 0},
	{"control in value", "GET /auth HTTP/1.1\r\nHost: b\r\nX-A: 1\x002\r\n\r\n", 0},
	{"bad request line", "GET  /auth HTTP/1.1\r\nHost: b\r\n\r\n", 0},
	{"garbage", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 0},
	{"leading CRLF", "\r\n" + get, 0},
	{"partial", "GET /auth HTTP/1.1\r\nHost: b\r\n", 0},
	{"partial after one", get + "GET /auth HTT", 1},
	{"empty", "", 0},
}

// TestAgreesWithNetHTTP sends each request stream to net/http alone and to
// the lane in front of net/http: the answers must be the same bytes (but
// for the time in Date), whether the lane answers or hands off.
func TestAgreesWithNetHTTP(t *testing.T) {
	ref, lane, s := servers(t, http.HandlerFunc(handler), nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Stats().Answered
			want := normalize(exchange(t, ref, tc.raw))
			got := normalize(exchange(t, lane, tc.raw))
			if got != want {
				t.Errorf("the lane answered\n%q\nnet/http answered\n%q", got, want)
			}
			if n := s.Stats().Answered - before; n != int64(tc.lane) {
				t.Errorf("the lane answered %d requests itself; want %d", n, tc.lane)
			}
		})
	}
	// The values a handler sets reach the client as net/http sends them:
	// no header injection.
	if got := exchange(t, lane, "GET /auth?case=values HTTP/1.1\r\nHost: b\r\n\r\n"); !strings.Contains(got, "X-Injected: a  Set-Cookie: evil=1\r\n") ||
		strings.Contains(got, "\r\nSet-Cookie: evil") || strings.Contains(got, "Bad Name") {
		t.Errorf("header values not sanitized: %q", got)
	}
}

// TestRequestInPieces: requests that arrive a byte at a time (so that the
// lane finds the end of a header block, a bare LF and the Host lines over
// many reads) are answered as net/http answers them.
func TestRequestInPieces(t *testing.T) {
	ref, lane, s := servers(t, http.HandlerFunc(handler), nil)
	for _, tc := range []struct {
		raw  string
		lane int
	}{
		{get + get, 2},
		{"GET /auth HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 0},
		{"GET /auth HTTP/1.1\r\nHost: b\r\nX-A: 1\n\r\n", 0},
		{"GET /auth HTTP/1.1\r\nX-Host: b\r\nHost: b\r\n\r\n", 1},
	} {
		before := s.Stats().Answered
		want := normalize(exchangeInPieces(t, ref, tc.raw))
		got := normalize(exchangeInPieces(t, lane, tc.raw))
		if got != want {
			t.Errorf("%q: the lane answered\n%q\nnet/http answered\n%q", tc.raw, got, want)
		}
		if n := s.Stats().Answered - before; n != int64(tc.lane) {
			t.Errorf("%q: the lane answered %d requests itself; want %d", tc.raw, n, tc.lane)
		}
	}
}

// TestLongHeaders: a header block longer than the lane's buffer is handed
// off whole, and net/http answers it.
func TestLongHeaders(t *testing.T) {
	ref, lane, s := servers(t, http.HandlerFunc(handler), func(s *Server) { s.BufferSize = 64 })
	raw := "GET /auth?case=echo HTTP/1.1\r\nHost: b\r\nCookie: " + strings.Repeat("x", 5000) + "\r\n\r\n"
	for _, r := range []string{raw, get + raw, "GET /auth HTTP/1.1\r\nHost: b\r\n\r\n" + raw} {
		before := s.Stats()
		want, got := normalize(exchange(t, ref, r)), normalize(exchange(t, lane, r))
		if got != want {
			t.Errorf("the lane answered\n%q\nnet/http answered\n%q", got, want)
		}
		if after := s.Stats(); after.HandedOff != before.HandedOff+1 {
			t.Errorf("handed off %d connections; want 1", after.HandedOff-before.HandedOff)
		}
	}
}

// TestAnswerWaitsNotForMore: an answer goes out before the lane waits for
// the rest of a request pipelined behind it.
func TestAnswerWaitsNotForMore(t *testing.T) {
	_, lane, _ := servers(t, http.HandlerFunc(handler), nil)
	c, err := net.Dial("tcp", lane)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, get+"GET /auth HTTP/1.1\r\n")
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200 OK\r\n") {
		t.Fatalf("first answer: %q, %v", buf[:n], err)
	}
	io.WriteString(c, "Host: b\r\n\r\n")
	n, err = c.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 401 Unauthorized\r\n") {
		t.Fatalf("second answer: %q, %v", buf[:n], err)
	}
}

// TestPanic: a handler's panic ends the connection without an answer to
// that request, after the answers to the ones before; it is logged, except
// http.ErrAbortHandler.
func TestPanic(t *testing.T) {
	var logged bytes.Buffer
	var mu sync.Mutex
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.RawQuery {
		case "panic":
			panic("boom")
		case "abort":
			panic(http.ErrAbortHandler)
		}
		handler(w, r)
	})
	_, lane, _ := servers(t, h, func(s *Server) {
		s.Log = newLogger(&lockedWriter{w: &logged, mu: &mu})
	})
	for _, q := range []string{"panic", "abort"} {
		got := exchange(t, lane, get+"GET /auth?"+q+" HTTP/1.1\r\nHost: b\r\n\r\n"+get)
		if n := strings.Count(got, "HTTP/1.1 "); n != 1 || !strings.HasPrefix(got, "HTTP/1.1 200 OK") {
			t.Errorf("%s: got %q; want the first answer only", q, got)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logged.String(), "handler panic"); n != 1 || !strings.Contains(logged.String(), "boom") {
		t.Errorf("log: %q; want the one panic", logged.String())
	}
}

// TestTimeouts: an idle connection is closed after IdleTimeout, one that
// stops halfway through its header block after ReadHeaderTimeout.
func TestTimeouts(t *testing.T) {
	_, lane, _ := servers(t, http.HandlerFunc(handler), func(s *Server) {
		s.IdleTimeout, s.ReadHeaderTimeout = 50*time.Millisecond, 50*time.Millisecond
	})
	for _, raw := range []string{get, get + "GET /auth HTTP/1.1\r\nHost"} {
		c, err := net.Dial("tcp", lane)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, raw)
		// The server closes the connection: ReadAll returns, long before
		// the client's own deadline.
		out, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		if n := strings.Count(string(out), "HTTP/1.1 200 OK"); n != 1 {
			t.Errorf("%q: got %q; want one answer, then the close", raw, out)
		}
	}
}

// TestWriteTimeout: an answer a client does not read ends its connection
// after WriteTimeout, so a Shutdown does not wait for it.
func TestWriteTimeout(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 32<<20) // more than the sockets hold
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(big) })
	_, lane, s := servers(t, h, func(s *Server) { s.WriteTimeout = 100 * time.Millisecond })
	c, err := net.Dial("tcp", lane)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, get)
	// Wait until the lane has the request (the answer's write is then
	// under way), without reading anything.
	for s.Stats().Answered == 0 {
		runtime.Gosched()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v; want the stuck write to have ended the connection", err)
	}
}

// TestShutdown: Shutdown closes idle lane connections at once, lets a
// request in progress finish (its connection closes after the answer),
// shuts the fallback down, and makes Serve return http.ErrServerClosed.
func TestShutdown(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery == "slow" {
			close(entered)
			<-release
		}
		handler(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fallbackIdle := make(chan struct{})
	s := &Server{
		Handler: h,
		Match:   func(r *http.Request) bool { return r.URL.Path == "/auth" },
		Fallback: &http.Server{Handler: h, ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateIdle {
				select {
				case <-fallbackIdle:
				default:
					close(fallbackIdle)
				}
			}
		}},
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	addr := ln.Addr().String()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		t.Cleanup(func() { c.Close() })
		return c
	}
	// An idle lane connection, one in the fallback, one in a request.
	idle := dial()
	io.WriteString(idle, get)
	readAnswer(t, idle)
	handed := dial()
	io.WriteString(handed, "GET /session HTTP/1.1\r\nHost: b\r\n\r\n")
	readAnswer(t, handed)
	<-fallbackIdle
	busy := dial()
	io.WriteString(busy, "GET /auth?slow HTTP/1.1\r\nHost: b\r\nCookie: a=1\r\n\r\n")
	<-entered

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	if out, _ := io.ReadAll(idle); len(out) != 0 {
		t.Errorf("idle connection got %q; want it closed", out)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in progress", err)
	default:
	}
	close(release)
	out, err := io.ReadAll(busy)
	if err != nil || !strings.HasPrefix(string(out), "HTTP/1.1 200 OK\r\n") || !strings.Contains(string(out), "\r\nConnection: close\r\n") {
		t.Errorf("the request in progress got %q, %v; want its answer with Connection: close, then the close", out, err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if out, _ := io.ReadAll(handed); len(out) != 0 {
		t.Errorf("handed-off connection got %q; want it closed by the fallback's shutdown", out)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: %v; want http.ErrServerClosed", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("the listener still accepts after Shutdown")
	}
}

// TestShutdownDeadline: when ctx ends first, Shutdown closes the lane's
// connections and returns ctx's error.
func TestShutdownDeadline(t *testing.T) {
	entered := make(chan struct{})
	block := make(chan struct{})
	defer close(block)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-block
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: h, Match: func(*http.Request) bool { return true }, Fallback: &http.Server{Handler: h}}
	go s.Serve(ln)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, get)
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown: %v; want context.Canceled", err)
	}
	if out, _ := io.ReadAll(c); len(out) != 0 {
		t.Errorf("got %q; want the connection closed unanswered", out)
	}
}

// TestServeTwice: a Server serves one listener.
func TestServeTwice(t *testing.T) {
	_, lane, s := servers(t, http.HandlerFunc(handler), nil)
	exchange(t, lane, get) // the first Serve is running
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := s.Serve(ln); err == nil || errors.Is(err, http.ErrServerClosed) {
		t.Errorf("second Serve: %v; want an error", err)
	}
}

func readAnswer(t *testing.T, c net.Conn) {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 ") {
		t.Fatalf("answer: %q, %v", buf[:n], err)
	}
}

// FuzzAgreesWithNetHTTP: whatever a client sends, the lane in front of
// net/http answers as net/http alone does.
func FuzzAgreesWithNetHTTP(f *testing.F) {
	for _, tc := range cases {
		f.Add(tc.raw)
	}
	ref, lane, _ := servers(f, http.HandlerFunc(handler), func(s *Server) { s.BufferSize = 256 })
	f.Fuzz(func(t *testing.T, raw string) {
		want := normalize(exchange(t, ref, raw))
		got := normalize(exchange(t, lane, raw))
		if got != want {
			t.Errorf("for %q the lane answered\n%q\nnet/http answered\n%q", raw, got, want)
		}
	})
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func newLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
