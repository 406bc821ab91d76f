package automation

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/config"
)

// TestRunsExpireGuardRailsStay: runs (and their task index and inbox
// marks) expire RunRetention after their last write, by default 90 days,
// while an automation's guard-rail state (its pause, failure count, last
// tick) is kept; runs an older engine kept in the state bucket move to the
// runs bucket at start.
func TestRunsExpireGuardRailsStay(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	ctx := context.Background()
	js := jsOf(t, connect(t, ns, "engine"))

	// What an engine before the runs bucket left: everything in one
	// bucket that never expired.
	old, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: StateBucket})
	if err != nil {
		t.Fatal(err)
	}
	oldRun, _ := json.Marshal(Run{ID: "0000000000001-old", Automation: "n", Status: RunSucceeded})
	for k, v := range map[string][]byte{runKey("n", "0000000000001-old"): oldRun, taskKey("T1"): []byte("n.0000000000001-old"),
		"read.abc.0000000000001-old": []byte("x"), stateKey("n"): []byte(`{"paused":true,"paused_reason":"r","failures":3}`)} {
		if _, err := old.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}

	e, err := New(ctx, js, Config{RunRetention: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Seed(ctx, []config.Automation{{Name: "n", Schedule: "@every 1h", Repo: "github.com/acme/api", Prompt: "p"}}); err != nil {
		t.Fatal(err)
	}
	runs, err := e.Runs(ctx, "n", 0)
	if err != nil || len(runs) != 1 || runs[0].ID != "0000000000001-old" {
		t.Fatalf("runs after the move: %+v %v", runs, err)
	}
	for _, k := range []string{runKey("n", "0000000000001-old"), taskKey("T1"), "read.abc.0000000000001-old"} {
		if _, err := old.Get(ctx, k); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("%s still in the state bucket: %v", k, err)
		}
	}
	rb, err := js.KeyValue(ctx, RunsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := rb.Status(ctx); st.TTL() != time.Second {
		t.Fatalf("runs bucket TTL %s", st.TTL())
	}

	time.Sleep(2500 * time.Millisecond)
	if runs, err := e.Runs(ctx, "n", 0); err != nil || len(runs) != 0 {
		t.Fatalf("runs past their retention: %+v %v", runs, err)
	}
	if st, err := e.State(ctx, "n"); err != nil || !st.Paused || st.Failures != 3 {
		t.Fatalf("guard-rail state did not stay: %+v %v", st, err)
	}

	// The default keeps runs 90 days.
	e2, err := New(ctx, js, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := e2.kv.runs.Status(ctx); st.TTL() != 90*24*time.Hour {
		t.Fatalf("default runs bucket TTL %s, want 90 days", st.TTL())
	}
}
