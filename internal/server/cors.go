package server

import (
	"net/http"
	"strings"
)

// corsPath reports whether browser apps on allowed origins may call path
// with credentials (SPEC §7).
func corsPath(path string) bool {
	return path == "/session" || path == "/logout" || path == "/sessions" ||
		strings.HasPrefix(path, "/sessions/") || strings.HasPrefix(path, "/webauthn/")
}

// cors answers CORS for exactly the allowed origins: preflights are
// answered 204 for them and refused (403) for any other origin; actual
// requests get Access-Control-Allow-Origin echoing the origin, never "*".
func (s *Server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" || !corsPath(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		allowed := s.opts.OriginAllowed != nil && s.opts.OriginAllowed(origin)
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		h := w.Header()
		h.Add("Vary", "Origin")
		if preflight {
			if !allowed {
				s.writeJSONError(w, r, newError(http.StatusForbidden, CodeForbidden, "origin not allowed"))
				return
			}
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Credentials", "true")
			h.Set("Access-Control-Allow-Methods", "GET, POST, PATCH, DELETE")
			h.Set("Access-Control-Allow-Headers", "Content-Type, Authorization")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if allowed {
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Credentials", "true")
		}
		next.ServeHTTP(w, r)
	})
}
