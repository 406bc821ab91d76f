package orchestrator

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator/natsserver"
)

// stuckTaskBus is a bus whose task "stuck" never has its lines stored:
// the tasks stream keeps only task "quiet"'s subjects, and a subscriber
// that never acknowledges answers the publishes of task "stuck".
func stuckTaskBus(t *testing.T) *Bus {
	t.Helper()
	bus := newBus(t)
	ctx := context.Background()
	info, err := bus.js.Stream(ctx, TasksStream)
	if err != nil {
		t.Fatal(err)
	}
	sc := info.CachedInfo().Config
	sc.Subjects = []string{"nightshift.tasks.quiet.>"}
	if _, err := bus.js.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	sub, err := bus.nc.SubscribeSync("nightshift.tasks.stuck.>") // receives, never acknowledges
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	return bus
}

// TestTaskLogFlushWaitsOnlyForItsOwnLines holds one task's lines in flight
// (their subject is answered by a subscriber that never acknowledges) while
// another task flushes: the flush returns once its own lines are stored.
func TestTaskLogFlushWaitsOnlyForItsOwnLines(t *testing.T) {
	bus := stuckTaskBus(t)
	ctx := context.Background()
	stuck := bus.TaskLogs("stuck")
	for i := range 100 {
		if err := stuck.Line(ctx, LogLine{Text: strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	quiet := bus.TaskLogs("quiet")
	for i := range 20 {
		if err := quiet.Line(ctx, LogLine{Text: strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := quiet.Flush(fctx); err != nil {
		t.Fatalf("the quiet task's flush waited on the stuck task's lines: %v", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := stuck.Flush(sctx); err == nil || !strings.Contains(err.Error(), "not all stored (100 waiting)") {
		t.Fatalf("flush of the stuck task: %v", err)
	}
}

// TestTaskLogLinesKeepOrderUnderLoad keeps one task's lines streaming while
// another task flushes: the flush returns promptly, and both tasks' lines
// are stored, each in the order sent.
func TestTaskLogLinesKeepOrderUnderLoad(t *testing.T) {
	bus := newBus(t)
	ctx := context.Background()
	busy := bus.TaskLogs("busy")
	var sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pad := strings.Repeat("x", 512)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := busy.Line(ctx, LogLine{Run: 1, Stream: "agent", Text: strconv.Itoa(i) + " " + pad}); err != nil {
				t.Error(err)
				return
			}
			sent.Add(1)
		}
	}()
	for sent.Load() < 2000 {
		time.Sleep(time.Millisecond)
	}

	quiet := bus.TaskLogs("quiet")
	for i := range 20 {
		if err := quiet.Line(ctx, LogLine{Run: 1, Stream: "agent", Text: strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	start := time.Now()
	err := quiet.Flush(fctx)
	took := time.Since(start)
	cancel()
	busySent := sent.Load()
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("flush of the quiet task while the busy one streams: %v (after %s)", err, took)
	}
	if took > 3*time.Second {
		t.Fatalf("flush of the quiet task took %s", took)
	}
	if err := busy.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("quiet flush took %s while the busy task sent %d lines", took, busySent)

	for _, c := range []struct {
		id   string
		want int
	}{{"quiet", 20}, {"busy", int(sent.Load())}} {
		n := 0
		err := bus.Watch(ctx, c.id, false, func(m TaskMessage) error {
			if m.Log == nil {
				return nil
			}
			got, _, _ := strings.Cut(m.Log.Text, " ")
			if got != strconv.Itoa(n) {
				return fmt.Errorf("line %d of task %s reads %q: out of order", n, c.id, got)
			}
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n != c.want {
			t.Fatalf("task %s: %d lines stored, want %d", c.id, n, c.want)
		}
	}
	if lost := bus.LogLinesLost(); lost != 0 {
		t.Fatalf("%d lines lost", lost)
	}
}

// TestTaskLogLossIsCountedAndReported sends lines while the server is gone:
// they are not acknowledged, so Flush reports them and the bus counts them.
func TestTaskLogLossIsCountedAndReported(t *testing.T) {
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
	ctx := context.Background()
	bus, err := NewBus(ctx, nc, BusConfig{LogAckTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	tl := bus.TaskLogs("t1")
	if err := tl.Line(ctx, LogLine{Text: "stored"}); err != nil {
		t.Fatal(err)
	}
	if err := tl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	for range 3 {
		if err := tl.Line(ctx, LogLine{Text: "lost"}); err != nil {
			t.Fatalf("Line must not fail for a line NATS does not store: %v", err)
		}
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err = tl.Flush(fctx)
	if err == nil || !strings.Contains(err.Error(), "3 log lines of task t1 were not stored") {
		t.Fatalf("flush after losing lines: %v", err)
	}
	if lost := bus.LogLinesLost(); lost != 3 {
		t.Fatalf("LogLinesLost = %d, want 3", lost)
	}
}

// TestTaskLogLineDoesNotWaitBehindAFlush flushes a task whose lines are
// never acknowledged (as the worker flushes its run's logger at the end of
// a run): while that flush waits, the same task's next line is still sent
// at once, and a flush of the stuck task gives up when its context ends.
func TestTaskLogLineDoesNotWaitBehindAFlush(t *testing.T) {
	bus := stuckTaskBus(t)
	stuck := bus.TaskLogs("stuck")
	ctx := context.Background()
	for i := range 10 {
		if err := stuck.Line(ctx, LogLine{Text: strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	flushed := make(chan error, 1)
	go func() {
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		flushed <- stuck.Flush(fctx)
	}()
	time.Sleep(200 * time.Millisecond) // the flush is waiting now
	start := time.Now()
	if err := stuck.Line(ctx, LogLine{Text: "during the flush"}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Fatalf("a line waited %s behind the flush of its task", took)
	}
	if err := <-flushed; err == nil || !strings.Contains(err.Error(), "not all stored") {
		t.Fatalf("Flush over unacknowledged lines: %v", err)
	}
}
