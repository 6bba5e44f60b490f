package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/brokerauth/broker/storage"
)

// auditView is an audit event as `broker audit --json` prints it, one per
// line. Every field is always present.
type auditView struct {
	ID        int64          `json:"id"`
	Time      time.Time      `json:"time"`
	Event     string         `json:"event"`
	UserID    string         `json:"user_id"`
	Provider  string         `json:"provider"`
	Reason    string         `json:"reason"`
	IP        string         `json:"ip"`
	UserAgent string         `json:"user_agent"`
	Data      map[string]any `json:"data"`
}

func viewAudit(e storage.AuditEvent) auditView {
	d := e.Data
	if d == nil {
		d = map[string]any{}
	}
	return auditView{ID: e.ID, Time: e.Time.UTC(), Event: e.Event, UserID: e.UserID, Provider: e.Provider,
		Reason: e.Reason, IP: e.IP, UserAgent: e.UserAgent, Data: d}
}

// auditPage is how many events `audit` reads per query (a variable so that
// tests can make pages small).
var auditPage = 1000

// auditCmd is `broker audit [--user ID] [--event NAME] [--since T] [--until T]
// [--after ID] [--limit N] [--json]`.
func (c *cli) auditCmd() *cobra.Command {
	var (
		f                 storage.AuditFilter
		since, until      string
		limit             int
		asJSON            bool
		knownEventsJoined = strings.Join(storage.AuditEvents, ", ")
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read the audit log: sign-ins, logouts, revoked sessions, passkey and password changes",
		Long: "Print audit events, oldest first: a table or, with --json, one JSON object per line\n" +
			"({id, time, event, user_id, provider, reason, ip, user_agent, data}).\n\n" +
			"--since and --until take an RFC 3339 time (2024-05-01T12:00:00Z) or a duration back from\n" +
			"now (90m, 24h, 7d); --since is inclusive, --until exclusive. --limit caps the events\n" +
			"(0: every one); --after ID starts after that event, for the next page.\n\n" +
			"Events: " + knownEventsJoined + ".\n" +
			"Events are kept for audit.retention (default 2160h, 90 days), then the broker deletes them.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return fmt.Errorf("--limit %d: want 0 (every event) or more", limit)
			}
			if f.AfterID < 0 {
				return fmt.Errorf("--after %d: want an event id", f.AfterID)
			}
			if f.Event != "" && !slices.Contains(storage.AuditEvents, f.Event) {
				return fmt.Errorf("--event %q: unknown event; want one of %s", f.Event, knownEventsJoined)
			}
			t := time.Now()
			var err error
			if f.Since, err = parseWhen(since, t); err != nil {
				return fmt.Errorf("--since: %w", err)
			}
			if f.Until, err = parseWhen(until, t); err != nil {
				return fmt.Errorf("--until: %w", err)
			}
			if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
				return fmt.Errorf("--since %s is not before --until %s", fmtTime(f.Since), fmtTime(f.Until))
			}
			return c.withAdmin(cmd, func(ctx context.Context, env *adminEnv) error {
				events, err := listAudit(ctx, env.store, f, limit)
				if err != nil {
					return err
				}
				if asJSON {
					enc := json.NewEncoder(c.stdout)
					for _, e := range events {
						if err := enc.Encode(viewAudit(e)); err != nil {
							return err
						}
					}
				} else if err := printAudit(c, events); err != nil {
					return err
				}
				if limit > 0 && len(events) == limit {
					fmt.Fprintf(c.stderr, "more events may follow: --after %d\n", events[len(events)-1].ID)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&f.UserID, "user", "", "only the events of this user id")
	cmd.Flags().StringVar(&f.Event, "event", "", "only events of this name (login.failure, ...)")
	cmd.Flags().StringVar(&since, "since", "", "only events at or after this time (RFC 3339, or a duration ago: 24h, 7d)")
	cmd.Flags().StringVar(&until, "until", "", "only events before this time (RFC 3339, or a duration ago)")
	cmd.Flags().Int64Var(&f.AfterID, "after", 0, "start after the event with this id (the last id of the previous page)")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many events (0: every event)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per event and line")
	return cmd
}

// parseWhen reads a --since/--until value: "" (no bound), an RFC 3339
// time, or a duration (Go syntax, or whole days "7d") before now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 100*366 {
			return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time (2024-05-01T12:00:00Z) or a duration (24h, 7d)", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d < 0 {
			return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time (2024-05-01T12:00:00Z) or a duration (24h, 7d)", s)
		}
	}
	return now.Add(-d).UTC(), nil
}

// listAudit reads up to limit events matching f (every one when limit is
// 0), page by page.
func listAudit(ctx context.Context, st storage.Audit, f storage.AuditFilter, limit int) ([]storage.AuditEvent, error) {
	var out []storage.AuditEvent
	for {
		f.Limit = auditPage
		if limit > 0 {
			f.Limit = min(f.Limit, limit-len(out))
		}
		page, err := st.ListAudit(ctx, f)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if len(page) < f.Limit || (limit > 0 && len(out) >= limit) {
			return out, nil
		}
		f.AfterID = page[len(page)-1].ID
	}
}

// printAudit writes events as a table. Text from clients (the user agent,
// data) is shown with control characters replaced, so that a crafted user
// agent cannot drive the operator's terminal.
func printAudit(c *cli, events []storage.AuditEvent) error {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tEVENT\tUSER\tPROVIDER\tREASON\tIP\tUSER AGENT\tDATA")
	for _, e := range events {
		data := "-"
		if len(e.Data) > 0 {
			b, err := json.Marshal(e.Data)
			if err != nil {
				return err
			}
			data = string(b)
		}
		ua := []rune(e.UserAgent)
		if len(ua) > 40 {
			ua = append(ua[:39], '…')
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, fmtTime(e.Time), terminalSafe(e.Event),
			terminalSafe(dashIfEmpty(e.UserID)), terminalSafe(dashIfEmpty(e.Provider)), terminalSafe(dashIfEmpty(e.Reason)),
			terminalSafe(dashIfEmpty(e.IP)), terminalSafe(dashIfEmpty(string(ua))), terminalSafe(data))
	}
	return tw.Flush()
}

// terminalSafe replaces control characters (escape sequences, tabs that
// would break the table) with '?'.
func terminalSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}

// auditCLI records an administrative action of the CLI in the audit log:
// the time, data "actor": "cli", no client address. A failure is reported
// on stderr; the action is done already, so it does not fail the command.
func (c *cli) auditCLI(ctx context.Context, env *adminEnv, e storage.AuditEvent) {
	e.Time = env.auth.Now().UTC()
	if e.Data == nil {
		e.Data = map[string]any{}
	}
	e.Data["actor"] = "cli"
	if err := env.store.AppendAudit(ctx, e); err != nil {
		fmt.Fprintf(c.stderr, "warning: audit event %s not recorded: %v\n", e.Event, err)
	}
}
