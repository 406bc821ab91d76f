package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/nightshift/nightshift/orchestrator/gateway"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/orchestrator/natsserver"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	db, err := OpenDB(filepath.Join(t.TempDir(), "nightshift.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st, err := NewStore(context.Background(), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func newBus(t *testing.T) *Bus {
	t.Helper()
	ns, err := natsserver.Start(natsserver.Config{StoreDir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := natsserver.Connect(ns, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	bus, err := NewBus(context.Background(), nc, BusConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return bus
}

func TestStateMachine(t *testing.T) {
	t.Parallel()
	cases := []struct {
		from, to State
		ok       bool
	}{
		{StateQueued, StateProvisioning, true},
		{StateProvisioning, StateRunning, true},
		{StateRunning, StateTesting, true},
		{StateTesting, StatePushing, true},
		{StatePushing, StateReview, true},
		{StateReview, StateDone, true},
		{StateRunning, StateProvisioning, true}, // redelivered after a crash
		{StateReview, StateQueued, true},        // follow-up or retry
		{StateFailed, StateQueued, true},        // retry
		{StateQueued, StateReview, false},
		{StateDone, StateRunning, false},
		{StateCancelled, StateProvisioning, false}, // a cancelled run cannot restart by itself
		{StateFailed, StateTesting, false},
		{StateRunning, StateRunning, true},
	}
	for _, c := range cases {
		if got := c.from.CanTransition(c.to); got != c.ok {
			t.Errorf("%s → %s: %v, want %v", c.from, c.to, got, c.ok)
		}
	}
	for _, s := range States {
		if !s.Valid() {
			t.Errorf("%s not valid", s)
		}
	}
	if State("bogus").Valid() {
		t.Error("bogus state valid")
	}
	// What each state allows, and that the state machine allows it too: a
	// retry or a follow-up requeues the task, a cancel ends it.
	for _, c := range []struct {
		s                          State
		cancel, retry, followUpNow bool
	}{
		{StateQueued, true, false, false},
		{StateProvisioning, true, false, false},
		{StateRunning, true, false, false},
		{StateTesting, true, false, false},
		{StatePushing, true, false, false},
		{StateReview, true, true, true},
		{StateNeedsInput, true, false, true},
		{StateDone, false, true, true},
		{StateFailed, false, true, true},
		{StateCancelled, true, true, true},
	} {
		if c.s.CanCancel() != c.cancel || c.s.CanRetry() != c.retry || c.s.Resting() != c.followUpNow {
			t.Errorf("%s: cancel %v retry %v resting %v, want %v %v %v", c.s, c.s.CanCancel(), c.s.CanRetry(), c.s.Resting(), c.cancel, c.retry, c.followUpNow)
		}
		if c.cancel && !c.s.CanTransition(StateCancelled) {
			t.Errorf("%s may be cancelled but cannot move to cancelled", c.s)
		}
		if (c.retry || c.followUpNow) && !c.s.CanTransition(StateQueued) {
			t.Errorf("%s may start a run but cannot move to queued", c.s)
		}
	}
}

func event(key string) *Event {
	return &Event{ID: NewID(), Source: SourceGitHub, Kind: KindComment, Repo: "https://github.com/acme/app.git",
		Target: Target{Type: "issue", Number: 7}, Instruction: "fix it", DeliveryID: "d-" + key, IdempotencyKey: key,
		ReceivedAt: time.Now()}
}

// move applies a transition the way a worker does: a claim of the current
// run for provisioning, a report under the run's lease otherwise.
func move(ctx context.Context, recs *Records, id string, to State, reason string, p Patch) (Task, error) {
	rec, _, err := recs.Get(ctx, id)
	if err != nil {
		return Task{}, err
	}
	if to == StateProvisioning && rec.Task.State == StateQueued {
		_, claimed, err := recs.Claim(ctx, id, rec.Task.Run, "test", 1, 0)
		return claimed.Task, err
	}
	return recs.Report(ctx, id, Fence{Run: rec.Lease.Run, Epoch: rec.Lease.Epoch}, to, reason, p)
}

func TestRecordsOneTaskPerKeyAndFollowUps(t *testing.T) {
	t.Parallel()
	bus, st := newBus(t), newStore(t)
	recs := bus.records
	ctx := context.Background()
	st.Follow(t.Context(), recs)
	first, err := recs.CreateFromEvent(ctx, event("comment:1"), "claude")
	if err != nil || !first.Created {
		t.Fatalf("create: %+v %v", first, err)
	}
	again, err := recs.CreateFromEvent(ctx, event("comment:1"), "claude")
	if err != nil || again.Created || again.FollowUp || again.Task.ID != first.Task.ID {
		t.Fatalf("same key: %+v %v", again, err)
	}
	// Another command on the same open target is a follow-up, once.
	fu, err := recs.CreateFromEvent(ctx, event("comment:2"), "claude")
	if err != nil || !fu.FollowUp || fu.Task.ID != first.Task.ID {
		t.Fatalf("follow-up: %+v %v", fu, err)
	}
	if fu2, _ := recs.CreateFromEvent(ctx, event("comment:2"), "claude"); !fu2.FollowUp || fu2.Task.ID != first.Task.ID {
		t.Fatalf("redelivered follow-up: %+v", fu2)
	}
	rec, _, err := recs.Get(ctx, first.Task.ID)
	if err != nil || len(rec.Messages) != 1 {
		t.Fatalf("pending messages: %v %v", rec.Messages, err)
	}
	// Once the task is finished, the same target starts a new task.
	if _, err := move(ctx, recs, first.Task.ID, StateProvisioning, "", Patch{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := recs.Fail(ctx, first.Task.ID, 1, "x", "failed"); err != nil {
		t.Fatal(err)
	}
	next, err := recs.CreateFromEvent(ctx, event("comment:3"), "claude")
	if err != nil || !next.Created || next.Task.ID == first.Task.ID {
		t.Fatalf("new task after the first failed: %+v %v", next, err)
	}
	if err := st.CatchUp(ctx, recs, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	list, err := st.List(ctx, Filter{States: []State{StateQueued}})
	if err != nil || len(list) != 1 || list[0].ID != next.Task.ID {
		t.Fatalf("list queued: %v %v", list, err)
	}
}

func TestRecordsTransitionsAreValidatedAndFenced(t *testing.T) {
	t.Parallel()
	recs := newBus(t).records
	ctx := context.Background()
	res, _ := recs.CreateFromEvent(ctx, event("k"), "claude")
	id := res.Task.ID
	if _, _, err := recs.Move(ctx, id, []State{StateQueued}, StateReview, "", Patch{}); !errors.As(err, new(*TransitionError)) {
		t.Fatalf("queued → review allowed: %v", err)
	}
	f1, _, err := recs.Claim(ctx, id, 1, "w1", 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	commit := "abc123"
	task, err := recs.Report(ctx, id, f1, StateRunning, "", Patch{Commit: &commit})
	if err != nil || task.Commit != commit || task.State != StateRunning {
		t.Fatalf("patch: %+v %v", task, err)
	}
	// A second copy of the work item (another stream sequence) is stale
	// while the run is held; a redelivery of the same item takes it over.
	if _, _, err := recs.Claim(ctx, id, 1, "w2", 1, 11); !errors.Is(err, ErrStale) {
		t.Fatalf("second copy claimed: %v", err)
	}
	f2, _, err := recs.Claim(ctx, id, 1, "w2", 2, 10)
	if err != nil || f2.Epoch != f1.Epoch+1 {
		t.Fatalf("redelivery: %+v %v", f2, err)
	}
	// The first delivery is fenced off: its reports and its push intent.
	if _, err := recs.Report(ctx, id, f1, StateTesting, "stale", Patch{}); !errors.Is(err, ErrFenced) {
		t.Fatalf("stale report: %v", err)
	}
	if _, err := recs.Intend(ctx, id, f1, PushIntent{Branch: "nightshift/" + id, Commit: "c1"}); !errors.Is(err, ErrFenced) {
		t.Fatalf("stale push intent: %v", err)
	}
	if _, err := recs.Report(ctx, id, f2, StateRunning, "", Patch{}); err != nil {
		t.Fatal(err)
	}
	// A run of an older number is stale.
	if _, _, err := recs.Claim(ctx, id, 0, "w3", 1, 12); !errors.Is(err, ErrStale) {
		t.Fatalf("old run claimed: %v", err)
	}
	// Cancel is immediate; the running delivery is fenced, but may record
	// its usage as it stops.
	if _, changed, err := recs.Cancel(ctx, id, "cancelled", Patch{}); err != nil || !changed {
		t.Fatalf("cancel: %v %v", changed, err)
	}
	if _, err := recs.Report(ctx, id, f2, StatePushing, "", Patch{}); !errors.Is(err, ErrFenced) {
		t.Fatalf("report after cancel: %v", err)
	}
	u := Usage{InputTokens: 5}
	if tk, err := recs.Report(ctx, id, f2, StateCancelled, "cancelled", Patch{Usage: &u}); err != nil || tk.Usage != u {
		t.Fatalf("usage after cancel: %+v %v", tk, err)
	}
	rec, _, _ := recs.Get(ctx, id)
	var got []State
	for _, tr := range rec.Transitions {
		got = append(got, tr.To)
	}
	want := []State{StateQueued, StateProvisioning, StateRunning, StateProvisioning, StateRunning, StateCancelled}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("transitions %v, want %v", got, want)
	}
}

// TestPushIntentsGiveExpectedBranchValues: a run's push may land only on
// the task's recorded commit, or on a push an older delivery announced.
func TestPushIntentsGiveExpectedBranchValues(t *testing.T) {
	t.Parallel()
	recs := newBus(t).records
	ctx := context.Background()
	res, _ := recs.CreateFromEvent(ctx, event("intent"), "claude")
	id, branch := res.Task.ID, res.Task.Branch
	f1, _, _ := recs.Claim(ctx, id, 1, "w1", 1, 1)
	olds, err := recs.Intend(ctx, id, f1, PushIntent{Branch: branch, Commit: "aaa"})
	if err != nil || len(olds) != 1 || olds[0] != "" { // the branch must not exist yet
		t.Fatalf("first intent: %q %v", olds, err)
	}
	f2, _, _ := recs.Claim(ctx, id, 1, "w2", 2, 1)
	olds, err = recs.Intend(ctx, id, f2, PushIntent{Branch: branch, Commit: "bbb"})
	if err != nil || len(olds) != 2 || olds[0] != "" || olds[1] != "aaa" {
		t.Fatalf("intent after a takeover: %q %v", olds, err)
	}
	c := "bbb"
	for _, s := range []State{StateRunning, StateTesting, StatePushing} {
		if _, err := recs.Report(ctx, id, f2, s, "", Patch{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := recs.Report(ctx, id, f2, StateReview, "pushed", Patch{Commit: &c}); err != nil {
		t.Fatal(err)
	}
	rec, _, _ := recs.Get(ctx, id)
	if len(rec.Intents) != 0 || rec.Task.Commit != "bbb" {
		t.Fatalf("after the push: %+v %q", rec.Intents, rec.Task.Commit)
	}
}

// TestRunThatKeepsCrashingFails: a run whose deliveries run out (every worker
// that took it died) fails the task instead of leaving it running forever.
func TestRunThatKeepsCrashingFails(t *testing.T) {
	t.Parallel()
	bus, st := newBus(t), newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sched := NewScheduler(bus, st, SchedulerConfig{DefaultAgent: "script"})
	done := make(chan error, 1)
	go func() { done <- sched.Run(ctx) }()
	// A worker consumer that gives up after one delivery and 100ms.
	cons, err := bus.js.CreateOrUpdateConsumer(ctx, WorkStream, jetstream.ConsumerConfig{Durable: "workers",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 100 * time.Millisecond, MaxDeliver: 1})
	if err != nil {
		t.Fatal(err)
	}
	ev := event("crashy")
	ev.Source, ev.Kind, ev.Target = SourceAPI, KindTaskRequested, Target{}
	if err := bus.Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var item WorkItem
	for m := range batch.Messages() {
		json.Unmarshal(m.Data(), &item) // taken, never acknowledged: the worker "crashed"
	}
	if item.TaskID == "" {
		t.Fatal("no run delivered")
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		task, err := bus.records.Task(ctx, item.TaskID)
		if err == nil && task.State == StateFailed {
			if task.Reason != "worker_lost" {
				t.Fatalf("reason %q", task.Reason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task still %s after its run ran out of deliveries", task.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
}

func TestPublishDuplicateDelivery(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	ctx := context.Background()
	ev := event("dup")
	if err := bus.Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if err := bus.Publish(ctx, ev); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("second publish: %v", err)
	}
	info, err := bus.js.Stream(ctx, EventsStream)
	if err != nil || info.CachedInfo().Config.Duplicates != DefaultDeliveryWindow {
		t.Fatalf("events stream window: %v", err)
	}
}

func TestEventEncodeKeepsRaw(t *testing.T) {
	t.Parallel()
	ev := event("raw")
	ev.Raw = json.RawMessage(`{"action":"created","n":[1,2]}`)
	b, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	var back Event
	if err := json.Unmarshal(b, &back); err != nil || string(back.Raw) != string(ev.Raw) || back.IdempotencyKey != "raw" {
		t.Fatalf("round trip: %s %v", b, err)
	}
}

type gateNotifier struct {
	release chan struct{}
	got     chan Task
}

func (g *gateNotifier) Notify(ctx context.Context, t Task) error {
	<-g.release
	g.got <- t
	return nil
}

// TestSlowReporterDoesNotHoldUpRecording: while a reporter hangs, events
// still become tasks; the reporter then gets every change, in order.
func TestSlowReporterDoesNotHoldUpRecording(t *testing.T) {
	t.Parallel()
	bus, st := newBus(t), newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := &gateNotifier{release: make(chan struct{}), got: make(chan Task, 16)}
	sched := NewScheduler(bus, st, SchedulerConfig{DefaultAgent: "script", Notifiers: []Notifier{n}})
	done := make(chan error, 1)
	go func() { done <- sched.Run(ctx) }()
	var ids []string
	for i := 0; i < 3; i++ {
		ev := event(fmt.Sprintf("slow-%d", i))
		ev.Source, ev.Kind, ev.Target, ev.TaskID = SourceAPI, KindTaskRequested, Target{}, NewID()
		if err := bus.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.TaskID)
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, id := range ids {
		for {
			if _, err := bus.records.Task(ctx, id); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %s not stored while the reporter hangs", id)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	close(n.release)
	for i, id := range ids {
		select {
		case got := <-n.got:
			if got.ID != id || got.State != StateQueued {
				t.Fatalf("notification %d: %s %s, want %s queued", i, got.ID, got.State, id)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("notification %d never came", i)
		}
	}
	cancel()
	<-done
}

// TestEventWithoutRepoFailsClearly: a trigger that names no repository
// becomes a failed task that says why, and no run is dispatched.
func TestEventWithoutRepoFailsClearly(t *testing.T) {
	t.Parallel()
	bus, st := newBus(t), newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sched := NewScheduler(bus, st, SchedulerConfig{DefaultAgent: "claude"})
	done := make(chan error, 1)
	go func() { done <- sched.Run(ctx) }()
	ev := event("linear-1")
	ev.Source, ev.Kind, ev.Repo, ev.TaskID = SourceLinear, KindTicketAssigned, "", NewID()
	ev.Target = Target{Type: "ticket", ID: "ENG-12"}
	if err := bus.Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		task, err := bus.records.Task(ctx, ev.TaskID)
		if err == nil && task.State == StateFailed {
			if task.Reason != "no_repo" || !strings.Contains(task.Error, "linear.repo") {
				t.Fatalf("reason %q error %q", task.Reason, task.Error)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task not failed: %+v %v", task, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	info, err := bus.js.Stream(ctx, WorkStream)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 0 {
		t.Fatalf("%d runs dispatched for a task without a repository", n)
	}
	cancel()
	<-done
}

// TestConcurrentWritersDoNotFail: the scheduler, the recorder and the API
// write the same database at once; read-then-write transactions must wait
// for each other instead of failing with SQLITE_BUSY.
// TestConcurrentWritersLoseNothing: writers racing on one task record (8
// at once adding follow-ups, while its run moves) each get their change in:
// a revision-checked update re-decides on what the winner wrote.
func TestConcurrentWritersLoseNothing(t *testing.T) {
	t.Parallel()
	recs := newBus(t).records
	ctx := context.Background()
	ev := event("busy")
	res, err := recs.CreateFromEvent(ctx, ev, "claude")
	if err != nil {
		t.Fatal(err)
	}
	id := res.Task.ID
	f, _, err := recs.Claim(ctx, id, 1, "w", 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				if _, _, err := recs.AddFollowUp(ctx, id, fmt.Sprintf("k%d-%d", g, i), "more", "me"); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, s := range []State{StateRunning, StateTesting, StatePushing} {
			if _, err := recs.Report(ctx, id, f, s, "", Patch{}); err != nil {
				errs <- err
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent write failed: %v", err)
	}
	rec, _, _ := recs.Get(ctx, id)
	if len(rec.Messages) != 80 || rec.Task.State != StatePushing {
		t.Fatalf("%d messages, state %s; want 80, pushing", len(rec.Messages), rec.Task.State)
	}
	// The run ends: the same write queues the follow-up run with every
	// message (no message can fall between the end and the wake).
	tk, err := recs.Report(ctx, id, f, StateReview, "pushed", Patch{})
	if err != nil || tk.State != StateQueued || tk.Run != 2 {
		t.Fatalf("after the run: %+v %v", tk, err)
	}
	rec, _, _ = recs.Get(ctx, id)
	if len(rec.Messages) != 0 || rec.Outbox != nil && len(rec.Outbox.Messages) != 80 {
		t.Fatalf("follow-up run: %d pending, outbox %+v", len(rec.Messages), rec.Outbox)
	}
}

// TestReactorRepairsAWriterThatDied: a writer that stored a transition and
// died before publishing what it owes (the state report, the run's work
// item) loses nothing: the scheduler's reactor publishes both, once.
func TestReactorRepairsAWriterThatDied(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	ctx := t.Context()
	recs := bus.records
	// The "writer": a record written straight into the bucket, as the
	// compare-and-swap leaves it, with nothing published after.
	now := time.Now().UTC()
	tk := Task{ID: NewID(), State: StateQueued, Repo: "/r", Branch: "nightshift/x", Agent: "script", Prompt: "p",
		Source: SourceAPI, Kind: KindTaskRequested, Run: 1, CreatedAt: now, UpdatedAt: now, IdempotencyKey: "died"}
	w := workItemOf(tk, false, nil)
	rec := Record{Task: tk, Outbox: &w, Transitions: []Transition{{To: StateQueued, Run: 1, At: now}}}
	data, _ := json.Marshal(rec)
	if _, err := recs.kv.Create(ctx, taskKey(tk.ID), data); err != nil {
		t.Fatal(err)
	}
	sched := NewScheduler(bus, nil, SchedulerConfig{DefaultAgent: "script"})
	// The reactor starts from new revisions: touch the record once more
	// the way a later writer would, leaving the outbox owed.
	done := make(chan error, 1)
	sctx, cancel := context.WithCancel(ctx)
	go func() { done <- sched.Run(sctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(200 * time.Millisecond) // the reactor's consumer exists
	if _, _, err := recs.AddFollowUp(ctx, tk.ID, "k", "more", "me"); err != nil {
		t.Fatal(err)
	}
	cons, err := bus.js.CreateOrUpdateConsumer(ctx, WorkStream, jetstream.ConsumerConfig{Durable: "workers",
		AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, wait := range []time.Duration{5 * time.Second, 300 * time.Millisecond} {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(wait))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			var got WorkItem
			json.Unmarshal(m.Data(), &got)
			if got.TaskID != tk.ID || got.Run != 1 {
				t.Fatalf("work item %+v", got)
			}
			m.Ack()
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d work items published for the owed run, want 1", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if seq, _ := bus.lastStateSeq(ctx, tk.ID); seq >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no state report republished")
		}
		time.Sleep(20 * time.Millisecond)
	}
	rec2, _, _ := recs.Get(ctx, tk.ID)
	if rec2.Outbox != nil {
		t.Fatalf("outbox still owed: %+v", rec2.Outbox)
	}
}

// TestAutomationLimitsReachTheRun: an automation's per-run budget and
// secret scopes ride from its event onto the task and its work items; the
// run's budget is the tighter of the repo's and the automation's.
func TestAutomationLimitsReachTheRun(t *testing.T) {
	t.Parallel()
	recs := newBus(t).records
	ev := event("auto")
	ev.Target = Target{}
	ev.Automation = &AutomationRun{Name: "nightly", Mode: ModeAnswer, BudgetTokens: 500, BudgetCostUSD: 0.5, SecretScopes: []string{"agents"}}
	res, err := recs.CreateFromEvent(t.Context(), ev, "claude")
	if err != nil {
		t.Fatal(err)
	}
	tk := res.Task
	if tk.Automation != "nightly" || tk.Mode != ModeAnswer || tk.BudgetTokens != 500 {
		t.Fatalf("task %+v", tk)
	}
	w := workItemOf(tk, false, nil)
	if w.BudgetTokens != 500 || w.BudgetCostUSD != 0.5 || w.Mode != ModeAnswer {
		t.Fatalf("work item %+v", w)
	}
	if got := tk.NarrowScopes([]string{"task:" + tk.ID, "agent:claude", "repo:x", "agents"}); len(got) != 1 || got[0] != "agents" {
		t.Fatalf("narrowed scopes %v", got)
	}
	if got := (Task{}).NarrowScopes([]string{"repo:x"}); len(got) != 1 {
		t.Fatalf("an unlimited task lost scopes: %v", got)
	}
	b := tighter(gateway.Budget{Tokens: 1000, CostUSD: 0}, gateway.Budget{Tokens: 500, CostUSD: 0.5})
	if b.Tokens != 500 || b.CostUSD != 0.5 {
		t.Fatalf("tighter %+v", b)
	}
	if b := tighter(gateway.Budget{Tokens: 100}, gateway.Budget{Tokens: 500}); b.Tokens != 100 {
		t.Fatalf("tighter kept the looser: %+v", b)
	}
}

// TestTasksStoredBeforeTheRecordsAreCarriedOver: tasks a database stored
// before the records bucket existed become records (transitions, pending
// follow-ups, pull request owner) once; a second pass carries nothing.
func TestTasksStoredBeforeTheRecordsAreCarriedOver(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, bus := newStore(t), newBus(t)
	now := ts(time.Now())
	// Rows as the SQLite store wrote them before: rev 0.
	if _, err := st.db.ExecContext(ctx, `INSERT INTO tasks(id, idempotency_key, state, run, repo, branch, agent, prompt, source, kind,
		target_key, event_json, pr_url, pr_key, created_at, updated_at) VALUES('oldtask1', 'k-old', 'review', 1, 'https://github.com/o/r.git',
		'nightshift/oldtask1', 'claude', 'fix it', 'github', 'comment.command', 'issue:3', '{}', 'https://github.com/o/r/pull/9',
		'https://github.com/o/r#9', ?, ?)`, now, now); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO task_transitions(task_id, run, from_state, to_state, reason, at) VALUES('oldtask1', 1, '', 'queued', 'created', '` + now + `')`,
		`INSERT INTO task_transitions(task_id, run, from_state, to_state, reason, at) VALUES('oldtask1', 1, 'pushing', 'review', 'pushed', '` + now + `')`,
		`INSERT INTO task_messages(task_id, text, actor, consumed, created_at) VALUES('oldtask1', 'and the docs', 'ada', 0, '` + now + `')`,
	} {
		if _, err := st.db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	n, err := st.MigrateToRecords(ctx, bus.records)
	if err != nil || n != 1 {
		t.Fatalf("migrate: %d %v", n, err)
	}
	rec, _, err := bus.records.Get(ctx, "oldtask1")
	if err != nil || rec.Task.State != StateReview || len(rec.Transitions) != 2 || len(rec.Messages) != 1 {
		t.Fatalf("record %+v %v", rec, err)
	}
	if tk, err := bus.records.TaskByPR(ctx, "https://github.com/o/r", 9); err != nil || tk.ID != "oldtask1" {
		t.Fatalf("pull request owner: %v %v", tk.ID, err)
	}
	if n, err := st.MigrateToRecords(ctx, bus.records); err != nil || n != 0 {
		t.Fatalf("second pass carried %d tasks (%v), want 0", n, err)
	}
	if rec2, _, _ := bus.records.Get(ctx, "oldtask1"); len(rec2.Messages) != 1 {
		t.Fatal("a second pass changed the record")
	}
}

// TestLostRunWaitsForItsTaskToBeFailed: a run that exhausted its deliveries
// while the records bucket takes no writes (a full disk under NATS: here
// the bucket's byte limit) stays in the work queue; once writes pass again
// the task is failed with worker_lost and only then is the run removed, so
// the task can always be retried.
func TestLostRunWaitsForItsTaskToBeFailed(t *testing.T) {
	t.Parallel()
	bus, st := newBus(t), newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cons, err := bus.js.CreateOrUpdateConsumer(ctx, WorkStream, jetstream.ConsumerConfig{Durable: "workers",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 300 * time.Millisecond, MaxDeliver: 1})
	if err != nil {
		t.Fatal(err)
	}
	sched := NewScheduler(bus, st, SchedulerConfig{DefaultAgent: "script"})
	done := make(chan error, 1)
	go func() { done <- sched.Run(ctx) }()
	ev := event("full-disk")
	ev.Source, ev.Kind, ev.Target = SourceAPI, KindTaskRequested, Target{}
	if err := bus.Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var item WorkItem
	var seq uint64
	for m := range batch.Messages() {
		json.Unmarshal(m.Data(), &item)
		md, _ := m.Metadata()
		seq = md.Sequence.Stream
	}
	if item.TaskID == "" {
		t.Fatal("no run delivered")
	}
	// The records bucket refuses writes from now on.
	rs, err := bus.js.Stream(ctx, "KV_"+RecordsBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := rs.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	full := info.Config
	full.MaxBytes, full.Discard = int64(info.State.Bytes), jetstream.DiscardNew
	if _, err := bus.js.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}
	work, err := bus.js.Stream(ctx, WorkStream)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // the advisory came; failing the task is refused
	if _, err := work.GetMsg(ctx, seq); err != nil {
		t.Fatalf("the run left the queue while its task could not be failed: %v", err)
	}
	if tk, _ := bus.records.Task(ctx, item.TaskID); tk.State.Resting() {
		t.Fatalf("task %s while its bucket took no writes", tk.State)
	}
	// Writes pass again.
	full.MaxBytes = -1
	if _, err := bus.js.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		tk, err := bus.records.Task(ctx, item.TaskID)
		_, gone := work.GetMsg(ctx, seq)
		if err == nil && tk.State == StateFailed && tk.Reason == "worker_lost" && gone != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after writes passed again: task %s (%s), run still queued: %v", tk.State, tk.Reason, gone == nil)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
}
