package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/bench/cluster"
)

// runChaos is `go run ./bench chaos`: the chaos suite in its long form
// (40 tasks, every fault; see cluster.Chaos). It prints the fault table and
// the tasks checked, and fails when any check fails.
func runChaos(ctx context.Context, w io.Writer, args []string) error {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(w)
	tasks := fs.Int("tasks", 40, "tasks submitted (half API, half webhooks)")
	messages := fs.Int("messages", 8, "follow-up messages sent during the faults")
	faults := fs.String("faults", strings.Join(cluster.AllFaults, ","), "faults to inject, comma-separated")
	sleep := fs.String("agent-sleep", "3", "seconds each agent run sleeps")
	settle := fs.Duration("settle", 8*time.Minute, "how long every task may take to rest after the last submission")
	keep := fs.Bool("keep", false, "keep the work directory (logs of every process)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var list []string
	for _, f := range strings.Split(*faults, ",") {
		if f = strings.TrimSpace(f); f != "" {
			list = append(list, f)
		}
	}
	for _, f := range list {
		if !contains(cluster.AllFaults, f) {
			return fmt.Errorf("unknown fault %q (want some of %s)", f, strings.Join(cluster.AllFaults, ", "))
		}
	}
	var problems int
	err := cluster.Main(w, *keep, func(t testing.TB) {
		rep := cluster.Chaos(t, t.TempDir(), cluster.ChaosOptions{Tasks: *tasks, Messages: *messages, Faults: list,
			AgentSleep: *sleep, Settle: *settle, Out: w})
		problems = len(rep.Problems)
	})
	if err == nil && problems > 0 {
		err = fmt.Errorf("chaos: %d checks failed", problems)
	}
	return err
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
