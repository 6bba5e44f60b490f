package sqlstore

import (
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Times are written through [Store.tv] and read through [dbTime]/[nullTime].
//
// PostgreSQL stores them as timestamptz; SQLite as INTEGER microseconds since
// the Unix epoch, so that comparisons in SQL are numeric. Both keep
// microseconds, so every time is truncated to the microsecond before it is
// written and comes back equal to what was written.

// tv converts t to the value the dialect stores.
func (s *Store) tv(t time.Time) any {
	if s.dialect == DialectSQLite {
		return t.UnixMicro()
	}
	return t.UTC().Truncate(time.Microsecond)
}

// tvp is [Store.tv] for a nullable time.
func (s *Store) tvp(t *time.Time) any {
	if t == nil {
		return nil
	}
	return s.tv(*t)
}

// dbTime scans a time stored by either dialect: a time.Time (PostgreSQL), an
// int64 of Unix microseconds (SQLite) or a string of either form.
type dbTime struct{ time.Time }

// Scan implements [sql.Scanner].
func (t *dbTime) Scan(src any) error {
	v, ok, err := scanTime(src)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("sqlstore: scan time: unexpected NULL")
	}
	t.Time = v
	return nil
}

// nullTime is a nullable [dbTime].
type nullTime struct {
	Time  time.Time
	Valid bool
}

// Scan implements [sql.Scanner].
func (t *nullTime) Scan(src any) error {
	v, ok, err := scanTime(src)
	if err != nil {
		return err
	}
	t.Time, t.Valid = v, ok
	return nil
}

// ptr returns the time, or nil for NULL.
func (t nullTime) ptr() *time.Time {
	if !t.Valid {
		return nil
	}
	v := t.Time
	return &v
}

func scanTime(src any) (time.Time, bool, error) {
	switch v := src.(type) {
	case nil:
		return time.Time{}, false, nil
	case time.Time:
		return v.UTC(), true, nil
	case int64:
		return time.UnixMicro(v).UTC(), true, nil
	case []byte:
		return parseTime(string(v))
	case string:
		return parseTime(v)
	}
	return time.Time{}, false, fmt.Errorf("sqlstore: scan time: unsupported type %T", src)
}

func parseTime(s string) (time.Time, bool, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMicro(n).UTC(), true, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), true, nil
		}
	}
	return time.Time{}, false, fmt.Errorf("sqlstore: scan time: cannot parse %q", s)
}

// jsonObject scans a JSON object column (jsonb or TEXT) into a non-nil map.
type jsonObject map[string]any

// Scan implements [sql.Scanner].
func (j *jsonObject) Scan(src any) error {
	var b []byte
	switch v := src.(type) {
	case nil:
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		return fmt.Errorf("sqlstore: scan attributes: unsupported type %T", src)
	}
	m := map[string]any{}
	if len(b) > 0 && string(b) != "{}" { // most rows hold {}: no decoding
		if err := json.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("sqlstore: scan attributes: %w", err)
		}
		if m == nil { // the JSON text was null
			m = map[string]any{}
		}
	}
	*j = m
	return nil
}

// encodeObject encodes attributes for a JSON column; nil is stored as {}.
// It returns a string, not []byte: lib/pq would send []byte as bytea.
func encodeObject(m map[string]any) (string, error) {
	if len(m) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("encode attributes: %w", err)
	}
	return string(b), nil
}

// stringList scans a JSON array of strings stored as text (transports).
type stringList []string

// Scan implements [sql.Scanner].
func (l *stringList) Scan(src any) error {
	var b []byte
	switch v := src.(type) {
	case nil:
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		return fmt.Errorf("sqlstore: scan transports: unsupported type %T", src)
	}
	out := []string{}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			return fmt.Errorf("sqlstore: scan transports: %w", err)
		}
		if out == nil {
			out = []string{}
		}
	}
	*l = out
	return nil
}

// Value implements [driver.Valuer]: a JSON array, [] for nil.
func (l stringList) Value() (driver.Value, error) {
	if len(l) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal([]string(l))
	if err != nil {
		return nil, fmt.Errorf("encode transports: %w", err)
	}
	return string(b), nil
}

// nullBytes returns nil for an empty slice, so that an empty value is NULL.
func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}
