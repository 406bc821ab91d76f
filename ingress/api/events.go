package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/orchestrator"
)

// TaskEvent is the data of an "task" event on GET /api/v1/events: a task
// changed state. Task is the task as stored, with the reported state and
// changes applied when the report is not stored yet.
type TaskEvent struct {
	TaskID string             `json:"task_id"`
	State  orchestrator.State `json:"state"`
	Reason string             `json:"reason,omitempty"`
	At     time.Time          `json:"at"`
	Task   orchestrator.Task  `json:"task"`
}

// Snapshot is the data of the "snapshot" event that opens GET
// /api/v1/events: the newest tasks matching the filter.
type Snapshot struct {
	Tasks []orchestrator.Task `json:"tasks"`
}

// sse writes Server-Sent Events.
type sse struct {
	w  http.ResponseWriter
	fl http.Flusher
}

func startSSE(w http.ResponseWriter, comment string) (*sse, bool) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming unsupported")
		return nil, false
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, ": %s\nretry: 2000\n\n", comment)
	fl.Flush()
	return &sse{w: w, fl: fl}, true
}

func (e *sse) send(id uint64, event string, data any) {
	b, _ := json.Marshal(data)
	if id > 0 {
		fmt.Fprintf(e.w, "id: %d\n", id)
	}
	fmt.Fprintf(e.w, "event: %s\ndata: %s\n\n", event, b)
	e.fl.Flush()
}

func (e *sse) comment(s string) {
	fmt.Fprintf(e.w, ": %s\n\n", s)
	e.fl.Flush()
}

// allEvents streams every task's state changes: a snapshot of the newest
// tasks first, then one "task" event per change, live, until the client
// goes away. Filters: repo, source, state (applied to the task after the
// change), limit (snapshot size, default 200).
func (s *Server) allEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := parseFilter(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if f.Limit == 0 {
		f.Limit = 200
	}
	f.Before = ""
	ctx := r.Context()
	// Every change is written to the authority before its report is
	// published: a change the snapshot below (the index, caught up with
	// the authority) misses is reported after this consumer exists.
	cons, err := s.bus.JetStream().OrderedConsumer(ctx, orchestrator.TasksStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{orchestrator.StatesWildcard}, DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		s.fail(w, fmt.Errorf("watch task states: %w", err))
		return
	}
	// The consumer exists now: every report from here on is delivered, so
	// the snapshot below cannot miss a change.
	if err := s.store.CatchUp(ctx, s.bus.Records(), 2*time.Second); err != nil {
		s.cfg.Logger.Warn("snapshot from a lagging index", "err", err)
	}
	tasks, err := s.store.List(ctx, f)
	if err != nil {
		s.fail(w, err)
		return
	}
	if tasks == nil {
		tasks = []orchestrator.Task{}
	}
	out, ok := startSSE(w, "nightshift task events")
	if !ok {
		return
	}
	out.send(0, "snapshot", Snapshot{Tasks: tasks})
	// sent is how new what the stream said about each task is: a report
	// of an older revision (published late) is not sent after a newer one.
	sent := make(map[string]time.Time, len(tasks))
	for _, t := range tasks {
		sent[t.ID] = t.UpdatedAt
	}

	it, err := cons.Messages()
	if err != nil {
		out.send(0, "error", ErrorBody{Error: "watch task states: " + err.Error()})
		return
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	msgs := make(chan jetstream.Msg, 64)
	errc := make(chan error, 1)
	go func() {
		defer close(msgs)
		for {
			m, err := it.Next()
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-keepalive.C:
			out.comment("keepalive")
		case m, ok := <-msgs:
			if !ok {
				if err := <-errc; err != nil && ctx.Err() == nil && !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					out.send(0, "error", ErrorBody{Error: err.Error()})
				}
				return
			}
			var rep orchestrator.StateReport
			if json.Unmarshal(m.Data(), &rep) != nil || rep.TaskID == "" {
				continue
			}
			t, err := s.taskAfter(ctx, rep)
			if err != nil {
				continue // not stored yet or gone; a later report carries it
			}
			if last, ok := sent[t.ID]; ok && t.UpdatedAt.Before(last) {
				continue
			}
			if len(sent) > 10000 {
				clear(sent)
			}
			sent[t.ID] = t.UpdatedAt
			if !matches(f, t) {
				continue
			}
			var seq uint64
			if md, err := m.Metadata(); err == nil {
				seq = md.Sequence.Stream
			}
			out.send(seq, "task", TaskEvent{TaskID: rep.TaskID, State: rep.State, Reason: rep.Reason, At: rep.At, Task: t})
		}
	}
}

func matches(f orchestrator.Filter, t orchestrator.Task) bool {
	if f.Repo != "" && t.Repo != f.Repo {
		return false
	}
	if f.Source != "" && t.Source != f.Source {
		return false
	}
	if len(f.States) == 0 {
		return true
	}
	for _, st := range f.States {
		if t.State == st {
			return true
		}
	}
	return false
}

// taskAfter returns the task as it is after rep (state reports carry the
// task as recorded).
func (s *Server) taskAfter(ctx context.Context, rep orchestrator.StateReport) (orchestrator.Task, error) {
	if rep.Task != nil {
		return *rep.Task, nil
	}
	return s.bus.Records().Task(ctx, rep.TaskID)
}
