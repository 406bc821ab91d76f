package automation

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator"
)

// TestLaggingEngineGetsEachRunsFinalState drives a run's task through the
// task records (orchestrator.Records, the authority) while no automation
// engine runs: provisioning, running, failed, then a retry that ends done.
// An engine started afterwards reads the state reports the records
// projected, one per transition (recorded, each with the whole task), and
// records the run's first final state: failed, with the error and the
// cost, counting one failure; the later done does not overwrite it.
// Reading only the task's latest state would have missed the failure.
func TestLaggingEngineGetsEachRunsFinalState(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	ctx := context.Background()
	seed := []config.Automation{{Name: "triage", On: &config.On{Source: "github", Kind: "issue.labeled"}, Prompt: "fix {{.Target.URL}}", Respond: "silent"}}
	a := startRunner(t, ns, "a", seed)
	h := &harness{t: t, e: a.e, js: jsOf(t, connect(t, ns, "ingress"))}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := h.js.Consumer(ctx, orchestrator.TasksStream, "automation-outcomes"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("engine consumers not created")
		}
	}
	h.event("issue.labeled", "alice", "", "x")
	run := withStatus(h.waitRuns("triage", "the run", func(r []Run) bool { return len(withStatus(r, RunStarted)) == 1 }), RunStarted)[0]
	ev := h.taskEvent(run.TaskID)
	a.stop() // the engine lags from here on

	bus, err := orchestrator.NewBus(ctx, connect(t, ns, "scheduler"), orchestrator.BusConfig{})
	if err != nil {
		t.Fatal(err)
	}
	recs := bus.Records()
	created, err := recs.CreateFromEvent(ctx, &ev, "claude")
	if err != nil || created.Task.ID != run.TaskID {
		t.Fatalf("create task: %+v %v", created, err)
	}
	step := func(run int, to orchestrator.State, p orchestrator.Patch) {
		t.Helper()
		f, _, err := recs.Claim(ctx, created.Task.ID, run, "worker", 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := recs.Report(ctx, created.Task.ID, f, orchestrator.StateRunning, "agent", orchestrator.Patch{}); err != nil {
			t.Fatal(err)
		}
		if _, err := recs.Report(ctx, created.Task.ID, f, to, string(to), p); err != nil {
			t.Fatal(err)
		}
	}
	msg := "exit status 1"
	step(1, orchestrator.StateFailed, orchestrator.Patch{Error: &msg, Usage: &orchestrator.Usage{CostUSD: 0.7}})
	if _, err := recs.Requeue(ctx, created.Task.ID, "retry", func(orchestrator.Task) error { return nil }, false, nil); err != nil {
		t.Fatal(err)
	}
	empty := ""
	step(2, orchestrator.StateDone, orchestrator.Patch{Error: &empty, Usage: &orchestrator.Usage{CostUSD: 0.9}})

	// The reports are the records' projection: recorded, the task in each.
	reports := stateReports(t, h.js, created.Task.ID)
	var states []string
	for _, r := range reports {
		if !r.Recorded || r.Task == nil || r.Task.ID != created.Task.ID || r.Task.State != r.State {
			t.Fatalf("report %+v is not a recorded projection", r)
		}
		states = append(states, string(r.State))
	}
	if len(states) < 6 || states[len(states)-1] != "done" {
		t.Fatalf("reports %v", states)
	}

	b := startRunner(t, ns, "b", seed)
	defer b.stop()
	h.e = b.e
	got := h.waitRuns("triage", "the outcome", func(r []Run) bool { return len(r) == 1 && r[0].CostUSD == 0.9 })[0]
	if got.Status != RunFailed || got.Reason != msg || got.TaskState != "done" {
		t.Fatalf("run after the lagging engine caught up: %+v", got)
	}
	if st, _ := b.e.State(ctx, "triage"); st.Failures != 1 || len(st.Active) != 0 || st.DayCostUSD != 0.9 {
		t.Fatalf("state: %+v", st)
	}
}

func stateReports(t *testing.T, js jetstream.JetStream, taskID string) []orchestrator.StateReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, orchestrator.TasksStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{orchestrator.StateSubject(taskID)}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []orchestrator.StateReport
	for n := info.NumPending; n > 0; n-- {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var r orchestrator.StateReport
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}
