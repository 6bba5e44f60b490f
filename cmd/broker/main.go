// Command broker is the login broker: `broker serve` runs it, `broker
// migrate` prepares its database, `broker check-config` explains a
// configuration file. With no --config and no broker.yaml in the working
// directory it runs in development mode (SQLite, generated secrets, every
// provider that needs no outside account).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "broker:", err)
		os.Exit(1)
	}
}

// run executes the CLI with args; every outside dependency comes in as a
// parameter so tests can drive it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := newRootCmd(getenv, stdout, stderr)
	cmd.SetArgs(args)
	return cmd.ExecuteContext(ctx)
}
