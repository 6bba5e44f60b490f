package server

import (
	"errors"
	"net/http"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/storage"
)

type sessionItem struct {
	ID         string    `json:"id"`
	CreatedAt  time.Time `json:"created_at"`
	LastSeenAt time.Time `json:"last_seen_at"`
	UserAgent  string    `json:"user_agent"`
	IP         string    `json:"ip"`
	Current    bool      `json:"current"`
}

func (s *Server) handleListSessions(w http.ResponseWriter, r *http.Request) {
	sess, err := s.currentSession(w, r)
	if err != nil {
		s.writeJSONError(w, r, err)
		return
	}
	all, err := s.auth.GetAllUserSessions(r.Context(), sess.UserID)
	if err != nil {
		s.writeJSONError(w, r, err)
		return
	}
	items := make([]sessionItem, 0, len(all))
	for _, x := range all {
		items = append(items, sessionItem{ID: x.ID, CreatedAt: x.CreatedAt, LastSeenAt: x.LastSeenAt,
			UserAgent: x.UserAgent, IP: x.IP, Current: x.ID == sess.ID})
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": items})
}

// done answers a successful state change: 204 to JSON clients, 303 to
// redirect.default for forms.
func (s *Server) done(w http.ResponseWriter, r *http.Request) {
	if wantsJSON(r) || !acceptsHTML(r) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	http.Redirect(w, r, s.opts.RedirectDefault, http.StatusSeeOther)
}

// stateChange checks the origin and returns the signed-in session, or
// answers the error itself and returns nil.
func (s *Server) stateChange(w http.ResponseWriter, r *http.Request) *auth.Session {
	if err := s.auth.CheckCrossOrigin(r); err != nil {
		s.writeError(w, r, newError(http.StatusForbidden, auth.ErrInvalidRequest.Code, "cross-site request refused"))
		return nil
	}
	sess, err := s.currentSession(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return nil
	}
	return sess
}

func (s *Server) handleDeleteSession(w http.ResponseWriter, r *http.Request) {
	sess := s.stateChange(w, r)
	if sess == nil {
		return
	}
	id := r.PathValue("id")
	if err := s.auth.InvalidateSessionID(r.Context(), sess.UserID, id); err != nil {
		if errors.Is(err, auth.ErrInvalidSessionID) {
			s.writeError(w, r, newError(http.StatusNotFound, CodeNotFound, "no such session"))
			return
		}
		s.writeError(w, r, err)
		return
	}
	s.auditEvent(r, storage.AuditEvent{Event: storage.AuditSessionRevoked, UserID: sess.UserID,
		Data: map[string]any{"session_id": id, "current": id == sess.ID}})
	if id == sess.ID {
		http.SetCookie(w, s.auth.CreateSessionCookie(nil))
	}
	s.done(w, r)
}

// handleRevokeAll ends every session of the signed-in user, the current
// one included, and clears the cookie.
func (s *Server) handleRevokeAll(w http.ResponseWriter, r *http.Request) {
	sess := s.stateChange(w, r)
	if sess == nil {
		return
	}
	ids, err := s.auth.InvalidateAllUserSessions(r.Context(), sess.UserID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.auditEvent(r, storage.AuditEvent{Event: storage.AuditSessionRevoked, UserID: sess.UserID, Reason: "all",
		Data: map[string]any{"sessions": len(ids)}})
	http.SetCookie(w, s.auth.CreateSessionCookie(nil))
	s.done(w, r)
}
