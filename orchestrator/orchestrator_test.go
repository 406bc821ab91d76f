package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

func TestStoreOneTaskPerKeyAndFollowUps(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	first, err := st.CreateFromEvent(ctx, event("comment:1"), "claude")
	if err != nil || !first.Created {
		t.Fatalf("create: %+v %v", first, err)
	}
	again, err := st.CreateFromEvent(ctx, event("comment:1"), "claude")
	if err != nil || again.Created || again.FollowUp || again.Task.ID != first.Task.ID {
		t.Fatalf("same key: %+v %v", again, err)
	}
	// Another command on the same open target is a follow-up, once.
	fu, err := st.CreateFromEvent(ctx, event("comment:2"), "claude")
	if err != nil || !fu.FollowUp || fu.Task.ID != first.Task.ID {
		t.Fatalf("follow-up: %+v %v", fu, err)
	}
	if fu2, _ := st.CreateFromEvent(ctx, event("comment:2"), "claude"); !fu2.FollowUp || fu2.Task.ID != first.Task.ID {
		t.Fatalf("redelivered follow-up: %+v", fu2)
	}
	msgs, err := st.PendingMessages(ctx, first.Task.ID)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("pending messages: %v %v", msgs, err)
	}
	// Once the task is finished, the same target starts a new task.
	for _, s := range []State{StateProvisioning, StateFailed} {
		if _, _, err := st.ApplyTransition(ctx, first.Task.ID, 1, s, "", Patch{}); err != nil {
			t.Fatal(err)
		}
	}
	next, err := st.CreateFromEvent(ctx, event("comment:3"), "claude")
	if err != nil || !next.Created || next.Task.ID == first.Task.ID {
		t.Fatalf("new task after the first failed: %+v %v", next, err)
	}
	list, err := st.List(ctx, Filter{States: []State{StateQueued}})
	if err != nil || len(list) != 1 || list[0].ID != next.Task.ID {
		t.Fatalf("list queued: %v %v", list, err)
	}
}

func TestStoreTransitionsAreValidatedAndRecorded(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	res, _ := st.CreateFromEvent(ctx, event("k"), "claude")
	id := res.Task.ID
	if _, _, err := st.ApplyTransition(ctx, id, 1, StateReview, "", Patch{}); !errors.As(err, new(*TransitionError)) {
		t.Fatalf("queued → review allowed: %v", err)
	}
	commit := "abc123"
	if _, _, err := st.ApplyTransition(ctx, id, 1, StateProvisioning, "run 1", Patch{}); err != nil {
		t.Fatal(err)
	}
	task, changed, err := st.ApplyTransition(ctx, id, 1, StateRunning, "", Patch{Commit: &commit})
	if err != nil || !changed || task.Commit != commit || task.State != StateRunning {
		t.Fatalf("patch: %+v %v %v", task, changed, err)
	}
	// A report from an older run is ignored.
	run := 2
	if _, _, err := st.ApplyTransition(ctx, id, 1, StateQueued, "retry", Patch{Run: &run}); err != nil {
		t.Fatal(err)
	}
	if _, changed, err := st.ApplyTransition(ctx, id, 1, StateProvisioning, "stale", Patch{}); err != nil || changed {
		t.Fatalf("stale report applied: %v %v", changed, err)
	}
	trs, err := st.Transitions(ctx, id)
	if err != nil || len(trs) != 4 {
		t.Fatalf("transitions: %+v %v", trs, err)
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
		task, err := st.Get(ctx, item.TaskID)
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
			if _, err := st.Get(ctx, id); err == nil {
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
		task, err := st.Get(ctx, ev.TaskID)
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
func TestConcurrentWritersDoNotFail(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				ev := event(fmt.Sprintf("w%d-%d", g, i))
				ev.Target = Target{}
				res, err := st.CreateFromEvent(ctx, ev, "claude")
				if err != nil {
					errs <- err
					continue
				}
				if _, _, err := st.ApplyTransition(ctx, res.Task.ID, 1, StateProvisioning, "", Patch{}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent write failed: %v", err)
	}
}
