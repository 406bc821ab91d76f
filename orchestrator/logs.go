package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
