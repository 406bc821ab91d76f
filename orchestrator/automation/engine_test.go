package automation

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator"
)

// harness is one engine on its own connection, plus a publisher that
// plays the ingress (events) and the scheduler/workers (state reports).
type harness struct {
	t  *testing.T
	e  *Engine
	js jetstream.JetStream
}

func newHarness(t *testing.T, defs ...config.Automation) *harness {
	t.Helper()
	ns := startNATS(t)
	e, err := New(context.Background(), jsOf(t, connect(t, ns, "engine")), Config{Poll: 100 * time.Millisecond, QueueDelay: 200 * time.Millisecond,
		// On the "forge", mallory has no write access.
		CanWrite: func(_ context.Context, ev orchestrator.Event) (bool, error) { return ev.Actor.Login != "mallory", nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Seed(context.Background(), defs); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// Run has created its consumers once the definitions are loaded and
	// the consumer exists; wait for it so DeliverNew sees what follows.
	js := jsOf(t, connect(t, ns, "ingress"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := js.Consumer(context.Background(), orchestrator.EventsStream, "automations"); err == nil {
			if _, err := js.Consumer(context.Background(), orchestrator.TasksStream, "automation-outcomes"); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("engine consumers not created")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &harness{t: t, e: e, js: js}
}

// seq numbers the targets of harness events (tests run in parallel).
var seq atomic.Int64

func (h *harness) event(kind, login, assoc, instruction string) {
	h.t.Helper()
	n := int(seq.Add(1))
	ev := &orchestrator.Event{ID: orchestrator.NewID(), Source: orchestrator.SourceGitHub, Kind: kind, Repo: "https://github.com/acme/api.git",
		Target: orchestrator.Target{Type: "issue", Number: n, URL: "https://github.com/acme/api/issues/1"},
		Actor:  orchestrator.Actor{Login: login, Association: assoc}, Instruction: instruction,
		DeliveryID: "d-" + orchestrator.NewID(), ReceivedAt: time.Now()}
	if err := orchestrator.PublishEvent(context.Background(), h.js, ev); err != nil {
		h.t.Fatal(err)
	}
}

// report publishes a task state report as the scheduler does.
func (h *harness) report(taskID, state string, cost float64) {
	h.t.Helper()
	b, _ := json.Marshal(map[string]any{"task_id": taskID, "run": 1, "state": state, "recorded": true,
		"task": map[string]any{"id": taskID, "state": state, "error": "exit status 1", "usage": map[string]any{"cost_usd": cost}}})
	if _, err := h.js.Publish(context.Background(), orchestrator.StateSubject(taskID), b); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) waitRuns(name string, what string, ok func([]Run) bool) []Run {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		runs, err := h.e.Runs(context.Background(), name, 0)
		if err != nil {
			h.t.Fatal(err)
		}
		if ok(runs) {
			return runs
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: timed out waiting for %s; runs %+v", name, what, runs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitState waits until the automation's state satisfies ok: a run's
// outcome is recorded on the run first, then counted in the state.
func (h *harness) waitState(name, what string, ok func(State) bool) State {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := h.e.State(context.Background(), name)
		if err != nil {
			h.t.Fatal(err)
		}
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: timed out waiting for %s; state %+v", name, what, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func withStatus(runs []Run, status string) []Run {
	var out []Run
	for _, r := range runs {
		if r.Status == status {
			out = append(out, r)
		}
	}
	return out
}

// TestGuardRails: who may trigger, concurrency (a matched event waits for
// the slot), outcomes (a success clears the failure count), the daily
// budget, and the pause after consecutive failures that enabling clears.
func TestGuardRails(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.Automation{Name: "triage", On: &config.On{Source: "github", Kind: "issue.labeled"},
		Prompt: "Fix {{.Target.URL}} for {{.Actor.Login}}", Respond: "reply", Mode: "plan",
		Allow:  config.Triggerers{Logins: []string{"alice"}, Associations: []string{"MEMBER"}},
		Budget: config.AutomationBudget{CostUSD: 1.5, PerDayUSD: 3}, SecretScopes: []string{"repo:github.com/acme/*"}, PauseAfter: 2})
	ctx := context.Background()

	// Someone not allowed starts nothing; the timeline says why.
	h.event("issue.labeled", "mallory", "NONE", "x")
	r := h.waitRuns("triage", "refusal", func(r []Run) bool { return len(withStatus(r, RunRefused)) == 1 })
	if !strings.Contains(r[0].Reason, "mallory may not trigger triage (allowed: logins alice; associations MEMBER)") {
		t.Errorf("refusal reason %q", r[0].Reason)
	}
	// Another kind does not match at all.
	h.event("comment.command", "alice", "", "x")

	// alice's event starts a run; its event carries mode, budget and scopes.
	h.event("issue.labeled", "alice", "", "x")
	r = h.waitRuns("triage", "first run", func(r []Run) bool { return len(withStatus(r, RunStarted)) == 1 })
	first := withStatus(r, RunStarted)[0]
	ev := h.taskEvent(first.TaskID)
	if ev.Automation == nil || ev.Automation.Mode != "plan" || ev.Automation.BudgetCostUSD != 1.5 || ev.Automation.SecretScopes[0] != "repo:github.com/acme/*" ||
		ev.Source != orchestrator.SourceGitHub || ev.Kind != "automation.run" || ev.Target.Number == 0 || !strings.HasSuffix(ev.Instruction, "for alice") {
		t.Fatalf("run event = %+v (automation %+v)", ev, ev.Automation)
	}

	// A MEMBER's event waits: concurrency 1 and one run is active.
	h.event("issue.labeled", "bob", "MEMBER", "y")
	time.Sleep(600 * time.Millisecond) // three queue delays
	if runs, _ := h.e.Runs(ctx, "triage", 0); len(withStatus(runs, RunStarted)) != 1 {
		t.Fatalf("a second run started while the first was active: %+v", runs)
	}
	h.report(first.TaskID, "running", 0.5)
	h.report(first.TaskID, "failed", 1)
	r = h.waitRuns("triage", "the queued run", func(r []Run) bool { return len(withStatus(r, RunStarted)) == 1 && len(withStatus(r, RunFailed)) == 1 })
	if f := withStatus(r, RunFailed)[0]; f.CostUSD != 1 || f.Reason != "exit status 1" {
		t.Errorf("failed run = %+v", f)
	}
	h.waitState("triage", "a failure counted", func(st State) bool { return st.Failures == 1 && st.DayCostUSD == 1 })
	second := withStatus(r, RunStarted)[0]
	h.report(second.TaskID, "review", 1)
	h.waitRuns("triage", "success", func(r []Run) bool { return len(withStatus(r, RunSucceeded)) == 1 })
	h.waitState("triage", "a success clearing the failures", func(st State) bool {
		return st.Failures == 0 && st.DayCostUSD == 2 && len(st.Active) == 0
	})

	// Two failures in a row pause it (pause_after: 2).
	for i := range 2 {
		h.event("issue.labeled", "alice", "", "z")
		r = h.waitRuns("triage", "run", func(r []Run) bool { return len(withStatus(r, RunStarted)) == 1 })
		h.report(withStatus(r, RunStarted)[0].TaskID, "failed", 0)
		h.waitRuns("triage", "failure", func(r []Run) bool { return len(withStatus(r, RunFailed)) == 2+i })
	}
	st := h.waitState("triage", "the pause", func(st State) bool { return st.Paused && len(st.Active) == 0 })
	if !strings.HasPrefix(st.PausedReason, "2 consecutive failed runs (last: task ") {
		t.Fatalf("paused after two failures with reason %q", st.PausedReason)
	}
	h.event("issue.labeled", "alice", "", "w")
	h.waitRuns("triage", "skip while paused", func(r []Run) bool { return len(withStatus(r, RunSkipped)) == 1 })
	if _, err := h.e.RunNow(ctx, "triage", "admin"); err == nil {
		t.Error("a manual run of an automation without a repo was accepted")
	}

	// Enabling resumes it and clears the count; the daily budget ($3,
	// spent $2 + the $1.5 run below) then stops the next run.
	if _, err := h.e.SetEnabled(ctx, "triage", true, "admin"); err != nil {
		t.Fatal(err)
	}
	if st, _ = h.e.State(ctx, "triage"); st.Paused || st.Failures != 0 {
		t.Fatalf("after enable: %+v", st)
	}
	h.event("issue.labeled", "alice", "", "v")
	r = h.waitRuns("triage", "run after resume", func(r []Run) bool { return len(withStatus(r, RunStarted)) == 1 })
	h.report(withStatus(r, RunStarted)[0].TaskID, "done", 1.5)
	h.waitRuns("triage", "done", func(r []Run) bool { return len(withStatus(r, RunSucceeded)) == 2 })
	h.waitState("triage", "the day's cost", func(st State) bool { return st.DayCostUSD == 3.5 && len(st.Active) == 0 })
	h.event("issue.labeled", "alice", "", "u")
	r = h.waitRuns("triage", "budget skip", func(r []Run) bool { return len(withStatus(r, RunSkipped)) == 2 })
	if !strings.HasPrefix(r[0].Reason, "daily budget spent: $3.50 of $3.00") {
		t.Errorf("budget skip reason %q", r[0].Reason)
	}
}

// TestOutcomeCountedOnceAcrossACrash: a scheduler that dies while
// recording a run's outcome leaves one of two partial states; the
// redelivered report completes either, counting the failure exactly once
// (the pause after it included), and a further copy counts nothing.
func TestOutcomeCountedOnceAcrossACrash(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		crash func(h *harness, run Run) error
	}{
		// The state counted the failure, the run was not yet marked.
		{"counted, run not final", func(h *harness, run Run) error {
			_, err := update(context.Background(), h.e.kv.state, stateKey("crash"), func(s *State) error {
				s.Active, s.Failures = nil, 1
				s.Paused, s.PausedReason = true, "1 consecutive failed runs (last: task "+run.TaskID+": exit status 1)"
				return nil
			})
			return err
		}},
		// The run was marked, the state not yet counted (the order
		// before: a failure lost and a slot held for good).
		{"run final, not counted", func(h *harness, run Run) error {
			_, err := update(context.Background(), h.e.kv.runs, runKey("crash", run.ID), func(r *Run) error {
				r.Status, r.Reason, r.TaskState = RunFailed, "exit status 1", "failed"
				return nil
			})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, config.Automation{Name: "crash", On: &config.On{Source: "github", Kind: "issue.labeled"},
				Prompt: "p", Allow: config.Triggerers{Logins: []string{"alice"}}, PauseAfter: 1})
			ctx := context.Background()
			h.event("issue.labeled", "alice", "", "x")
			r := h.waitRuns("crash", "a run", func(r []Run) bool { return len(withStatus(r, RunStarted)) == 1 })
			run := withStatus(r, RunStarted)[0]
			if err := tc.crash(h, run); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				h.report(run.TaskID, "failed", 0)
			}
			h.waitRuns("crash", "the run failed", func(r []Run) bool { return len(withStatus(r, RunFailed)) == 1 })
			st := h.waitState("crash", "the failure counted", func(st State) bool { return st.Failures >= 1 && len(st.Active) == 0 })
			time.Sleep(300 * time.Millisecond) // the second copy
			if st, _ = h.e.State(ctx, "crash"); st.Failures != 1 || !st.Paused {
				t.Fatalf("state after the redelivered reports: %+v", st)
			}
		})
	}
}

// TestRunFinalMeansCounted: whoever sees a run final sees its outcome
// counted in the automation's state (the pause included).
func TestRunFinalMeansCounted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.Automation{Name: "seen", On: &config.On{Source: "github", Kind: "issue.labeled"},
		Prompt: "p", Allow: config.Triggerers{Logins: []string{"alice"}}, PauseAfter: 1})
	ctx := context.Background()
	h.event("issue.labeled", "alice", "", "x")
	r := h.waitRuns("seen", "a run", func(r []Run) bool { return len(withStatus(r, RunStarted)) == 1 })
	h.report(withStatus(r, RunStarted)[0].TaskID, "failed", 0)
	h.waitRuns("seen", "the run failed", func(r []Run) bool { return len(withStatus(r, RunFailed)) == 1 })
	if st, _ := h.e.State(ctx, "seen"); !st.Paused || st.Failures != 1 || len(st.Active) != 0 {
		t.Fatalf("the run shows failed but the state is %+v", st)
	}
}

// taskEvent reads the run event published for task id.
func (h *harness) taskEvent(taskID string) orchestrator.Event {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := h.js.OrderedConsumer(ctx, orchestrator.EventsStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"nightshift.events.>"}})
	if err != nil {
		h.t.Fatal(err)
	}
	for {
		m, err := c.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			h.t.Fatalf("no event for task %s: %v", taskID, err)
		}
		var ev orchestrator.Event
		json.Unmarshal(m.Data(), &ev)
		if ev.TaskID == taskID {
			return ev
		}
	}
}

// TestSwitchReachesEveryEngineWithoutRestart: disabling through one engine
// stops a schedule another engine runs, and a new version from the API is
// live there at once; a manual run and the timeline show it.
func TestSwitchReachesEveryEngineWithoutRestart(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	seed := []config.Automation{{Name: "tick", Schedule: "@every 1s", Repo: "github.com/acme/api", Prompt: "p", Concurrency: 100}}
	a := startRunner(t, ns, "a", seed)
	defer a.stop()
	api, err := New(context.Background(), jsOf(t, connect(t, ns, "api")), Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	waitFired := func(n int64) {
		deadline := time.Now().Add(10 * time.Second)
		for a.e.Fired() < n {
			if time.Now().After(deadline) {
				t.Fatalf("fired %d, want %d", a.e.Fired(), n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFired(1)
	if _, err := api.SetEnabled(ctx, "tick", false, "admin"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the watch delivers the new version
	n := a.e.Fired()
	time.Sleep(2500 * time.Millisecond)
	if a.e.Fired() != n {
		t.Fatalf("a disabled schedule fired %d more times", a.e.Fired()-n)
	}
	rec, _ := api.Get(ctx, "tick")
	if rec.Enabled || rec.Version != 2 || !api.NextFire(rec, State{}).IsZero() {
		t.Fatalf("after disable: %+v", rec)
	}
	if _, err := api.RunNow(ctx, "tick", "admin"); err == nil {
		t.Fatal("a disabled automation ran")
	}
	def := seed[0]
	def.Schedule = "@every 1h"
	if _, err := api.Put(ctx, def, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := api.SetEnabled(ctx, "tick", true, "admin"); err != nil {
		t.Fatal(err)
	}
	runs, err := api.RunNow(ctx, "tick", "admin")
	if err != nil || len(runs) != 1 || runs[0].Status != RunStarted || runs[0].Trigger != "manual" {
		t.Fatalf("manual run: %+v %v", runs, err)
	}
	hist, err := api.History(ctx, "tick")
	if err != nil || len(hist) != 4 || hist[2].Definition.Schedule != "@every 1h" || hist[2].Version != 3 || hist[3].Version != 4 || !hist[3].Enabled {
		t.Fatalf("versions: %d %v", len(hist), err)
	}
	// Seeding the unchanged config again keeps the API's version.
	if err := api.Seed(ctx, seed); err != nil {
		t.Fatal(err)
	}
	if rec, _ := api.Get(ctx, "tick"); rec.Definition.Schedule != "@every 1h" {
		t.Fatalf("a restart with the same config replaced the API's version: %+v", rec.Definition)
	}
	// A bad definition is refused with its key.
	def.Where = []config.Filter{{Field: "x", Op: "eq", Value: config.Values{"1"}}}
	if _, err := api.Put(ctx, def, "admin"); err == nil || !strings.Contains(err.Error(), "where") {
		t.Fatalf("bad put: %v", err)
	}
}

// TestSweepFreesLostSlots: a slot whose run record is gone, or whose run
// an engine left pending when it stopped, is freed (and the lost run says
// why); a run being started just now keeps its slot.
func TestSweepFreesLostSlots(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.Automation{Name: "n", Schedule: "@every 1h", Repo: "r", Prompt: "p"})
	ctx := context.Background()
	now := time.Now()
	put := func(id string, at time.Time) {
		b, _ := json.Marshal(Run{ID: id, Automation: "n", Status: RunPending, At: at, UpdatedAt: at})
		if _, err := h.e.kv.runs.Put(ctx, runKey("n", id), b); err != nil {
			t.Fatal(err)
		}
	}
	put("old", now.Add(-10*time.Minute))
	put("fresh", now)
	if _, err := update(ctx, h.e.kv.state, stateKey("n"), func(s *State) error {
		s.Active = []string{"gone", "old", "fresh"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	h.e.sweep(ctx, now)
	st, _ := h.e.State(ctx, "n")
	if len(st.Active) != 1 || st.Active[0] != "fresh" {
		t.Fatalf("active after the sweep: %v", st.Active)
	}
	run, _, _ := getJSON[Run](ctx, h.e.kv.runs, runKey("n", "old"))
	if run.Status != RunFailed || !strings.Contains(run.Reason, "stopped while starting") {
		t.Fatalf("lost run: %+v", run)
	}
}

// TestTeamsAreAskedForGitHubEvents: a team rule asks TeamMember for a
// GitHub event's author and lets a member through; a non-member, or an
// event from elsewhere, is refused with the reason.
func TestTeamsAreAskedForGitHubEvents(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	var asked []string
	e, err := New(context.Background(), jsOf(t, connect(t, ns, "engine")), Config{
		TeamMember: func(_ context.Context, org, team, login string) (bool, error) {
			asked = append(asked, org+"/"+team+":"+login)
			return login == "carol", nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	def := config.Automation{Name: "t", On: &config.On{}, Prompt: "p", Allow: config.Triggerers{Teams: []string{"acme/core"}}}
	for _, tc := range []struct {
		src   orchestrator.Source
		login string
		why   string
	}{
		{orchestrator.SourceGitHub, "carol", ""},
		{orchestrator.SourceGitHub, "dave", "dave may not trigger t (allowed: teams acme/core)"},
		{orchestrator.SourceLinear, "carol", "carol may not trigger t (allowed: teams acme/core); teams are GitHub teams and this event is from linear"},
	} {
		got := e.refusal(context.Background(), def, trigger{kind: "event", event: &orchestrator.Event{Source: tc.src, Actor: orchestrator.Actor{Login: tc.login}}})
		if got != tc.why {
			t.Errorf("%s %s: refusal %q, want %q", tc.src, tc.login, got, tc.why)
		}
	}
	if strings.Join(asked, ",") != "acme/core:carol,acme/core:dave" {
		t.Errorf("asked %v", asked)
	}
}

// TestForgeEventsWithoutAllowNeedWriteAccess: an event automation without
// allow: takes a forge event only from someone with write access to the
// repository (anyone may open an issue on a public one), and says why not.
func TestForgeEventsWithoutAllowNeedWriteAccess(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.Automation{Name: "open", On: &config.On{Source: "github", Kind: "issue.labeled"}, Prompt: "look at {{.Target.URL}}"})
	h.event("issue.labeled", "mallory", "NONE", "x")
	r := h.waitRuns("open", "the refusal", func(r []Run) bool { return len(r) == 1 && r[0].Status != RunPending })
	if r[0].Status != RunRefused || !strings.Contains(r[0].Reason, "write access") {
		t.Fatalf("mallory's event: %+v", r[0])
	}
	h.event("issue.labeled", "alice", "MEMBER", "y")
	h.waitRuns("open", "alice's run", func(r []Run) bool { return len(withStatus(r, RunStarted)) == 1 })
}
