package automation

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// stateReport is the part of a task state report (nightshift.tasks.*.state)
// an automation needs; decoded on its own so it does not depend on the
// orchestrator's report type.
//
// The authority for a task's state is its record in NIGHTSHIFT_TASKRECS
// (orchestrator.Records); the reports are its projection: the writer of
// each transition publishes one report (recorded: true, the whole task in
// task, patch empty), with a message id per transition, and the
// schedulers' reactor republishes one a writer died before publishing.
// Reading the stream with a durable consumer is therefore correct and is
// what an automation needs: a lagging or restarted engine still receives
// every transition in order, so it sees each run's first final state
// (failed, then a retry that ends done, counts as a failure) where reading
// the records would show only the latest state. Cost and error come from
// task (patch still counts, for reports of older schedulers).
type stateReport struct {
	TaskID string `json:"task_id"`
	State  string `json:"state"`
	Reason string `json:"reason"`
	Patch  struct {
		Error *string `json:"error"`
		Usage *struct {
			CostUSD float64 `json:"cost_usd"`
		} `json:"usage"`
	} `json:"patch"`
	Task *struct {
		Error string `json:"error"`
		Usage struct {
			CostUSD float64 `json:"cost_usd"`
		} `json:"usage"`
	} `json:"task"`
}

// handleState follows the tasks of automation runs: their state, cost and
// outcome. A run's first final state counts once: failed adds to the
// consecutive failures (pausing the automation at pause_after), done or
// review clears them; every final state frees the run's slot.
func (e *Engine) handleState(ctx context.Context, msg jetstream.Msg) {
	var r stateReport
	if err := json.Unmarshal(msg.Data(), &r); err != nil || r.TaskID == "" {
		msg.Ack()
		return
	}
	if err := e.outcome(ctx, r); err != nil {
		e.log.Warn("automation outcome; will retry", "task_id", r.TaskID, "err", err)
		msg.NakWithDelay(e.cfg.QueueDelay / 5)
		return
	}
	msg.Ack()
}

func (e *Engine) outcome(ctx context.Context, r stateReport) error {
	ent, err := e.kv.runs.Get(ctx, taskKey(r.TaskID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil // not an automation's task
	}
	if err != nil {
		return err
	}
	name, runID, _ := strings.Cut(string(ent.Value()), ".")
	cost, errText := 0.0, ""
	if r.Task != nil {
		cost, errText = r.Task.Usage.CostUSD, r.Task.Error
	}
	if r.Patch.Usage != nil && r.Patch.Usage.CostUSD > cost {
		cost = r.Patch.Usage.CostUSD
	}
	if r.Patch.Error != nil {
		errText = *r.Patch.Error
	}
	status := ""
	switch r.State {
	case "done", "review":
		status = RunSucceeded
	case "failed":
		status = RunFailed
	case "cancelled":
		status = RunCancelled
	}
	// Three writes, in an order that survives a crash between any two and
	// never counts twice: the run's cost (whose growth is added to the
	// day's), then the automation's state (the day's cost; for a final
	// report, the outcome counted while the run is still in Active, and
	// the pause), then the run's final status. Whoever sees a run final
	// sees its outcome counted; a report redelivered after a crash finds
	// the run still active in the state and counts it then, and only then.
	// (A crash between the first two writes loses that report's cost
	// growth from the day's total: it is never added twice.)
	var delta float64
	run, err := update(ctx, e.kv.runs, runKey(name, runID), func(run *Run) error {
		delta = 0
		if run.ID == "" {
			return errSkip // the run record is gone
		}
		// The task's state is written here unless this report makes the
		// run final (then with its status, last).
		state := status == "" || run.Final()
		if cost <= run.CostUSD && (!state || run.TaskState == r.State) {
			return errSkip // nothing to write before the state
		}
		if cost > run.CostUSD {
			delta, run.CostUSD = cost-run.CostUSD, cost
		}
		if state {
			run.TaskState = r.State
		}
		run.UpdatedAt = e.cfg.Clock().UTC()
		return nil
	})
	if errors.Is(err, errSkip) {
		if run.ID == "" {
			return nil
		}
	} else if err != nil {
		return err
	}
	if delta == 0 && status == "" {
		return nil
	}
	pauseAfter := 3
	if d := e.lookup(name); d != nil {
		pauseAfter = d.c.Def.PauseAfter
	}
	reason := r.Reason
	if status == RunFailed && errText != "" {
		reason = errText
	}
	var paused string
	_, err = update(ctx, e.kv.state, stateKey(name), func(s *State) error {
		paused = ""
		active := status != "" && slices.Contains(s.Active, runID)
		if delta == 0 && !active {
			return errSkip // counted already
		}
		s.DayCostUSD += delta
		if !active {
			return nil
		}
		s.Active = slices.DeleteFunc(s.Active, func(id string) bool { return id == runID })
		switch status {
		case RunSucceeded:
			s.Failures = 0
		case RunFailed:
			s.Failures++
			if pauseAfter > 0 && s.Failures >= pauseAfter && !s.Paused {
				s.Paused = true
				s.PausedReason = fmt.Sprintf("%d consecutive failed runs (last: task %s: %s)", s.Failures, run.TaskID, cmp.Or(reason, "no reason given"))
				paused = s.PausedReason
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errSkip) {
		return err
	}
	if status != "" {
		first := false
		_, err = update(ctx, e.kv.runs, runKey(name, runID), func(run *Run) error {
			first = false
			if run.ID == "" || run.Final() {
				return errSkip
			}
			first = true
			run.Status, run.Reason, run.TaskState = status, reason, r.State
			run.UpdatedAt = e.cfg.Clock().UTC()
			return nil
		})
		if err != nil && !errors.Is(err, errSkip) {
			return err
		}
		if first {
			e.m.runs.WithLabelValues(name, status).Inc()
		}
	}
	if paused != "" {
		e.paused(ctx, name, paused)
	}
	return nil
}

// paused records an automation pausing itself: a timeline entry, a log
// line, the metric and the OnPause hook.
func (e *Engine) paused(ctx context.Context, name, reason string) {
	now := e.cfg.Clock().UTC()
	id := fmt.Sprintf("%013d-paused", now.UnixMilli())
	b, _ := json.Marshal(Run{ID: id, Automation: name, Trigger: "guard", Status: RunPaused,
		Reason: "paused after " + reason + "; enable it to resume", At: now, UpdatedAt: now})
	if _, err := e.kv.runs.Put(ctx, runKey(name, id), b); err != nil {
		e.log.Error("record pause", "automation", name, "err", err)
	}
	e.m.pauses.Inc()
	e.log.Warn("automation paused", "automation", name, "reason", reason)
	if e.cfg.OnPause != nil {
		e.cfg.OnPause(ctx, name, reason)
	}
}

func (e *Engine) lookup(name string) *entry {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.defs[name]
}
