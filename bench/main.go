// Command bench runs Nightshift's benchmarks, each against a baseline
// measured in the same run, and prints the ratio last:
//
//	go run ./bench ingress    # our webhook handler vs bare HMAC + JetStream publish
//	go run ./bench worktree   # our task worktree vs git worktree add
//	go run ./bench sandbox    # our full sandbox vs a minimal bubblewrap sandbox
//	go run ./bench chaos      # the chaos suite, long form: faults injected into a process cluster
//	go run ./bench dispatch   # 200 tasks at once: dispatch latency vs one worktree provisioning
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/nightshift/nightshift/ingress/webhook/webhookbench"
	"github.com/nightshift/nightshift/sandbox"
	"github.com/nightshift/nightshift/sandbox/sandboxbench"
	"github.com/nightshift/nightshift/worktree/worktreebench"
)

func main() {
	if sandbox.Reexec() {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: go run ./bench ingress|worktree|sandbox|chaos|dispatch [args]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "ingress":
		err = webhookbench.Run(ctx, os.Stdout)
	case "worktree":
		err = worktreebench.Run(ctx, os.Stdout, os.Args[2:])
	case "sandbox":
		err = sandboxbench.Run(ctx, os.Stdout)
	case "chaos":
		err = runChaos(ctx, os.Stdout, os.Args[2:])
	case "dispatch":
		err = runDispatch(ctx, os.Stdout, os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "unknown benchmark %q (want ingress, worktree, sandbox, chaos or dispatch)\n", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
