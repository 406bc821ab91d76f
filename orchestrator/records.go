package orchestrator

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/vault/natsstore"
)

// The authority for task state is one replicated JetStream key-value bucket,
// RecordsBucket. Key "t.<id>" holds a task's Record: the task as the API
// shows it, its transitions, its pending follow-ups, the lease of the run
// working on it and the work item it still owes the work queue (its outbox).
// Every change is one revision-checked update of that key, decided by one
// function from the record as stored: there is no check-then-act across
// statements, and two writers (a scheduler and a worker, two schedulers, a
// stale worker and a fresh one) cannot both win. Everything else — the
// SQLite index every node keeps for listing, the state reports on the task
// stream, the reporters, the work queue — is derived from these revisions
// and can be rebuilt from them.

// RecordsBucket is the key-value bucket that holds task records.
const RecordsBucket = "NIGHTSHIFT_TASKRECS"

// recordHistory is how many revisions of a record the bucket keeps: a
// reactor that lags behind a few revisions still sees every transition.
const recordHistory = 16

// recordsMaxAge is how long a record outlives its last change (a task in
// review for longer is still in the index, but its pull request's events
// no longer find it).
const recordsMaxAge = 180 * 24 * time.Hour

// maxTransitions bounds the transitions a record keeps (the oldest are
// dropped; the index keeps all it saw).
const maxTransitions = 400

// maxKeys bounds the follow-up idempotency keys a record remembers.
const maxKeys = 256

// ErrFenced is returned for a write from a run that no longer holds its
// task's lease: another delivery of the run (or a newer run) took it over,
// or the task ended meanwhile. The run must stop without touching anything.
var ErrFenced = errors.New("orchestrator: the run no longer holds the task's lease")

// ErrStale is returned by Claim for a work item whose run is not the task's
// current one, or has already ended: the item is a leftover and is dropped.
var ErrStale = errors.New("orchestrator: stale work item")

// Lease says which delivery of which run may write a task's record.
type Lease struct {
	Run     int       `json:"run,omitempty"`
	Epoch   int       `json:"epoch,omitempty"`
	Attempt int       `json:"attempt,omitempty"`
	Seq     uint64    `json:"seq,omitempty"`
	Holder  string    `json:"holder,omitempty"`
	At      time.Time `json:"at,omitempty"`
}

// Fence is what a run carries with every write: its run and lease epoch.
type Fence struct {
	Run   int `json:"run"`
	Epoch int `json:"epoch"`
}

// PushIntent is a push a run announced before making it: Old is where the
// branch must be for the push to land (compare-and-swap on the forge).
//
// An intent also carries what a later delivery of the same run needs to
// finish it without running the agent again when the push landed before
// the run's worker was lost: the run, the (redacted) summary and the diff.
type PushIntent struct {
	Run    int       `json:"run,omitempty"`
	Epoch  int       `json:"epoch"`
	Branch string    `json:"branch"`
	Commit string    `json:"commit"`
	Old    string    `json:"old,omitempty"`
	At     time.Time `json:"at"`
	// Checkpoint marks the push of a run stopped by its budget: its work
	// is kept, but it does not finish the run.
	Checkpoint bool     `json:"checkpoint,omitempty"`
	Summary    string   `json:"summary,omitempty"`
	Diff       DiffStat `json:"diff,omitempty"`
	Files      []string `json:"files,omitempty"`
}

// maxIntentFiles bounds the changed paths an intent keeps (the record is
// one KV value).
const maxIntentFiles = 100

// Record is a task as the authority holds it.
type Record struct {
	Task        Task         `json:"task"`
	Transitions []Transition `json:"transitions,omitempty"`
	// Messages are follow-ups not yet handed to a run.
	Messages []Message `json:"messages,omitempty"`
	NextMsg  int64     `json:"next_msg,omitempty"`
	// Keys are the idempotency keys of follow-ups already added.
	Keys  []string `json:"keys,omitempty"`
	Lease Lease    `json:"lease"`
	// Outbox is the work item owed to the work queue for Task.Run; nil
	// once published.
	Outbox *WorkItem `json:"outbox,omitempty"`
	// Intents are the pushes runs announced, newest last (a few kept).
	Intents []PushIntent `json:"intents,omitempty"`
	// Event is the event that created the task (for re-normalization).
	Event json.RawMessage `json:"event,omitempty"`
}

func (r *Record) hasKey(k string) bool {
	for _, x := range r.Keys {
		if x == k {
			return true
		}
	}
	return false
}

func (r *Record) addKey(k string) {
	r.Keys = append(r.Keys, k)
	if len(r.Keys) > maxKeys {
		r.Keys = r.Keys[len(r.Keys)-maxKeys:]
	}
}

// Records is the task-state authority.
type Records struct {
	kv     jetstream.KeyValue
	stream jetstream.Stream
	bus    *Bus
	now    func() time.Time
	log    *slog.Logger
}

func recordsConfig(cfg BusConfig) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: RecordsBucket, History: recordHistory, TTL: max(cfg.TaskMaxAge, recordsMaxAge),
		MaxValueSize: 8 << 20, Storage: jetstream.FileStorage, Replicas: cfg.Replicas}
}

func taskKey(id string) string { return "t." + id }

// hashKey maps an arbitrary lookup key onto the bucket's key alphabet.
func hashKey(prefix, k string) string {
	sum := sha256.Sum256([]byte(k))
	return prefix + "." + hex.EncodeToString(sum[:16])
}

func targetKey(repo, key string) string { return hashKey("target", PRKey(repo, 0)+"|"+key) }
func prLookupKey(prKey string) string   { return hashKey("pr", prKey) }

// Records returns the bus's task-state authority.
func (b *Bus) Records() *Records { return b.records }

// SetClock makes the authority stamp records with now (tests).
func (r *Records) SetClock(now func() time.Time) { r.now = now }

// Get returns task id's record and its revision.
func (r *Records) Get(ctx context.Context, id string) (Record, uint64, error) {
	if !validID(id) {
		return Record{}, 0, ErrNotFound
	}
	val, rev, err := r.read(ctx, taskKey(id))
	if err != nil {
		return Record{}, 0, fmt.Errorf("read task %s: %w", id, err)
	}
	if rev == 0 {
		return Record{}, 0, ErrNotFound
	}
	var rec Record
	if err := json.Unmarshal(val, &rec); err != nil {
		return Record{}, 0, fmt.Errorf("decode task %s: %w", id, err)
	}
	return rec, rev, nil
}

// Task returns task id as the authority holds it now.
func (r *Records) Task(ctx context.Context, id string) (Task, error) {
	rec, _, err := r.Get(ctx, id)
	return rec.Task, err
}

func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// errUnchanged tells update that fn decided nothing changes.
var errUnchanged = errors.New("unchanged")

// update applies fn to task id's record with a revision-checked write,
// re-reading and re-deciding when another writer got in first. fn returns
// errUnchanged to write nothing. It returns the record as written (or as
// read, when unchanged) and whether it was written.
func (r *Records) update(ctx context.Context, id string, fn func(*Record) error) (Record, bool, error) {
	for attempt := 0; ; attempt++ {
		rec, rev, err := r.Get(ctx, id)
		if err != nil {
			return rec, false, err
		}
		prev, before := rec.Task, len(rec.Transitions)
		if err := fn(&rec); errors.Is(err, errUnchanged) {
			return rec, false, nil
		} else if err != nil {
			return rec, false, err
		}
		// A write that changes only bookkeeping (the outbox, a lease
		// epoch) leaves the task's updated_at alone: readers and
		// reporters see no change.
		if before != len(rec.Transitions) || !sameTask(prev, rec.Task) {
			rec.Task.UpdatedAt = r.now().UTC()
		}
		data, err := json.Marshal(rec)
		if err != nil {
			return rec, false, err
		}
		_, err = r.kv.Update(ctx, taskKey(id), data, rev)
		if err == nil {
			r.afterWrite(ctx, rec, prev, before)
			return rec, true, nil
		}
		if !natsstore.IsConflict(err) || attempt >= 50 {
			return rec, false, fmt.Errorf("write task %s: %w", id, err)
		}
		// Another writer won: decide again on what it wrote.
		time.Sleep(time.Duration(rand.IntN(2+attempt)) * time.Millisecond)
	}
}

func sameTask(a, b Task) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// afterWrite does, right after a write, what the reactor would otherwise do
// later: publish the state report and the owed work item. Both are
// idempotent (message ids) and repaired by the reactor when this process
// dies in between.
func (r *Records) afterWrite(ctx context.Context, rec Record, prev Task, before int) {
	ctx = context.WithoutCancel(ctx)
	if rec.Task.PRURL != prev.PRURL {
		r.indexPR(ctx, rec.Task)
	}
	if len(rec.Transitions) != before || rec.Task.State != prev.State {
		if err := r.project(ctx, rec); err != nil {
			r.log.Warn("publish state report", "task_id", rec.Task.ID, "err", err)
		}
	}
	if rec.Outbox != nil {
		if err := r.flushOutbox(ctx, rec); err != nil {
			r.log.Warn("publish work", "task_id", rec.Task.ID, "err", err)
		}
	}
}

// project publishes the record's newest transition as a state report on
// the task stream (the board, `tasks logs -f` and the metrics read them).
func (r *Records) project(ctx context.Context, rec Record) error {
	t := rec.Task
	var tr Transition
	if n := len(rec.Transitions); n > 0 {
		tr = rec.Transitions[n-1]
	}
	rep := StateReport{TaskID: t.ID, Run: t.Run, Attempt: rec.Lease.Attempt, Seq: len(rec.Transitions), State: t.State,
		Reason: tr.Reason, At: t.UpdatedAt, Recorded: true, Task: &t}
	return r.bus.publishState(ctx, rep)
}

// flushOutbox publishes the work item rec owes and clears it.
func (r *Records) flushOutbox(ctx context.Context, rec Record) error {
	w := *rec.Outbox
	if err := r.bus.publishWork(ctx, w); err != nil {
		return err
	}
	_, _, err := r.update(ctx, rec.Task.ID, func(cur *Record) error {
		if cur.Outbox == nil || cur.Outbox.Run != w.Run {
			return errUnchanged
		}
		cur.Outbox = nil
		return nil
	})
	return err
}

// transition moves rec to state to (validated by the state machine),
// recording it.
func (r *Records) transition(rec *Record, to State, reason string) error {
	from := rec.Task.State
	if !from.CanTransition(to) {
		return &TransitionError{From: from, To: to}
	}
	if from == to {
		return nil
	}
	if from == StateNeedsInput {
		rec.Task.Question = ""
	}
	rec.Task.State = to
	rec.Transitions = append(rec.Transitions, Transition{From: from, To: to, Reason: reason, Run: rec.Task.Run, At: r.now().UTC()})
	rec.Task.Reason = reasonOfState(to, reason, rec.Task.Reason)
	if len(rec.Transitions) > maxTransitions {
		rec.Transitions = rec.Transitions[len(rec.Transitions)-maxTransitions:]
	}
	if to.Resting() || to == StateQueued {
		rec.Lease = Lease{Epoch: rec.Lease.Epoch}
	}
	return nil
}

// reasonOfState is the task's reason after a move to state to for reason:
// kept for the states that end a run badly, cleared otherwise.
func reasonOfState(to State, reason, prev string) string {
	switch to {
	case StateFailed, StateCancelled:
		if prev != "" {
			return prev
		}
		return reason
	}
	return prev
}

// CreateFromEvent stores the task for ev, once per idempotency key. When a
// task on the same target is still open (not done, failed or cancelled), the
// event's instruction becomes a follow-up message of that task instead.
func (r *Records) CreateFromEvent(ctx context.Context, ev *Event, agent string) (CreateResult, error) {
	if ev.IdempotencyKey == "" {
		return CreateResult{}, errors.New("orchestrator: event without idempotency key")
	}
	id := ev.TaskID
	if id == "" {
		id = IDFromKey(ev.IdempotencyKey)
	}
	if rec, _, err := r.Get(ctx, id); err == nil {
		return CreateResult{Task: rec.Task}, nil
	} else if !errors.Is(err, ErrNotFound) {
		return CreateResult{}, err
	}
	if owner, ok, err := r.lookup(ctx, hashKey("alias", ev.IdempotencyKey)); err != nil {
		return CreateResult{}, err
	} else if ok {
		t, err := r.Task(ctx, owner)
		return CreateResult{Task: t, FollowUp: true}, err
	}
	tkey := ev.Target.Key()
	if tkey != "" {
		// One open task per target: a new command on it is a follow-up.
		for {
			owner, rev, err := r.lookupRev(ctx, targetKey(ev.Repo, tkey))
			if err != nil {
				return CreateResult{}, err
			}
			if owner != "" && owner != id {
				t, err := r.Task(ctx, owner)
				if err == nil && !closedForFollowUps(t.State) {
					added, t, err := r.AddFollowUpEvent(ctx, owner, ev)
					if err != nil {
						return CreateResult{}, err
					}
					_ = added
					return CreateResult{Task: t, FollowUp: true}, nil
				} else if err != nil && !errors.Is(err, ErrNotFound) {
					return CreateResult{}, err
				}
			}
			// Claim the target for the new task (revision-checked: of two
			// events racing for one target, one creates, one follows up).
			if owner == id {
				break
			}
			if rev == 0 {
				_, err = r.kv.Create(ctx, targetKey(ev.Repo, tkey), []byte(id))
			} else {
				_, err = r.kv.Update(ctx, targetKey(ev.Repo, tkey), []byte(id), rev)
			}
			if err == nil {
				break
			}
			if !natsstore.IsConflict(err) {
				return CreateResult{}, fmt.Errorf("claim target: %w", err)
			}
		}
	}
	now := r.now().UTC()
	evJSON, err := ev.Encode()
	if err != nil {
		return CreateResult{}, err
	}
	t := Task{ID: id, State: StateQueued, Repo: ev.Repo, Base: ev.Branch, Branch: BranchName(id), Agent: agent,
		Prompt: ev.Instruction, Source: ev.Source, Kind: ev.Kind, TargetKey: tkey, Target: ev.Target, Actor: ev.Actor,
		Run: 1, CreatedAt: now, UpdatedAt: now, IdempotencyKey: ev.IdempotencyKey, Mode: ev.Mode}
	if a := ev.Automation; a != nil {
		t.Automation, t.Respond = a.Name, a.Respond
		t.SecretScopes, t.BudgetTokens, t.BudgetCostUSD = a.SecretScopes, a.BudgetTokens, a.BudgetCostUSD
		if t.Mode == "" {
			t.Mode = a.Mode
		}
	}
	if t.Mode == ModeChange {
		t.Mode = ""
	}
	rec := Record{Task: t, Event: evJSON,
		Transitions: []Transition{{To: StateQueued, Reason: "created from " + string(ev.Source) + " " + ev.Kind, Run: 1, At: now}}}
	if t.Repo != "" {
		// The first run's work item, in the same write (the outbox).
		w := workItemOf(t, false, nil)
		rec.Outbox = &w
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return CreateResult{}, err
	}
	if _, err := r.kv.Create(ctx, taskKey(id), data); err != nil {
		if natsstore.IsConflict(err) {
			// Created meanwhile by a redelivery of the same event.
			t, err := r.Task(ctx, id)
			return CreateResult{Task: t}, err
		}
		return CreateResult{}, fmt.Errorf("create task %s: %w", id, err)
	}
	r.afterWrite(ctx, rec, Task{}, 0)
	return CreateResult{Task: t, Created: true}, nil
}

// closedForFollowUps reports whether a task in state s takes no more
// follow-ups as a new command on its target (a new task is created).
func closedForFollowUps(s State) bool {
	return s == StateDone || s == StateFailed || s == StateCancelled
}

func (r *Records) lookup(ctx context.Context, key string) (string, bool, error) {
	v, _, err := r.lookupRev(ctx, key)
	return v, v != "", err
}

func (r *Records) lookupRev(ctx context.Context, key string) (string, uint64, error) {
	v, rev, err := r.read(ctx, key)
	if err != nil {
		return "", 0, fmt.Errorf("read %s: %w", key, err)
	}
	return string(v), rev, nil
}

// read returns key's value and revision (0: no such key) from the bucket's
// stream leader: unlike a direct get, which any replica may answer, it sees
// every write acknowledged before it (the API's read-your-writes rests on it).
func (r *Records) read(ctx context.Context, key string) ([]byte, uint64, error) {
	m, err := r.stream.GetLastMsgForSubject(ctx, "$KV."+RecordsBucket+"."+key)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return nil, 0, nil
	}
	return m.Data, m.Sequence, nil
}

// AddFollowUp adds a follow-up instruction to task id, once per key (a
// redelivered event adds nothing); when the task rests, the same write
// queues the run that takes it. added is false for a known key.
func (r *Records) AddFollowUp(ctx context.Context, id, key, text, actor string) (bool, Task, error) {
	return r.addFollowUp(ctx, id, key, Message{Text: text, Actor: actor, Kind: KindTaskMessage})
}

// AddFollowUpEvent is AddFollowUp for an event (its kind kept on the
// message, so the run knows a CI failure from a review comment).
func (r *Records) AddFollowUpEvent(ctx context.Context, id string, ev *Event) (bool, Task, error) {
	return r.addFollowUp(ctx, id, ev.IdempotencyKey, Message{Text: ev.Instruction, Actor: ev.Actor.Login, Kind: ev.Kind})
}

func (r *Records) addFollowUp(ctx context.Context, id, key string, m Message) (bool, Task, error) {
	added := false
	rec, _, err := r.update(ctx, id, func(rec *Record) error {
		added = false
		if key != "" && rec.hasKey(key) {
			return errUnchanged
		}
		if key != "" {
			rec.addKey(key)
		}
		rec.NextMsg++
		m.ID, m.CreatedAt = rec.NextMsg, r.now().UTC()
		rec.Messages = append(rec.Messages, m)
		added = true
		return r.wakeLocked(rec)
	})
	if err == nil && added && key != "" {
		// The alias lets a redelivery find the task without scanning.
		if _, err := r.kv.Put(ctx, hashKey("alias", key), []byte(id)); err != nil {
			r.log.Warn("remember follow-up key", "task_id", id, "err", err)
		}
	}
	return added, rec.Task, err
}

// wakeLocked queues a follow-up run of a resting task that has messages
// (inside an update).
func (r *Records) wakeLocked(rec *Record) error {
	if !rec.Task.State.Resting() || len(rec.Messages) == 0 {
		return nil
	}
	return r.requeueLocked(rec, "follow-up", true, nil)
}

// requeueLocked moves rec to queued with a new run and puts that run's
// work item in the outbox, handing it the pending messages. A plan waiting
// for review that gets an approval is approved: the run makes the change.
func (r *Records) requeueLocked(rec *Record, reason string, followUp bool, opt func(*WorkItem)) error {
	if t := &rec.Task; t.Mode == ModePlan && !t.PlanApproved && t.Plan != "" && t.State == StateNeedsInput && len(rec.Messages) > 0 &&
		IsApproval(rec.Messages[len(rec.Messages)-1].Text) {
		t.PlanApproved = true
		reason = "plan approved by " + cmp.Or(rec.Messages[len(rec.Messages)-1].Actor, "a reviewer")
		rec.Messages = nil
	}
	if err := r.transition(rec, StateQueued, reason); err != nil {
		return err
	}
	t := &rec.Task
	t.Run++
	t.Error, t.Reason, t.Answer = "", "", ""
	rec.Transitions[len(rec.Transitions)-1].Run = t.Run
	w := workItemOf(*t, followUp, rec.Messages)
	if opt != nil {
		opt(&w)
	}
	rec.Messages = nil
	rec.Outbox = &w
	return nil
}

func workItemOf(t Task, followUp bool, msgs []Message) WorkItem {
	w := WorkItem{TaskID: t.ID, Run: t.Run, Repo: t.Repo, Base: t.Base, Branch: t.Branch, Agent: t.Agent,
		Prompt: t.Prompt, SessionID: t.SessionID, FollowUp: followUp, Messages: msgs, Source: t.Source, Kind: t.Kind,
		Target: t.Target, Actor: t.Actor, PRURL: t.PRURL, Commit: t.Commit, Mode: t.RunMode(),
		BudgetTokens: t.BudgetTokens, BudgetCostUSD: t.BudgetCostUSD}
	if t.Mode == ModePlan && t.PlanApproved {
		// The change run starts afresh from the prompt and the approved
		// plan (not the planning conversation).
		w.Plan, w.FollowUp, w.Messages, w.SessionID = t.Plan, false, nil, ""
	}
	return w
}

// IsApproval reports whether a reply approves a proposed plan.
func IsApproval(text string) bool {
	switch strings.ToLower(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(text), "@nightshift"))) {
	case "/approve", "approve", "/approved", "approved", "/lgtm", "lgtm":
		return true
	}
	return false
}

// Requeue starts a new run of task id when allowed decides the task's
// state allows it (a retry, an answer).
func (r *Records) Requeue(ctx context.Context, id, reason string, allowed func(Task) error, followUp bool, opt func(*WorkItem)) (Task, error) {
	rec, _, err := r.update(ctx, id, func(rec *Record) error {
		if err := allowed(rec.Task); err != nil {
			return err
		}
		return r.requeueLocked(rec, reason, followUp, opt)
	})
	return rec.Task, err
}

// Cancel ends task id at once, whatever it is doing: a worker running it
// learns it from its next fenced write (or the control subject) and stops.
// changed is false when it was already cancelled.
func (r *Records) Cancel(ctx context.Context, id, reason string, p Patch) (Task, bool, error) {
	rec, changed, err := r.update(ctx, id, func(rec *Record) error {
		switch {
		case rec.Task.State == StateCancelled:
			return errUnchanged
		case !rec.Task.State.CanCancel():
			return fmt.Errorf("%w: task %s is %s", ErrConflict, id, rec.Task.State)
		}
		applyPatch(&rec.Task, p)
		rec.Outbox = nil
		return r.transition(rec, StateCancelled, reason)
	})
	return rec.Task, changed, err
}

// Claim gives the delivery (attempt) of run its task's lease: from now on
// only writes fenced with the returned Fence are accepted for the task. It
// moves the task to provisioning.
//
// seq is the work item's stream sequence: a redelivery of the item (same
// seq) takes the run over from a delivery that went silent, while a second
// copy of the item (another seq, published twice) is stale while the run
// is held. It returns the record as claimed.
func (r *Records) Claim(ctx context.Context, id string, run int, holder string, attempt int, seq uint64) (Fence, Record, error) {
	var f Fence
	rec, _, err := r.update(ctx, id, func(rec *Record) error {
		t := rec.Task
		if t.Run != run {
			return ErrStale
		}
		if t.State != StateQueued && !t.State.Active() {
			return ErrStale // this run has ended
		}
		if rec.Lease.Run == run && rec.Lease.Seq != 0 && seq != 0 && rec.Lease.Seq != seq {
			return ErrStale // a second copy of a work item being run
		}
		if rec.Outbox != nil && rec.Outbox.Run == run {
			rec.Outbox = nil // delivered
		}
		rec.Lease = Lease{Run: run, Epoch: rec.Lease.Epoch + 1, Attempt: attempt, Seq: seq, Holder: holder, At: r.now().UTC()}
		f = Fence{Run: run, Epoch: rec.Lease.Epoch}
		reason := fmt.Sprintf("run %d", run)
		if attempt > 1 {
			reason = fmt.Sprintf("run %d (delivery %d)", run, attempt)
		}
		if t.State == StateProvisioning {
			// A redelivery restarts the run: record it.
			rec.Transitions = append(rec.Transitions, Transition{From: t.State, To: StateProvisioning, Reason: reason, Run: run, At: r.now().UTC()})
			return nil
		}
		return r.transition(rec, StateProvisioning, reason)
	})
	return f, rec, err
}

// landing returns the pushes earlier deliveries of f's run announced and
// never confirmed (their worker was lost, or the run was handed back after
// pushing), newest first, checkpoints left out. Whether one landed is for
// the caller to check on the forge: the branch at its commit.
func (rec Record) landing(f Fence) []PushIntent {
	var out []PushIntent
	for i := len(rec.Intents) - 1; i >= 0; i-- {
		if in := rec.Intents[i]; in.Run == f.Run && in.Epoch < f.Epoch && !in.Checkpoint {
			out = append(out, in)
		}
	}
	return out
}

func (f Fence) holds(rec *Record) bool {
	return rec.Task.Run == f.Run && rec.Lease.Run == f.Run && rec.Lease.Epoch == f.Epoch
}

// Report applies a state report of the run holding fence: refused with
// ErrFenced when the lease moved on, and with a TransitionError when the
// state machine forbids the move (a task cancelled meanwhile).
func (r *Records) Report(ctx context.Context, id string, f Fence, to State, reason string, p Patch) (Task, error) {
	rec, _, err := r.update(ctx, id, func(rec *Record) error {
		if !f.holds(rec) {
			if rec.Task.State == StateCancelled && rec.Task.Run == f.Run && to == StateCancelled {
				// The run stopping after a cancel: keep its usage.
				applyPatch(&rec.Task, Patch{Usage: p.Usage})
				return nil
			}
			return ErrFenced
		}
		if rec.Task.State == StateCancelled && to != StateCancelled {
			return ErrFenced
		}
		if err := r.transition(rec, to, reason); err != nil {
			return err
		}
		applyPatch(&rec.Task, p)
		if p.Commit != nil {
			// The commit is on the branch (pushed): no intent is open.
			rec.Intents = nil
		}
		if to.Resting() && to != StateCancelled {
			return r.wakeLocked(rec)
		}
		return nil
	})
	return rec.Task, err
}

// Intend records, under the run's fence, the push the run is about to
// make and returns where the branch is expected to be for it to land (the
// task's recorded commit, or an older fenced run's announced push that may
// have landed). It is refused with ErrFenced after the lease moved on.
//
// in names the branch and commit (and, for the run's own push, its summary
// and diff); its run, epoch, old commit and time are set here.
func (r *Records) Intend(ctx context.Context, id string, f Fence, in PushIntent) (olds []string, err error) {
	if len(in.Files) > maxIntentFiles {
		in.Files = in.Files[:maxIntentFiles]
	}
	_, _, err = r.update(ctx, id, func(rec *Record) error {
		if !f.holds(rec) || rec.Task.State == StateCancelled {
			return ErrFenced
		}
		olds = olds[:0]
		olds = append(olds, rec.Task.Commit)
		for _, old := range rec.Intents {
			if old.Epoch != f.Epoch && old.Branch == in.Branch {
				olds = append(olds, old.Commit)
			}
		}
		in.Run, in.Epoch, in.Old, in.At = f.Run, f.Epoch, rec.Task.Commit, r.now().UTC()
		rec.Intents = append(rec.Intents, in)
		if len(rec.Intents) > 8 {
			rec.Intents = rec.Intents[len(rec.Intents)-8:]
		}
		return nil
	})
	return olds, err
}

// Fail ends task id as failed when its run run is still the current one
// (the scheduler's decision, e.g. after the run exhausted its deliveries).
func (r *Records) Fail(ctx context.Context, id string, run int, reason, text string) (Task, bool, error) {
	rec, changed, err := r.update(ctx, id, func(rec *Record) error {
		t := rec.Task
		if run != 0 && t.Run != run || t.State.Resting() {
			return errUnchanged
		}
		applyPatch(&rec.Task, Patch{Error: &text, Reason: &reason})
		rec.Outbox = nil
		return r.transition(rec, StateFailed, reason)
	})
	return rec.Task, changed, err
}

// Move applies a scheduler-side transition (no run holds a lease on it):
// the pull request merged or closed, a repository missing.
func (r *Records) Move(ctx context.Context, id string, from []State, to State, reason string, p Patch) (Task, bool, error) {
	rec, changed, err := r.update(ctx, id, func(rec *Record) error {
		ok := false
		for _, s := range from {
			ok = ok || rec.Task.State == s
		}
		if !ok {
			return errUnchanged
		}
		if err := r.transition(rec, to, reason); err != nil {
			return err
		}
		applyPatch(&rec.Task, p)
		return nil
	})
	return rec.Task, changed, err
}

// indexPR remembers that t owns its pull request (so feedback finds it).
func (r *Records) indexPR(ctx context.Context, t Task) {
	if k := prKeyOf(t.Repo, t.PRURL); k != "" {
		if _, err := r.kv.Put(ctx, prLookupKey(k), []byte(t.ID)); err != nil {
			r.log.Warn("remember pull request owner", "task_id", t.ID, "err", err)
		}
	}
}

// TaskByPR returns the task that owns pull request number of repo.
func (r *Records) TaskByPR(ctx context.Context, repo string, number int) (Task, error) {
	id, ok, err := r.lookup(ctx, prLookupKey(PRKey(repo, number)))
	if err != nil {
		return Task{}, err
	}
	if !ok {
		return Task{}, ErrNotFound
	}
	return r.Task(ctx, id)
}

// WaitingTask returns the task on repo's target that waits for an answer.
func (r *Records) WaitingTask(ctx context.Context, repo string, target Target) (Task, error) {
	key := target.Key()
	if key == "" {
		return Task{}, ErrNotFound
	}
	id, ok, err := r.lookup(ctx, targetKey(repo, key))
	if err != nil || !ok {
		if err == nil {
			err = ErrNotFound
		}
		return Task{}, err
	}
	t, err := r.Task(ctx, id)
	if err == nil && t.State != StateNeedsInput {
		return Task{}, ErrNotFound
	}
	return t, err
}

// applyPatch applies p to t.
func applyPatch(t *Task, p Patch) {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&t.BaseCommit, p.BaseCommit)
	set(&t.Commit, p.Commit)
	set(&t.PRURL, p.PRURL)
	set(&t.Review, p.Review)
	set(&t.Error, p.Error)
	set(&t.Reason, p.Reason)
	set(&t.SessionID, p.SessionID)
	set(&t.Answer, p.Answer)
	set(&t.Question, p.Question)
	set(&t.Plan, p.Plan)
	if p.Identity != nil {
		t.Identity = *p.Identity
	}
	if p.Usage != nil {
		t.Usage = *p.Usage
	}
	if p.Diff != nil {
		t.Diff = *p.Diff
	}
	if p.Run != nil {
		t.Run = *p.Run
	}
}
