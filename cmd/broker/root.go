package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/brokerauth/broker/internal/config"
	"github.com/brokerauth/broker/storage/sqlstore"
)

// cli holds what every command shares.
type cli struct {
	getenv     func(string) string
	stdout     io.Writer
	stderr     io.Writer
	configPath string
}

func newRootCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	c := &cli{getenv: getenv, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "broker",
		Short:         "A login broker: OAuth/OIDC, passkeys, email links and passwords, with Lucia-style sessions",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&c.configPath, "config", "", "configuration file (default: broker.yaml in the working directory, else development mode)")
	root.AddCommand(
		c.serveCmd(),
		c.migrateCmd(),
		c.checkConfigCmd(),
		c.versionCmd(),
		c.usersCmd(), c.sessionsCmd(), c.rotateTokenKeyCmd(),
		c.auditCmd(),
	)
	return root
}

// loadConfig reads --config, else ./broker.yaml, else the development
// defaults.
func (c *cli) loadConfig() (*config.Config, error) {
	path := c.configPath
	if path == "" {
		if _, err := os.Stat("broker.yaml"); err == nil {
			path = "broker.yaml"
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("broker.yaml: %w", err)
		}
	}
	if path == "" {
		dir, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		return config.Dev(dir, c.getenv)
	}
	cfg, err := config.Load(path, c.getenv)
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: invalid configuration:\n%s", path, indent(err))
	}
	return cfg, nil
}

func indent(err error) string {
	var b strings.Builder
	for _, line := range config.Explain(err) {
		b.WriteString("  ")
		b.WriteString(line)
		b.WriteString("\n")
	}
	return strings.TrimRight(b.String(), "\n")
}

func (c *cli) logger(cfg *config.Config) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.Log.Level))
	o := &slog.HandlerOptions{Level: lvl}
	if cfg.Log.Format == "text" {
		return slog.New(slog.NewTextHandler(c.stderr, o))
	}
	return slog.New(slog.NewJSONHandler(c.stderr, o))
}

func openStore(ctx context.Context, cfg *config.Config) (*sqlstore.Store, error) {
	url := cfg.Database.URL
	if strings.HasPrefix(url, "sqlite:") && !strings.HasPrefix(url, "sqlite:/") && !strings.HasPrefix(url, "sqlite::memory:") {
		// Relative SQLite paths are relative to the working directory.
		url = "sqlite:" + filepath.Clean(strings.TrimPrefix(url, "sqlite:"))
	}
	return sqlstore.Open(ctx, url)
}

func (c *cli) migrateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply the embedded database migrations",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.loadConfig()
			if err != nil {
				return err
			}
			st, err := openStore(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer st.Close()
			if err := st.Migrate(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, "migrations applied")
			return nil
		},
	}
}

func (c *cli) checkConfigCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check-config",
		Short: "Validate the configuration and explain every problem with its key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.loadConfig()
			if err != nil {
				return err
			}
			src := cfg.Source
			if src == "" {
				src = "development defaults"
			}
			fmt.Fprintf(c.stdout, "%s: configuration is valid\n", src)
			return nil
		},
	}
}

func (c *cli) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the broker's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(c.stdout, "broker", version)
		},
	}
}
