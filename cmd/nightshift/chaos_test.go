package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/bench/cluster"
)

// TestChaos is the chaos suite in its reduced form (the full one is `go run
// ./bench chaos`; NIGHTSHIFT_CHAOS=full runs it here): a real 3-node
// JetStream cluster and two processes of each role, each with its own data
// dir, six tasks through both ingress APIs (one Idempotency-Key posted to
// both) and duplicated signed GitHub webhooks, two follow-up messages,
// while a worker is frozen past its ack wait then resumed, a worker is
// killed -9 mid-run and restarted, and one NATS node is killed -9 and
// restarted. Every task must rest in review with its recorded commit the
// head of a branch only ever fast-forwarded, one pull request each, every
// follow-up in a commit, and both ingresses must answer the same.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos suite: about two minutes of real processes")
	}
	o := cluster.ChaosOptions{
		Tasks:    6,
		Messages: 2,
		Faults:   []string{cluster.FaultFreezeWorker, cluster.FaultKillWorker, cluster.FaultKillNATS},
		Settle:   2 * time.Minute,
	}
	if os.Getenv("NIGHTSHIFT_CHAOS") == "full" {
		o = cluster.ChaosOptions{Tasks: 40, Messages: 8, AgentSleep: "3", Settle: 6 * time.Minute}
	}
	var out strings.Builder
	o.Out = &out
	rep := cluster.Chaos(t, t.TempDir(), o)
	t.Log("\n" + out.String())
	if len(rep.Problems) > 0 {
		t.Errorf("%d checks failed:\n%s", len(rep.Problems), strings.Join(rep.Problems, "\n"))
	}
}
