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

// replayWindow is how far back GET /api/v1/events replays state reports
// before its snapshot, so a report published just before the stream opened
// but stored just after the snapshot is not missed. Reports arrive in
// order, so the last one a card receives is the newest.
const replayWindow = 10 * time.Second

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
	start := s.cfg.Clock().Add(-replayWindow)
	cons, err := s.bus.JetStream().OrderedConsumer(ctx, orchestrator.TasksStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{orchestrator.StatesWildcard}, DeliverPolicy: jetstream.DeliverByStartTimePolicy,
		OptStartTime: &start})
	if err != nil {
		s.fail(w, fmt.Errorf("watch task states: %w", err))
		return
	}
	// The consumer exists now: every report from here on is delivered, so
	// the snapshot below cannot miss a change.
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
	// sent remembers what this stream last said about each task, so fields
	// reported earlier but not yet recorded are not lost on the next change.
	sent := make(map[string]orchestrator.Task, len(tasks))
	for _, t := range tasks {
		sent[t.ID] = t
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
			if prev, ok := sent[t.ID]; ok {
				t = carryOver(t, prev)
			}
			if len(sent) > 10000 {
				clear(sent)
			}
			sent[t.ID] = t
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

// carryOver fills what t (the store, lagging behind the reports) lacks from
// prev, what the stream said before about the same run.
func carryOver(t, prev orchestrator.Task) orchestrator.Task {
	if prev.Run != t.Run {
		return t
	}
	if t.Identity.ID == "" && t.Identity.Name == "" {
		t.Identity = prev.Identity
	}
	if t.Usage == (orchestrator.Usage{}) {
		t.Usage = prev.Usage
	}
	if t.Diff == (orchestrator.DiffStat{}) {
		t.Diff = prev.Diff
	}
	for _, f := range []struct {
		dst *string
		src string
	}{{&t.Commit, prev.Commit}, {&t.PRURL, prev.PRURL},
		{&t.Review, prev.Review}, {&t.BaseCommit, prev.BaseCommit}, {&t.SessionID, prev.SessionID}} {
		if *f.dst == "" {
			*f.dst = f.src
		}
	}
	return t
}

// taskAfter returns the task as it is after rep: the stored task when the
// report was stored by its publisher, otherwise the stored task with the
// report applied (the recorder may not have stored it yet).
func (s *Server) taskAfter(ctx context.Context, rep orchestrator.StateReport) (orchestrator.Task, error) {
	if rep.Recorded && rep.Task != nil {
		return *rep.Task, nil
	}
	t, err := s.store.Get(ctx, rep.TaskID)
	if err != nil {
		return t, err
	}
	if rep.Run != 0 && rep.Run < t.Run {
		return t, nil // a stale run's report: the store knows better
	}
	if t.State == rep.State {
		return t, nil
	}
	t.State = rep.State
	if rep.Run > t.Run {
		t.Run = rep.Run
	}
	if rep.Reason != "" && (rep.State == orchestrator.StateFailed || rep.State == orchestrator.StateCancelled) {
		t.Reason = rep.Reason
	}
	p := rep.Patch
	if p.Identity != nil {
		t.Identity = *p.Identity
	}
	if p.Usage != nil {
		t.Usage = *p.Usage
	}
	if p.Commit != nil {
		t.Commit = *p.Commit
	}
	if p.PRURL != nil {
		t.PRURL = *p.PRURL
	}
	if p.Review != nil {
		t.Review = *p.Review
	}
	if p.Error != nil {
		t.Error = *p.Error
	}
	if p.Reason != nil {
		t.Reason = *p.Reason
	}
	if p.Diff != nil {
		t.Diff = *p.Diff
	}
	if !rep.At.IsZero() {
		t.UpdatedAt = rep.At
	}
	t.Position = 0
	return t, nil
}
