package server

import (
	"net/url"
	"strings"
)

// safeRedirect returns target when it is safe to send a browser to: a
// relative path on the broker ("/x", never "//host" or "/\host"), or an
// absolute http(s) URL on an allowed origin. Anything else gives the
// configured default. There are no open redirects.
func (s *Server) safeRedirect(target string) string {
	if ok := s.redirectAllowed(target); ok {
		return target
	}
	return s.opts.RedirectDefault
}

func (s *Server) redirectAllowed(target string) bool {
	if target == "" || len(target) > 2048 {
		return false
	}
	for _, c := range target {
		// Control characters, backslashes and spaces are how browsers and
		// parsers disagree about where a URL goes.
		if c < 0x20 || c == 0x7f || c == '\\' || c == ' ' {
			return false
		}
	}
	if strings.HasPrefix(target, "/") {
		if strings.HasPrefix(target, "//") {
			return false
		}
		u, err := url.Parse(target)
		return err == nil && u.Scheme == "" && u.Host == "" && u.User == nil
	}
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Opaque != "" {
		return false
	}
	if s.opts.OriginAllowed == nil {
		return false
	}
	return s.opts.OriginAllowed(u.Scheme + "://" + u.Host)
}
