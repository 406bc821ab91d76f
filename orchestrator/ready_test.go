package orchestrator

import (
	"context"
	"errors"
	"github.com/nats-io/nats.go/jetstream"
	"sync/atomic"
	"testing"
	"time"
)

// TestWorkerThatIsNotReadyTakesNoRun: a worker whose Ready check fails (its
// disk is full) leaves runs in the queue; once ready it takes them.
func TestWorkerThatIsNotReadyTakesNoRun(t *testing.T) {
	t.Parallel()
	var full atomic.Bool
	full.Store(true)
	p := startPipeline(t, func(c *WorkerConfig) {
		c.Ready = func(context.Context) error {
			if full.Load() {
				return errors.New("disk: no space left on device")
			}
			return nil
		}
	})
	id := p.submit(t, "fix the bug")
	time.Sleep(1500 * time.Millisecond)
	if tk, _ := p.bus.Records().Task(context.Background(), id); tk.State != StateQueued {
		t.Fatalf("a worker that is not ready took the run: %s", tk.State)
	}
	full.Store(false)
	if r := p.waitRest(t, id); r.Task.State != StateReview {
		t.Fatalf("after the disk came back: %s (%s)", r.Task.State, r.Task.Error)
	}
}

// TestWorkerHoldsARunItCannotClaimYet: while the records bucket takes no
// writes, a worker keeps the run it fetched (heartbeats) and tries its claim
// again instead of spending the run's deliveries in seconds; once writes
// pass, the same run goes on to review.
func TestWorkerHoldsARunItCannotClaimYet(t *testing.T) {
	t.Parallel()
	var ready atomic.Bool
	p := startPipeline(t, func(c *WorkerConfig) {
		c.Ready = func(context.Context) error {
			if !ready.Load() {
				return errors.New("not yet")
			}
			return nil
		}
	})
	ctx := context.Background()
	id := p.submit(t, "fix the bug")
	rs, err := p.bus.js.Stream(ctx, "KV_"+RecordsBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := rs.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	full := info.Config
	full.MaxBytes, full.Discard = int64(info.State.Bytes), jetstream.DiscardNew
	if _, err := p.bus.js.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}
	ready.Store(true) // the worker takes the run now, and cannot claim it
	// Longer than three deliveries handed back at once would last.
	time.Sleep(8 * time.Second)
	full.MaxBytes = -1
	if _, err := p.bus.js.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}
	if r := p.waitRest(t, id); r.Task.State != StateReview {
		t.Fatalf("after writes passed again: %s (%s: %s)", r.Task.State, r.Task.Reason, r.Task.Error)
	}
}
