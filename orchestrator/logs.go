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

	mu      sync.Mutex
	pending []jetstream.PubAckFuture // in send order
	lost    int
	first   error // the first loss
	retired bool  // publishLog's map let it go
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

func (t *TaskLogger) lineLocked(ctx context.Context, l LogLine) error {
	l.TaskID = t.taskID
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	t.reapLocked()
	for len(t.pending) >= maxTaskLogInFlight {
		if err := t.waitOldestLocked(ctx); err != nil {
			return err
		}
	}
	for {
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
			if err := t.waitOldestLocked(ctx); err != nil {
				return err
			}
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Flush waits until every line sent so far is stored or counted lost, or
// ctx ends; without a deadline on ctx it waits at most LogAckTimeout plus
// a margin. It returns an error when ctx ended first or when lines were
// lost.
func (t *TaskLogger) Flush(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.bus.logAckTimeout+5*time.Second)
		defer cancel()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.pending) > 0 {
		if err := t.waitOldestLocked(ctx); err != nil {
			return fmt.Errorf("log lines of task %s not all stored (%d waiting): %w", t.taskID, len(t.pending), err)
		}
	}
	if t.lost > 0 {
		return fmt.Errorf("%d log lines of task %s were not stored: %w", t.lost, t.taskID, t.first)
	}
	return nil
}

// waitOldestLocked waits for the oldest line in flight.
func (t *TaskLogger) waitOldestLocked(ctx context.Context) error {
	f := t.pending[0]
	select {
	case <-f.Ok():
	case err := <-f.Err():
		t.lossLocked(err)
	case <-ctx.Done():
		return ctx.Err()
	}
	t.pending[0] = nil
	t.pending = t.pending[1:]
	return nil
}

// reapLocked drops the lines at the head that are already settled.
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
