package auth

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"hash/maphash"
	"maps"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
// SHA-256 of the token (the session id, unencoded).
//
// Layout: the garbage collector marks every live object on every cycle, and
// a busy broker's cache is most of its heap, so the cache is built to hold
// no pointers. Each shard keeps its entries in one slice of pointer-free
// records (the GC marks the slice and never scans it), indexes them with a
// map of integers (which it does not scan either), links its LRU list by
// slot number, and keeps each entry's strings (its user's, its user agent
// and IP, both attribute sets as JSON) in one byte arena. Only what hits
// keep are pointers, in slots beside the entries: decoded values (see
// entryValues) and shared views (see view). An entry carries its own copy of its user, so a user
// invalidation sweeps the shards for that user's entries.
//
// Consistency: every invalidation and flush bumps gen before it evicts; a
// fill records gen before it reads the database and is dropped if gen moved
// meanwhile (checked under the shard lock the eviction takes), so a read
// that raced with an invalidation is never cached. While live is false (the
// invalidation feed is down) the cache is empty and bypassed.
type sessionCache struct {
	ttl      int64 // nanoseconds
	refresh  int64 // age (nanoseconds) from which a used snapshot is re-read ahead
	perShard int
	gen      atomic.Uint64
	live     atomic.Bool
	// sweepAt is when the next shard is due to be swept (Unix
	// nanoseconds); sweepNext counts sweeps, which go round the shards.
	sweepAt   atomic.Int64
	sweepNext atomic.Uint32
	shards    [cacheShards]cacheShard
}

// noSlot ends the LRU and free lists.
const noSlot = -1

type cacheShard struct {
	mu sync.Mutex
	// idx is keyed by the first 8 bytes of the key (small slots: fewer
	// cache lines per lookup); find checks the whole key.
	idx  map[uint64]int32
	ents []cacheEntry
	// vals[i] are the decoded values of ents[i], kept from its first get;
	// views[i] is its shared view, built on first use (see
	// sessionCache.view). Both are dropped with every change to the entry.
	vals  []*entryValues
	views []*SessionView
	// arena holds the entries' values; waste counts its bytes that no
	// entry uses any more (compact reclaims them).
	arena []byte
	waste int
	// LRU list (head: most recently used) and free slots, through
	// cacheEntry.prev/next.
	head, tail, free int32
	// seq numbers entry versions: a view is kept only for the version it
	// was built from.
	seq uint64
}

// cacheEntry is a cached session and its user, without pointers. Times are
// Unix microseconds (the precision the database keeps) except fetched and
// promoted. The fields every hit reads come first, so that a hit touches
// few cache lines.
type cacheEntry struct {
	key [32]byte
	// fetched is when the database read that filled the entry started, in
	// the Auth's clock (Unix nanoseconds); promoted is when it last moved to
	// the front of the LRU list.
	fetched, promoted int64
	active, lastSeen  int64
	seq               uint64
	prev, next        int32
	used              bool
	// touching is set while one validation writes the last-seen time, so
	// concurrent ones do not write it too.
	touching bool
	// refreshing is set while a background read renews the entry (see
	// Auth.refreshAhead), so that one read is started per entry.
	refreshing bool
	has        uint8 // which optional user values are set (hasUsername…)

	idle, created, authed int64
	userHash              uint64 // of the user id: user invalidations find the entry by it
	uCreated, uUpdated    int64
	uVerified             int64
	// data is where the entry's values start in the arena; ends[i] is where
	// value i (fUserID…) ends, relative to data.
	data uint32
	ends [nFields]uint32
}

// The values of an entry kept in its shard's arena, in this order.
const (
	fUserID = iota
	fUsername
	fEmail
	fName
	fImage
	fHandle    // WebAuthnHandle
	fUserAttrs // JSON object, empty for none
	fUA
	fIP
	fSessAttrs // JSON object, empty for none
	nFields
)

// Bits of cacheEntry.has.
const (
	hasUsername = 1 << iota
	hasEmail
	hasName
	hasImage
	hasVerified
	hasHandle
)

// minCompact is the arena waste (bytes) below which a shard does not
// compact its arena.
const minCompact = 64 << 10

func newSessionCache(size int, ttl time.Duration) *sessionCache {
	c := &sessionCache{
		ttl: int64(ttl), refresh: int64(ttl) / refreshDen * refreshNum,
		perShard: (size + cacheShards - 1) / cacheShards,
	}
	for i := range c.shards {
		sh := &c.shards[i]
		sh.idx = make(map[uint64]int32)
		sh.head, sh.tail, sh.free = noSlot, noSlot, noSlot
	}
	c.live.Store(true)
	return c
}

// cacheKey is the SHA-256 of token. A token of the usual length is copied
// to the stack rather than converted on the heap: this runs on every
// validation.
func cacheKey(token string) [32]byte {
	var buf [2 * SessionTokenLength]byte
	if len(token) <= len(buf) {
		return sha256.Sum256(append(buf[:0], token...))
	}
	return sha256.Sum256([]byte(token))
}

// hexID is the session id (as stored) of a cache key.
func hexID(k *[32]byte) string { return hex.EncodeToString(k[:]) }

func (c *sessionCache) shard(k *[32]byte) *cacheShard { return &c.shards[k[0]%cacheShards] }

func prefix(k *[32]byte) uint64 { return binary.LittleEndian.Uint64(k[:8]) }

func userHash(id string) uint64 { return maphash.String(userSeed, id) }

var userSeed = maphash.MakeSeed()

// maybeSweep sweeps the shards that are due: they are swept in turn, each
// once per TTL, so that an entry nobody asks for again leaves within two
// TTLs with its decoded values and view (pointers the collector scans,
// about 1.5 KB for a view) rather than when the LRU evicts it, which a
// shard with few misses may never do. It runs on the caller's goroutine:
// one shard (perShard entries, 512 by default) every TTL/cacheShards, a few
// microseconds; after an idle spell the first caller catches up, at most
// one sweep of every shard.
func (c *sessionCache) maybeSweep(now int64) {
	at := c.sweepAt.Load()
	step := max(c.ttl/cacheShards, 1)
	if now < at && at-now <= step { // not due (further ahead: the clock went back)
		return
	}
	if !c.sweepAt.CompareAndSwap(at, now+step) {
		return
	}
	n := int64(cacheShards)
	if late := (now - at) / step; late >= 0 && late < n {
		n = late + 1
	}
	for range n {
		c.sweepShard(&c.shards[c.sweepNext.Add(1)%cacheShards], now)
	}
}

// sweepShard removes sh's entries that are past the TTL at now.
func (c *sessionCache) sweepShard(sh *cacheShard, now int64) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for i := range sh.ents {
		if e := &sh.ents[i]; e.used && c.stale(e, now) {
			c.remove(sh, int32(i))
		}
	}
}

// find returns the slot of k's entry, or noSlot.
func (sh *cacheShard) find(k *[32]byte) int32 {
	if i, ok := sh.idx[prefix(k)]; ok && sh.ents[i].key == *k {
		return i
	}
	return noSlot
}

// promoteEvery is how often a hit moves its entry to the front of the LRU
// list: at most once a second, so that hits on a busy entry read the cache
// and do not write to other entries' memory.
const promoteEvery = int64(time.Second)

// touched records a hit on slot i at now (its shard's lock held).
func (sh *cacheShard) touched(i int32, now int64) {
	e := &sh.ents[i]
	if now-e.promoted >= promoteEvery || now < e.promoted {
		sh.toFront(i)
		e.promoted = now
	}
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// cached is what a hit returns.
type cached struct {
	sess  storage.Session
	user  storage.User
	touch bool // this caller must write the last-seen time
}

// get returns the entry of k if it is younger than the TTL. With
// touchInterval > 0 it also claims the last-seen write when the stored
// last-seen time is that old and nobody else is writing it.
func (c *sessionCache) get(k *[32]byte, now int64, touchInterval time.Duration) (cached, bool) {
	if !c.live.Load() {
		return cached{}, false
	}
	c.maybeSweep(now)
	sh := c.shard(k)
	sh.mu.Lock()
	i := sh.find(k)
	if i == noSlot {
		sh.mu.Unlock()
		return cached{}, false
	}
	e := &sh.ents[i]
	if c.stale(e, now) {
		c.remove(sh, i)
		sh.mu.Unlock()
		return cached{}, false
	}
	sh.touched(i, now)
	touch := false
	if !e.touching && touchDue(e, now, touchInterval) {
		e.touching = true
		touch = true
	}
	ev, seq := sh.vals[i], e.seq
	var snap entrySnap
	if ev == nil {
		snap = sh.snapshot(i)
	}
	sh.mu.Unlock()
	if ev == nil {
		ev = sh.keepValues(k, i, seq, snap.values())
	}
	out := ev.copyFor(hexID(k))
	out.touch = touch
	return out, true
}

// stale reports whether e may no longer answer at now (Unix nanoseconds):
// older than the TTL, or from the future (the clock went back).
func (c *sessionCache) stale(e *cacheEntry, now int64) bool {
	return now-e.fetched >= c.ttl || now < e.fetched
}

// touchDue reports whether e's last-seen time is touchInterval old at now
// (no interval: never).
func touchDue(e *cacheEntry, now int64, touchInterval time.Duration) bool {
	return touchInterval > 0 && now/1000-e.lastSeen >= touchInterval.Microseconds()
}

// view returns the shared view of k's entry when the entry can answer on
// its own (see [Auth.CachedSessionView]): young enough, the session active
// and no last-seen write due. It builds the view with build on first use
// and after each change to the entry. It never evicts and leaves every
// other case to get. It claims the entry's refresh (refresh is true: the
// caller starts it) when the snapshot is old enough and nobody else is
// renewing it.
func (c *sessionCache) view(k *[32]byte, now int64, touchInterval time.Duration, build func(cached) *SessionView) (_ *SessionView, refresh bool) {
	if !c.live.Load() {
		return nil, false
	}
	c.maybeSweep(now)
	sh := c.shard(k)
	sh.mu.Lock()
	i := sh.find(k)
	if i == noSlot {
		sh.mu.Unlock()
		return nil, false
	}
	e := &sh.ents[i]
	if c.stale(e, now) || now/1000 >= e.active || touchDue(e, now, touchInterval) {
		sh.mu.Unlock()
		return nil, false
	}
	sh.touched(i, now)
	if !e.refreshing && now-e.fetched >= c.refresh {
		e.refreshing, refresh = true, true
	}
	if v := sh.views[i]; v != nil {
		sh.mu.Unlock()
		return v, refresh
	}
	// The view is built from the values get kept, if any, or decoded for
	// it alone: views are what the hot sessions of /auth keep, so they
	// keep no more than they use.
	ev, seq := sh.vals[i], e.seq
	var snap entrySnap
	if ev == nil {
		snap = sh.snapshot(i)
	}
	sh.mu.Unlock()
	if ev == nil {
		ev = snap.values()
	}

	// Built outside the lock: build runs the deployment's attribute hooks.
	// The view shares the values (both are read-only).
	v := build(cached{sess: ev.sess, user: ev.user})
	v.shared = true
	sh.mu.Lock()
	if sh.find(k) == i && sh.ents[i].seq == seq {
		sh.views[i] = v
	}
	sh.mu.Unlock()
	return v, refresh
}

// entrySnap is an entry and its values, copied under its shard's lock.
type entrySnap struct {
	e    cacheEntry
	data string
}

func (sh *cacheShard) snapshot(i int32) entrySnap {
	e := &sh.ents[i]
	return entrySnap{e: *e, data: string(sh.arena[e.data : e.data+e.ends[nFields-1]])}
}

// field returns value f (fUserID…) of the entry.
func (s *entrySnap) field(f int) string {
	start := uint32(0)
	if f > 0 {
		start = s.e.ends[f-1]
	}
	return s.data[start:s.e.ends[f]]
}

// userBox holds a rebuilt user's pointed-to values in one allocation.
type userBox struct {
	strs     [4]string // username, email, name, image
	verified time.Time
}

// point sets u's pointer fields to b's values, for those u has.
func (b *userBox) point(u *storage.User, has uint8) {
	for i, p := range []**string{&u.Username, &u.Email, &u.Name, &u.Image} {
		if has&(1<<i) != 0 {
			*p = &b.strs[i]
		}
	}
	if has&hasVerified != 0 {
		u.EmailVerifiedAt = &b.verified
	}
}

// entryValues are an entry's values decoded: the stored session (without
// its id) and user, as the database gave them. get keeps them from the
// entry's first get until it changes, read-only, and copies for each
// caller what the caller may change (see copyFor), so that a hit decodes
// nothing; a view is built from them.
type entryValues struct {
	sess storage.Session
	user storage.User
	has  uint8
	// box is apart from the values so that a view built from them keeps
	// only it, not them.
	box *userBox
}

// values decodes the snapshot. Attribute maps are never nil; empty ones
// are noAttrs.
func (s *entrySnap) values() *entryValues {
	e := &s.e
	ev := &entryValues{has: e.has, box: new(userBox)}
	ev.user = storage.User{
		ID: s.field(fUserID), CreatedAt: fromMicros(e.uCreated), UpdatedAt: fromMicros(e.uUpdated),
		Attributes: sharedAttrs(s.field(fUserAttrs)),
	}
	for i := range ev.box.strs {
		ev.box.strs[i] = s.field(fUsername + i)
	}
	ev.box.verified = fromMicros(e.uVerified)
	ev.box.point(&ev.user, e.has)
	if e.has&hasHandle != 0 {
		ev.user.WebAuthnHandle = []byte(s.field(fHandle))
	}
	ev.sess = storage.Session{
		UserID:          ev.user.ID,
		ActiveExpires:   fromMicros(e.active),
		IdleExpires:     fromMicros(e.idle),
		CreatedAt:       fromMicros(e.created),
		AuthenticatedAt: fromMicros(e.authed),
		LastSeenAt:      fromMicros(e.lastSeen),
		UserAgent:       s.field(fUA),
		IP:              s.field(fIP),
		Attributes:      sharedAttrs(s.field(fSessAttrs)),
	}
	return ev
}

// sharedAttrs is decodeAttrs for read-only maps: noAttrs for none.
func sharedAttrs(s string) map[string]any {
	if s == "" {
		return noAttrs
	}
	return decodeAttrs(s)
}

// copyFor returns the values for a caller of get, with session id id: the
// attribute maps and the user's pointed-to values are the caller's own
// (values inside the attributes, JSON objects and arrays, are shared).
func (ev *entryValues) copyFor(id string) cached {
	out := cached{sess: ev.sess, user: ev.user}
	out.sess.ID = id
	out.sess.Attributes = maps.Clone(ev.sess.Attributes)
	out.user.Attributes = maps.Clone(ev.user.Attributes)
	box := new(userBox)
	*box = *ev.box
	box.point(&out.user, ev.has)
	return out
}

// keepValues keeps ev as the values of slot i if the slot still holds
// version seq of k's entry and has none yet, and returns the slot's
// values (ev, or those another caller kept first).
func (sh *cacheShard) keepValues(k *[32]byte, i int32, seq uint64, ev *entryValues) *entryValues {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.find(k) != i || sh.ents[i].seq != seq {
		return ev
	}
	if cur := sh.vals[i]; cur != nil {
		return cur
	}
	sh.vals[i] = ev
	return ev
}

// noAttrs is the attribute map of every shared view of a session without
// attributes (read-only, as shared views are).
var noAttrs = map[string]any{}

// encodeAttrs returns m as a JSON object, or nothing for an empty one.
func encodeAttrs(m map[string]any) ([]byte, error) {
	if len(m) == 0 {
		return nil, nil
	}
	return json.Marshal(m)
}

// decodeAttrs reads what encodeAttrs wrote into a map the caller owns.
// Attributes come from the database as JSON, so they come back as the
// store gave them.
func decodeAttrs(s string) map[string]any {
	m := map[string]any{}
	if s != "" {
		// Written by encodeAttrs: it does not fail.
		_ = json.Unmarshal([]byte(s), &m)
	}
	return m
}

// encodeEntry lays out a session read from the database, and its user, as
// a cache entry and its values (the caller sets data when it stores them).
func encodeEntry(k *[32]byte, s *storage.Session, u *storage.User, fetched int64) (cacheEntry, []byte, error) {
	uattrs, err := encodeAttrs(u.Attributes)
	if err != nil {
		return cacheEntry{}, nil, err
	}
	sattrs, err := encodeAttrs(s.Attributes)
	if err != nil {
		return cacheEntry{}, nil, err
	}
	e := cacheEntry{
		key: *k, fetched: fetched, promoted: fetched,
		active: micros(s.ActiveExpires), idle: micros(s.IdleExpires), created: micros(s.CreatedAt),
		authed: micros(s.AuthenticatedAt), lastSeen: micros(s.LastSeenAt),
		userHash: userHash(u.ID), uCreated: micros(u.CreatedAt), uUpdated: micros(u.UpdatedAt),
	}
	data := make([]byte, 0, len(u.ID)+len(u.WebAuthnHandle)+len(uattrs)+len(s.UserAgent)+len(s.IP)+len(sattrs)+64)
	data = appendField(data, &e, fUserID, u.ID)
	for i, p := range []*string{u.Username, u.Email, u.Name, u.Image} {
		v := ""
		if p != nil {
			e.has |= 1 << i
			v = *p
		}
		data = appendField(data, &e, fUsername+i, v)
	}
	if u.EmailVerifiedAt != nil {
		e.has |= hasVerified
		e.uVerified = micros(*u.EmailVerifiedAt)
	}
	if u.WebAuthnHandle != nil {
		e.has |= hasHandle
	}
	data = appendField(data, &e, fHandle, u.WebAuthnHandle)
	data = appendField(data, &e, fUserAttrs, uattrs)
	data = appendField(data, &e, fUA, s.UserAgent)
	data = appendField(data, &e, fIP, s.IP)
	data = appendField(data, &e, fSessAttrs, sattrs)
	return e, data, nil
}

// appendField appends value f of e to data, where e's values are laid out
// in order, and records where it ends.
func appendField[T string | []byte](data []byte, e *cacheEntry, f int, v T) []byte {
	data = append(data, v...)
	e.ends[f] = uint32(len(data))
	return data
}

// put caches a session read from the database, replacing k's entry, when
// no invalidation or flush happened since gen0 was read. It reports whether
// it did.
func (c *sessionCache) put(k *[32]byte, s storage.Session, u storage.User, fetched int64, gen0 uint64) bool {
	if !c.live.Load() || c.gen.Load() != gen0 {
		return false // cheap early out; checked again under the lock
	}
	rec, data, err := encodeEntry(k, &s, &u, fetched)
	if err != nil || len(data) > math.MaxUint32/2 {
		return false
	}
	sh := c.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	// An invalidation bumps gen before it takes the lock.
	if !c.live.Load() || c.gen.Load() != gen0 {
		return false
	}
	if old, ok := sh.idx[prefix(k)]; ok { // this session, or one whose key shares the prefix
		c.remove(sh, old)
	}
	for len(sh.idx) >= c.perShard && sh.tail != noSlot {
		c.remove(sh, sh.tail)
	}
	if len(sh.arena)+len(data) > math.MaxUint32 {
		return false
	}
	i := sh.alloc()
	sh.seq++
	rec.seq, rec.used = sh.seq, true
	rec.data = uint32(len(sh.arena))
	sh.arena = append(sh.arena, data...)
	rec.prev, rec.next = noSlot, sh.head
	sh.ents[i] = rec
	if sh.head != noSlot {
		sh.ents[sh.head].prev = i
	}
	sh.head = i
	if sh.tail == noSlot {
		sh.tail = i
	}
	sh.idx[prefix(k)] = i
	return true
}

// alloc returns a free slot, growing the shard's slices if none is free.
func (sh *cacheShard) alloc() int32 {
	if i := sh.free; i != noSlot {
		sh.free = sh.ents[i].next
		return i
	}
	sh.ents = append(sh.ents, cacheEntry{})
	sh.vals = append(sh.vals, nil)
	sh.views = append(sh.views, nil)
	return int32(len(sh.ents) - 1)
}

// update records a write validation made (a touch or a reset) on the entry
// of k, if it is still cached, and releases the touch claim.
func (c *sessionCache) update(k *[32]byte, activeExpires, idleExpires, lastSeen time.Time) {
	c.withEntry(k, func(sh *cacheShard, i int32) {
		e := &sh.ents[i]
		e.active, e.idle, e.lastSeen = micros(activeExpires), micros(idleExpires), micros(lastSeen)
		e.touching = false
		sh.seq++
		e.seq = sh.seq
		sh.vals[i], sh.views[i] = nil, nil
	})
}

// unclaimRefresh gives up k's refresh claim when its read failed or was
// not kept: a later hit may try again, and meanwhile the snapshot answers
// until its TTL as before.
func (c *sessionCache) unclaimRefresh(k *[32]byte) {
	c.withEntry(k, func(sh *cacheShard, i int32) { sh.ents[i].refreshing = false })
}

// release gives up a touch claim after a failed write.
func (c *sessionCache) release(k *[32]byte) {
	c.withEntry(k, func(sh *cacheShard, i int32) { sh.ents[i].touching = false })
}

// drop evicts the entry of k without bumping the generation: for entries
// this process found stale or dead itself.
func (c *sessionCache) drop(k *[32]byte) {
	c.withEntry(k, c.remove)
}

// withEntry runs f on k's entry, if cached, under its shard's lock.
func (c *sessionCache) withEntry(k *[32]byte, f func(*cacheShard, int32)) {
	sh := c.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if i := sh.find(k); i != noSlot {
		f(sh, i)
	}
}

// invalidate evicts what ev names. A user's entries are found by sweeping
// every shard: user invalidations (sign-out everywhere, deletion, a
// changed password or profile) are rare next to validations, and a sweep
// keeps the entries free of pointers to shared user records.
func (c *sessionCache) invalidate(ev Invalidation) {
	c.gen.Add(1)
	if ev.SessionID != "" {
		if k, ok := keyFromID(ev.SessionID); ok {
			c.drop(&k)
		}
	}
	if ev.UserID != "" {
		h := userHash(ev.UserID)
		for s := range c.shards {
			sh := &c.shards[s]
			sh.mu.Lock()
			for i := range sh.ents {
				// A user whose id hash collides loses its entries too:
				// they are read again.
				if e := &sh.ents[i]; e.used && e.userHash == h {
					c.remove(sh, int32(i))
				}
			}
			sh.mu.Unlock()
		}
	}
}

// flush empties the cache.
func (c *sessionCache) flush() {
	c.gen.Add(1)
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		clear(sh.idx)
		sh.ents, sh.vals, sh.views, sh.arena = nil, nil, nil, nil
		sh.waste = 0
		sh.head, sh.tail, sh.free = noSlot, noSlot, noSlot
		sh.mu.Unlock()
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
		n += len(sh.idx)
		sh.mu.Unlock()
	}
	return n
}

// unlink takes slot i out of the LRU list.
func (sh *cacheShard) unlink(i int32) {
	e := &sh.ents[i]
	if e.prev != noSlot {
		sh.ents[e.prev].next = e.next
	} else {
		sh.head = e.next
	}
	if e.next != noSlot {
		sh.ents[e.next].prev = e.prev
	} else {
		sh.tail = e.prev
	}
	e.prev, e.next = noSlot, noSlot
}

func (sh *cacheShard) toFront(i int32) {
	if sh.head == i {
		return
	}
	sh.unlink(i)
	e := &sh.ents[i]
	e.next = sh.head
	if sh.head != noSlot {
		sh.ents[sh.head].prev = i
	}
	sh.head = i
	if sh.tail == noSlot {
		sh.tail = i
	}
}

// remove evicts the entry in slot i of sh (whose lock is held).
func (c *sessionCache) remove(sh *cacheShard, i int32) {
	e := &sh.ents[i]
	if j, ok := sh.idx[prefix(&e.key)]; ok && j == i {
		delete(sh.idx, prefix(&e.key))
	}
	sh.unlink(i)
	sh.waste += int(e.ends[nFields-1])
	sh.ents[i] = cacheEntry{next: sh.free, prev: noSlot}
	sh.vals[i], sh.views[i] = nil, nil
	sh.free = i
	if sh.waste >= minCompact && sh.waste*2 >= len(sh.arena) {
		sh.compact()
	}
}

// compact copies the values of the shard's entries into a new arena,
// leaving out the waste that removals left.
func (sh *cacheShard) compact() {
	live := len(sh.arena) - sh.waste
	arena := make([]byte, 0, live+live/4)
	for i := range sh.ents {
		e := &sh.ents[i]
		if !e.used {
			continue
		}
		n := e.ends[nFields-1]
		off := uint32(len(arena))
		arena = append(arena, sh.arena[e.data:e.data+n]...)
		e.data = off
	}
	sh.arena, sh.waste = arena, 0
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
