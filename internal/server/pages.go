package server

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
	"net/url"
	"path"
	"time"

	"github.com/brokerauth/broker/auth"
)

//go:embed web
var webFS embed.FS

var pages = template.Must(template.ParseFS(webFS, "web/*.html"))

type providerLink struct {
	ID, Name, Href string
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, name string, data any) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, data); err != nil {
		s.log.Error("render page", "page", name, "err", err)
		s.writeError(w, r, newError(http.StatusServiceUnavailable, CodeServiceUnavailable, "the page could not be shown"))
		return
	}
	s.securityHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
}

func (s *Server) handleLoginPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	redirectTo := s.safeRedirect(q.Get("redirect_to"))
	reauth := q.Get("reauth") == "1"
	links := make([]providerLink, 0, len(s.opts.Providers))
	for _, p := range s.opts.Providers {
		v := url.Values{"redirect_to": {redirectTo}}
		if reauth {
			v.Set("reauth", "1")
		}
		links = append(links, providerLink{ID: p.ID, Name: p.DisplayName, Href: "/login/" + p.ID + "?" + v.Encode()})
	}
	var extra []template.HTML
	for _, part := range s.loginParts {
		extra = append(extra, part(r, redirectTo))
	}
	s.render(w, r, "login.html", map[string]any{
		"Providers": links, "Reauth": reauth, "Sent": q.Get("sent") == "1", "Extra": extra,
	})
}

func (s *Server) handleAccount(w http.ResponseWriter, r *http.Request) {
	sess, err := s.currentSession(w, r)
	if err != nil {
		if s.isUnauthenticated(err) {
			http.Redirect(w, r, "/login?redirect_to=%2Faccount", http.StatusFound)
			return
		}
		s.writeError(w, r, err)
		return
	}
	all, err := s.auth.GetAllUserSessions(r.Context(), sess.UserID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	items := make([]sessionItem, 0, len(all))
	for _, x := range all {
		items = append(items, sessionItem{ID: x.ID, CreatedAt: x.CreatedAt.In(time.UTC), LastSeenAt: x.LastSeenAt.In(time.UTC),
			UserAgent: x.UserAgent, IP: x.IP, Current: x.ID == sess.ID})
	}
	keys, err := s.auth.GetAllUserKeys(r.Context(), sess.UserID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	linked := map[string]bool{}
	var keyNames []string
	for _, k := range keys {
		linked[k.ProviderID] = true
		keyNames = append(keyNames, s.providerName(k.ProviderID)+" ("+k.ProviderUserID+")")
	}
	var linkable []providerLink
	for _, p := range s.opts.Providers {
		if !linked[p.ID] {
			linkable = append(linkable, providerLink{ID: p.ID, Name: p.DisplayName})
		}
	}
	who := sess.User.ID
	if sess.User.Email != nil {
		who = *sess.User.Email
	} else if sess.User.Username != nil {
		who = *sess.User.Username
	}
	var extra []template.HTML
	for _, part := range s.accountParts {
		extra = append(extra, part(r, sess))
	}
	s.render(w, r, "account.html", map[string]any{
		"Who": who, "Sessions": items, "Keys": keyNames, "Linkable": linkable, "Extra": extra,
	})
}

func (s *Server) isUnauthenticated(err error) bool {
	return auth.CodeOf(err) == auth.ErrInvalidSessionID.Code
}

func (s *Server) providerName(id string) string {
	if p, ok := s.provs[id]; ok {
		return p.DisplayName
	}
	switch id {
	case "email":
		return "Email and password"
	case "webauthn":
		return "Passkey"
	}
	return id
}

var assetTypes = map[string]string{".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}

func (s *Server) handleAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	ct, ok := assetTypes[path.Ext(name)]
	b, err := webFS.ReadFile("web/" + name)
	if !ok || err != nil {
		s.writeError(w, r, newError(http.StatusNotFound, CodeNotFound, "no such file"))
		return
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(b)
}
