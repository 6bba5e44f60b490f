package coarsedeadline

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/brokerauth/broker/internal/testclock"
)

// pair returns a listener swept by hand on clock, the server side of one
// accepted connection, and its client side.
func pair(t *testing.T, clock *testclock.Clock) (*Listener, net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newListener(ln, clock.Now)
	t.Cleanup(func() { l.Close() })
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return l, server, client
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
}

// readResult starts a read on c and returns where its error arrives.
func readResult(c net.Conn) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		done <- err
	}()
	return done
}

// result waits for a read started by readResult; a read that never returns
// fails the test after 10 s instead of hanging it.
func result(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the read never returned")
		return nil
	}
}

func TestReadDeadlineFiresAtSweep(t *testing.T) {
	clock := testclock.New(time.Now())
	l, server, client := pair(t, clock)

	if err := server.SetReadDeadline(clock.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	done := readResult(server)
	clock.Advance(9 * time.Second)
	l.sweep() // not yet due
	client.Write([]byte("a"))
	if err := result(t, done); err != nil {
		t.Fatalf("read before the deadline: %v", err)
	}

	done = readResult(server)
	clock.Advance(2 * time.Second)
	l.sweep()
	if err := result(t, done); !isTimeout(err) {
		t.Fatalf("blocked read after the deadline's sweep: %v, want a timeout", err)
	}
	// Like a real deadline: later reads fail too, until it is moved.
	if _, err := server.Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("read after expiry: %v, want a timeout", err)
	}
	if err := server.SetReadDeadline(clock.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	client.Write([]byte("b"))
	if err := result(t, readResult(server)); err != nil {
		t.Fatalf("read after extending the deadline: %v", err)
	}
}

func TestClearedDeadlineDoesNotFire(t *testing.T) {
	clock := testclock.New(time.Now())
	l, server, client := pair(t, clock)
	server.SetReadDeadline(clock.Now().Add(time.Second))
	server.SetReadDeadline(time.Time{})
	done := readResult(server)
	clock.Advance(time.Hour)
	l.sweep()
	client.Write([]byte("a"))
	if err := result(t, done); err != nil {
		t.Fatalf("read with the deadline cleared: %v", err)
	}
}

// net/http interrupts its background read with a deadline in the past and
// waits for the read to return: that must apply at once, with no sweep.
func TestPastDeadlineAppliesAtOnce(t *testing.T) {
	clock := testclock.New(time.Now())
	_, server, client := pair(t, clock)
	done := readResult(server)
	server.SetReadDeadline(time.Unix(1, 0))
	if err := result(t, done); !isTimeout(err) {
		t.Fatalf("read interrupted by a past deadline: %v, want a timeout", err)
	}
	server.SetReadDeadline(time.Time{})
	client.Write([]byte("a"))
	if err := result(t, readResult(server)); err != nil {
		t.Fatalf("read after clearing: %v", err)
	}
}

func TestWriteDeadline(t *testing.T) {
	clock := testclock.New(time.Now())
	l, server, _ := pair(t, clock)
	server.SetWriteDeadline(clock.Now().Add(time.Minute))
	if _, err := server.Write([]byte("a")); err != nil {
		t.Fatalf("write before the deadline: %v", err)
	}
	clock.Advance(time.Minute + time.Second)
	l.sweep()
	if _, err := server.Write([]byte("b")); !isTimeout(err) {
		t.Fatalf("write after the deadline's sweep: %v, want a timeout", err)
	}
	server.SetWriteDeadline(time.Time{})
	if _, err := server.Write([]byte("c")); err != nil {
		t.Fatalf("write after clearing: %v", err)
	}
	server.SetDeadline(time.Unix(1, 0))
	if _, err := server.Write([]byte("d")); !isTimeout(err) {
		t.Fatalf("write after SetDeadline in the past: %v, want a timeout", err)
	}
}

func TestSweepStopsWhenClosedAndDrained(t *testing.T) {
	clock := testclock.New(time.Now())
	l, server, _ := pair(t, clock)
	if !l.sweep() {
		t.Fatal("sweep would stop with the listener open")
	}
	l.Close()
	if !l.sweep() {
		t.Fatal("sweep would stop with a connection open")
	}
	server.Close()
	if l.sweep() {
		t.Fatal("sweep goes on with the listener and every connection closed")
	}

	// The goroutine Wrap starts ends then.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := Wrap(ln, time.Millisecond)
	w.Close()
	<-w.done
}

// deadlineLog records the read deadlines net/http sets, so that a test can
// wait for one.
type deadlineLog struct {
	mu     sync.Mutex
	reads  []time.Time
	signal chan struct{}
}

func (d *deadlineLog) set(read bool, t time.Time) {
	if !read {
		return
	}
	d.mu.Lock()
	d.reads = append(d.reads, t)
	d.mu.Unlock()
	select {
	case d.signal <- struct{}{}:
	default:
	}
}

// waitRead returns the first read deadline set at or after *from that is
// at least min from now (real clock), and moves *from past it.
func (d *deadlineLog) waitRead(t *testing.T, from *int, min time.Duration) time.Time {
	t.Helper()
	for {
		d.mu.Lock()
		for i := *from; i < len(d.reads); i++ {
			if r := d.reads[i]; !r.IsZero() && time.Until(r) >= min {
				*from = i + 1
				d.mu.Unlock()
				return r
			}
		}
		*from = len(d.reads)
		d.mu.Unlock()
		select {
		case <-d.signal:
		case <-t.Context().Done():
			t.Fatal("no such read deadline set")
		}
	}
}

// httpServer serves h on a listener swept by hand, with the broker's
// timeouts, and returns a log of the read deadlines set.
func httpServer(t *testing.T, clock *testclock.Clock, h http.Handler) (*Listener, string, *deadlineLog) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newListener(ln, clock.Now)
	log := &deadlineLog{signal: make(chan struct{}, 1)}
	l.setHook = log.set
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })
	return l, ln.Addr().String(), log
}

// expiredReads is how many connections have had their read deadline
// expired by a sweep.
func (l *Listener) expiredReads() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for c := range l.conns {
		c.mu.Lock()
		if c.rd.expired {
			n++
		}
		c.mu.Unlock()
	}
	return n
}

// sweepAt sweeps as if the clock read at, then puts the listener's idea of
// now back on the real clock, which net/http's deadlines are taken from.
func sweepAt(l *Listener, clock *testclock.Clock, at time.Time) {
	clock.Set(at)
	l.sweep()
	l.now.Store(time.Now().UnixNano())
}

// A client that never finishes its headers is cut off once the header
// timeout has passed, and one that sits idle once the idle timeout has;
// neither before.
func TestHTTPServerTimeouts(t *testing.T) {
	clock := testclock.New(time.Now())
	l, addr, log := httpServer(t, clock, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	from := 0

	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.SetReadDeadline(time.Now().Add(10 * time.Second)) // a bound on failure
	io.WriteString(slow, "GET / HTTP/1.1\r\nHost: x\r\n")
	header := log.waitRead(t, &from, 5*time.Second) // the header deadline
	sweepAt(l, clock, header.Add(-time.Second))
	if n := l.expiredReads(); n != 0 {
		t.Fatalf("a second before the header deadline: %d connections expired", n)
	}
	sweepAt(l, clock, header)
	// Closed: an end of file, or a reset when the server closed before
	// reading what the client had sent.
	if _, err := slow.Read(make([]byte, 1)); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("slow client after the header timeout: %v, want the connection closed", err)
	}

	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.SetReadDeadline(time.Now().Add(10 * time.Second)) // a bound on failure
	br := bufio.NewReader(idle)
	get(t, idle, br)
	at := log.waitRead(t, &from, 100*time.Second) // the idle deadline
	sweepAt(l, clock, at.Add(-time.Second))
	get(t, idle, br) // still open
	at = log.waitRead(t, &from, 100*time.Second)
	sweepAt(l, clock, at)
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection after the idle timeout: %v, want it closed", err)
	}
}

func get(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// A handler that runs past ReadTimeout keeps its request: net/http clears
// the read deadline for its background read while the handler runs, and a
// deadline that fired then would cancel the request's context.
func TestLongHandlerKeepsItsRequest(t *testing.T) {
	clock := testclock.New(time.Now())
	entered, release := make(chan struct{}), make(chan struct{})
	ctxErr := make(chan error, 1)
	l, addr, _ := httpServer(t, clock, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		ctxErr <- r.Context().Err()
		io.WriteString(w, "done")
	}))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-entered
	sweepAt(l, clock, time.Now().Add(30*time.Second))
	close(release)
	if err := <-ctxErr; err != nil {
		t.Fatalf("request context after ReadTimeout passed in the handler: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "done" {
		t.Fatalf("body %q", body)
	}
}

// net/http half-closes a connection through CloseWrite before it closes it
// (a request body too large): the wrapper passes it on.
func TestCloseWrite(t *testing.T) {
	_, server, client := pair(t, testclock.New(time.Now()))
	cw, ok := server.(interface{ CloseWrite() error })
	if !ok {
		t.Fatalf("%T has no CloseWrite", server)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second)) // a bound on failure
	if _, err := client.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read after CloseWrite: %v, want EOF", err)
	}
	// Still open for reading.
	client.Write([]byte("a"))
	if err := result(t, readResult(server)); err != nil {
		t.Fatalf("server read after CloseWrite: %v", err)
	}
}
