package sqlstore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/lib/pq"
)

// ErrNotifyUnsupported is what [Store.Subscribe] returns on SQLite: one
// process owns the database, so there is nobody to hear from.
var ErrNotifyUnsupported = errors.New("sqlstore: notifications need PostgreSQL")

// Tuning of the listening connection.
const (
	notifyChannelBase = "broker_invalidate"
	// maxIdentifier is PostgreSQL's NAMEDATALEN-1: longer channel names
	// are refused.
	maxIdentifier = 63
	// Reconnect quickly (at most once per listenMinReconnect) and back off
	// to listenMaxReconnect while the server stays away.
	listenMinReconnect = 100 * time.Millisecond
	listenMaxReconnect = 5 * time.Second
	// The connection is pinged every listenPingInterval; a ping that has
	// not answered after listenPingTimeout reports the feed down, because
	// a silently dead connection (no reset, no FIN) delivers nothing and
	// says nothing. TCP keepalives close such a connection eventually.
	listenPingInterval = 2 * time.Second
	listenPingTimeout  = 2 * time.Second
)

// FeedHandlers receive what a [Store.Subscribe] subscription hears. They
// are called from the subscription's goroutines and must be quick.
type FeedHandlers struct {
	// Message is called with the payload of every notification, in the
	// order they were committed.
	Message func(payload string)
	// Up is called when the subscription is listening: after it first
	// connects, after every reconnection, and when a connection that had
	// stopped answering pings answers again. Notifications sent while it
	// was down are lost, so whoever relies on them must resynchronise
	// (empty its cache).
	Up func()
	// Down is called when the listening connection is lost or stops
	// answering; err says why.
	Down func(err error)
}

// notifyState is the Store's part of LISTEN/NOTIFY: the channel name,
// resolved once, and the running subscriptions, stopped by Close.
type notifyState struct {
	mu      sync.Mutex
	channel string
	subs    []*subscription
	closed  bool
}

// NotifyChannel returns the channel that the notifications of this
// database and schema use: "broker_invalidate.<schema>", so that stores on
// different schemas of one database (tests, several deployments) do not
// hear each other. The schema is WithSchema's, or the server's
// current_schema() (the first schema of the search_path) without it.
func (s *Store) NotifyChannel(ctx context.Context) (string, error) {
	s.notify.mu.Lock()
	defer s.notify.mu.Unlock()
	if s.notify.channel != "" {
		return s.notify.channel, nil
	}
	schema := s.schema
	if schema == "" {
		var cur sql.NullString
		if err := s.db.GetContext(ctx, &cur, `SELECT current_schema()`); err != nil {
			return "", dbErr("notify: current schema", err)
		}
		schema = cur.String
	}
	s.notify.channel = channelName(schema)
	return s.notify.channel, nil
}

func channelName(schema string) string {
	name := notifyChannelBase + "." + schema
	if len(name) > maxIdentifier {
		sum := sha256.Sum256([]byte(schema))
		name = notifyChannelBase + "." + hex.EncodeToString(sum[:12])
	}
	return name
}

// Notify sends payload (at most 8000 bytes) to every subscription on this
// database and schema, in every process, this one included. It is one
// statement outside any transaction: call it after the change it announces
// has been committed. On SQLite it does nothing.
func (s *Store) Notify(ctx context.Context, payload string) error {
	if s.dialect != DialectPostgres {
		return nil
	}
	ch, err := s.NotifyChannel(ctx)
	if err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, `SELECT pg_notify($1, $2)`, ch, payload); err != nil {
		return dbErr("notify", err)
	}
	return nil
}

// Subscribe starts listening, on a connection of its own (PostgreSQL
// LISTEN through lib/pq's Listener, application_name set to the channel
// name so that operators can find it in pg_stat_activity), for what
// [Store.Notify] sends, and calls h until ctx ends or the Store is closed.
// It returns at once; h.Up reports when it is listening. The connection is
// re-established after any loss (h.Down, then h.Up), and pinged so that a
// connection that silently stopped working is reported too. On SQLite it
// returns ErrNotifyUnsupported.
func (s *Store) Subscribe(ctx context.Context, h FeedHandlers) error {
	if s.dialect != DialectPostgres {
		return ErrNotifyUnsupported
	}
	ch, err := s.NotifyChannel(ctx)
	if err != nil {
		return err
	}
	dsn, err := listenerDSN(s.dsn, ch)
	if err != nil {
		return err
	}
	sub := &subscription{h: h, done: make(chan struct{}), stop: make(chan struct{})}
	s.notify.mu.Lock()
	if s.notify.closed {
		s.notify.mu.Unlock()
		return errors.New("sqlstore: subscribe: store is closed")
	}
	s.notify.subs = append(s.notify.subs, sub)
	s.notify.mu.Unlock()
	sub.l = pq.NewDialListener(keepAliveDialer{}, dsn, listenMinReconnect, listenMaxReconnect, sub.event)
	go sub.run(ctx, ch)
	return nil
}

// closeSubscriptions stops every subscription and waits (briefly) for
// them to end.
func (s *Store) closeSubscriptions() {
	s.notify.mu.Lock()
	subs := s.notify.subs
	s.notify.subs, s.notify.closed = nil, true
	s.notify.mu.Unlock()
	for _, sub := range subs {
		sub.close()
	}
}

// listenerDSN is the store's DSN with application_name set to the channel.
func listenerDSN(dsn, channel string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", fmt.Errorf("sqlstore: subscribe: invalid postgres url: %w", redactURL(err))
	}
	q := u.Query()
	q.Set("application_name", channel)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// keepAliveDialer dials with short TCP keepalives, so that the kernel
// notices a dead peer within seconds rather than the default minutes.
type keepAliveDialer struct{}

func (keepAliveDialer) dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: 5 * time.Second, Interval: 2 * time.Second, Count: 3,
	}}
}

func (d keepAliveDialer) Dial(network, address string) (net.Conn, error) {
	return d.dialer(0).Dial(network, address)
}

func (d keepAliveDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	return d.dialer(timeout).Dial(network, address)
}

func (d keepAliveDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return d.dialer(0).DialContext(ctx, network, address)
}

// subscription is one running Subscribe. Its state is up when the
// listener is connected (and listening) and the last ping answered in
// time; the handlers see each change of that state once.
type subscription struct {
	h    FeedHandlers
	l    *pq.Listener
	stop chan struct{}
	done chan struct{}

	mu sync.Mutex
	// listening is set once Listen has returned: the channel is then
	// LISTENed on the connection, and on every reconnection before pq
	// reports it (pq can report the first connection before Listen ran).
	listening bool
	connected bool // pq reported connected or reconnected, and no loss since
	pingOK    bool // the last ping answered in time (reset on reconnection)
	up        bool // what the handlers were last told
	stopped   bool
	closeOnce sync.Once
}

// event is lib/pq's connection-state callback (called from its goroutine).
func (sub *subscription) event(ev pq.ListenerEventType, err error) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	switch ev {
	case pq.ListenerEventConnected, pq.ListenerEventReconnected:
		// Both come after LISTEN has been (re)issued on the new connection.
		sub.connected, sub.pingOK = true, true
	case pq.ListenerEventDisconnected:
		sub.connected = false
		if err == nil {
			err = errors.New("listening connection lost")
		}
	case pq.ListenerEventConnectionAttemptFailed:
		sub.connected = false
	}
	sub.settle(err)
}

func (sub *subscription) pinged(ok bool, err error) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	sub.pingOK = ok
	sub.settle(err)
}

// settle tells the handlers about a change of state; sub.mu is held, so
// the handlers see changes one at a time and in order.
func (sub *subscription) settle(err error) {
	up := sub.listening && sub.connected && sub.pingOK && !sub.stopped
	if up == sub.up {
		return
	}
	sub.up = up
	switch {
	case up && sub.h.Up != nil:
		sub.h.Up()
	case !up && sub.h.Down != nil:
		if err == nil {
			err = errors.New("listening connection not answering")
		}
		sub.h.Down(err)
	}
}

func (sub *subscription) run(ctx context.Context, channel string) {
	defer close(sub.done)
	listened := make(chan error, 1)
	// Listen blocks until the first connection is up.
	go func() { listened <- sub.l.Listen(channel) }()
	tick := time.NewTicker(listenPingInterval)
	defer tick.Stop()
	var (
		ping         chan error
		pingDeadline <-chan time.Time
		stop         = sub.stop
		ctxDone      = ctx.Done()
	)
	for {
		select {
		case n, ok := <-sub.l.Notify:
			if !ok {
				return
			}
			// nil follows a reconnection (the event callback handled it).
			if n != nil && sub.h.Message != nil {
				sub.h.Message(n.Extra)
			}
		case err := <-listened:
			listened = nil
			sub.mu.Lock()
			if err == nil {
				sub.listening = true
				sub.settle(nil)
			}
			sub.mu.Unlock()
			if err != nil && !errors.Is(err, net.ErrClosed) && sub.h.Down != nil {
				// LISTEN itself was refused: stay down (the cache stays off).
				sub.h.Down(fmt.Errorf("sqlstore: listen: %w", err))
			}
		case <-tick.C:
			if ping != nil {
				continue // the last one is still out
			}
			ping = make(chan error, 1)
			pingDeadline = time.After(listenPingTimeout)
			go func(c chan<- error) { c <- sub.l.Ping() }(ping)
		case err := <-ping:
			ping, pingDeadline = nil, nil
			// "no connection" is the event callback's business.
			sub.mu.Lock()
			connected := sub.connected
			sub.mu.Unlock()
			if connected {
				sub.pinged(err == nil, err)
			}
		case <-pingDeadline:
			pingDeadline = nil
			sub.pinged(false, errors.New("sqlstore: listening connection: ping timed out"))
		case <-ctxDone:
			ctxDone = nil
			sub.closeOnce.Do(func() { close(sub.stop) })
		case <-stop:
			stop = nil
			sub.mu.Lock()
			sub.stopped = true
			sub.mu.Unlock()
			// Close may wait for a ping stuck on a dead connection; keep
			// draining Notify meanwhile, until the listener closes it.
			go sub.l.Close()
		}
	}
}

// close stops the subscription and waits up to 2 s for it to end.
func (sub *subscription) close() {
	sub.closeOnce.Do(func() { close(sub.stop) })
	select {
	case <-sub.done:
	case <-time.After(2 * time.Second):
	}
}
