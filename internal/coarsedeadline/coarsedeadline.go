// Package coarsedeadline makes the read and write deadlines of accepted
// connections cheap to set, by enforcing them from one sweeping goroutine
// at a fixed resolution instead of with a runtime timer per call.
//
// net/http sets a connection's deadlines several times per request when
// its server has ReadTimeout, WriteTimeout and IdleTimeout: the request's
// read deadline, the write deadline, the idle deadline, the next header
// deadline, and clearing each in between. Each call on a *net.TCPConn arms
// or stops a runtime timer, which on a forward-auth endpoint answering in
// a microsecond is a measurable part of the request. Through [Wrap], a
// deadline in the future is only recorded; a sweep every resolution
// expires the connections whose deadline has passed, by setting a deadline
// in the past on the real connection. Deadlines already in the past, which
// net/http uses to interrupt a pending read, apply at once.
//
// What changes for the caller:
//   - A deadline fires up to one resolution late (never early).
//   - After it fires, reads or writes fail with an error that matches
//     [os.ErrDeadlineExceeded] and is a [net.Error] whose Timeout is true,
//     as with the real connection; setting a new deadline or clearing it
//     makes the connection usable again.
//   - An operation that starts after a deadline passed but before the
//     sweep noticed proceeds; the sweep interrupts it if it blocks.
package coarsedeadline

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Listener is a net.Listener whose accepted connections have coarse
// deadlines. Its sweeping goroutine runs until the listener is closed and
// every connection it accepted is closed.
type Listener struct {
	net.Listener
	clock func() time.Time
	// now is the clock at the last sweep, in Unix nanoseconds: a deadline
	// before it has certainly passed.
	now atomic.Int64

	// setHook, when not nil, sees every deadline set (tests).
	setHook func(read bool, t time.Time)

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
	done   chan struct{} // closed when the sweeping goroutine ends
}

// Wrap returns ln with coarse deadlines at resolution (for example 250ms;
// at most that late). It starts the sweeping goroutine.
func Wrap(ln net.Listener, resolution time.Duration) *Listener {
	l := newListener(ln, time.Now)
	go l.run(resolution)
	return l
}

// newListener returns a Listener reading clock, with no sweeping goroutine:
// tests call sweep themselves.
func newListener(ln net.Listener, clock func() time.Time) *Listener {
	l := &Listener{Listener: ln, clock: clock, conns: make(map[*conn]struct{}), done: make(chan struct{})}
	l.now.Store(clock().UnixNano())
	return l
}

func (l *Listener) run(resolution time.Duration) {
	defer close(l.done)
	t := time.NewTicker(resolution)
	defer t.Stop()
	for range t.C {
		if !l.sweep() {
			return
		}
	}
}

// sweep expires every connection whose deadline has passed and reports
// whether sweeping is still needed (the listener is open or connections
// remain).
func (l *Listener) sweep() bool {
	now := l.clock()
	l.now.Store(now.UnixNano())
	l.mu.Lock()
	conns := make([]*conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	more := !l.closed || len(conns) > 0
	l.mu.Unlock()
	for _, c := range conns {
		c.expire(now)
	}
	return more
}

// Accept waits for the next connection and returns it with coarse
// deadlines.
func (l *Listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := &conn{Conn: nc, l: l}
	l.mu.Lock()
	l.conns[c] = struct{}{}
	l.mu.Unlock()
	return c, nil
}

// Close closes the listener. Connections it accepted keep their deadlines
// until they are closed.
func (l *Listener) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	return l.Listener.Close()
}

func (l *Listener) forget(c *conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// conn is an accepted connection with coarse deadlines. Reads and writes go
// straight to the embedded connection.
type conn struct {
	net.Conn
	l *Listener

	mu sync.Mutex
	rd deadline
	wd deadline
}

// deadline is one direction's wanted deadline (zero: none) and whether the
// real connection has been given a deadline in the past for it.
type deadline struct {
	at      time.Time
	expired bool
}

// past is the deadline given to the real connection to expire it.
var past = time.Unix(1, 0)

// set records t and returns what to set on the real connection, if
// anything: a time in the past when t has already passed, zero to lift an
// expiry that t replaces.
func (d *deadline) set(t time.Time, now int64) (apply bool, to time.Time) {
	d.at = t
	if !t.IsZero() && t.UnixNano() <= now {
		d.expired = true
		return true, past
	}
	if d.expired {
		d.expired = false
		return true, time.Time{}
	}
	return false, time.Time{}
}

// due reports whether the deadline has passed at now and the real
// connection does not know yet, and marks it as told.
func (d *deadline) due(now time.Time) bool {
	if d.at.IsZero() || d.expired || d.at.After(now) {
		return false
	}
	d.expired = true
	return true
}

func (c *conn) SetReadDeadline(t time.Time) error  { return c.setDeadline(true, t) }
func (c *conn) SetWriteDeadline(t time.Time) error { return c.setDeadline(false, t) }

func (c *conn) setDeadline(read bool, t time.Time) error {
	err := c.record(read, t)
	if c.l.setHook != nil {
		c.l.setHook(read, t) // once the sweep can see it
	}
	return err
}

// record sets t as the read or write deadline and tells the real
// connection when it must know.
func (c *conn) record(read bool, t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := &c.wd
	if read {
		d = &c.rd
	}
	apply, to := d.set(t, c.l.now.Load())
	switch {
	case !apply:
		return nil
	case read:
		return c.Conn.SetReadDeadline(to)
	default:
		return c.Conn.SetWriteDeadline(to)
	}
}

func (c *conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// expire gives the real connection a deadline in the past in each
// direction whose deadline has passed at now.
func (c *conn) expire(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rd.due(now) {
		c.Conn.SetReadDeadline(past)
	}
	if c.wd.due(now) {
		c.Conn.SetWriteDeadline(past)
	}
}

func (c *conn) Close() error {
	c.l.forget(c)
	return c.Conn.Close()
}

// CloseWrite shuts down the writing side, as [net.TCPConn.CloseWrite]
// does (net/http uses it to close a connection gracefully); it does
// nothing on a connection without one.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
