// Package fastlane serves the one request a login broker answers more than
// all others together, a reverse proxy's bodiless GET /auth, on a lean
// HTTP/1.1 connection loop, and hands every connection that asks for
// anything else to a net/http server, which then serves it to its end.
//
// Why: net/http spends about ten microseconds of CPU on a keep-alive
// request that its handler answers at once (a per-request context and
// background-read goroutine, the response header's clone, sorted header
// writing, several deadline calls). For forward-auth, whose answer comes
// from memory in about a microsecond, that is most of the cost of every
// request of every app behind the broker. The lane does the part of it a
// bodiless GET needs.
//
// What the lane answers, and how:
//   - Requests are read and parsed by net/http's own parser
//     ([http.ReadRequest]) from the request's complete header block, then
//     put through the checks net/http's server makes (one valid Host, valid
//     header names and values). A request the lane does not take — another
//     method or path (Server.Match), HTTP/1.0, a body, Expect, Upgrade, a
//     header block that does not fit the lane's buffer or has a line not
//     ended by CRLF, anything the parser refuses — is not read: the
//     connection, with every byte not yet answered, goes to the fallback
//     server, as if it had been accepted there. Connections never come
//     back, so the fallback decides everything about requests that are not
//     plain GET /auth, including every error answer.
//   - The handler gets a ResponseWriter that keeps the whole answer in
//     memory (it is not an [http.Flusher] or [http.Hijacker]) and writes it
//     as net/http would: the handler's headers sorted, invalid names
//     dropped, CR and LF in values turned into spaces, then Date and
//     Content-Length (always a length: never chunked), Content-Type sniffed
//     when the handler set none, Connection: close when the client asked
//     for it or Shutdown has begun. Informational (1xx) statuses are not sent.
//   - A request's context is cancelled once its connection has ended; the
//     lane does not watch for a client that goes away while it runs.
//   - Pipelined requests are answered in order, with one write for all the
//     answers ready.
//   - IdleTimeout, ReadHeaderTimeout and WriteTimeout apply as on
//     [http.Server]; the fallback's own apply once it has a connection.
package fastlane

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// DefaultBufferSize is the lane's read buffer per connection when
// Server.BufferSize is zero: requests whose header block is longer go to
// the fallback.
const DefaultBufferSize = 8 << 10

// Server serves one listener: the requests Match accepts on the lane,
// everything else through Fallback. Set its fields before Serve and do not
// change them after.
type Server struct {
	// Handler answers the requests Match accepts.
	Handler http.Handler
	// Match reports whether the lane answers r: a parsed HTTP/1.1 request
	// without a body. False hands the connection to Fallback.
	Match func(r *http.Request) bool
	// Fallback serves every connection the lane hands over; Serve runs it,
	// Shutdown shuts it down.
	Fallback *http.Server
	// IdleTimeout bounds the wait for the next request on a connection,
	// ReadHeaderTimeout the reading of a request's header block once it has
	// begun, WriteTimeout the writing of the answers to one batch of
	// requests. Zero means no limit.
	IdleTimeout, ReadHeaderTimeout, WriteTimeout time.Duration
	// BufferSize is the read buffer per connection (DefaultBufferSize when
	// zero).
	BufferSize int
	// Log gets what cannot be answered (a handler's panic); nil discards.
	Log *slog.Logger

	mu       sync.Mutex
	started  bool
	ln       net.Listener
	handoff  *handoffListener
	conns    map[*conn]struct{}
	wg       sync.WaitGroup
	closing  atomic.Bool
	lanes    atomic.Int64 // requests answered on the lane
	handoffs atomic.Int64 // connections handed to Fallback
	date     atomic.Pointer[date]
	parsers  sync.Pool // of *parser
}

// Stats are counts since the server started.
type Stats struct {
	// Answered is the requests the lane answered; HandedOff is the
	// connections it handed to the fallback.
	Answered, HandedOff int64
}

// Stats returns the lane's counts.
func (s *Server) Stats() Stats {
	return Stats{Answered: s.lanes.Load(), HandedOff: s.handoffs.Load()}
}

// Serve accepts connections on ln until Shutdown, and runs Fallback on
// the connections the lane hands over. It returns http.ErrServerClosed
// after Shutdown, or the error that stopped accepting. A Server serves one
// listener, once.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("fastlane: Serve called twice")
	}
	s.started, s.ln = true, ln
	s.handoff = newHandoffListener(ln.Addr())
	s.conns = map[*conn]struct{}{}
	s.mu.Unlock()
	if s.closing.Load() {
		ln.Close()
		return http.ErrServerClosed
	}

	fallbackDone := make(chan struct{})
	go func() {
		defer close(fallbackDone)
		s.Fallback.Serve(s.handoff)
	}()
	err := s.accept(ln)
	if s.closing.Load() {
		return http.ErrServerClosed
	}
	// Accepting failed on its own: the fallback goes down with it.
	s.handoff.Close()
	<-fallbackDone
	return err
}

func (s *Server) accept(ln net.Listener) error {
	var backoff time.Duration
	for {
		rw, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return err
			}
			// As net/http does: wait out a temporary failure (too many
			// open files) instead of stopping.
			var ne interface{ Temporary() bool }
			if errors.As(err, &ne) && ne.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := s.newConn(rw)
		if c == nil {
			rw.Close()
			continue
		}
		go c.serve()
	}
}

// Shutdown stops accepting, closes the lane's idle connections, waits for
// the requests in progress on it to be answered (closing their connections
// after), then shuts Fallback down. When ctx ends first, the lane's
// connections are closed and ctx's error returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.mu.Lock()
	handoff := s.handoff
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		if c.state.Load() == stateIdle {
			c.rw.Close()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		s.mu.Lock()
		for c := range s.conns {
			c.rw.Close()
		}
		s.mu.Unlock()
	}
	if ferr := s.Fallback.Shutdown(ctx); err == nil {
		err = ferr
	}
	if handoff != nil {
		handoff.Close()
	}
	return err
}

func (s *Server) newConn(rw net.Conn) *conn {
	size := s.BufferSize
	if size <= 0 {
		size = DefaultBufferSize
	}
	// The context of the connection's requests, cancelled when it ends.
	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{
		s: s, rw: rw, ctx: ctx, cancel: cancel,
		br:     bufio.NewReaderSize(rw, size),
		bw:     bufio.NewWriterSize(rw, 4<<10),
		remote: rw.RemoteAddr().String(),
	}
	c.res.s, c.res.header = s, make(http.Header, 8)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		cancel()
		return nil
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return c
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.cancel()
	s.wg.Done()
}

// Connection states, for Shutdown.
const (
	stateActive = iota
	stateIdle   // waiting for the first byte of a request
)

type conn struct {
	s      *Server
	rw     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	ctx    context.Context
	cancel context.CancelFunc
	remote string
	state  atomic.Int32
	hosts  int // Host lines in the current request's header block

	res response
	out []byte
}

// parser reads one buffered header block with http.ReadRequest (whose
// strings are its own: nothing it returns points into the block).
type parser struct {
	block bytes.Reader
	r     *bufio.Reader
}

// errHandOff says that the connection goes to the fallback.
var errHandOff = errors.New("fastlane: hand off")

func (c *conn) serve() {
	handedOff := false
	defer func() {
		if !handedOff {
			c.rw.Close()
		}
		c.s.forget(c)
	}()
	for {
		n, err := c.readHeaderBlock()
		if err == nil {
			var req *http.Request
			if req, err = c.request(n); err == nil {
				c.br.Discard(n)
				var keep bool
				if keep, err = c.answer(req); err == nil && (!keep || c.s.closing.Load()) {
					c.bw.Flush()
					return
				}
			}
		}
		switch {
		case errors.Is(err, errHandOff):
			handedOff = c.handOff()
			return
		case err != nil:
			c.bw.Flush()
			return
		}
	}
}

// readHeaderBlock waits for the next request and returns the length of
// its header block, which is then buffered, up to and including the blank
// line that ends it.
func (c *conn) readHeaderBlock() (int, error) {
	s := c.s
	if c.br.Buffered() == 0 {
		// The answers so far go out before waiting for more.
		if err := c.flush(); err != nil {
			return 0, err
		}
		// Ordered against Shutdown: the deadline before the state, the
		// state before the check of closing (see Shutdown).
		c.setReadDeadline(s.IdleTimeout)
		c.state.Store(stateIdle)
		if s.closing.Load() {
			return 0, http.ErrServerClosed
		}
		_, err := c.br.Peek(1)
		c.state.Store(stateActive)
		if err != nil {
			return 0, err
		}
	}
	// The header deadline matters only if the block is not all here yet
	// (usually it arrived in one read): set it before the first wait.
	waiting := false
	sc := blockScan{}
	for {
		b, _ := c.br.Peek(c.br.Buffered())
		end, bare := sc.scan(b)
		switch {
		case bare, end == 0 && len(b) == c.br.Size():
			return 0, errHandOff
		case end > 0:
			c.hosts = sc.hosts
			return end, nil
		}
		if !waiting {
			c.setReadDeadline(s.ReadHeaderTimeout)
			waiting = true
		}
		if err := c.flush(); err != nil {
			return 0, err
		}
		if _, err := c.br.Peek(len(b) + 1); err != nil {
			// A partial request, then the end of the input: net/http
			// answers 400. A timeout or a reset: it closes, as here.
			if errors.Is(err, io.EOF) && len(b) > 0 {
				return 0, errHandOff
			}
			return 0, err
		}
	}
}

// blockScan finds the end of a request's header block as its bytes
// arrive, in one pass over each byte: the blank line that ends it, a line
// ended by a bare LF (which net/http accepts and the lane leaves to it:
// the lane finds a block's end only by CRLF CRLF), and the header lines
// that are a Host field.
type blockScan struct {
	pos   int // where the next scan starts
	line  int // where the current line starts
	lines int // lines ended so far
	hosts int // of them, Host fields
}

// scan continues over b, which holds what it saw before and more. It
// returns the length of the block once b holds it all, or bare true.
func (sc *blockScan) scan(b []byte) (end int, bare bool) {
	for {
		i := bytes.IndexByte(b[sc.pos:], '\n')
		if i < 0 {
			sc.pos = len(b)
			return 0, false
		}
		i += sc.pos
		if i == 0 || b[i-1] != '\r' {
			return 0, true
		}
		line := b[sc.line : i-1]
		sc.pos, sc.line = i+1, i+1
		sc.lines++
		switch {
		case len(line) == 0:
			return i + 1, false
		case sc.lines > 1 && len(line) >= 5 && bytes.EqualFold(line[:5], []byte("host:")):
			sc.hosts++
		}
	}
}

// flush writes the answers waiting in the buffer.
func (c *conn) flush() error {
	if c.bw.Buffered() == 0 {
		return nil
	}
	return c.bw.Flush()
}

// request parses the buffered header block of n bytes, or returns
// errHandOff for a request the lane does not answer.
func (c *conn) request(n int) (*http.Request, error) {
	b, _ := c.br.Peek(n)
	p, _ := c.s.parsers.Get().(*parser)
	if p == nil {
		p = &parser{}
		p.r = bufio.NewReader(&p.block)
	}
	p.block.Reset(b)
	p.r.Reset(&p.block)
	req, err := http.ReadRequest(p.r)
	p.block.Reset(nil)
	c.s.parsers.Put(p)
	if err != nil || !c.takes(req) {
		return nil, errHandOff
	}
	req.RemoteAddr = c.remote
	return req.WithContext(c.ctx), nil
}

// takes reports whether the lane answers req: what Match accepts, when
// net/http's server would answer it as an ordinary HTTP/1.1 request
// without a body.
func (c *conn) takes(req *http.Request) bool {
	if req.ProtoMajor != 1 || req.ProtoMinor != 1 || req.ContentLength != 0 ||
		len(req.TransferEncoding) != 0 || req.Body != http.NoBody ||
		!strings.HasPrefix(req.RequestURI, "/") {
		return false
	}
	// http.ReadRequest moves the Host header to req.Host (the request is
	// in origin form, so it is the header's); net/http's server also
	// refuses a request with none or several.
	if c.hosts != 1 || !httpguts.ValidHostHeader(req.Host) {
		return false
	}
	// The parser has checked names and values already; net/http's server
	// checks them again with these functions, and so does the lane, so
	// that the two refuse exactly the same requests.
	for k, vv := range req.Header {
		switch k {
		case "Expect", "Upgrade", "Content-Length", "Transfer-Encoding":
			return false
		}
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return c.s.Match(req)
}

// answer runs the handler on req and writes its answer to the buffered
// writer. keep is false when the connection is to close after it.
func (c *conn) answer(req *http.Request) (keep bool, err error) {
	s := c.s
	c.res.reset(req.Close)
	if s.WriteTimeout > 0 {
		c.rw.SetWriteDeadline(time.Now().Add(s.WriteTimeout))
	}
	if err := c.run(req); err != nil {
		return false, err
	}
	s.lanes.Add(1)
	var closeAfter bool
	c.out, closeAfter = c.res.finish(c.out[:0])
	if _, err := c.bw.Write(c.out); err != nil {
		return false, err
	}
	if cap(c.out) > 64<<10 {
		c.out = nil // do not keep a rare big answer's buffer
	}
	return !closeAfter, nil
}

// run calls the handler. A panic ends the connection without an answer to
// that request, as with net/http; one other than http.ErrAbortHandler is
// logged.
func (c *conn) run(req *http.Request) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = errAborted
			if p != http.ErrAbortHandler && c.s.Log != nil {
				c.s.Log.Error("fastlane: handler panic", "path", req.URL.Path, "panic", p)
			}
		}
	}()
	c.s.Handler.ServeHTTP(&c.res, req)
	return nil
}

var errAborted = errors.New("fastlane: handler aborted")

func (c *conn) setReadDeadline(d time.Duration) {
	if d > 0 {
		c.rw.SetReadDeadline(time.Now().Add(d))
	}
}

// handOff gives the connection, with its unanswered bytes, to the
// fallback. It reports whether the fallback took it.
func (c *conn) handOff() bool {
	if c.bw.Flush() != nil {
		return false
	}
	b, _ := c.br.Peek(c.br.Buffered())
	hc := &handedConn{Conn: c.rw, pending: bytes.Clone(b)}
	// The fallback sets its own deadlines.
	c.rw.SetDeadline(time.Time{})
	c.s.handoffs.Add(1)
	return c.s.handoff.push(hc)
}

// response is the lane's http.ResponseWriter: it keeps the answer until
// the handler returns. WriteHeader writes the status line and the
// handler's headers at once, as net/http does, so that changes to the
// header after it are not sent; what depends on the body (Content-Length,
// a sniffed Content-Type) is added by finish.
type response struct {
	s          *Server
	header     http.Header
	wantsClose bool // the request said Connection: close
	status     int
	wrote      bool
	head       []byte // status line and the handler's headers
	body       []byte

	// What WriteHeader saw of the header, for finish.
	closeAfter bool
	lengthSet  bool   // the handler set Content-Length
	length     string // to this
	sniff      bool   // no Content-Type or Content-Encoding: finish sniffs one
	date       bool   // no Date: finish adds it
	connClose  bool   // finish adds Connection: close
}

func (w *response) reset(wantsClose bool) {
	clear(w.header)
	w.wantsClose, w.status, w.wrote = wantsClose, 0, false
	if cap(w.body) > 64<<10 {
		w.body = nil
	}
	if cap(w.head) > 64<<10 {
		w.head = nil
	}
	w.body, w.head = w.body[:0], w.head[:0]
}

// Header returns the answer's header; changes after WriteHeader are not
// sent.
func (w *response) Header() http.Header { return w.header }

// WriteHeader sends the status (the first call's; 1xx statuses are not
// sent) and the header as it is now.
func (w *response) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic("invalid WriteHeader code " + strconv.Itoa(code))
	}
	if w.wrote || code < 200 {
		return
	}
	w.wrote, w.status = true, code
	h := w.header
	// During Shutdown, as with net/http, an answer says Connection: close
	// and the connection closes after it.
	w.closeAfter = w.wantsClose || w.s.closing.Load() || h.Get("Connection") == "close"
	w.lengthSet, w.length, w.sniff = false, "", false
	noBody := !bodyAllowed(code)
	if !noBody {
		_, w.lengthSet = h["Content-Length"]
		w.length = h.Get("Content-Length")
		_, haveType := h["Content-Type"]
		w.sniff = !haveType && h.Get("Content-Encoding") == ""
	}
	_, hasDate := h["Date"]
	w.date = !hasDate
	w.connClose = w.closeAfter && !httpguts.HeaderValuesContainsToken(h["Connection"], "close")

	b := append(w.head, "HTTP/1.1 "...)
	if text := http.StatusText(code); text != "" {
		b = strconv.AppendInt(b, int64(code), 10)
		b = append(b, ' ')
		b = append(b, text...)
	} else {
		b = appendPadded(b, code)
		b = append(b, " status code "...)
		b = strconv.AppendInt(b, int64(code), 10)
	}
	b = append(b, "\r\n"...)
	var keysBuf [16]string
	keys := keysBuf[:0]
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		switch {
		case k == "Transfer-Encoding", // the lane always sends a length
			noBody && k == "Content-Length",
			code == http.StatusNotModified && k == "Content-Type",
			w.connClose && k == "Connection",
			!httpguts.ValidHeaderFieldName(k):
			continue
		}
		for _, v := range h[k] {
			b = append(b, k...)
			b = append(b, ": "...)
			b = appendValue(b, v)
			b = append(b, "\r\n"...)
		}
	}
	w.head = b
}

// Write appends p to the body.
func (w *response) Write(p []byte) (int, error) {
	if err := w.startBody(); err != nil {
		return 0, err
	}
	w.body = append(w.body, p...)
	return len(p), nil
}

// WriteString appends s to the body.
func (w *response) WriteString(s string) (int, error) {
	if err := w.startBody(); err != nil {
		return 0, err
	}
	w.body = append(w.body, s...)
	return len(s), nil
}

// startBody sends the status (200 when the handler sent none) before the
// first write, and says whether the status allows a body.
func (w *response) startBody() error {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return http.ErrBodyNotAllowed
	}
	return nil
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// finish appends the whole answer to b, in the order net/http writes it:
// the status line and the handler's headers, then Date, Content-Length,
// Content-Type and Connection as needed. closeAfter reports whether the
// connection is to close after it.
func (w *response) finish(b []byte) (_ []byte, closeAfter bool) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	closeAfter = w.closeAfter
	b = append(b, w.head...)
	if w.date {
		b = append(b, "Date: "...)
		b = w.s.appendDate(b)
		b = append(b, "\r\n"...)
	}
	if bodyAllowed(w.status) {
		if !w.lengthSet {
			b = append(b, "Content-Length: "...)
			b = strconv.AppendInt(b, int64(len(w.body)), 10)
			b = append(b, "\r\n"...)
		} else if w.length != strconv.Itoa(len(w.body)) {
			closeAfter = true // the client cannot tell where the answer ends
		}
		if w.sniff && len(w.body) > 0 {
			b = append(b, "Content-Type: "...)
			b = append(b, http.DetectContentType(w.body)...)
			b = append(b, "\r\n"...)
		}
	}
	if w.connClose {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	return append(b, w.body...), closeAfter
}

// appendPadded appends n in at least three digits (%03d).
func appendPadded(b []byte, n int) []byte {
	s := strconv.Itoa(n)
	for range 3 - len(s) {
		b = append(b, '0')
	}
	return append(b, s...)
}

// appendValue appends a header value as net/http writes it: CR and LF
// replaced by spaces, then leading and trailing spaces and tabs trimmed.
func appendValue(b []byte, v string) []byte {
	if strings.ContainsAny(v, "\r\n") {
		v = strings.Map(func(r rune) rune {
			if r == '\r' || r == '\n' {
				return ' '
			}
			return r
		}, v)
	}
	return append(b, strings.Trim(v, " \t")...)
}

// date is the Date header value of one second.
type date struct {
	unix int64
	b    []byte
}

// appendDate appends the current time as the Date header has it,
// formatted once a second.
func (s *Server) appendDate(b []byte) []byte {
	now := time.Now()
	sec := now.Unix()
	if d := s.date.Load(); d != nil && d.unix == sec {
		return append(b, d.b...)
	}
	d := &date{unix: sec, b: now.UTC().AppendFormat(nil, http.TimeFormat)}
	s.date.Store(d)
	return append(b, d.b...)
}
