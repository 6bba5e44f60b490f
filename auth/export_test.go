package auth

// SetRefreshed makes a run f after each background refresh of a cached
// session (see refreshAhead), so that tests can wait for one. Set it before
// a is used.
func SetRefreshed(a *Auth, f func()) { a.refreshed = f }

// RefreshesInFlight is how many background refreshes of a have started and
// not yet finished (a finished one has run the SetRefreshed function).
func RefreshesInFlight(a *Auth) int { return len(a.refreshes) }

// CacheShards is the number of shards of the session cache.
const CacheShards = cacheShards
