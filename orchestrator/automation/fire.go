package automation

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator"
)

// trigger is what starts runs: a schedule tick, a matched event or a
// manual run.
type trigger struct {
	kind  string // schedule, event, manual
	key   string // unique per automation: tick unix, delivery id, manual id
	at    time.Time
	tick  time.Time
	event *orchestrator.Event
	actor string
}

// errBusy says every run slot of the automation is taken.
var errBusy = errors.New("automation: concurrency limit reached")

// runSchedules fires due ticks until ctx is done. Each engine tracks its
// own cursor per automation; the KV claim of (automation, tick) decides
// which engine fires it. At the first sight of an automation the ticks
// missed since its last claimed tick are skipped, or the latest of them
// fired once (catch_up: once).
func (e *Engine) runSchedules(ctx context.Context) {
	cursor := map[string]time.Time{}
	var swept, claimSwept time.Time
	for {
		now := e.cfg.Clock()
		e.loopStart.CompareAndSwap(0, now.UnixNano())
		if now.Sub(swept) >= sweepEvery {
			e.sweep(ctx, now)
			swept = now
		}
		if now.Sub(claimSwept) >= claimSweepEvery {
			e.recoverTicks(ctx, now)
			claimSwept = now
		}
		wake := now.Add(e.cfg.Poll)
		seen := map[string]bool{}
		for _, d := range e.snapshot() {
			name := d.rec.Definition.Name
			if !d.c.Scheduled() {
				continue
			}
			seen[name] = true
			cur, ok := cursor[name]
			if !ok {
				cur = now
				e.catchUp(ctx, d, now)
			}
			for t := d.c.Next(cur); !t.After(now); t = d.c.Next(t) {
				if d.rec.Enabled {
					e.fireTick(ctx, d, t)
				}
				cur = t
			}
			cursor[name] = cur
			if n := d.c.Next(cur); n.Before(wake) {
				wake = n
			}
		}
		for name := range cursor {
			if !seen[name] {
				delete(cursor, name)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(wake)):
		}
	}
}

func (e *Engine) catchUp(ctx context.Context, d *entry, now time.Time) {
	if !d.rec.Enabled || d.c.Def.CatchUp != config.CatchUpOnce {
		return
	}
	st, err := e.State(ctx, d.rec.Definition.Name)
	if err != nil || st.LastTick == 0 {
		return // never fired: nothing was missed
	}
	var missed time.Time
	for t := d.c.Next(time.Unix(st.LastTick, 0)); !t.After(now); t = d.c.Next(t) {
		missed = t
	}
	if !missed.IsZero() && missed.Unix() > st.LastTick {
		e.log.Info("catching up a missed tick", "automation", d.rec.Definition.Name, "tick", missed)
		e.fireTick(ctx, d, missed)
	}
}

// tickClaim is the value of a tick's claim (tick.<name>.<unix>): pending
// from the claim until the tick's run is decided (its event published, or
// its run recorded as skipped or failed), then fired. A claim left pending
// by an engine that stopped in between is taken over by another engine's
// sweep (recoverTicks). Claims written before claims had a status (a bare
// timestamp) count as fired.
type tickClaim struct {
	Status    string    `json:"status"` // pending, fired
	ClaimedAt time.Time `json:"claimed_at"`
}

const (
	claimPending = "pending"
	claimFired   = "fired"
)

func (e *Engine) claimValue(status string) []byte {
	b, _ := json.Marshal(tickClaim{Status: status, ClaimedAt: e.cfg.Clock().UTC()})
	return b
}

// fireTick claims tick t of d and, when this engine won the claim, fires it.
func (e *Engine) fireTick(ctx context.Context, d *entry, t time.Time) {
	name := d.rec.Definition.Name
	rev, err := e.kv.ticks.Create(ctx, tickKey(name, t.Unix()), e.claimValue(claimPending))
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			e.log.Warn("claim tick", "automation", name, "tick", t, "err", err)
		}
		return
	}
	e.runTick(ctx, d, t, rev)
}

// runTick fires tick t of d, whose pending claim this engine holds at
// revision rev, and marks the claim fired once the run is decided. On an
// error the claim stays pending: a sweep tries again.
func (e *Engine) runTick(ctx context.Context, d *entry, t time.Time, rev uint64) {
	name := d.rec.Definition.Name
	if e.afterClaim != nil && e.afterClaim(name, t) {
		return // tests: the engine "dies" holding the claim
	}
	if _, err := update(ctx, e.kv.state, stateKey(name), func(s *State) error {
		if s.LastTick >= t.Unix() {
			return errSkip
		}
		s.LastTick = t.Unix()
		return nil
	}); err != nil && !errors.Is(err, errSkip) {
		e.log.Warn("record tick", "automation", name, "err", err)
	}
	trig := trigger{kind: "schedule", key: fmt.Sprint(t.Unix()), at: t, tick: t}
	if err := e.fire(ctx, d, trig); err != nil && !errors.Is(err, errBusy) {
		e.log.Error("scheduled run; a sweep tries again", "automation", name, "tick", t, "err", err)
		return
	}
	if _, err := e.kv.ticks.Update(ctx, tickKey(name, t.Unix()), e.claimValue(claimFired), rev); err != nil {
		// Taken over by a sweep meanwhile: its publish is deduplicated.
		e.log.Debug("mark tick fired", "automation", name, "tick", t, "err", err)
	}
}

const (
	// pendingClaimAge is how long a tick's claim may stay pending before
	// another engine takes it over: far longer than a claim-to-publish
	// takes, short enough that a run starts within seconds of its tick.
	pendingClaimAge = 5 * time.Second
	// claimSweepEvery is how often an engine looks for pending claims.
	claimSweepEvery = 2 * time.Second
	// claimScan bounds the claims looked at per automation and sweep:
	// the ticks of the last minute (at most 64 of them) and the last
	// tick the automation's state records.
	claimScan    = time.Minute
	claimScanMax = 64
)

// recoverTicks fires the ticks whose claim an engine left pending (it
// stopped between the claim and the publish): a revision-checked update
// takes the claim over, so one engine re-fires each, and the run's
// delivery id is the same as the first attempt's, so the events stream
// drops a second publish of an event that did go out.
func (e *Engine) recoverTicks(ctx context.Context, now time.Time) {
	for _, d := range e.snapshot() {
		if !d.c.Scheduled() || !d.rec.Enabled {
			continue
		}
		name := d.rec.Definition.Name
		var ticks []time.Time
		for t := d.c.Next(now.Add(-claimScan)); !t.After(now); t = d.c.Next(t) {
			ticks = append(ticks, t)
		}
		if len(ticks) > claimScanMax {
			ticks = ticks[len(ticks)-claimScanMax:]
		}
		if st, err := e.State(ctx, name); err == nil && st.LastTick > 0 && (len(ticks) == 0 || st.LastTick < ticks[0].Unix()) {
			ticks = append(ticks, time.Unix(st.LastTick, 0).UTC())
		}
		for _, t := range ticks {
			key := tickKey(name, t.Unix())
			ent, err := e.kv.ticks.Get(ctx, key)
			if err != nil {
				continue // unclaimed, or unreadable now
			}
			var c tickClaim
			if json.Unmarshal(ent.Value(), &c) != nil || c.Status != claimPending || now.Sub(c.ClaimedAt) < pendingClaimAge {
				continue
			}
			rev, err := e.kv.ticks.Update(ctx, key, e.claimValue(claimPending), ent.Revision())
			if err != nil {
				continue // another engine took it over
			}
			e.log.Warn("firing a tick whose claim was left pending", "automation", name, "tick", t, "claimed_at", c.ClaimedAt)
			e.runTick(ctx, d, t, rev)
		}
	}
}

// handleEvent matches one normalized event against every automation.
func (e *Engine) handleEvent(ctx context.Context, msg jetstream.Msg) {
	var ev orchestrator.Event
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		msg.Term()
		return
	}
	if ev.Automation != nil {
		msg.Ack() // our own runs never trigger automations
		return
	}
	var retry bool
	for _, d := range e.snapshot() {
		if !d.rec.Enabled || !d.c.Matches(&ev) {
			continue
		}
		trig := trigger{kind: "event", key: ev.DeliveryID, at: ev.ReceivedAt, event: &ev, actor: ev.Actor.Login}
		if trig.at.IsZero() {
			trig.at = e.cfg.Clock()
		}
		err := e.fire(ctx, d, trig)
		switch {
		case errors.Is(err, errBusy):
			retry = true // queued: tried again when a run ends
		case err != nil:
			e.log.Error("event run", "automation", d.rec.Definition.Name, "delivery_id", ev.DeliveryID, "err", err)
			retry = true
		}
	}
	if retry {
		msg.NakWithDelay(e.cfg.QueueDelay)
		return
	}
	msg.Ack()
}

// RunNow starts a manual run of name (the CLI's and API's run), as who.
func (e *Engine) RunNow(ctx context.Context, name, who string) ([]Run, error) {
	r, err := e.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	c, err := Compile(r.Definition)
	if err != nil {
		return nil, err
	}
	if !r.Enabled {
		return nil, fmt.Errorf("%w: enable %s first", ErrDisabled, name)
	}
	if c.Def.Repo == "" && len(c.Def.Repos) == 0 {
		return nil, fmt.Errorf("%w: %s takes its repository from the event; give it a repo to run it by hand", ErrNoRepo, name)
	}
	now := e.cfg.Clock()
	trig := trigger{kind: "manual", key: "manual-" + orchestrator.NewID(), at: now, actor: who}
	err = e.fire(ctx, &entry{rec: r, c: c}, trig)
	if err != nil && !errors.Is(err, errBusy) {
		return nil, err
	}
	runs, lerr := listRuns(ctx, e.kv.runs, "run."+name+".*", 0)
	if lerr != nil {
		return nil, lerr
	}
	var out []Run
	for _, run := range runs {
		if run.Trigger == "manual" && run.EventID == trig.key {
			out = append(out, run)
		}
	}
	if errors.Is(err, errBusy) && len(out) > 0 {
		return out, nil
	}
	return out, err
}

// fire starts the runs trig asks of d: one per repository. It returns
// errBusy when a run could not start for want of a slot and should be
// tried again (a matched event); a tick or manual run is recorded as
// skipped instead.
func (e *Engine) fire(ctx context.Context, d *entry, trig trigger) error {
	def := d.c.Def
	repos := def.Repos
	if def.Repo != "" {
		repos = []string{def.Repo}
	}
	if len(repos) == 0 && trig.event != nil {
		repos = []string{trig.event.Repo}
	}
	var busy bool
	for _, repo := range repos {
		err := e.fireOne(ctx, d, trig, repo)
		if errors.Is(err, errBusy) {
			busy = true
			continue
		}
		if err != nil {
			return err
		}
	}
	if busy {
		return errBusy
	}
	return nil
}

func (e *Engine) fireOne(ctx context.Context, d *entry, trig trigger, repo string) error {
	def := d.c.Def
	name := def.Name
	runID := fmt.Sprintf("%013d-%s", trig.at.UnixMilli(), orchestrator.IDFromKey(name + "\x00" + trig.key + "\x00" + repo)[:10])
	deliveryID := "automation:" + name + ":" + runID
	run := Run{ID: runID, Automation: name, Trigger: trig.kind, Actor: trig.actor, Repo: repo, Status: RunPending,
		Mode: def.Mode, Inbox: def.Inbox, At: trig.at.UTC(), UpdatedAt: e.cfg.Clock().UTC(),
		TaskID: orchestrator.IDFromKey(deliveryID)}
	if !trig.tick.IsZero() {
		run.Tick = trig.tick.UTC()
	}
	if trig.event != nil {
		run.EventID, run.EventKind = trig.event.ID, string(trig.event.Source)+" "+trig.event.Kind
	} else if trig.kind == "manual" {
		run.EventID = trig.key
	}
	b, _ := json.Marshal(run)
	if _, err := e.kv.runs.Create(ctx, runKey(name, runID), b); err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("record run: %w", err)
		}
		// A redelivery: go on from what the first attempt stored.
		stored, _, err := getJSON[Run](ctx, e.kv.runs, runKey(name, runID))
		if err != nil {
			return err
		}
		if stored.Status != RunPending && stored.Status != RunStarted {
			return nil
		}
		run = stored
	}
	if run.Status == RunPending {
		if reason := e.refusal(ctx, def, trig); reason != "" {
			return e.finish(ctx, name, runID, RunRefused, reason)
		}
		reason, err := e.reserve(ctx, d, runID)
		switch {
		case errors.Is(err, errBusy) && trig.kind == "event":
			// Queued: forget this attempt; the redelivered event tries again.
			e.kv.runs.Delete(ctx, runKey(name, runID))
			return errBusy
		case errors.Is(err, errBusy):
			return e.finish(ctx, name, runID, RunSkipped, reason)
		case err != nil:
			return err
		case reason != "":
			return e.finish(ctx, name, runID, RunSkipped, reason)
		}
		if _, err := e.kv.runs.Put(ctx, taskKey(run.TaskID), []byte(name+"."+runID)); err != nil {
			return err
		}
	}
	ev, err := e.event(d, trig, repo, run, deliveryID)
	if err != nil {
		e.release(ctx, name, runID)
		return e.finish(ctx, name, runID, RunFailed, err.Error())
	}
	switch err := orchestrator.PublishEvent(ctx, e.js, ev); {
	case err == nil:
		e.fired.Add(1)
	case !errors.Is(err, orchestrator.ErrDuplicate):
		return err // the slot stays reserved: a retry publishes the same event
	}
	if _, err := update(ctx, e.kv.runs, runKey(name, runID), func(r *Run) error {
		if r.Status != RunPending {
			return errSkip
		}
		r.Status, r.UpdatedAt = RunStarted, e.cfg.Clock().UTC()
		return nil
	}); err != nil && !errors.Is(err, errSkip) {
		return err
	}
	e.m.runs.WithLabelValues(name, RunStarted).Inc()
	e.log.Info("automation run started", "automation", name, "run", runID, "task_id", run.TaskID, "trigger", trig.kind, "repo", repo)
	return nil
}

// refusal says why the trigger may not start d, or "".
func (e *Engine) refusal(ctx context.Context, def config.Automation, trig trigger) string {
	if trig.kind != "event" {
		return ""
	}
	a := trig.event.Actor
	who := cmp.Or(a.Login, "an unknown actor")
	if def.Allow.Empty() {
		// No allow: on a forge, where anyone with an account can open an
		// issue or comment on a public repository, only people with write
		// access to it may start the automation (its prompt carries their
		// text). Events from the API, Linear or Slack come from people the
		// server already admits.
		switch trig.event.Source {
		case orchestrator.SourceGitHub, orchestrator.Source("gitlab"), orchestrator.Source("gitea"):
		default:
			return ""
		}
		if e.cfg.CanWrite == nil {
			return fmt.Sprintf("%s may not trigger %s: without allow:, only people with write access may, and it cannot be checked here", who, def.Name)
		}
		ok, err := e.cfg.CanWrite(ctx, *trig.event)
		switch {
		case err != nil:
			return fmt.Sprintf("%s may not trigger %s: write access could not be checked: %v", who, def.Name, err)
		case !ok:
			return fmt.Sprintf("%s may not trigger %s: without allow:, only people with write access to the repository may", who, def.Name)
		}
		return ""
	}
	if a.Login != "" && slices.ContainsFunc(def.Allow.Logins, func(l string) bool { return strings.EqualFold(l, a.Login) }) {
		return ""
	}
	if a.Association != "" && slices.ContainsFunc(def.Allow.Associations, func(s string) bool { return strings.EqualFold(s, a.Association) }) {
		return ""
	}
	var teamErr string
	for _, t := range def.Allow.Teams {
		if trig.event.Source != orchestrator.SourceGitHub {
			teamErr = "; teams are GitHub teams and this event is from " + string(trig.event.Source)
			break
		}
		if e.cfg.TeamMember == nil || a.Login == "" {
			teamErr = "; team membership cannot be checked here"
			break
		}
		org, team, _ := strings.Cut(t, "/")
		ok, err := e.cfg.TeamMember(ctx, org, team, a.Login)
		if err != nil {
			teamErr = "; team check failed: " + err.Error()
			continue
		}
		if ok {
			return ""
		}
	}
	return fmt.Sprintf("%s may not trigger %s (allowed: %s)%s", who, def.Name, describeAllow(def.Allow), teamErr)
}

func describeAllow(t config.Triggerers) string {
	var parts []string
	if len(t.Logins) > 0 {
		parts = append(parts, "logins "+strings.Join(t.Logins, ", "))
	}
	if len(t.Teams) > 0 {
		parts = append(parts, "teams "+strings.Join(t.Teams, ", "))
	}
	if len(t.Associations) > 0 {
		parts = append(parts, "associations "+strings.Join(t.Associations, ", "))
	}
	return strings.Join(parts, "; ")
}

// reserve takes a run slot in one revision-checked update of the
// automation's state, after the pause and daily budget checks. It returns
// a reason when the run must be skipped, errBusy when no slot is free.
func (e *Engine) reserve(ctx context.Context, d *entry, runID string) (string, error) {
	def := d.c.Def
	var reason string
	_, err := update(ctx, e.kv.state, stateKey(def.Name), func(s *State) error {
		reason = ""
		day := e.cfg.Clock().In(d.c.loc).Format(time.DateOnly)
		if s.Day != day {
			s.Day, s.DayCostUSD = day, 0
		}
		switch {
		case slices.Contains(s.Active, runID):
			return errSkip
		case s.Paused:
			reason = "paused: " + s.PausedReason
			return errSkip
		case def.Budget.PerDayUSD > 0 && s.DayCostUSD >= def.Budget.PerDayUSD:
			reason = fmt.Sprintf("daily budget spent: $%.2f of $%.2f on %s", s.DayCostUSD, def.Budget.PerDayUSD, day)
			return errSkip
		case def.Concurrency > 0 && len(s.Active) >= def.Concurrency:
			reason = fmt.Sprintf("%d run(s) active (concurrency %d)", len(s.Active), def.Concurrency)
			return errBusy
		}
		s.Active = append(s.Active, runID)
		return nil
	})
	if errors.Is(err, errSkip) {
		err = nil
	}
	return reason, err
}

func (e *Engine) release(ctx context.Context, name, runID string) {
	update(ctx, e.kv.state, stateKey(name), func(s *State) error {
		if !slices.Contains(s.Active, runID) {
			return errSkip
		}
		s.Active = slices.DeleteFunc(s.Active, func(id string) bool { return id == runID })
		return nil
	})
}

// finish records a run that did not start (refused, skipped, failed).
func (e *Engine) finish(ctx context.Context, name, runID, status, reason string) error {
	_, err := update(ctx, e.kv.runs, runKey(name, runID), func(r *Run) error {
		r.Status, r.Reason, r.UpdatedAt = status, reason, e.cfg.Clock().UTC()
		return nil
	})
	e.m.runs.WithLabelValues(name, status).Inc()
	e.log.Info("automation run not started", "automation", name, "run", runID, "status", status, "reason", reason)
	return err
}

// event builds the normalized event of one run. A run triggered by an
// event with respond: reply keeps the event's source and target, so the
// task reports back where the event came from; every other run is an
// automation event.
func (e *Engine) event(d *entry, trig trigger, repo string, run Run, deliveryID string) (*orchestrator.Event, error) {
	def := d.c.Def
	src := trig.event
	if src == nil {
		src = &orchestrator.Event{ID: run.EventID, Source: orchestrator.SourceAutomation, Kind: "automation." + trig.kind,
			Repo: repo, ReceivedAt: trig.at.UTC(), Actor: orchestrator.Actor{Login: trig.actor}}
	}
	view := *src
	view.Repo = repo
	view.Automation = &orchestrator.AutomationRun{Name: def.Name, RunID: run.ID, Mode: def.Mode, Respond: def.Respond}
	prompt, err := d.c.Prompt(&view)
	if err != nil {
		return nil, err
	}
	ev := &orchestrator.Event{ID: orchestrator.NewID(), Source: orchestrator.SourceAutomation, Kind: "automation.run",
		Repo: repo, Actor: src.Actor, Instruction: prompt, DeliveryID: deliveryID, IdempotencyKey: deliveryID,
		ReceivedAt: e.cfg.Clock().UTC(), TaskID: run.TaskID, Agent: def.Agent,
		Automation: &orchestrator.AutomationRun{Name: def.Name, RunID: run.ID, Mode: def.Mode, Respond: def.Respond,
			BudgetTokens: def.Budget.Tokens, BudgetCostUSD: def.Budget.CostUSD, SecretScopes: def.SecretScopes}}
	if ev.Actor.Login == "" {
		ev.Actor.Login = "automation:" + def.Name
	}
	if trig.event != nil && def.Respond == config.RespondReply {
		ev.Source, ev.Kind, ev.Target = trig.event.Source, "automation.run", trig.event.Target
	}
	return ev, nil
}

// sweepEvery is how often an engine checks the automations' run slots.
const sweepEvery = 30 * time.Second

// stalePending is how long a run may stay pending (being started) before
// a sweep gives up on it: longer than an event's redelivery (30s ack wait).
const stalePending = 2 * time.Minute

// sweep frees run slots that no run holds any more: a run record that is
// gone or final, or one left pending by an engine that stopped while it
// started it and that no sweep of pending tick claims (recoverTicks)
// started since (the timeline says so).
func (e *Engine) sweep(ctx context.Context, now time.Time) {
	for _, d := range e.snapshot() {
		name := d.rec.Definition.Name
		st, err := e.State(ctx, name)
		if err != nil || len(st.Active) == 0 {
			continue
		}
		for _, id := range st.Active {
			run, _, err := getJSON[Run](ctx, e.kv.runs, runKey(name, id))
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				continue
			case run.Status == RunPending && now.Sub(run.UpdatedAt) > stalePending:
				e.finish(ctx, name, id, RunFailed, "not started: the scheduler stopped while starting it")
			case !run.Final():
				continue
			}
			e.release(ctx, name, id)
		}
	}
}
