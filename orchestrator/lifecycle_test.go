package orchestrator

import (
	"context"
	"strconv"
	"testing"
	"time"
)

func TestPRKey(t *testing.T) {
	t.Parallel()
	cases := []struct {
		repo, url, want string
	}{
		{"https://github.com/o/r.git", "https://github.com/o/r/pull/5", "https://github.com/o/r#5"},
		{"https://GitHub.com/O/R/", "https://github.com/O/R/pull/12/", "https://github.com/o/r#12"},
		{"https://github.com/o/r.git", "https://github.com/o/r/tree/nightshift/x", ""},
		{"/srv/repo", "", ""},
		{"https://github.com/o/r", "https://github.com/o/r/pull/abc", ""},
		{"http://127.0.0.1:3000/o/r.git", "http://127.0.0.1:3000/o/r/pulls/7", "http://127.0.0.1:3000/o/r#7"},
		{"https://gitlab.example.com/g/s/r.git", "https://gitlab.example.com/g/s/r/-/merge_requests/3", "https://gitlab.example.com/g/s/r#3"},
	}
	for _, c := range cases {
		if got := prKeyOf(c.repo, c.url); got != c.want {
			t.Errorf("prKeyOf(%q, %q) = %q, want %q", c.repo, c.url, got, c.want)
		}
	}
}

// TestSchedulerRoutesPullRequestEvents: events about a pull request reach
// the task that owns it (follow-ups, once per delivery; merge → done, close
// → cancelled) and events about pull requests no task owns start nothing.
func TestSchedulerRoutesPullRequestEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, bus := newStore(t), newBus(t)
	s := NewScheduler(bus, st, SchedulerConfig{DefaultAgent: "script"})
	const repo = "https://github.com/o/r.git"
	toReview := func(id string, pr int) {
		t.Helper()
		url := "https://github.com/o/r/pull/" + strconv.Itoa(pr)
		for _, to := range []State{StateProvisioning, StateRunning, StateTesting, StatePushing, StateReview} {
			p := Patch{}
			if to == StateReview {
				p.PRURL = &url
			}
			if _, err := move(ctx, bus.records, id, to, "", p); err != nil {
				t.Fatal(err)
			}
		}
	}
	create := func(key string, issue int) string {
		t.Helper()
		ev := &Event{Source: SourceGitHub, Kind: KindComment, Repo: repo, IdempotencyKey: key, DeliveryID: key,
			Instruction: "do it", Target: Target{Type: "issue", Number: issue}}
		if err := s.apply(ctx, ev); err != nil {
			t.Fatal(err)
		}
		tk, err := bus.records.CreateFromEvent(ctx, ev, "script") // the same key: returns the task
		if err != nil {
			t.Fatal(err)
		}
		return tk.Task.ID
	}
	id := create("github:comment:1", 1)
	toReview(id, 5)
	st.Follow(t.Context(), bus.records)
	count := func() int {
		if err := st.CatchUp(ctx, bus.records, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		ts, err := st.List(ctx, Filter{})
		if err != nil {
			t.Fatal(err)
		}
		return len(ts)
	}
	pr := func(kind, key string, number int) *Event {
		return &Event{Source: SourceGitHub, Kind: kind, Repo: repo, IdempotencyKey: key, DeliveryID: key, Instruction: "feedback " + key,
			Target: Target{Type: "pull_request", Number: number}}
	}
	steps := []struct {
		name  string
		ev    *Event
		state State
		run   int
	}{
		{"feedback on a pull request no task owns", pr(KindPRFeedback, "github:review_comment:1", 6), StateReview, 1},
		{"review comment on the task's pull request", pr(KindPRFeedback, "github:review_comment:2", 5), StateQueued, 2},
		{"the same review comment redelivered", pr(KindPRFeedback, "github:review_comment:2", 5), StateReview, 2},
		{"a trigger comment on the pull request", pr(KindComment, "github:comment:3", 5), StateQueued, 3},
		{"a CI failure on the task's branch", &Event{Source: SourceGitHub, Kind: KindCIFailed, Repo: "https://github.com/O/R", IdempotencyKey: "github:status:4",
			Instruction: "fix CI", Target: Target{Type: "branch", Branch: BranchName(id)}}, StateQueued, 4},
		{"the merge", pr(KindPRMerged, "github:pull_request:merged", 5), StateDone, 4},
		{"feedback after the merge", pr(KindPRFeedback, "github:review:5", 5), StateDone, 4},
	}
	for _, c := range steps {
		tk, _ := bus.records.Task(ctx, id)
		if tk.State == StateQueued {
			toReview(id, 5) // the follow-up run ran and rests again
		}
		if err := s.apply(ctx, c.ev); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		tk, err := bus.records.Task(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if tk.State != c.state || tk.Run != c.run {
			t.Errorf("%s: task %s run %d, want %s run %d", c.name, tk.State, tk.Run, c.state, c.run)
		}
		if n := count(); n != 1 {
			t.Fatalf("%s: %d tasks, want 1", c.name, n)
		}
	}
	if tk, _ := bus.records.Task(ctx, id); tk.Reason != "merged" {
		t.Errorf("reason after the merge %q", tk.Reason)
	}

	// A second task on the same issue; its pull request is closed unmerged.
	id2 := create("github:comment:9", 1)
	if id2 == id {
		t.Fatal("a comment on the issue of a done task followed it up")
	}
	toReview(id2, 7)
	if err := s.apply(ctx, pr(KindPRClosed, "github:pull_request:closed", 7)); err != nil {
		t.Fatal(err)
	}
	if tk, _ := bus.records.Task(ctx, id2); tk.State != StateCancelled || tk.Reason != "pull request closed" {
		t.Errorf("after the close: %s (%s)", tk.State, tk.Reason)
	}
}

// TestStoreBackfillsPRKeys: tasks stored before pr_key existed are found
// by their pull request once the store opens again.
func TestStoreBackfillsPRKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, bus := newStore(t), newBus(t)
	st.Follow(t.Context(), bus.records)
	ev := &Event{Source: SourceAPI, Kind: KindTaskRequested, Repo: "https://github.com/o/r.git", IdempotencyKey: "k"}
	res, err := bus.records.CreateFromEvent(ctx, ev, "script")
	if err != nil {
		t.Fatal(err)
	}
	url := "https://github.com/o/r/pull/3"
	if _, err := move(ctx, bus.records, res.Task.ID, StateProvisioning, "", Patch{}); err != nil {
		t.Fatal(err)
	}
	if _, err := move(ctx, bus.records, res.Task.ID, StateRunning, "", Patch{PRURL: &url}); err != nil {
		t.Fatal(err)
	}
	if err := st.CatchUp(ctx, bus.records, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if tk, err := st.TaskByPR(ctx, "https://github.com/o/r", 3); err != nil || tk.ID != res.Task.ID {
		t.Fatalf("TaskByPR: %v %v", tk.ID, err)
	}
	if _, err := st.db.ExecContext(ctx, `UPDATE tasks SET pr_key=''`); err != nil {
		t.Fatal(err)
	}
	if _, err := st.TaskByPR(ctx, "https://github.com/o/r", 3); err != ErrNotFound {
		t.Fatalf("before the backfill: %v", err)
	}
	st2, err := NewStore(ctx, st.db, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tk, err := st2.TaskByPR(ctx, "https://github.com/o/r.git", 3); err != nil || tk.ID != res.Task.ID {
		t.Fatalf("after the backfill: %v %v", tk.ID, err)
	}
}
