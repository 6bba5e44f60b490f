package auth

import (
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"sync/atomic"

	"github.com/brokerauth/broker/storage"
)

// SessionView is a validated session that may be shared between callers:
// while the session cache holds the same snapshot of a session and its
// user, every validation of that token answered from the cache gets the
// same *SessionView, so that what a caller derives from it (forward-auth
// answer headers, computed claims) is derived once per snapshot rather than
// once per request. See [Auth.CachedSessionView] and
// [Auth.ValidateSessionView].
//
// Session, and the maps and pointers it holds, must not be modified: a
// shared view is read by every caller that gets it.
type SessionView struct {
	Session Session
	shared  bool // the session cache's view, returned again while its entry lasts
	memo    atomic.Pointer[viewMemo]
}

type viewMemo struct {
	key any
	v   any
}

// Shared reports whether v is the session cache's view of its snapshot,
// which later validations will return again (so a memo is worth keeping),
// rather than a view of one validation's own.
func (v *SessionView) Shared() bool { return v.shared }

// Memo returns what f derives from the view's session, computing it once
// per view for a given key (a comparable value the caller owns, such as a
// pointer). f must depend only on the session, its user and the user's keys
// (every change to which invalidates the view: see [Auth.KeysChanged]),
// must not modify them, and must not keep the *Session past its return. f
// returns keep false for a result that is good for this call only (it could
// not read all it needed): that result is not kept, and the next call runs
// f again. Concurrent first calls may each run f; one result is kept. A
// view keeps the memo of one key at a time: a call with another key
// computes and replaces it.
func (v *SessionView) Memo(key any, f func(*Session) (val any, keep bool)) any {
	if m := v.memo.Load(); m != nil && m.key == key {
		return m.v
	}
	val, keep := f(&v.Session)
	if keep {
		v.memo.Store(&viewMemo{key: key, v: val})
	}
	return val
}

// CachedSessionView returns the shared view of token's session when the
// session cache can answer on its own: a snapshot younger than the cache
// TTL, of an active session (not idle, so no reset is due), whose
// last-seen write is not due, of a user not invalidated since. Otherwise it
// returns nil, and the caller validates with [Auth.ValidateSession] or
// [Auth.ValidateSessionView], which read and write the database as needed.
// It never touches the database, never blocks on it, and never answers for
// a malformed token.
//
// A nil result says nothing about the session's validity.
func (a *Auth) CachedSessionView(token string) *SessionView {
	if a.cache == nil || !ValidSessionToken(token) {
		return nil
	}
	k := cacheKey(token)
	return a.cachedView(token, &k)
}

// cachedView is CachedSessionView for a well-formed token and its cache key.
func (a *Auth) cachedView(token string, k *[32]byte) *SessionView {
	v, refresh := a.cache.view(k, a.now().UnixNano(), a.opts.TouchInterval, func(c cached) *SessionView {
		// The view outlives the request: its token must not keep the
		// request's Cookie header alive. The session id and the token
		// share one allocation.
		var b strings.Builder
		b.Grow(hex.EncodedLen(len(k)) + len(token))
		var id [2 * len(k)]byte
		hex.Encode(id[:], k[:])
		b.Write(id[:])
		b.WriteString(token)
		idTok := b.String()
		c.sess.ID = idTok[:len(id)]
		return &SessionView{Session: a.transformSession(c.sess, &c.user, idTok[len(id):], false, a.now().UTC())}
	})
	if refresh {
		a.refreshAhead(*k)
	}
	return v
}

// refreshAhead renews the cached snapshot of k in the background: a
// session in use is re-read once its snapshot is three quarters of the TTL
// old, so that a busy session never drops out of the cache and none of its
// requests waits on the database. The snapshot in hand keeps answering
// meanwhile, never past its TTL, so staleness is bounded as without
// refresh. At most maxRefreshes reads run at once; past that, or when a
// read fails (the database is down), the claim is given up and a later
// hit tries again. A read that races with an invalidation is not kept (see
// sessionCache.put); a session gone from the database leaves the cache.
func (a *Auth) refreshAhead(k [32]byte) {
	select {
	case a.refreshes <- struct{}{}:
	default:
		a.cache.unclaimRefresh(&k)
		return
	}
	go func() {
		defer func() {
			if a.refreshed != nil {
				a.refreshed()
			}
			<-a.refreshes
		}()
		ctx, cancel := context.WithTimeout(context.Background(), refreshTimeout)
		defer cancel()
		gen, fetched := a.cache.gen.Load(), a.now().UnixNano()
		s, u, err := a.store.GetSessionAndUser(ctx, hexID(&k))
		switch {
		case errors.Is(err, storage.ErrNotFound):
			a.cache.drop(&k)
		case err != nil:
			a.cache.unclaimRefresh(&k)
		case stateAt(a.now().UTC(), s.ActiveExpires, s.IdleExpires) == StateDead:
			a.cache.drop(&k)
		case !a.cache.put(&k, s, u, fetched, gen):
			a.cache.unclaimRefresh(&k)
		}
	}()
}

// ValidateSessionView is [Auth.ValidateSession] returning a view: the
// shared one when [Auth.CachedSessionView] has it, otherwise a view of its
// own built from ValidateSession's result (which may be Fresh: the session
// was reset, and the caller sends a new cookie).
func (a *Auth) ValidateSessionView(ctx context.Context, token string) (*SessionView, error) {
	if a.cache == nil || !ValidSessionToken(token) {
		s, err := a.ValidateSession(ctx, token)
		if err != nil {
			return nil, err
		}
		return &SessionView{Session: s}, nil
	}
	// One hash of the token serves the cache and, on a miss, the lookup.
	k := cacheKey(token)
	if v := a.cachedView(token, &k); v != nil {
		return v, nil
	}
	s, err := a.validateSession(ctx, token, &k)
	if err != nil {
		return nil, err
	}
	return &SessionView{Session: s}, nil
}
