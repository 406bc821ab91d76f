// Command nightshift runs background coding agents on events: the server
// (serve), its client commands (dispatch, tasks), and the operator tools
// (vault, identity, sandbox, hooks, mcp).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/nightshift/nightshift/sandbox"
)

func main() {
	if sandbox.Reexec() { // the in-sandbox helper (loopback forwarder) exits here
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Environ(), os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode prints err as one sentence and maps it to the process exit code:
// 0 success, 2 bad usage, 130 interrupted, the code an *exitError carries
// (--follow: how the task ended; sandbox exec: 124 timed out, 125 output
// limit, 137 out of memory), 1 anything else.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		fmt.Fprintln(stderr, "nightshift:", ee.msg)
		return ee.code
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "nightshift: interrupted")
		return 130
	}
	var withCode interface{ ExitCode() int }
	if errors.As(err, &withCode) && withCode.ExitCode() > 0 {
		return withCode.ExitCode() // sandbox exec passes the command's own code through
	}
	fmt.Fprintln(stderr, "nightshift:", err)
	var u *usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}
