package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/storage"
)

// sessionsCmd is `broker sessions`: list, revoke and revoke-all.
func (c *cli) sessionsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "List and revoke a user's sessions",
		Args:  cobra.NoArgs, // an unknown subcommand is an error, not help
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(c.sessionsListCmd(), c.sessionsRevokeCmd(), c.sessionsRevokeAllCmd())
	return cmd
}

// sessionsListCmd is `broker sessions list USER_ID [--json]`.
func (c *cli) sessionsListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list USER_ID",
		Short: "List a user's live (active or idle) sessions, oldest first",
		Long: "List a user's live sessions: id (the hex SHA-256 of the token, never the token),\n" +
			"state, created, last seen, user agent and IP; with --json one object per line.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			return c.withAdmin(cmd, func(ctx context.Context, env *adminEnv) error {
				ss, err := env.auth.GetAllUserSessions(ctx, id)
				if errors.Is(err, auth.ErrInvalidUserID) {
					return errNoUser(id)
				}
				if err != nil {
					return authFailure(err)
				}
				views := make([]sessionView, len(ss))
				for i, s := range ss {
					views[i] = viewSession(s)
				}
				if asJSON {
					enc := json.NewEncoder(c.stdout)
					for _, v := range views {
						if err := enc.Encode(v); err != nil {
							return err
						}
					}
					return nil
				}
				return printSessions(c.stdout, "", views)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per session and line")
	return cmd
}

// printSessions writes a table of sessions, each line starting with indent.
func printSessions(w io.Writer, indent string, ss []sessionView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, indent+"ID\tSTATE\tCREATED\tLAST SEEN\tUSER AGENT\tIP")
	for _, s := range ss {
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\t%s\n", indent, s.ID, s.State, fmtTime(s.CreatedAt),
			fmtTime(s.LastSeenAt), dashIfEmpty(s.UserAgent), dashIfEmpty(s.IP))
	}
	return tw.Flush()
}

// sessionsRevokeCmd is `broker sessions revoke SESSION_ID`.
func (c *cli) sessionsRevokeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke SESSION_ID",
		Short: "End one session, by the id listings show",
		Long: "End one session by its id: the hex SHA-256 that `sessions list` and `users show`\n" +
			"print. A session token (the cookie's value) is accepted too and hashed first.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if auth.ValidSessionToken(id) {
				id = auth.SessionIDFromToken(id)
			}
			return c.withAdmin(cmd, func(ctx context.Context, env *adminEnv) error {
				s, err := env.store.GetSession(ctx, id)
				if errors.Is(err, storage.ErrNotFound) {
					return errNoSession(id) // never echo a token
				}
				if err != nil {
					return err
				}
				if err := env.auth.InvalidateSessionID(ctx, s.UserID, id); err != nil {
					if errors.Is(err, auth.ErrInvalidSessionID) {
						return errNoSession(id) // malformed, or revoked meanwhile
					}
					return authFailure(err)
				}
				c.auditCLI(ctx, env, storage.AuditEvent{Event: storage.AuditSessionRevoked, UserID: s.UserID,
					Data: map[string]any{"session_id": id}})
				fmt.Fprintf(c.stdout, "revoked session %s of user %s\n", id, s.UserID)
				return nil
			})
		},
	}
}

// sessionsRevokeAllCmd is `broker sessions revoke-all USER_ID`.
func (c *cli) sessionsRevokeAllCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke-all USER_ID",
		Short: "End every session of a user",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			return c.withAdmin(cmd, func(ctx context.Context, env *adminEnv) error {
				if _, err := getUser(ctx, env, id); err != nil {
					return err
				}
				ids, err := env.auth.InvalidateAllUserSessions(ctx, id)
				if err != nil {
					return authFailure(err)
				}
				c.auditCLI(ctx, env, storage.AuditEvent{Event: storage.AuditSessionRevoked, UserID: id, Reason: "all",
					Data: map[string]any{"sessions": len(ids)}})
				fmt.Fprintf(c.stdout, "revoked %s of user %s\n", plural(len(ids), "session"), id)
				return nil
			})
		},
	}
}
