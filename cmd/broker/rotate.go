package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/brokerauth/broker/internal/seal"
	"github.com/brokerauth/broker/providersession"
	"github.com/brokerauth/broker/storage"
)

// rotateBatch is how many keys rotate-token-key reads per page (a
// variable so that tests can make pages small).
var rotateBatch = 200

// rotateTokenKeyCmd is `broker rotate-token-key`.
func (c *cli) rotateTokenKeyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rotate-token-key",
		Short: "Re-encrypt stored provider tokens under the first token key",
		Long: "Re-encrypt every stored provider token under the first key of the token keyring\n" +
			"(secrets.token_key, then secrets.token_keys). Put the new key first and keep the old\n" +
			"ones listed, run this, then remove the old keys. Tokens already under the first key\n" +
			"are left alone, so running it again is harmless. Keys whose tokens no listed key\n" +
			"opens are reported and make the command fail; the others are still rotated.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAdmin(cmd, func(ctx context.Context, env *adminEnv) error {
				if len(env.cfg.TokenKeys) == 0 {
					return errors.New("secrets.token_key: no token key configured")
				}
				ring, err := seal.NewKeyring(env.cfg.TokenKeys...)
				if err != nil {
					return fmt.Errorf("secrets.token_keys: %w", err)
				}
				vault := providersession.NewTokenVault(ring, env.store, nil)
				changed, seen, failures, err := rotateTokens(ctx, env.store, vault)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "re-encrypted %d of %s\n", changed, plural(seen, "key"))
				if len(failures) > 0 {
					return fmt.Errorf("%s could not be re-encrypted (is the key that sealed them missing from secrets.token_keys?):\n  %s",
						plural(len(failures), "key"), strings.Join(failures, "\n  "))
				}
				if len(env.cfg.TokenKeys) > 1 {
					fmt.Fprintln(c.stdout, "every stored token is under the first token key; the other token keys can be removed")
				}
				return nil
			})
		},
	}
}

// rotateTokens pages through the keys that hold tokens and re-encrypts
// each under the vault's first key. It returns how many changed, how many
// it looked at and one line per key that failed. A key deleted meanwhile is
// not counted.
func rotateTokens(ctx context.Context, st storage.Keys, vault *providersession.TokenVault) (changed, seen int, failures []string, err error) {
	after := ""
	for {
		keys, err := st.ListKeysWithTokens(ctx, after, rotateBatch)
		if err != nil {
			return changed, seen, failures, err
		}
		for _, k := range keys {
			if err := ctx.Err(); err != nil {
				return changed, seen, failures, err
			}
			did, err := vault.Reencrypt(ctx, k.ID)
			switch {
			case errors.Is(err, storage.ErrNotFound):
				continue
			case err != nil:
				failures = append(failures, k.ID+": "+err.Error())
			case did:
				changed++
			}
			seen++
		}
		if len(keys) < rotateBatch {
			return changed, seen, failures, nil
		}
		after = keys[len(keys)-1].ID
	}
}
