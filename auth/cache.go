package auth

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"github.com/brokerauth/broker/storage"
)

// Defaults of the session cache (see [Options.CacheSize]).
const (
	// DefaultCacheTTL is how long a cached session snapshot is used before
	// validation reads the database again.
	DefaultCacheTTL = 10 * time.Second
	cacheShards     = 64
	// A snapshot in use is re-read in the background once it is
	// refreshNum/refreshDen of the TTL old (see Auth.refreshAhead), by at
	// most maxRefreshes reads at a time, each given refreshTimeout.
	refreshNum, refreshDen = 3, 4
	maxRefreshes           = 4
	refreshTimeout         = 5 * time.Second
)

// Invalidation names what other processes must drop from their session
// caches: one session (SessionID, the hex hash the database keeps), or
// every session of a user (UserID: revoked, deleted or changed).
type Invalidation struct {
	SessionID string
	UserID    string
}

// String returns the wire form of ev: "s:<session id>" or "u:<user id>".
// [ParseInvalidation] reads it back.
func (ev Invalidation) String() string {
	if ev.UserID != "" {
		return "u:" + ev.UserID
	}
	return "s:" + ev.SessionID
}

// ParseInvalidation reads the wire form written by [Invalidation.String].
func ParseInvalidation(s string) (Invalidation, bool) {
	kind, id, ok := strings.Cut(s, ":")
	if !ok || id == "" {
		return Invalidation{}, false
	}
	switch kind {
	case "s":
		return Invalidation{SessionID: id}, true
	case "u":
		return Invalidation{UserID: id}, true
	}
	return Invalidation{}, false
}

// Invalidations carries cache invalidations to the other processes that
// share the database (replicas behind a load balancer, the admin CLI). The
// storage backend provides it; PostgreSQL does it with NOTIFY. Publish is
// called after the change is committed.
type Invalidations interface {
	Publish(ctx context.Context, ev Invalidation) error
}

// sessionCache is a bounded, sharded LRU of validated sessions keyed by the
// SHA-256 of the token (the session id, unencoded). An entry holds the
// session's stored fields in a compact form and points to a snapshot of
// its user, shared by all of that user's cached sessions: a user
// invalidation marks the snapshot dead, which turns every entry pointing
// to it into a miss.
//
// Consistency: every invalidation and flush bumps gen before it evicts; a
// fill records gen before it reads the database and is dropped if gen moved
// meanwhile (checked under the locks the eviction takes), so a read that
// raced with an invalidation is never cached. While live is false (the
// invalidation feed is down) the cache is empty and bypassed.
type sessionCache struct {
	ttl      int64 // nanoseconds
	refresh  int64 // age (nanoseconds) from which a used snapshot is re-read ahead
	perShard int
	gen      atomic.Uint64
	live     atomic.Bool
	shards   [cacheShards]cacheShard
	users    [cacheShards]userShard
}

type cacheShard struct {
	mu sync.Mutex
	// m is keyed by the first 8 bytes of the key (small slots: fewer cache
	// lines per lookup); find checks the whole key.
	m map[uint64]*cacheEntry
	// LRU list: head is the most recently used entry.
	head, tail *cacheEntry
	_          [32]byte // pad to 64 bytes: shards on separate cache lines
}

type userShard struct {
	mu sync.Mutex
	m  map[string]*userSnap
	_  [48]byte
}

// userSnap is a user as last read from the database. Every entry that
// points to it holds a reference; the last one to go removes it from its
// user shard, so a user invalidation finds every snapshot in use.
type userSnap struct {
	user atomic.Pointer[compactUser]
	dead atomic.Bool
	refs int // guarded by the user shard's mutex
}

// compactUser is a storage.User laid out for the garbage collector, which
// marks every cached object on every cycle: its strings share one
// allocation, its times are Unix microseconds, and its attributes are a
// list (a map costs several times its content) whose keys are interned.
// user rebuilds a storage.User for each caller.
type compactUser struct {
	strs                       string    // ID, username, email, name, image, back to back
	ends                       [5]uint32 // where each of them ends in strs
	has                        uint8     // which optional values are set (hasUsername…)
	verified, created, updated int64
	handle                     []byte // WebAuthnHandle
	attrs                      []attr
	// shared is the user for shared views (read-only, attributes included),
	// built on first use: the views of one snapshot share its values.
	shared atomic.Pointer[sharedUser]
}

// sharedUser is a user for shared views in one allocation: the user's
// pointers point into it.
type sharedUser struct {
	u        storage.User
	strs     [4]string // username, email, name, image
	verified time.Time
}

// Bits of compactUser.has.
const (
	hasUsername = 1 << iota
	hasEmail
	hasName
	hasImage
	hasVerified
)

func newCompactUser(u *storage.User) *compactUser {
	cu := &compactUser{created: micros(u.CreatedAt), updated: micros(u.UpdatedAt), handle: u.WebAuthnHandle, attrs: toAttrs(u.Attributes)}
	var b strings.Builder
	b.WriteString(u.ID)
	cu.ends[0] = uint32(b.Len())
	for i, p := range []*string{u.Username, u.Email, u.Name, u.Image} {
		if p != nil {
			cu.has |= 1 << i
			b.WriteString(*p)
		}
		cu.ends[i+1] = uint32(b.Len())
	}
	if u.EmailVerifiedAt != nil {
		cu.has |= hasVerified
		cu.verified = micros(*u.EmailVerifiedAt)
	}
	cu.strs = b.String()
	return cu
}

// str returns the i-th string of strs.
func (cu *compactUser) str(i int) string {
	start := uint32(0)
	if i > 0 {
		start = cu.ends[i-1]
	}
	return cu.strs[start:cu.ends[i]]
}

func (cu *compactUser) id() string { return cu.str(0) }

// user rebuilds the storage.User, without attributes.
func (cu *compactUser) user() storage.User {
	u := storage.User{ID: cu.id(), WebAuthnHandle: cu.handle, CreatedAt: fromMicros(cu.created), UpdatedAt: fromMicros(cu.updated)}
	for i, p := range []**string{&u.Username, &u.Email, &u.Name, &u.Image} {
		if cu.has&(1<<i) != 0 {
			v := cu.str(i + 1)
			*p = &v
		}
	}
	if cu.has&hasVerified != 0 {
		t := fromMicros(cu.verified)
		u.EmailVerifiedAt = &t
	}
	return u
}

// sharedUser returns the user that cu's views share: its pointers and
// attribute map are built once per snapshot, so that a view costs the heap
// (and every GC cycle) no objects of its own for its user.
func (cu *compactUser) sharedUser() storage.User {
	if su := cu.shared.Load(); su != nil {
		return su.u
	}
	su := &sharedUser{}
	su.u = storage.User{
		ID: cu.id(), WebAuthnHandle: cu.handle, CreatedAt: fromMicros(cu.created), UpdatedAt: fromMicros(cu.updated),
		Attributes: attrMap(cu.attrs),
	}
	for i, p := range []**string{&su.u.Username, &su.u.Email, &su.u.Name, &su.u.Image} {
		if cu.has&(1<<i) != 0 {
			su.strs[i] = cu.str(i + 1)
			*p = &su.strs[i]
		}
	}
	if cu.has&hasVerified != 0 {
		su.verified = fromMicros(cu.verified)
		su.u.EmailVerifiedAt = &su.verified
	}
	cu.shared.CompareAndSwap(nil, su)
	return cu.shared.Load().u
}

// noAttrs is the attribute map of every shared view of a session without
// attributes (read-only, as shared views are).
var noAttrs = map[string]any{}

type attr struct {
	k unique.Handle[string]
	v any
}

// cacheEntry is a cached session. Times are Unix microseconds (the
// precision the database keeps). The fields every hit reads come first, so
// that a hit touches few cache lines.
type cacheEntry struct {
	key  [32]byte
	user *userSnap
	// view is the shared view of the entry (see view), built on first use;
	// seq counts the changes update makes, each of which drops it.
	view *SessionView
	// fetched is when the database read that filled the entry started, in
	// the Auth's clock (Unix nanoseconds); promoted is when it last moved to
	// the front of the LRU list.
	fetched, promoted int64
	active, lastSeen  int64
	seq               uint64
	// touching is set while one validation writes the last-seen time, so
	// concurrent ones do not write it too.
	touching bool
	// refreshing is set while a background read renews the entry (see
	// Auth.refreshAhead), so that one read is started per entry.
	refreshing bool

	idle, created, authed int64
	ua                    unique.Handle[string] // user agents repeat: keep one copy
	ip                    string
	attrs                 []attr
	prev, next            *cacheEntry
}

func newSessionCache(size int, ttl time.Duration) *sessionCache {
	c := &sessionCache{
		ttl: int64(ttl), refresh: int64(ttl) / refreshDen * refreshNum,
		perShard: (size + cacheShards - 1) / cacheShards,
	}
	for i := range c.shards {
		c.shards[i].m = make(map[uint64]*cacheEntry)
		c.users[i].m = make(map[string]*userSnap)
	}
	c.live.Store(true)
	return c
}

func cacheKey(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// hexID is the session id (as stored) of a cache key.
func hexID(k *[32]byte) string { return hex.EncodeToString(k[:]) }

func (c *sessionCache) shard(k *[32]byte) *cacheShard { return &c.shards[k[0]%cacheShards] }

func prefix(k *[32]byte) uint64 { return binary.LittleEndian.Uint64(k[:8]) }

// find returns the entry of k, or nil.
func (sh *cacheShard) find(k *[32]byte) *cacheEntry {
	if e := sh.m[prefix(k)]; e != nil && e.key == *k {
		return e
	}
	return nil
}

// promoteEvery is how often a hit moves its entry to the front of the LRU
// list: at most once a second, so that hits on a busy entry read the cache
// and do not write to other entries' memory.
const promoteEvery = int64(time.Second)

// touched records a hit on e at now (its shard's lock held).
func (sh *cacheShard) touched(e *cacheEntry, now int64) {
	if now-e.promoted >= promoteEvery || now < e.promoted {
		sh.toFront(e)
		e.promoted = now
	}
}

func (c *sessionCache) userShard(id string) *userShard {
	return &c.users[maphash.String(userSeed, id)%cacheShards]
}

var userSeed = maphash.MakeSeed()

func toAttrs(m map[string]any) []attr {
	if len(m) == 0 {
		return nil
	}
	out := make([]attr, 0, len(m))
	for k, v := range m {
		out = append(out, attr{unique.Make(k), v}) // every user has the same few keys
	}
	return out
}

// attrMap builds a map the caller owns (values are shared: JSON objects
// inside attributes are not copied).
func attrMap(as []attr) map[string]any {
	m := make(map[string]any, len(as))
	for _, a := range as {
		m[a.k.Value()] = a.v
	}
	return m
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// cached is what a hit returns.
type cached struct {
	sess  storage.Session
	user  storage.User
	touch bool // this caller must write the last-seen time
}

// get returns the entry of k if it is younger than the TTL and its user
// was not invalidated. With touchInterval > 0 it also claims the last-seen
// write when the stored last-seen time is that old and nobody else is
// writing it.
func (c *sessionCache) get(k *[32]byte, now int64, touchInterval time.Duration) (cached, bool) {
	if !c.live.Load() {
		return cached{}, false
	}
	sh := c.shard(k)
	sh.mu.Lock()
	e := sh.find(k)
	if e == nil {
		sh.mu.Unlock()
		return cached{}, false
	}
	if c.stale(e, now) {
		c.remove(sh, e)
		sh.mu.Unlock()
		return cached{}, false
	}
	sh.touched(e, now)
	touch := false
	if !e.touching && touchDue(e, now, touchInterval) {
		e.touching = true
		touch = true
	}
	f := e.fields()
	sh.mu.Unlock()
	f.id = hexID(k)
	out := f.cached()
	out.touch = touch
	return out, true
}

// stale reports whether e may no longer answer at now (Unix nanoseconds):
// older than the TTL (or from the future: the clock went back), or its
// user invalidated.
func (c *sessionCache) stale(e *cacheEntry, now int64) bool {
	return now-e.fetched >= c.ttl || now < e.fetched || e.user.dead.Load()
}

// touchDue reports whether e's last-seen time is touchInterval old at now
// (no interval: never).
func touchDue(e *cacheEntry, now int64, touchInterval time.Duration) bool {
	return touchInterval > 0 && now/1000-e.lastSeen >= touchInterval.Microseconds()
}

// view returns the shared view of k's entry when the entry can answer on
// its own (see [Auth.CachedSessionView]): young enough, its user not
// invalidated, the session active and no last-seen write due. It builds the
// view with build on first use and after each change to the entry or its
// user snapshot. It never evicts and leaves every other case to get. It
// claims the entry's refresh (refresh is true: the caller starts it) when
// the snapshot is old enough and nobody else is renewing it.
func (c *sessionCache) view(k *[32]byte, now int64, touchInterval time.Duration, build func(cached) *SessionView) (_ *SessionView, refresh bool) {
	if !c.live.Load() {
		return nil, false
	}
	sh := c.shard(k)
	sh.mu.Lock()
	e := sh.find(k)
	if e == nil || c.stale(e, now) || now/1000 >= e.active || touchDue(e, now, touchInterval) {
		sh.mu.Unlock()
		return nil, false
	}
	sh.touched(e, now)
	if !e.refreshing && now-e.fetched >= c.refresh {
		e.refreshing, refresh = true, true
	}
	if v := e.view; v != nil && v.user == e.user.user.Load() {
		sh.mu.Unlock()
		return v, refresh
	}
	f, seq := e.fields(), e.seq
	sh.mu.Unlock()

	// Built outside the lock: build runs the deployment's attribute hooks.
	cd := f.sharedCached()
	v := build(cd)
	v.user = f.user
	sh.mu.Lock()
	if sh.find(k) == e && e.seq == seq && e.user.user.Load() == f.user {
		e.view = v
	}
	sh.mu.Unlock()
	return v, refresh
}

// entryFields are an entry's values, copied under its shard's lock.
type entryFields struct {
	id                                      string
	user                                    *compactUser
	active, idle, created, authAt, lastSeen int64
	ua                                      unique.Handle[string]
	ip                                      string
	attrs                                   []attr
}

func (e *cacheEntry) fields() entryFields {
	return entryFields{
		user:   e.user.user.Load(),
		active: e.active, idle: e.idle, created: e.created, authAt: e.authed, lastSeen: e.lastSeen,
		ua: e.ua, ip: e.ip, attrs: e.attrs,
	}
}

// cached rebuilds the stored session and user, with attribute maps of the
// caller's own.
func (f entryFields) cached() cached {
	out := cached{user: f.user.user()}
	out.user.Attributes = attrMap(f.user.attrs)
	out.sess = f.session(attrMap(f.attrs))
	return out
}

// sharedCached is cached for a shared view: the user snapshot's shared
// user, and noAttrs for a session without attributes. Its session has no
// ID: the view's builder sets it (see Auth.cachedView).
func (f entryFields) sharedCached() cached {
	attrs := noAttrs
	if len(f.attrs) > 0 {
		attrs = attrMap(f.attrs)
	}
	return cached{user: f.user.sharedUser(), sess: f.session(attrs)}
}

// session rebuilds the stored session with the given attribute map.
func (f entryFields) session(attrs map[string]any) storage.Session {
	return storage.Session{
		ID:              f.id,
		UserID:          f.user.id(),
		ActiveExpires:   fromMicros(f.active),
		IdleExpires:     fromMicros(f.idle),
		CreatedAt:       fromMicros(f.created),
		AuthenticatedAt: fromMicros(f.authAt),
		LastSeenAt:      fromMicros(f.lastSeen),
		UserAgent:       f.ua.Value(),
		IP:              f.ip,
		Attributes:      attrs,
	}
}

// put caches a session read from the database, replacing k's entry, when
// no invalidation or flush happened since gen0 was read. It reports whether
// it did.
func (c *sessionCache) put(k *[32]byte, s storage.Session, u storage.User, fetched int64, gen0 uint64) bool {
	if !c.live.Load() || c.gen.Load() != gen0 {
		return false // cheap early out; checked again under the locks
	}
	cu := newCompactUser(&u)
	uid := cu.id()
	e := &cacheEntry{
		key: *k, fetched: fetched,
		active: micros(s.ActiveExpires), idle: micros(s.IdleExpires), created: micros(s.CreatedAt),
		authed: micros(s.AuthenticatedAt), lastSeen: micros(s.LastSeenAt),
		ua: unique.Make(s.UserAgent), ip: s.IP, attrs: toAttrs(s.Attributes),
	}
	sh := c.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	us := c.userShard(uid)
	us.mu.Lock()
	// An invalidation bumps gen before it takes either lock.
	if !c.live.Load() || c.gen.Load() != gen0 {
		us.mu.Unlock()
		return false
	}
	snap := us.m[uid]
	switch {
	case snap == nil:
		snap = &userSnap{}
		snap.user.Store(cu)
		us.m[uid] = snap
	case cu.updated >= snap.user.Load().updated:
		// The newest read wins: every cached session of the user sees it.
		snap.user.Store(cu)
	}
	snap.refs++
	us.mu.Unlock()
	e.user = snap

	if old := sh.m[prefix(k)]; old != nil { // this session, or one whose key shares the prefix
		c.remove(sh, old)
	}
	for len(sh.m) >= c.perShard && sh.tail != nil {
		c.remove(sh, sh.tail)
	}
	sh.m[prefix(k)] = e
	e.promoted = fetched
	e.next = sh.head
	if sh.head != nil {
		sh.head.prev = e
	}
	sh.head = e
	if sh.tail == nil {
		sh.tail = e
	}
	return true
}

// update records a write validation made (a touch or a reset) on the entry
// of k, if it is still cached, and releases the touch claim.
func (c *sessionCache) update(k *[32]byte, activeExpires, idleExpires, lastSeen time.Time) {
	c.withEntry(k, func(_ *cacheShard, e *cacheEntry) {
		e.active, e.idle, e.lastSeen = micros(activeExpires), micros(idleExpires), micros(lastSeen)
		e.touching = false
		e.view = nil
		e.seq++
	})
}

// unclaimRefresh gives up k's refresh claim when its read failed or was
// not kept: a later hit may try again, and meanwhile the snapshot answers
// until its TTL as before.
func (c *sessionCache) unclaimRefresh(k *[32]byte) {
	c.withEntry(k, func(_ *cacheShard, e *cacheEntry) { e.refreshing = false })
}

// release gives up a touch claim after a failed write.
func (c *sessionCache) release(k *[32]byte) {
	c.withEntry(k, func(_ *cacheShard, e *cacheEntry) { e.touching = false })
}

// drop evicts the entry of k without bumping the generation: for entries
// this process found stale or dead itself.
func (c *sessionCache) drop(k *[32]byte) {
	c.withEntry(k, func(sh *cacheShard, e *cacheEntry) { c.remove(sh, e) })
}

// withEntry runs f on k's entry, if cached, under its shard's lock.
func (c *sessionCache) withEntry(k *[32]byte, f func(*cacheShard, *cacheEntry)) {
	sh := c.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.find(k); e != nil {
		f(sh, e)
	}
}

// invalidate evicts what ev names.
func (c *sessionCache) invalidate(ev Invalidation) {
	c.gen.Add(1)
	if ev.SessionID != "" {
		if k, ok := keyFromID(ev.SessionID); ok {
			c.drop(&k)
		}
	}
	if ev.UserID != "" {
		us := c.userShard(ev.UserID)
		us.mu.Lock()
		if snap := us.m[ev.UserID]; snap != nil {
			// Its entries become misses and go when next looked at (or
			// pushed out by newer ones).
			snap.dead.Store(true)
			delete(us.m, ev.UserID)
		}
		us.mu.Unlock()
	}
}

// flush empties the cache.
func (c *sessionCache) flush() {
	c.gen.Add(1)
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		clear(sh.m)
		sh.head, sh.tail = nil, nil
		sh.mu.Unlock()
	}
	for i := range c.users {
		us := &c.users[i]
		us.mu.Lock()
		for _, snap := range us.m {
			snap.dead.Store(true) // for entries of fills racing with the flush
		}
		clear(us.m)
		us.mu.Unlock()
	}
}

// setLive turns the cache on or off. Either way it is emptied: entries
// cached before the feed went down may have missed invalidations, and
// entries cached while it was down are not there to begin with.
func (c *sessionCache) setLive(live bool) {
	if !live {
		c.live.Store(false)
	}
	c.flush()
	if live {
		c.live.Store(true)
	}
}

func (c *sessionCache) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		for _, e := range sh.m {
			if !e.user.dead.Load() {
				n++
			}
		}
		sh.mu.Unlock()
	}
	return n
}

func (sh *cacheShard) toFront(e *cacheEntry) {
	if sh.head == e {
		return
	}
	// Unlink (e is not the head, so e.prev != nil).
	e.prev.next = e.next
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		sh.tail = e.prev
	}
	e.prev, e.next = nil, sh.head
	sh.head.prev = e
	sh.head = e
}

// remove unlinks e from its shard (whose lock is held) and drops its
// reference to its user snapshot.
func (c *sessionCache) remove(sh *cacheShard, e *cacheEntry) {
	if sh.m[prefix(&e.key)] == e {
		delete(sh.m, prefix(&e.key))
	}
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		sh.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		sh.tail = e.prev
	}
	e.prev, e.next = nil, nil
	snap := e.user
	id := snap.user.Load().id()
	us := c.userShard(id)
	us.mu.Lock()
	snap.refs--
	if snap.refs <= 0 && us.m[id] == snap {
		delete(us.m, id)
	}
	us.mu.Unlock()
}

// keyFromID decodes a hex session id into a cache key.
func keyFromID(id string) ([32]byte, bool) {
	var k [32]byte
	if !validSessionID(id) {
		return k, false
	}
	for i := range k {
		k[i] = unhex(id[2*i])<<4 | unhex(id[2*i+1])
	}
	return k, true
}

func unhex(c byte) byte {
	if c >= 'a' {
		return c - 'a' + 10
	}
	return c - '0'
}

// ApplyInvalidation evicts what ev names from this process's session
// cache. The subscriber side of [Invalidations] calls it for every event it
// receives; it does nothing when the cache is off.
func (a *Auth) ApplyInvalidation(ev Invalidation) {
	if a.cache != nil {
		a.cache.invalidate(ev)
	}
}

// FlushCache empties the session cache.
func (a *Auth) FlushCache() {
	if a.cache != nil {
		a.cache.flush()
	}
}

// SetInvalidationFeed tells the cache whether this process currently
// receives the invalidations other processes publish. While it does not
// (the listening connection is down, or not up yet), the cache is empty
// and every validation reads the database; when it is back, the cache
// starts empty, because events sent meanwhile are lost.
func (a *Auth) SetInvalidationFeed(up bool) {
	if a.cache != nil {
		a.cache.setLive(up)
	}
}

// CacheLen returns how many sessions are cached (not counting those of
// invalidated users that are yet to be swept out), for metrics and tests.
func (a *Auth) CacheLen() int {
	if a.cache == nil {
		return 0
	}
	return a.cache.len()
}

// invalidate evicts ev locally at once and publishes it to the other
// processes.
func (a *Auth) invalidate(ctx context.Context, ev Invalidation) error {
	if a.cache != nil {
		a.cache.invalidate(ev)
	}
	if a.opts.Invalidations == nil {
		return nil
	}
	return a.opts.Invalidations.Publish(ctx, ev)
}
