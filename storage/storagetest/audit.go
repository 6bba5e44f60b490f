package storagetest

import (
	"testing"
	"time"

	"github.com/brokerauth/broker/storage"
)

// auditTests are the suite's subtests of [storage.Audit]; [Run] runs them
// with the others.
var auditTests = []struct {
	name string
	fn   func(t *testing.T, s storage.Store)
}{
	{"Audit/AppendAndList", testAuditAppendAndList},
	{"Audit/Filters", testAuditFilters},
	{"Audit/Paging", testAuditPaging},
	{"Audit/Invalid", testAuditInvalid},
	{"Audit/OutlivesUser", testAuditOutlivesUser},
	{"Audit/DeleteBefore", testDeleteAuditBefore},
}

func appendAudit(t *testing.T, s storage.Store, e storage.AuditEvent) {
	t.Helper()
	noErr(t, "AppendAudit("+e.Event+")", s.AppendAudit(t.Context(), e))
}

func listAudit(t *testing.T, s storage.Store, f storage.AuditFilter) []storage.AuditEvent {
	t.Helper()
	if f.Limit == 0 {
		f.Limit = 1000
	}
	es, err := s.ListAudit(t.Context(), f)
	noErr(t, "ListAudit", err)
	return es
}

// auditIDs returns the events' ids.
func auditIDs(es []storage.AuditEvent) []int64 {
	ids := make([]int64, len(es))
	for i, e := range es {
		ids[i] = e.ID
	}
	return ids
}

func testAuditAppendAndList(t *testing.T, s storage.Store) {
	if got := listAudit(t, s, storage.AuditFilter{}); len(got) != 0 {
		t.Fatalf("ListAudit on an empty log = %v", got)
	}
	first := storage.AuditEvent{
		Time: at(time.Second), Event: storage.AuditLoginSuccess, UserID: "u1", Provider: "github", Reason: "created",
		IP: "192.0.2.1", UserAgent: "Mozilla/5.0 (X11; Linux x86_64)",
		Data: map[string]any{"session_id": "abc", "n": 2.0, "nested": map[string]any{"ok": true}},
	}
	// Times come back in UTC; the ID given is ignored.
	second := storage.AuditEvent{ID: 999, Time: at(2 * time.Second).In(time.FixedZone("X", 3600)), Event: storage.AuditLoginFailure, Provider: "password", Reason: "invalid_password"}
	appendAudit(t, s, first)
	appendAudit(t, s, second)
	got := listAudit(t, s, storage.AuditFilter{})
	if len(got) != 2 {
		t.Fatalf("ListAudit = %d events; want 2", len(got))
	}
	if got[0].ID <= 0 || got[1].ID <= got[0].ID {
		t.Errorf("ids %v: want positive and increasing in append order", auditIDs(got))
	}
	first.ID, second.ID = got[0].ID, got[1].ID
	second.Time = second.Time.UTC()
	diff(t, "events", []storage.AuditEvent{first, second}, got)
	if got[1].Time.Location() != time.UTC {
		t.Errorf("time location = %v; want UTC", got[1].Time.Location())
	}
	if got[1].Data == nil {
		t.Errorf("nil data came back as nil; want an empty map")
	}
}

func testAuditFilters(t *testing.T, s storage.Store) {
	events := []storage.AuditEvent{
		{Time: at(0), Event: storage.AuditLoginSuccess, UserID: "u1", Provider: "github"},
		{Time: at(time.Minute), Event: storage.AuditLoginFailure, UserID: "u1", Provider: "password", Reason: "invalid_password"},
		{Time: at(2 * time.Minute), Event: storage.AuditLoginSuccess, UserID: "u2", Provider: "email"},
		{Time: at(3 * time.Minute), Event: storage.AuditLogout, UserID: "u1"},
		{Time: at(4 * time.Minute), Event: storage.AuditLoginFailure, Provider: "password", Reason: "rate_limited"},
	}
	for _, e := range events {
		appendAudit(t, s, e)
	}
	all := listAudit(t, s, storage.AuditFilter{})
	if len(all) != len(events) {
		t.Fatalf("ListAudit = %d events; want %d", len(all), len(events))
	}
	id := func(i ...int) []int64 {
		out := []int64{}
		for _, j := range i {
			out = append(out, all[j].ID)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		f    storage.AuditFilter
		want []int64
	}{
		{"user", storage.AuditFilter{UserID: "u1"}, id(0, 1, 3)},
		{"unknown user", storage.AuditFilter{UserID: "nobody"}, id()},
		{"event", storage.AuditFilter{Event: storage.AuditLoginFailure}, id(1, 4)},
		{"user and event", storage.AuditFilter{UserID: "u1", Event: storage.AuditLoginSuccess}, id(0)},
		// Since is inclusive, Until exclusive.
		{"since", storage.AuditFilter{Since: at(2 * time.Minute)}, id(2, 3, 4)},
		{"until", storage.AuditFilter{Until: at(2 * time.Minute)}, id(0, 1)},
		{"since and until", storage.AuditFilter{Since: at(time.Minute), Until: at(3*time.Minute + time.Microsecond)}, id(1, 2, 3)},
		{"since in another zone", storage.AuditFilter{Since: at(4 * time.Minute).In(time.FixedZone("Y", -7200))}, id(4)},
		{"all filters", storage.AuditFilter{UserID: "u1", Event: storage.AuditLogout, Since: at(time.Second), Until: at(time.Hour)}, id(3)},
		{"after id", storage.AuditFilter{AfterID: all[2].ID}, id(3, 4)},
		{"after id and user", storage.AuditFilter{AfterID: all[0].ID, UserID: "u1"}, id(1, 3)},
	} {
		if got := auditIDs(listAudit(t, s, tc.f)); !equalIDs(got, tc.want) {
			t.Errorf("ListAudit(%s) = ids %v; want %v", tc.name, got, tc.want)
		}
	}
}

func equalIDs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func testAuditPaging(t *testing.T, s storage.Store) {
	for i := range 7 {
		appendAudit(t, s, storage.AuditEvent{Time: at(time.Duration(i) * time.Second), Event: storage.AuditLogout, UserID: "u1"})
	}
	// Another user's events in between are skipped by the filter, not the pages.
	appendAudit(t, s, storage.AuditEvent{Time: at(time.Hour), Event: storage.AuditLogout, UserID: "u2"})
	var pages [][]int64
	var after int64
	for {
		page := listAudit(t, s, storage.AuditFilter{UserID: "u1", AfterID: after, Limit: 3})
		if len(page) == 0 {
			break
		}
		pages = append(pages, auditIDs(page))
		after = page[len(page)-1].ID
		if len(pages) > 10 {
			t.Fatal("paging does not end")
		}
	}
	if len(pages) != 3 || len(pages[0]) != 3 || len(pages[1]) != 3 || len(pages[2]) != 1 {
		t.Fatalf("pages = %v; want 3, 3 and 1 events", pages)
	}
	var seen []int64
	for _, p := range pages {
		seen = append(seen, p...)
	}
	if want := auditIDs(listAudit(t, s, storage.AuditFilter{UserID: "u1"})); !equalIDs(seen, want) {
		t.Errorf("paged ids %v; want %v", seen, want)
	}
}

func testAuditInvalid(t *testing.T, s storage.Store) {
	ctx := t.Context()
	if err := s.AppendAudit(ctx, storage.AuditEvent{Time: t0}); err == nil {
		t.Errorf("AppendAudit without an event = nil error; want an error")
	}
	if err := s.AppendAudit(ctx, storage.AuditEvent{Event: storage.AuditLogout}); err == nil {
		t.Errorf("AppendAudit without a time = nil error; want an error")
	}
	if _, err := s.ListAudit(ctx, storage.AuditFilter{}); err == nil {
		t.Errorf("ListAudit(limit 0) = nil error; want an error")
	}
	if _, err := s.DeleteAuditBefore(ctx, t0, 0); err == nil {
		t.Errorf("DeleteAuditBefore(limit 0) = nil error; want an error")
	}
	if got := listAudit(t, s, storage.AuditFilter{}); len(got) != 0 {
		t.Errorf("refused appends left events: %v", got)
	}
}

// testAuditOutlivesUser: deleting a user keeps its audit events (they name
// the user by id, not by reference), and events of unknown users are fine.
func testAuditOutlivesUser(t *testing.T, s storage.Store) {
	mustCreateUser(t, s, newUser("u1"), nil)
	appendAudit(t, s, storage.AuditEvent{Time: t0, Event: storage.AuditLoginSuccess, UserID: "u1"})
	appendAudit(t, s, storage.AuditEvent{Time: t0, Event: storage.AuditLoginSuccess, UserID: "never-existed"})
	noErr(t, "DeleteUser", s.DeleteUser(t.Context(), "u1"))
	appendAudit(t, s, storage.AuditEvent{Time: at(time.Second), Event: storage.AuditUserDeleted, UserID: "u1", Data: map[string]any{"actor": "cli"}})
	got := listAudit(t, s, storage.AuditFilter{UserID: "u1"})
	if len(got) != 2 || got[0].Event != storage.AuditLoginSuccess || got[1].Event != storage.AuditUserDeleted || got[1].Data["actor"] != "cli" {
		t.Errorf("events of the deleted user = %+v", got)
	}
}

func testDeleteAuditBefore(t *testing.T, s storage.Store) {
	ctx := t.Context()
	for i := range 5 {
		appendAudit(t, s, storage.AuditEvent{Time: at(time.Duration(i) * time.Minute), Event: storage.AuditLogout, UserID: "old"})
	}
	cut := at(5 * time.Minute)
	appendAudit(t, s, storage.AuditEvent{Time: cut, Event: storage.AuditLogout, UserID: "kept"}) // not before cut
	appendAudit(t, s, storage.AuditEvent{Time: at(time.Hour), Event: storage.AuditLogout, UserID: "kept"})
	var counts []int64
	for range 4 {
		n, err := s.DeleteAuditBefore(ctx, cut, 2)
		noErr(t, "DeleteAuditBefore", err)
		counts = append(counts, n)
	}
	diff(t, "DeleteAuditBefore batches", []int64{2, 2, 1, 0}, counts)
	got := listAudit(t, s, storage.AuditFilter{})
	if len(got) != 2 || got[0].UserID != "kept" || !got[0].Time.Equal(cut) || got[1].UserID != "kept" {
		t.Errorf("after DeleteAuditBefore: %+v; want the two events not before the cut", got)
	}
	// Ids are not reused after the oldest rows are gone.
	appendAudit(t, s, storage.AuditEvent{Time: at(2 * time.Hour), Event: storage.AuditLogout, UserID: "new"})
	after := listAudit(t, s, storage.AuditFilter{AfterID: got[1].ID})
	if len(after) != 1 || after[0].UserID != "new" {
		t.Errorf("events after id %d = %+v; want the new one", got[1].ID, after)
	}
}
