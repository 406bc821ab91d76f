package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TaskMessage is one message about a task as read back from the task stream:
// a state report, a log line or a diff.
type TaskMessage struct {
	// Type is "state", "log" or "diff".
	Type  string
	Seq   uint64
	State *StateReport
	Log   *LogLine
	Diff  *DiffReport
}

// Watch streams every message about task id, from the first, and then live
// until ctx is done. With follow false it returns once it has caught up.
func (b *Bus) Watch(ctx context.Context, id string, follow bool, fn func(TaskMessage) error) error {
	return b.watch(ctx, []string{TaskSubjects(id)}, jetstream.DeliverAllPolicy, follow, fn)
}

// WatchStates streams state reports of all tasks from now on until ctx is done.
func (b *Bus) WatchStates(ctx context.Context, fn func(TaskMessage) error) error {
	return b.watch(ctx, []string{StatesWildcard}, jetstream.DeliverNewPolicy, true, fn)
}

func (b *Bus) watch(ctx context.Context, subjects []string, policy jetstream.DeliverPolicy, follow bool, fn func(TaskMessage) error) error {
	cons, err := b.js.OrderedConsumer(ctx, TasksStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: subjects, DeliverPolicy: policy})
	if err != nil {
		return fmt.Errorf("watch %v: %w", subjects, err)
	}
	if !follow {
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumPending == 0 {
			return nil
		}
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			return err
		}
		md, _ := msg.Metadata()
		tm := TaskMessage{}
		if md != nil {
			tm.Seq = md.Sequence.Stream
		}
		subj := msg.Subject()
		switch {
		case strings.HasSuffix(subj, ".state"):
			tm.Type, tm.State = "state", &StateReport{}
			err = json.Unmarshal(msg.Data(), tm.State)
		case strings.HasSuffix(subj, ".log"):
			tm.Type, tm.Log = "log", &LogLine{}
			err = json.Unmarshal(msg.Data(), tm.Log)
		case strings.HasSuffix(subj, ".diff"):
			tm.Type, tm.Diff = "diff", &DiffReport{}
			err = json.Unmarshal(msg.Data(), tm.Diff)
		default:
			continue
		}
		if err != nil {
			continue
		}
		if err := fn(tm); err != nil {
			return err
		}
		if !follow && md != nil && md.NumPending == 0 {
			return nil
		}
	}
}

// PublishEventWait is Publish with a default timeout when ctx has none.
func (b *Bus) PublishEventWait(ctx context.Context, ev *Event) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	return b.Publish(ctx, ev)
}

// TaskLogger publishes the log lines of one run of a task. Lines go out
// without waiting for their PubAck, in the order Line is called; Flush waits
// for this task's acknowledgements only, never for other tasks' lines. A
// line NATS did not store (refused, or not acknowledged within
// BusConfig.LogAckTimeout) is counted in Bus.LogLinesLost, logged once per
// TaskLogger, and reported by Flush: never dropped silently.
type TaskLogger struct {
	bus    *Bus
	taskID string

	// waitMu is held by whoever waits for acknowledgements (Flush, a Line
	// with too many lines in flight): only its holder takes futures off
	// pending, so sending (under mu) never waits behind a flush.
	waitMu sync.Mutex
	mu     sync.Mutex
	// pending are the lines in flight, in send order.
	pending []jetstream.PubAckFuture
	lost    int
	first   error // the first loss
}

// maxTaskLogInFlight bounds one task's lines awaiting their PubAck; past it
// Line waits for the oldest, so one chatty task cannot fill the
// connection's window (4096 lines) for all the others.
const maxTaskLogInFlight = 1024

// TaskLogs returns a log publisher for task id's lines.
func (b *Bus) TaskLogs(taskID string) *TaskLogger {
	return &TaskLogger{bus: b, taskID: taskID}
}

// LogLinesLost counts the log lines NATS did not store since start.
func (b *Bus) LogLinesLost() uint64 { return b.logLost.Load() }

// Line sends l (its TaskID is the logger's). It returns an error only when
// ctx ends before the line could be handed to NATS; a line handed over but
// not stored is counted as lost (see TaskLogger).
func (t *TaskLogger) Line(ctx context.Context, l LogLine) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lineLocked(ctx, l)
}

// lineLocked sends l with mu held; it lets mu go while it waits for room.
func (t *TaskLogger) lineLocked(ctx context.Context, l LogLine) error {
	l.TaskID = t.taskID
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	if t.waitMu.TryLock() { // nobody is waiting: drop what is settled
		t.reapLocked()
		t.waitMu.Unlock()
	}
	for {
		if len(t.pending) >= maxTaskLogInFlight {
			if err := t.waitOldestUnlocked(ctx); err != nil {
				return err
			}
			continue
		}
		f, err := t.bus.js.PublishAsync(LogSubject(t.taskID), data)
		if err == nil {
			t.pending = append(t.pending, f)
			return nil
		}
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			t.lossLocked(err)
			return nil
		}
		// Other tasks' lines fill the connection's window: wait for one
		// of ours, or a moment, rather than drop this one.
		if len(t.pending) > 0 {
			if err := t.waitOldestUnlocked(ctx); err != nil {
				return err
			}
			continue
		}
		t.mu.Unlock()
		select {
		case <-ctx.Done():
			t.mu.Lock()
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		t.mu.Lock()
	}
}

// waitOldestUnlocked lets mu go, waits for the oldest line in flight, and
// takes mu again.
func (t *TaskLogger) waitOldestUnlocked(ctx context.Context) error {
	t.mu.Unlock()
	defer t.mu.Lock()
	t.waitMu.Lock()
	defer t.waitMu.Unlock()
	_, err := t.settleOldest(ctx)
	return err
}

// Flush waits until every line sent before it is stored or counted lost,
// or ctx ends; without a deadline on ctx it waits at most LogAckTimeout
// plus a margin. It returns an error when ctx ended first or when lines
// were lost.
func (t *TaskLogger) Flush(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.bus.logAckTimeout+5*time.Second)
		defer cancel()
	}
	t.waitMu.Lock()
	defer t.waitMu.Unlock()
	t.mu.Lock()
	n := len(t.pending)
	t.mu.Unlock()
	for ; n > 0; n-- {
		if _, err := t.settleOldest(ctx); err != nil {
			t.mu.Lock()
			waiting := len(t.pending)
			t.mu.Unlock()
			return fmt.Errorf("log lines of task %s not all stored (%d waiting): %w", t.taskID, waiting, err)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lost > 0 {
		return fmt.Errorf("%d log lines of task %s were not stored: %w", t.lost, t.taskID, t.first)
	}
	return nil
}

// settleOldest waits for the oldest line in flight and takes it off
// pending; the caller holds waitMu (so the head stays put) but not mu.
func (t *TaskLogger) settleOldest(ctx context.Context) (bool, error) {
	t.mu.Lock()
	if len(t.pending) == 0 {
		t.mu.Unlock()
		return false, nil
	}
	f := t.pending[0]
	t.mu.Unlock()
	var lost error
	select {
	case <-f.Ok():
	case lost = <-f.Err():
	case <-ctx.Done():
		return false, ctx.Err()
	}
	t.mu.Lock()
	if lost != nil {
		t.lossLocked(lost)
	}
	t.pending[0] = nil
	t.pending = t.pending[1:]
	t.mu.Unlock()
	return true, nil
}

// reapLocked drops the lines at the head that are already settled; the
// caller holds waitMu and mu.
func (t *TaskLogger) reapLocked() {
	for len(t.pending) > 0 {
		f := t.pending[0]
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.lossLocked(err)
		default:
			return
		}
		t.pending[0] = nil
		t.pending = t.pending[1:]
	}
}

func (t *TaskLogger) lossLocked(err error) {
	t.bus.logLost.Add(1)
	t.lost++
	if t.first == nil {
		t.first = err
		if t.bus.log != nil {
			t.bus.log.Warn("a log line of a task was not stored; further losses of this task are counted in nightshift_log_lines_lost_total",
				"task_id", t.taskID, "err", err)
		}
	}
}
