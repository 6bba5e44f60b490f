package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/brokerauth/broker/storage"
)

// seedAudit appends events to the fixture's audit log; their times are
// relative to now (the CLI's --since 2h reads the real clock).
func seedAudit(t *testing.T, f *cliFixture, now time.Time) {
	t.Helper()
	for _, e := range []storage.AuditEvent{
		{Time: now.Add(-50 * time.Hour), Event: storage.AuditLoginSuccess, UserID: "u1", Provider: "github", Reason: "created", IP: "192.0.2.1", UserAgent: "Firefox/1"},
		{Time: now.Add(-3 * time.Hour), Event: storage.AuditLoginFailure, UserID: "u1", Provider: "password", Reason: "invalid_password", IP: "192.0.2.2", UserAgent: "curl/8", Data: map[string]any{"key": "0123456789abcdef"}},
		{Time: now.Add(-90 * time.Minute), Event: storage.AuditLoginFailure, Provider: "password", Reason: "rate_limited", IP: "198.51.100.7", UserAgent: "evil\x1b[2J"},
		{Time: now.Add(-time.Hour), Event: storage.AuditLogout, UserID: "u2", IP: "192.0.2.3", UserAgent: "Safari/17", Data: map[string]any{"session_id": "s1"}},
		{Time: now.Add(-time.Minute), Event: storage.AuditSessionRevoked, UserID: "u1", Reason: "all", Data: map[string]any{"sessions": 2}},
	} {
		if err := f.store.AppendAudit(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
}

// auditUsersAndEvents returns "user:event" of each JSON line.
func auditUsersAndEvents(t *testing.T, out string) []string {
	t.Helper()
	var got []string
	for _, m := range jsonLines(t, out) {
		got = append(got, fmt.Sprint(m["user_id"], ":", m["event"]))
	}
	return got
}

func wantAuditLines(t *testing.T, what, out string, want ...string) {
	t.Helper()
	if got := auditUsersAndEvents(t, out); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("%s: got %v; want %v", what, got, want)
	}
}

func TestCLIAudit(t *testing.T) {
	f := newCLIFixture(t, cliConfig{})
	now := time.Now().UTC().Truncate(time.Second)
	seedAudit(t, f, now)

	t.Run("table", func(t *testing.T) {
		out := f.mustRun("audit")
		contains(t, "audit", out, "ID", "TIME", "EVENT", "USER", "PROVIDER", "REASON", "IP", "USER AGENT", "DATA",
			"login.success", "github", "created", "192.0.2.1", "Firefox/1", `{"key":"0123456789abcdef"}`, `{"session_id":"s1"}`,
			now.Add(-time.Minute).Format(time.RFC3339))
		if strings.Contains(out, "\x1b") || !strings.Contains(out, "evil?[2J") {
			t.Errorf("a control character reached the terminal:\n%q", out)
		}
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 6 {
			t.Errorf("%d lines; want a header and 5 events:\n%s", len(lines), out)
		}
	})
	t.Run("json", func(t *testing.T) {
		out := f.mustRun("audit", "--json")
		rows := jsonLines(t, out)
		if len(rows) != 5 {
			t.Fatalf("%d rows; want 5:\n%s", len(rows), out)
		}
		r := rows[1]
		for _, k := range []string{"id", "time", "event", "user_id", "provider", "reason", "ip", "user_agent", "data"} {
			if _, ok := r[k]; !ok {
				t.Errorf("row %v lacks %q", r, k)
			}
		}
		if r["event"] != "login.failure" || r["reason"] != "invalid_password" || r["ip"] != "192.0.2.2" || r["user_agent"] != "curl/8" ||
			r["time"] != now.Add(-3*time.Hour).Format(time.RFC3339) || r["data"].(map[string]any)["key"] != "0123456789abcdef" {
			t.Errorf("row = %v", r)
		}
		if d, ok := rows[0]["data"].(map[string]any); !ok || len(d) != 0 {
			t.Errorf("empty data = %v; want {}", rows[0]["data"])
		}
	})
	t.Run("filters", func(t *testing.T) {
		wantAuditLines(t, "--user u1", f.mustRun("audit", "--json", "--user", "u1"), "u1:login.success", "u1:login.failure", "u1:session.revoked")
		wantAuditLines(t, "--event", f.mustRun("audit", "--json", "--event", "login.failure"), "u1:login.failure", ":login.failure")
		wantAuditLines(t, "--user --event", f.mustRun("audit", "--json", "--user", "u1", "--event", "login.failure"), "u1:login.failure")
		wantAuditLines(t, "--since 2h", f.mustRun("audit", "--json", "--since", "2h"), ":login.failure", "u2:logout", "u1:session.revoked")
		wantAuditLines(t, "--since 1d", f.mustRun("audit", "--json", "--since", "1d"), "u1:login.failure", ":login.failure", "u2:logout", "u1:session.revoked")
		wantAuditLines(t, "--until 30m", f.mustRun("audit", "--json", "--until", "30m"), "u1:login.success", "u1:login.failure", ":login.failure", "u2:logout")
		since, until := now.Add(-3*time.Hour).Format(time.RFC3339), now.Add(-time.Hour).Format(time.RFC3339)
		// --since inclusive, --until exclusive.
		wantAuditLines(t, "RFC 3339", f.mustRun("audit", "--json", "--since", since, "--until", until), "u1:login.failure", ":login.failure")
		wantAuditLines(t, "nothing", f.mustRun("audit", "--json", "--user", "nobody"))
	})
	t.Run("paging", func(t *testing.T) {
		out, errOut, err := f.run("audit", "--json", "--limit", "2")
		if err != nil {
			t.Fatal(err)
		}
		rows := jsonLines(t, out)
		if len(rows) != 2 {
			t.Fatalf("--limit 2: %d rows", len(rows))
		}
		last := fmt.Sprint(int64(rows[1]["id"].(float64)))
		contains(t, "--limit 2 stderr", errOut, "more events may follow: --after "+last)
		wantAuditLines(t, "--after", f.mustRun("audit", "--json", "--limit", "2", "--after", last), ":login.failure", "u2:logout")

		// --limit 0 reads every event, page by page.
		defer func(n int) { auditPage = n }(auditPage)
		auditPage = 2
		out, errOut, err = f.run("audit", "--json", "--limit", "0")
		if err != nil || len(jsonLines(t, out)) != 5 || errOut != "" {
			t.Errorf("--limit 0 with pages of 2: %d rows, %v, stderr %q", len(jsonLines(t, out)), err, errOut)
		}
		wantAuditLines(t, "--limit 3 in pages of 2", f.mustRun("audit", "--json", "--limit", "3", "--user", "u1"), "u1:login.success", "u1:login.failure", "u1:session.revoked")
	})
	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--event", "login"}, `--event "login": unknown event; want one of login.success, login.failure`},
			{[]string{"--since", "yesterday"}, `--since: "yesterday": want an RFC 3339 time`},
			{[]string{"--until", "-5h"}, `--until: "-5h"`},
			{[]string{"--since", "1xd"}, `--since: "1xd"`},
			{[]string{"--limit", "-1"}, "--limit -1"},
			{[]string{"--after", "-1"}, "--after -1"},
			{[]string{"--since", "1h", "--until", "2h"}, "is not before --until"},
			{[]string{"extra"}, "unknown command"},
		} {
			msg, _ := f.mustFail(append([]string{"audit"}, tc.args...)...)
			if !strings.Contains(msg, tc.want) {
				t.Errorf("audit %v: error %q; want it to contain %q", tc.args, msg, tc.want)
			}
		}
	})
}

// TestCLIUsersDeleteAudited: `users delete` records user.deleted, by the
// CLI, without the user's name or address.
func TestCLIUsersDeleteAudited(t *testing.T) {
	f := newCLIFixture(t, cliConfig{})
	f.user("gone1", map[string]any{"email": "gone@example.com", "username": "goner"})
	f.mustFail("users", "delete", "gone1") // without --yes: nothing happens
	f.mustRun("users", "delete", "gone1", "--yes")
	out := f.mustRun("audit", "--json", "--user", "gone1")
	rows := jsonLines(t, out)
	if len(rows) != 1 {
		t.Fatalf("events of the deleted user: %d; want 1:\n%s", len(rows), out)
	}
	r := rows[0]
	if r["event"] != storage.AuditUserDeleted || r["ip"] != "" || r["data"].(map[string]any)["actor"] != "cli" {
		t.Errorf("event = %v", r)
	}
	if tm, err := time.Parse(time.RFC3339Nano, r["time"].(string)); err != nil || time.Since(tm) > time.Hour+time.Minute || time.Since(tm) < -time.Hour {
		t.Errorf("time %v (%v); want about now (the fixture's clock)", r["time"], err)
	}
	if strings.Contains(out, "gone@example.com") || strings.Contains(out, "goner") {
		t.Errorf("the audit event names the deleted user: %s", out)
	}
}

// TestCLISessionsRevokeAudited: `sessions revoke` and `revoke-all` record
// session.revoked by the CLI, as the HTTP routes do for a user.
func TestCLISessionsRevokeAudited(t *testing.T) {
	f := newCLIFixture(t, cliConfig{})
	f.user("u1", nil)
	s1 := f.session("u1", "ua", "192.0.2.1")
	f.session("u1", "ua", "192.0.2.2")
	f.session("u1", "ua", "192.0.2.3")
	f.mustRun("sessions", "revoke", s1.ID)
	f.mustRun("sessions", "revoke-all", "u1")
	out := f.mustRun("audit", "--json", "--user", "u1")
	rows := jsonLines(t, out)
	if len(rows) != 2 {
		t.Fatalf("events: %d; want 2:\n%s", len(rows), out)
	}
	byReason := map[any]map[string]any{}
	for _, r := range rows {
		if r["event"] != storage.AuditSessionRevoked || r["ip"] != "" || r["data"].(map[string]any)["actor"] != "cli" {
			t.Errorf("event = %v; want session.revoked by the cli", r)
		}
		byReason[r["reason"]] = r["data"].(map[string]any)
	}
	if d := byReason[""]; d == nil || d["session_id"] != s1.ID {
		t.Errorf("sessions revoke recorded %v; want session_id %s", d, s1.ID)
	}
	if d := byReason["all"]; d == nil || d["sessions"] != float64(2) {
		t.Errorf("sessions revoke-all recorded %v; want sessions 2", d)
	}
	if strings.Contains(out, s1.Token) {
		t.Error("the audit log holds a session token")
	}
}
