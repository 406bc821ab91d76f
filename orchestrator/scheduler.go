package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
)

// SchedulerConfig configures a Scheduler. Zero values mean the documented defaults.
type SchedulerConfig struct {
	// AgentFor picks the agent for a repository when the event names none.
	// Nil: DefaultAgent.
	AgentFor func(repo string) string
	// DefaultAgent is used when nothing else names one. Default "claude".
	DefaultAgent string
	// Notifiers hear about every recorded change.
	Notifiers []Notifier
	// AckWait for the event and recorder consumers. Default 30s.
	AckWait time.Duration
	Clock   func() time.Time
	Logger  *slog.Logger
	Metrics *Metrics

	// AnswerTimeout bounds how long a task waits in needs_input for an
	// answer; then it is cancelled with reason no_answer. Default 72h;
	// negative: wait forever.
	AnswerTimeout time.Duration
}

// Scheduler turns events into tasks (one per idempotency key), dispatches
// task runs to the work queue, and records the states workers report into
// the store. It acknowledges an event only after the task row is stored and
// the run is published, so a crash in between redelivers the event and the
// idempotency key keeps it from creating a second task.
type Scheduler struct {
	bus        *Bus
	recs       *Records
	store      *Store
	seen       map[string]seenRecord
	cfg        SchedulerConfig
	log        *slog.Logger
	notifyQ    chan Task
	notifyStop chan struct{}
}

// NewScheduler returns a scheduler.
func NewScheduler(bus *Bus, store *Store, cfg SchedulerConfig) *Scheduler {
	if cfg.DefaultAgent == "" {
		cfg.DefaultAgent = "claude"
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.AnswerTimeout == 0 {
		cfg.AnswerTimeout = 72 * time.Hour
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Scheduler{bus: bus, recs: bus.records, store: store, seen: map[string]seenRecord{}, cfg: cfg, log: cfg.Logger.With("component", "scheduler"),
		notifyQ: make(chan Task, 1024), notifyStop: make(chan struct{})}
}

// reportMissing reports whether rec's newest state report is not on the
// task stream (or that could not be read).
func (s *Scheduler) reportMissing(ctx context.Context, rec Record) bool {
	last, err := s.bus.lastStateSeq(ctx, rec.Task.ID)
	return err != nil || last < len(rec.Transitions)
}

// dedupeSafe is how recent a revision must be for its state report to be
// republished blindly: well inside the tasks stream's 2-minute
// deduplication window.
const dedupeSafe = 90 * time.Second

// reactorAckWait is how long the reactor's one revision in flight may go
// unacknowledged before another scheduler gets it.
const reactorAckWait = 5 * time.Second

// seenRecord is what the reactor last saw of a task.
type seenRecord struct {
	updated     time.Time
	transitions int
}

// Run consumes events and state reports until ctx is done, then drains:
// messages being handled finish, nothing new is taken.
func (s *Scheduler) Run(ctx context.Context) error {
	events, err := s.bus.js.CreateOrUpdateConsumer(ctx, EventsStream, jetstream.ConsumerConfig{
		Durable: "scheduler", AckPolicy: jetstream.AckExplicitPolicy, AckWait: s.cfg.AckWait, MaxDeliver: -1,
		FilterSubject: eventsPrefix + ">", MaxAckPending: 256,
	})
	if err != nil {
		return fmt.Errorf("create scheduler consumer: %w", err)
	}
	// Before the records bucket, a "recorder" stored state reports: it has
	// nothing to do any more.
	if err := s.bus.js.DeleteConsumer(ctx, TasksStream, "recorder"); err == nil {
		s.log.Info("removed the old recorder consumer")
	}
	// The reactor sees every revision of every task record, one at a
	// time across all schedulers (a record's revisions in order).
	reports, err := s.bus.js.CreateOrUpdateConsumer(ctx, "KV_"+RecordsBucket, jetstream.ConsumerConfig{
		// A short AckWait: handling a revision takes milliseconds, and a
		// scheduler that died holding one must not hold up the reactor
		// (one revision at a time) for long.
		Durable: "reactor", AckPolicy: jetstream.AckExplicitPolicy, AckWait: reactorAckWait, MaxDeliver: -1,
		FilterSubject: "$KV." + RecordsBucket + ".t.>", MaxAckPending: 1, DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("create reactor consumer: %w", err)
	}
	if s.store != nil {
		s.store.Follow(ctx, s.recs)
	}
	notifierDone := make(chan struct{})
	go func() {
		defer close(notifierDone)
		s.runNotifier(context.WithoutCancel(ctx))
	}()
	defer func() {
		// Runs last, when the consumers are drained: deliver what is
		// queued, within reason.
		close(s.notifyStop)
		select {
		case <-notifierDone:
		case <-time.After(30 * time.Second):
			s.log.Warn("reporters still busy at shutdown")
		}
	}()
	// A run redelivered MaxDeliver times without finishing (workers keep
	// crashing on it) would otherwise stay "running" forever: JetStream's
	// advisory names it, and the task fails with a reason.
	adv, err := s.bus.nc.Subscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."+WorkStream+".>", func(m *nats.Msg) {
		go s.handleMaxDeliveries(context.WithoutCancel(ctx), m.Data)
	})
	if err != nil {
		return fmt.Errorf("subscribe to delivery advisories: %w", err)
	}
	defer adv.Unsubscribe()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { s.runAnswerTimeouts(gctx); return nil })
	for _, c := range []struct {
		cons jetstream.Consumer
		fn   func(context.Context, jetstream.Msg)
	}{{events, s.handleEvent}, {reports, s.handleRecord}} {
		cc, err := c.cons.Consume(func(m jetstream.Msg) { c.fn(context.WithoutCancel(gctx), m) })
		if err != nil {
			return fmt.Errorf("consume: %w", err)
		}
		g.Go(func() error {
			<-gctx.Done()
			cc.Drain()
			<-cc.Closed()
			return nil
		})
	}
	return g.Wait()
}

func (s *Scheduler) handleEvent(ctx context.Context, msg jetstream.Msg) {
	var ev Event
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		s.log.Error("malformed event", "subject", msg.Subject(), "err", err)
		msg.TermWithReason("malformed event")
		return
	}
	log := s.log.With("delivery_id", ev.DeliveryID, "kind", ev.Kind)
	err := s.apply(ctx, &ev)
	switch {
	case err == nil:
		msg.Ack()
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrConflict), isTransition(err):
		log.Warn("event refused", "err", err)
		msg.TermWithReason(err.Error())
	default:
		log.Error("event failed; will retry", "err", err)
		msg.NakWithDelay(2 * time.Second)
	}
}

func isTransition(err error) bool {
	var te *TransitionError
	return errors.As(err, &te)
}

// ErrConflict is returned for an action the task's state does not allow.
var ErrConflict = errors.New("orchestrator: not allowed in the task's state")

func (s *Scheduler) apply(ctx context.Context, ev *Event) error {
	switch ev.Kind {
	case KindTaskCancel:
		s.cfg.Metrics.event(ev, "control")
		return s.cancel(ctx, ev.Target.ID)
	case KindTaskRetry:
		s.cfg.Metrics.event(ev, "control")
		return s.retryFrom(ctx, ev.Target.ID, ev.FromBase)
	case KindTaskMessage:
		s.cfg.Metrics.event(ev, "control")
		_, _, err := s.recs.AddFollowUp(ctx, ev.Target.ID, ev.IdempotencyKey, ev.Instruction, ev.Actor.Login)
		return err
	case KindTaskAnswer:
		s.cfg.Metrics.event(ev, "control")
		return s.answer(ctx, ev)
	case KindSlackAction:
		s.cfg.Metrics.event(ev, "control")
		switch strings.ToLower(ev.Instruction) {
		case "cancel":
			return s.cancel(ctx, ev.Target.ID)
		case "retry":
			return s.retry(ctx, ev.Target.ID)
		case "approve":
			// The plan's approval button: an approving answer.
			ev.Instruction = "/approve"
			return s.answer(ctx, ev)
		}
		return fmt.Errorf("%w: unknown action %q", ErrConflict, ev.Instruction)
	case KindPRFeedback, KindPRMerged, KindPRClosed:
		return s.applyPR(ctx, ev)
	case KindComment, KindCIFailed:
		// On a pull request a task owns, it is that task's follow-up.
		if handled, err := s.routeToOwner(ctx, ev); err != nil || handled {
			return err
		}
	}
	if ev.IdempotencyKey == "" {
		ev.IdempotencyKey = string(ev.Source) + ":" + ev.DeliveryID
	}
	agentName := ev.Agent
	if agentName == "" && s.cfg.AgentFor != nil {
		agentName = s.cfg.AgentFor(ev.Repo)
	}
	if agentName == "" {
		agentName = s.cfg.DefaultAgent
	}
	res, err := s.recs.CreateFromEvent(ctx, ev, agentName)
	if err != nil {
		return fmt.Errorf("store task: %w", err)
	}
	switch {
	case res.FollowUp:
		s.cfg.Metrics.event(ev, "follow_up")
		return nil
	case res.Created:
		s.cfg.Metrics.event(ev, "created")
	default:
		s.cfg.Metrics.event(ev, "duplicate")
	}
	t := res.Task
	if t.State != StateQueued {
		return nil
	}
	if t.Repo == "" {
		// A trigger that names no repository (a Linear ticket without
		// linear.repo) cannot run: say so on the task instead of failing
		// a worker later.
		msg := fmt.Sprintf("no repository for this %s trigger: configure one (linear.repo for Linear tickets)", t.Source)
		_, _, err := s.recs.Fail(ctx, t.ID, t.Run, "no_repo", msg)
		return err
	}
	// The first run's work item went into the task's outbox in the
	// creating write (here or by the API); the writer or the reactor
	// publishes it.
	return nil
}

// notify hands t to the reporters without holding up recording: a slow
// chat or forge API must not delay the states of every other task. The
// queue keeps changes in order; reporters are idempotent and remember what
// they reported, so a change lost in a crash is caught up by the next one.
func (s *Scheduler) notify(ctx context.Context, t Task) {
	if len(s.cfg.Notifiers) == 0 {
		return
	}
	select {
	case s.notifyQ <- t:
	case <-s.notifyStop:
	case <-ctx.Done():
	}
}

// runNotifier delivers queued changes to the reporters until notifyStop is
// closed, then delivers what is still queued and returns.
func (s *Scheduler) runNotifier(ctx context.Context) {
	deliver := func(t Task) {
		for _, n := range s.cfg.Notifiers {
			if err := n.Notify(ctx, t); err != nil {
				s.log.Warn("notify", "task_id", t.ID, "err", err)
			}
		}
	}
	for {
		select {
		case t := <-s.notifyQ:
			deliver(t)
		case <-s.notifyStop:
			for {
				select {
				case t := <-s.notifyQ:
					deliver(t)
				default:
					return
				}
			}
		}
	}
}

// cancel ends task id at once; a worker running it stops on the control
// message or its next fenced write.
func (s *Scheduler) cancel(ctx context.Context, id string) error {
	if _, _, err := s.recs.Cancel(ctx, id, "cancelled", Patch{}); err != nil {
		return err
	}
	// Tell a worker running it (and one about to start it) to stop.
	if err := s.bus.MarkCancelled(ctx, id, 0); err != nil {
		s.log.Warn("signal cancel", "task_id", id, "err", err)
	}
	return nil
}

func (s *Scheduler) retry(ctx context.Context, id string) error { return s.retryFrom(ctx, id, false) }

// retryFrom starts a new run of task id's prompt: from its current branch,
// so that no pushed commit (a follow-up's included) is lost, or with
// fromBase from its base, replacing the branch.
func (s *Scheduler) retryFrom(ctx context.Context, id string, fromBase bool) error {
	reason := "retry"
	if fromBase {
		reason = "retry from base"
	}
	_, err := s.recs.Requeue(ctx, id, reason, func(t Task) error {
		if !t.State.CanRetry() {
			return fmt.Errorf("%w: task %s is %s", ErrConflict, id, t.State)
		}
		return nil
	}, false, func(w *WorkItem) {
		// A new run, in a fresh home: there is no session to resume.
		w.Retry, w.FromBase, w.SessionID = true, fromBase, ""
	})
	return err
}

// handleRecord reacts to one revision of a task record, for every
// scheduler of the cluster (one of them handles each revision): it
// republishes what the writer may have died before publishing (the state
// report, the owed work item) and tells the reporters.
func (s *Scheduler) handleRecord(ctx context.Context, msg jetstream.Msg) {
	if op := msg.Headers().Get("KV-Operation"); op != "" {
		msg.Ack()
		return
	}
	var rec Record
	if err := json.Unmarshal(msg.Data(), &rec); err != nil || rec.Task.ID == "" {
		msg.Ack()
		return
	}
	// The writer published this revision's state report right after
	// writing it, unless it died in between: republish only what is
	// missing (an old report published again would look like news).
	// Within the stream's deduplication window a second publish of the
	// same report is dropped, so a recent revision is always republished
	// (a later transition's report may already be out while this one's
	// is missing); an old one only when nothing as new was published.
	if s.cfg.Clock().Sub(rec.Task.UpdatedAt) < dedupeSafe || s.reportMissing(ctx, rec) {
		if err := s.recs.project(ctx, rec); err != nil {
			s.log.Warn("republish state report; will retry", "task_id", rec.Task.ID, "err", err)
			msg.NakWithDelay(time.Second)
			return
		}
	}
	if rec.Outbox != nil {
		cur, _, err := s.recs.Get(ctx, rec.Task.ID)
		if err == nil && cur.Outbox != nil {
			err = s.recs.flushOutbox(ctx, cur)
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			s.log.Warn("publish owed work; will retry", "task_id", rec.Task.ID, "err", err)
			msg.NakWithDelay(time.Second)
			return
		}
	}
	msg.Ack()
	t := rec.Task
	last, ok := s.seen[t.ID]
	if ok && last.updated.Equal(t.UpdatedAt) || ok && last.updated.After(t.UpdatedAt) {
		return // a revision seen before (redelivered), or an older one
	}
	if len(s.seen) > 50000 {
		clear(s.seen)
	}
	s.seen[t.ID] = seenRecord{updated: t.UpdatedAt, transitions: len(rec.Transitions)}
	defer func() {
		if t.Respond == "silent" {
			return // an automation that reports nothing where it came from
		}
		s.notify(ctx, t)
	}()
	if !ok && len(rec.Transitions) == 1 && t.State == StateQueued {
		s.cfg.Metrics.created(t.Source) // wherever it was created
	}
	if n := len(rec.Transitions) - last.transitions; n > 0 {
		for _, tr := range rec.Transitions[len(rec.Transitions)-min(n, len(rec.Transitions)):] {
			s.cfg.Metrics.transition(tr.To)
			if tr.To == StateTesting {
				s.cfg.Metrics.usage(t.Usage)
			}
		}
	}
}

// handleMaxDeliveries fails the task whose run exhausted its deliveries and
// removes the run from the work queue.
func (s *Scheduler) handleMaxDeliveries(ctx context.Context, data []byte) {
	var adv struct {
		StreamSeq  uint64 `json:"stream_seq"`
		Deliveries uint64 `json:"deliveries"`
	}
	if err := json.Unmarshal(data, &adv); err != nil || adv.StreamSeq == 0 {
		return
	}
	st, err := s.bus.js.Stream(ctx, WorkStream)
	if err != nil {
		s.log.Error("max deliveries: open work stream", "err", err)
		return
	}
	raw, err := st.GetMsg(ctx, adv.StreamSeq)
	if err != nil {
		s.log.Error("max deliveries: read run", "seq", adv.StreamSeq, "err", err)
		return
	}
	var item WorkItem
	if err := json.Unmarshal(raw.Data, &item); err != nil {
		return
	}
	msg := fmt.Sprintf("the run was delivered %d times without finishing (its workers crashed or were killed)", adv.Deliveries)
	reason := "worker_lost"
	// The run leaves the queue only once its task says it failed: a task
	// whose record cannot be written now (a full disk, no quorum) keeps
	// its work item, and is failed on a later try, so it can always be
	// retried or cancelled.
	for delay := time.Second; ; delay = min(2*delay, time.Minute) {
		_, _, err := s.recs.Fail(ctx, item.TaskID, item.Run, reason, msg)
		if err == nil || errors.Is(err, ErrNotFound) {
			break
		}
		s.log.Warn("max deliveries: fail task; will retry", "task_id", item.TaskID, "err", err)
		select {
		case <-s.notifyStop:
			return
		case <-time.After(delay):
		}
	}
	if err := st.DeleteMsg(ctx, adv.StreamSeq); err != nil {
		s.log.Warn("max deliveries: remove run", "seq", adv.StreamSeq, "err", err)
	}
}
