package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/config"
	"github.com/brokerauth/broker/storage"
	"github.com/brokerauth/broker/storage/sqlstore"
)

// adminEnv is what the administration commands (users, sessions,
// rotate-token-key) work on: the configuration, the store and the Auth core
// over it, wired exactly as `serve` wires them.
type adminEnv struct {
	cfg   *config.Config
	store *sqlstore.Store
	auth  *auth.Auth
}

// Close closes the store.
func (e *adminEnv) Close() error { return e.store.Close() }

// openAdmin loads the configuration the way `serve` does (--config, else
// ./broker.yaml, else development mode), opens the store and builds the
// Auth core. Like `serve`, it applies the migrations only when
// database.auto_migrate is true: a deployment that turned it off runs
// `broker migrate` itself (often with other database credentials), and an
// administration command must not change the schema behind its back.
func (c *cli) openAdmin(ctx context.Context) (*adminEnv, error) {
	cfg, err := c.loadConfig()
	if err != nil {
		return nil, err
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Database.AutoMigrate {
		if err := st.Migrate(ctx); err != nil {
			st.Close()
			return nil, err
		}
	}
	a, err := newAuth(cfg, st)
	if err != nil {
		st.Close()
		return nil, err
	}
	return &adminEnv{cfg: cfg, store: st, auth: a}, nil
}

// withAdmin runs fn with an open adminEnv and closes it afterwards.
func (c *cli) withAdmin(cmd *cobra.Command, fn func(ctx context.Context, env *adminEnv) error) error {
	ctx := cmd.Context()
	env, err := c.openAdmin(ctx)
	if err != nil {
		return err
	}
	defer env.Close()
	return fn(ctx, env)
}

// cliError is an error whose message is written for the operator while it
// still matches its cause (an auth sentinel) with errors.Is.
type cliError struct {
	msg string
	err error
}

func (e *cliError) Error() string { return e.msg }
func (e *cliError) Unwrap() error { return e.err }

// errNoUser reports an unknown user id: "AUTH_INVALID_USER_ID: no user <id>".
func errNoUser(id string) error {
	return &cliError{msg: auth.ErrInvalidUserID.Code + ": no user " + id, err: auth.ErrInvalidUserID}
}

// errNoSession reports an unknown session id.
func errNoSession(id string) error {
	return &cliError{msg: auth.ErrInvalidSessionID.Code + ": no session " + id, err: auth.ErrInvalidSessionID}
}

// authFailure prefixes an error from the auth core with its Lucia code, so
// that scripts can match it; other errors are returned as they are.
func authFailure(err error) error {
	if code := auth.CodeOf(err); code != "UNKNOWN_ERROR" {
		return &cliError{msg: code + ": " + err.Error(), err: err}
	}
	return err
}

// getUser returns the user id or errNoUser.
func getUser(ctx context.Context, env *adminEnv, id string) (auth.User, error) {
	u, err := env.auth.GetUser(ctx, id)
	if errors.Is(err, auth.ErrInvalidUserID) {
		return auth.User{}, errNoUser(id)
	}
	return u, authFailure(err)
}

// userView is a user as the CLI prints it: the auth.User JSON shape (id,
// username, email, email_verified, name, image, attributes) plus its
// creation and update times.
type userView struct {
	auth.User
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func viewUser(u auth.User) userView {
	return userView{User: u, CreatedAt: u.CreatedAt.UTC(), UpdatedAt: u.UpdatedAt.UTC()}
}

// sessionView is a session as listings show it (the shape of GET /sessions,
// plus its state and expiries); never its token.
type sessionView struct {
	ID            string            `json:"id"`
	State         auth.SessionState `json:"state"`
	CreatedAt     time.Time         `json:"created_at"`
	LastSeenAt    time.Time         `json:"last_seen_at"`
	ActiveExpires time.Time         `json:"active_expires"`
	IdleExpires   time.Time         `json:"idle_expires"`
	UserAgent     string            `json:"user_agent"`
	IP            string            `json:"ip"`
}

func viewSession(s auth.Session) sessionView {
	return sessionView{ID: s.ID, State: s.State, CreatedAt: s.CreatedAt.UTC(), LastSeenAt: s.LastSeenAt.UTC(),
		ActiveExpires: s.ActiveExpires.UTC(), IdleExpires: s.IdleExpires.UTC(), UserAgent: s.UserAgent, IP: s.IP}
}

// passkeyView is a passkey as listings show it (the shape of GET
// /webauthn/credentials); never its public key.
type passkeyView struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	BackedUp   bool       `json:"backed_up"`
	Transports []string   `json:"transports"`
}

func viewPasskey(a storage.Authenticator) passkeyView {
	tr := a.Transports
	if tr == nil {
		tr = []string{}
	}
	return passkeyView{ID: base64.RawURLEncoding.EncodeToString(a.CredentialID), Name: a.Name,
		CreatedAt: a.CreatedAt.UTC(), LastUsedAt: a.LastUsedAt, BackedUp: a.BackedUp, Transports: tr}
}

// userDetails is `users show --json`: the user with its keys (never a
// token or a password hash), live sessions and passkeys.
type userDetails struct {
	User     userView      `json:"user"`
	Keys     []auth.Key    `json:"keys"`
	Sessions []sessionView `json:"sessions"`
	Passkeys []passkeyView `json:"passkeys"`
}

func loadUserDetails(ctx context.Context, env *adminEnv, id string) (userDetails, error) {
	u, err := getUser(ctx, env, id)
	if err != nil {
		return userDetails{}, err
	}
	d := userDetails{User: viewUser(u), Keys: []auth.Key{}, Sessions: []sessionView{}, Passkeys: []passkeyView{}}
	keys, err := env.auth.GetAllUserKeys(ctx, id)
	if err != nil {
		return d, authFailure(err)
	}
	d.Keys = append(d.Keys, keys...)
	sessions, err := env.auth.GetAllUserSessions(ctx, id)
	if err != nil {
		return d, authFailure(err)
	}
	for _, s := range sessions {
		d.Sessions = append(d.Sessions, viewSession(s))
	}
	passkeys, err := env.store.ListAuthenticatorsByUserID(ctx, id)
	if err != nil {
		return d, err
	}
	for _, p := range passkeys {
		d.Passkeys = append(d.Passkeys, viewPasskey(p))
	}
	return d, nil
}

// usersCmd is `broker users`: list, show, delete and set-attribute.
func (c *cli) usersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "users",
		Short: "List, show, delete users and set their attributes",
		Args:  cobra.NoArgs, // an unknown subcommand is an error, not help
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(c.usersListCmd(), c.usersShowCmd(), c.usersDeleteCmd(), c.usersSetAttributeCmd())
	return cmd
}

// usersListCmd is `broker users list [--limit N] [--after ID] [--json]`.
func (c *cli) usersListCmd() *cobra.Command {
	var (
		limit  int
		after  string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List users, oldest first",
		Long: "List users ordered by creation time, then id: a table (id, username, email, verified, created)\n" +
			"or, with --json, one JSON object per line. --limit caps the page (0: every user);\n" +
			"--after ID starts after that user, for the next page.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return fmt.Errorf("--limit %d: want 0 (every user) or more", limit)
			}
			return c.withAdmin(cmd, func(ctx context.Context, env *adminEnv) error {
				if after != "" {
					if _, err := getUser(ctx, env, after); err != nil {
						return fmt.Errorf("--after: %w", err)
					}
				}
				users, err := listUsers(ctx, env, after, limit)
				if err != nil {
					return err
				}
				if asJSON {
					enc := json.NewEncoder(c.stdout)
					for _, u := range users {
						if err := enc.Encode(u); err != nil {
							return err
						}
					}
				} else {
					tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tUSERNAME\tEMAIL\tVERIFIED\tCREATED")
					for _, u := range users {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%s\n", u.ID, orDash(u.Username), orDash(u.Email),
							u.EmailVerified, fmtTime(u.CreatedAt))
					}
					if err := tw.Flush(); err != nil {
						return err
					}
				}
				if limit > 0 && len(users) == limit {
					fmt.Fprintf(c.stderr, "more users may follow: --after %s\n", users[len(users)-1].ID)
				}
				return nil
			})
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many users (0: every user)")
	cmd.Flags().StringVar(&after, "after", "", "start after the user with this id (the last id of the previous page)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per user and line")
	return cmd
}

// listUsersPage is how many users `users list` reads per query (a variable
// so that tests can make pages small).
var listUsersPage = 500

// listUsers reads up to limit users after after (every one when limit is
// 0), page by page.
func listUsers(ctx context.Context, env *adminEnv, after string, limit int) ([]userView, error) {
	var out []userView
	for {
		n := listUsersPage
		if limit > 0 {
			n = min(n, limit-len(out))
		}
		users, err := env.store.ListUsers(ctx, after, n)
		if err != nil {
			return nil, err
		}
		for _, su := range users {
			u, err := env.auth.GetUser(ctx, su.ID)
			if errors.Is(err, auth.ErrInvalidUserID) {
				continue // deleted meanwhile
			}
			if err != nil {
				return nil, authFailure(err)
			}
			out = append(out, viewUser(u))
		}
		if len(users) < n || (limit > 0 && len(out) >= limit) {
			return out, nil
		}
		after = users[len(users)-1].ID
	}
}

// usersShowCmd is `broker users show ID [--json]`.
func (c *cli) usersShowCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show USER_ID",
		Short: "Show a user with its keys, live sessions and passkeys",
		Long: "Show a user, its keys (id, provider, whether a password is set; never tokens or\n" +
			"password hashes), its live sessions and its passkeys. An unknown id is an error.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withAdmin(cmd, func(ctx context.Context, env *adminEnv) error {
				d, err := loadUserDetails(ctx, env, args[0])
				if err != nil {
					return err
				}
				if asJSON {
					return writeIndentedJSON(c.stdout, d)
				}
				return printUserDetails(c.stdout, d)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: {user, keys, sessions, passkeys}")
	return cmd
}

func printUserDetails(w io.Writer, d userDetails) error {
	u := d.User
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	attrs, err := json.Marshal(u.Attributes)
	if err != nil {
		return err
	}
	fmt.Fprintf(tw, "id:\t%s\n", u.ID)
	fmt.Fprintf(tw, "username:\t%s\n", orDash(u.Username))
	fmt.Fprintf(tw, "email:\t%s\n", orDash(u.Email))
	fmt.Fprintf(tw, "email verified:\t%t\n", u.EmailVerified)
	fmt.Fprintf(tw, "name:\t%s\n", orDash(u.Name))
	fmt.Fprintf(tw, "image:\t%s\n", orDash(u.Image))
	fmt.Fprintf(tw, "attributes:\t%s\n", attrs)
	fmt.Fprintf(tw, "created:\t%s\n", fmtTime(u.CreatedAt))
	fmt.Fprintf(tw, "updated:\t%s\n", fmtTime(u.UpdatedAt))
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintf(w, "\nkeys (%d):\n", len(d.Keys))
	if len(d.Keys) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  ID\tPROVIDER\tPASSWORD\tCREATED")
		for _, k := range d.Keys {
			fmt.Fprintf(tw, "  %s\t%s\t%t\t%s\n", k.ID, k.ProviderID, k.PasswordDefined, fmtTime(k.CreatedAt))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	fmt.Fprintf(w, "\nsessions (%d):\n", len(d.Sessions))
	if len(d.Sessions) > 0 {
		if err := printSessions(w, "  ", d.Sessions); err != nil {
			return err
		}
	}

	fmt.Fprintf(w, "\npasskeys (%d):\n", len(d.Passkeys))
	if len(d.Passkeys) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  ID\tNAME\tCREATED\tLAST USED")
		for _, p := range d.Passkeys {
			last := "-"
			if p.LastUsedAt != nil {
				last = fmtTime(*p.LastUsedAt)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", p.ID, dashIfEmpty(p.Name), fmtTime(p.CreatedAt), last)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// usersDeleteCmd is `broker users delete ID --yes`.
func (c *cli) usersDeleteCmd() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete USER_ID",
		Short: "Delete a user with its keys, sessions and passkeys",
		Long: "Delete a user with its keys, sessions and passkeys, in one transaction. Without --yes\n" +
			"nothing is deleted: the command says what would be and fails.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			return c.withAdmin(cmd, func(ctx context.Context, env *adminEnv) error {
				d, err := loadUserDetails(ctx, env, id)
				if err != nil {
					return err
				}
				what := fmt.Sprintf("user %s%s with %s, %s and %s", id, describeUser(d.User),
					plural(len(d.Keys), "key"), plural(len(d.Sessions), "live session"), plural(len(d.Passkeys), "passkey"))
				if !yes {
					fmt.Fprintf(c.stdout, "would delete %s\n", what)
					return errors.New("nothing deleted: run again with --yes to delete")
				}
				if err := env.auth.DeleteUser(ctx, id); err != nil {
					return authFailure(err)
				}
				c.auditCLI(ctx, env, storage.AuditEvent{Event: storage.AuditUserDeleted, UserID: id})
				fmt.Fprintf(c.stdout, "deleted %s\n", what)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "really delete")
	return cmd
}

func describeUser(u userView) string {
	var parts []string
	if u.Username != nil {
		parts = append(parts, *u.Username)
	}
	if u.Email != nil {
		parts = append(parts, *u.Email)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// usersSetAttributeCmd is `broker users set-attribute ID NAME VALUE [--json-value]`.
func (c *cli) usersSetAttributeCmd() *cobra.Command {
	var jsonValue bool
	cmd := &cobra.Command{
		Use:   "set-attribute USER_ID NAME VALUE",
		Short: "Set one attribute of a user (what claims and access rules read)",
		Long: "Set one attribute of a user, the way the broker does at sign-in, and print the user.\n" +
			"VALUE is a string; with --json-value it is JSON (true, 3, [\"a\",\"b\"], {\"k\":1}), and\n" +
			"null removes the attribute (or clears a first-class field). The first-class fields\n" +
			"username, email, name, image, email_verified (true or false) and email_verified_at\n" +
			"(RFC 3339) are set through the same call; changing email clears its verification.",
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, name, raw := args[0], args[1], args[2]
			value, err := attributeValue(name, raw, jsonValue)
			if err != nil {
				return err
			}
			return c.withAdmin(cmd, func(ctx context.Context, env *adminEnv) error {
				u, err := env.auth.UpdateUserAttributes(ctx, id, map[string]any{name: value})
				if errors.Is(err, auth.ErrInvalidUserID) {
					return errNoUser(id)
				}
				if err != nil {
					return authFailure(err)
				}
				return writeIndentedJSON(c.stdout, viewUser(u))
			})
		},
	}
	cmd.Flags().BoolVar(&jsonValue, "json-value", false, "read VALUE as JSON (null removes the attribute)")
	return cmd
}

// attributeValue turns the command-line VALUE into what
// auth.UpdateUserAttributes takes for name.
func attributeValue(name, raw string, jsonValue bool) (any, error) {
	var v any = raw
	if jsonValue {
		if err := json.Unmarshal([]byte(raw), &v); err != nil {
			return nil, fmt.Errorf("--json-value: %q is not JSON: %w", raw, err)
		}
	}
	switch name {
	case "email_verified":
		// The field is a boolean: accept true/false without --json-value.
		if s, ok := v.(string); ok {
			b, err := strconv.ParseBool(s)
			if err != nil {
				return nil, fmt.Errorf("email_verified: want true or false, got %q", s)
			}
			v = b
		}
	case "email_verified_at":
		if s, ok := v.(string); ok {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				return nil, fmt.Errorf("email_verified_at: want an RFC 3339 time (2024-05-01T12:00:00Z), got %q", s)
			}
			v = t.UTC()
		}
	}
	return v, nil
}

// writeIndentedJSON writes v as indented JSON and a newline.
func writeIndentedJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func orDash(s *string) string {
	if s == nil {
		return "-"
	}
	return dashIfEmpty(*s)
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
