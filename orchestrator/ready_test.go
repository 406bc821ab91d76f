package orchestrator

import (
	"context"
	"errors"
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
