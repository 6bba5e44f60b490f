package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/brokerauth/broker/storage"
)

// The audit log (migration 00003) is append-only: this file inserts rows,
// lists them, and deletes those past the retention period. Nothing updates
// a row, and DeleteAuditBefore is the only deletion.

const auditColumns = `id, occurred_at, event, user_id, provider, reason, ip, user_agent, data`

const appendAuditQuery = `INSERT INTO audit_log (occurred_at, event, user_id, provider, reason, ip, user_agent, data)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?)`

// auditRow is a row of audit_log.
type auditRow struct {
	ID        int64      `db:"id"`
	Time      dbTime     `db:"occurred_at"`
	Event     string     `db:"event"`
	UserID    string     `db:"user_id"`
	Provider  string     `db:"provider"`
	Reason    string     `db:"reason"`
	IP        string     `db:"ip"`
	UserAgent string     `db:"user_agent"`
	Data      jsonObject `db:"data"`
}

func (r auditRow) event() storage.AuditEvent {
	return storage.AuditEvent{
		ID: r.ID, Time: r.Time.Time, Event: r.Event, UserID: r.UserID, Provider: r.Provider,
		Reason: r.Reason, IP: r.IP, UserAgent: r.UserAgent, Data: map[string]any(r.Data),
	}
}

// AppendAudit appends e with a new id (e.ID is ignored). Event and Time are
// required. The statement is prepared once: every sign-in appends.
func (s *Store) AppendAudit(ctx context.Context, e storage.AuditEvent) error {
	if e.Event == "" {
		return errors.New("sqlstore: append audit: no event name")
	}
	if e.Time.IsZero() {
		return errors.New("sqlstore: append audit: no time")
	}
	data, err := encodeObject(e.Data)
	if err != nil {
		return fmt.Errorf("sqlstore: append audit: %w", err)
	}
	st, err := s.stmt(ctx, appendAuditQuery)
	if err != nil {
		return dbErr("append audit", err)
	}
	_, err = st.ExecContext(ctx, s.tv(e.Time), e.Event, e.UserID, e.Provider, e.Reason, e.IP, e.UserAgent, data)
	return dbErr("append audit", err)
}

// ListAudit returns up to f.Limit events matching f in ascending id order.
func (s *Store) ListAudit(ctx context.Context, f storage.AuditFilter) ([]storage.AuditEvent, error) {
	if f.Limit <= 0 {
		return nil, fmt.Errorf("sqlstore: list audit: limit %d is not positive", f.Limit)
	}
	var (
		where []string
		args  []any
	)
	if f.UserID != "" {
		where, args = append(where, "user_id = ?"), append(args, f.UserID)
	}
	if f.Event != "" {
		where, args = append(where, "event = ?"), append(args, f.Event)
	}
	if !f.Since.IsZero() {
		where, args = append(where, "occurred_at >= ?"), append(args, s.tv(f.Since))
	}
	if !f.Until.IsZero() {
		where, args = append(where, "occurred_at < ?"), append(args, s.tv(f.Until))
	}
	if f.AfterID > 0 {
		where, args = append(where, "id > ?"), append(args, f.AfterID)
	}
	q := `SELECT ` + auditColumns + ` FROM audit_log`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY id LIMIT ?`
	args = append(args, f.Limit)
	var rows []auditRow
	if err := s.db.SelectContext(ctx, &rows, s.q(q), args...); err != nil {
		return nil, dbErr("list audit", err)
	}
	out := make([]storage.AuditEvent, len(rows))
	for i, r := range rows {
		out[i] = r.event()
	}
	return out, nil
}

// DeleteAuditBefore deletes up to limit events (the oldest first) whose
// time is before before, returning how many: the retention sweep, and the
// only deletion of audit rows. limit must be positive.
func (s *Store) DeleteAuditBefore(ctx context.Context, before time.Time, limit int) (int64, error) {
	return s.deleteBatch(ctx, "delete audit before",
		`DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE occurred_at < ? ORDER BY occurred_at LIMIT ?)`, before, limit)
}
