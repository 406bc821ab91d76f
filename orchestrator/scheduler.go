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
	store      *Store
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
	return &Scheduler{bus: bus, store: store, cfg: cfg, log: cfg.Logger.With("component", "scheduler"),
		notifyQ: make(chan Task, 1024), notifyStop: make(chan struct{})}
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
	reports, err := s.bus.js.CreateOrUpdateConsumer(ctx, TasksStream, jetstream.ConsumerConfig{
		Durable: "recorder", AckPolicy: jetstream.AckExplicitPolicy, AckWait: s.cfg.AckWait, MaxDeliver: -1,
		FilterSubjects: []string{StatesWildcard, "nightshift.tasks.*.diff"}, MaxAckPending: 1,
	})
	if err != nil {
		return fmt.Errorf("create recorder consumer: %w", err)
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
		s.handleMaxDeliveries(context.WithoutCancel(ctx), m.Data)
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
	}{{events, s.handleEvent}, {reports, s.handleReport}} {
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
		if _, err := s.store.AddMessage(ctx, ev.Target.ID, ev.Instruction, ev.Actor.Login); err != nil {
			return err
		}
		return s.wake(ctx, ev.Target.ID)
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
	res, err := s.store.CreateFromEvent(ctx, ev, agentName)
	if err != nil {
		return fmt.Errorf("store task: %w", err)
	}
	switch {
	case res.FollowUp:
		s.cfg.Metrics.event(ev, "follow_up")
		return s.wake(ctx, res.Task.ID)
	case res.Created:
		s.cfg.Metrics.event(ev, "created")
		s.cfg.Metrics.created(ev.Source)
		s.cfg.Metrics.transition(StateQueued)
	default:
		s.cfg.Metrics.event(ev, "duplicate")
	}
	t := res.Task
	if t.State != StateQueued {
		return nil
	}
	if err := s.announce(ctx, t, "created"); err != nil {
		return err
	}
	if t.Repo == "" {
		// A trigger that names no repository (a Linear ticket without
		// linear.repo) cannot run: say so on the task instead of failing
		// a worker later.
		msg := fmt.Sprintf("no repository for this %s trigger: configure one (linear.repo for Linear tickets)", t.Source)
		reason := "no_repo"
		nt, changed, err := s.store.ApplyTransition(ctx, t.ID, t.Run, StateFailed, reason, Patch{Error: &msg, Reason: &reason})
		if err != nil || !changed {
			return err
		}
		s.cfg.Metrics.transition(StateFailed)
		return s.announce(ctx, nt, reason)
	}
	return s.dispatch(ctx, t, false, nil)
}

// dispatch publishes run t.Run of task t to the work queue unless it was
// already published.
func (s *Scheduler) dispatch(ctx context.Context, t Task, followUp bool, msgs []Message, opts ...func(*WorkItem)) error {
	done, err := s.store.Dispatched(ctx, t.ID, t.Run)
	if err != nil || done {
		return err
	}
	w := WorkItem{TaskID: t.ID, Run: t.Run, Repo: t.Repo, Base: t.Base, Branch: t.Branch, Agent: t.Agent,
		Prompt: t.Prompt, SessionID: t.SessionID, FollowUp: followUp, Messages: msgs, Source: t.Source, Kind: t.Kind,
		Target: t.Target, Actor: t.Actor, PRURL: t.PRURL, Commit: t.Commit}
	for _, o := range opts {
		o(&w)
	}
	if err := s.bus.publishWork(ctx, w); err != nil {
		return err
	}
	return s.store.MarkDispatched(ctx, t.ID, t.Run)
}

// announce publishes a transition the scheduler itself stored.
func (s *Scheduler) announce(ctx context.Context, t Task, reason string) error {
	if err := s.bus.publishState(ctx, StateReport{TaskID: t.ID, Run: t.Run, Seq: 0, State: t.State, Reason: reason,
		At: t.UpdatedAt, Recorded: true, Task: &t}); err != nil {
		return err
	}
	s.notify(ctx, t)
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

func (s *Scheduler) cancel(ctx context.Context, id string) error {
	t, err := s.store.Get(ctx, id)
	if err != nil {
		return err
	}
	switch {
	case t.State == StateCancelled:
		return nil
	case !t.State.CanCancel():
		return fmt.Errorf("%w: task %s is %s", ErrConflict, id, t.State)
	}
	if err := s.bus.MarkCancelled(ctx, id, t.Run); err != nil {
		return err
	}
	if t.State.Active() {
		return nil // the worker stops the run and reports cancelled
	}
	nt, changed, err := s.store.ApplyTransition(ctx, id, t.Run, StateCancelled, "cancelled", Patch{})
	if err != nil || !changed {
		return err
	}
	s.cfg.Metrics.transition(StateCancelled)
	return s.announce(ctx, nt, "cancelled")
}

func (s *Scheduler) retry(ctx context.Context, id string) error { return s.retryFrom(ctx, id, false) }

// retryFrom starts a new run of task id's prompt: from its current branch,
// so that no pushed commit (a follow-up's included) is lost, or with
// fromBase from its base, replacing the branch.
func (s *Scheduler) retryFrom(ctx context.Context, id string, fromBase bool) error {
	t, err := s.store.Get(ctx, id)
	if err != nil {
		return err
	}
	if !t.State.CanRetry() {
		return fmt.Errorf("%w: task %s is %s", ErrConflict, id, t.State)
	}
	reason := "retry"
	if fromBase {
		reason = "retry from base"
	}
	return s.requeue(ctx, t, false, nil, reason, func(w *WorkItem) {
		// A new run, in a fresh home: there is no session to resume.
		w.Retry, w.FromBase, w.SessionID = true, fromBase, ""
	})
}

// wake starts a follow-up run for a resting task with pending messages.
func (s *Scheduler) wake(ctx context.Context, id string) error {
	t, err := s.store.Get(ctx, id)
	if err != nil {
		return err
	}
	if !t.State.Resting() {
		return nil // the run in progress picks the messages up when it rests
	}
	msgs, err := s.store.PendingMessages(ctx, id)
	if err != nil || len(msgs) == 0 {
		return err
	}
	if err := s.requeue(ctx, t, true, msgs, "follow-up"); err != nil {
		return err
	}
	return s.store.ConsumeMessages(ctx, id, msgs[len(msgs)-1].ID)
}

func (s *Scheduler) requeue(ctx context.Context, t Task, followUp bool, msgs []Message, reason string, opts ...func(*WorkItem)) error {
	run := t.Run + 1
	empty := ""
	nt, _, err := s.store.ApplyTransition(ctx, t.ID, t.Run, StateQueued, reason, Patch{Run: &run, Error: &empty, Reason: &empty, Answer: &empty})
	if err != nil {
		return err
	}
	s.cfg.Metrics.transition(StateQueued)
	if err := s.announce(ctx, nt, reason); err != nil {
		return err
	}
	return s.dispatch(ctx, nt, followUp, msgs, opts...)
}

func (s *Scheduler) handleReport(ctx context.Context, msg jetstream.Msg) {
	if strings.HasSuffix(msg.Subject(), ".diff") {
		var d DiffReport
		if err := json.Unmarshal(msg.Data(), &d); err != nil {
			msg.TermWithReason("malformed diff")
			return
		}
		t, err := s.store.Get(ctx, d.TaskID)
		if err == nil && d.Run >= t.Run {
			_, _, err = s.store.ApplyTransition(ctx, d.TaskID, d.Run, t.State, "", Patch{Diff: &d.Stat, Patch: &d.Patch})
		}
		s.ackOrRetry(msg, err)
		return
	}
	var r StateReport
	if err := json.Unmarshal(msg.Data(), &r); err != nil {
		msg.TermWithReason("malformed state report")
		return
	}
	if r.Recorded {
		msg.Ack()
		return
	}
	t, changed, err := s.store.ApplyTransition(ctx, r.TaskID, r.Run, r.State, r.Reason, r.Patch)
	if err != nil {
		s.ackOrRetry(msg, err)
		return
	}
	msg.Ack()
	if !changed {
		return
	}
	s.cfg.Metrics.transition(r.State)
	if r.Patch.Usage != nil && r.State == StateTesting {
		s.cfg.Metrics.usage(*r.Patch.Usage)
	}
	s.notify(ctx, t)
	// A run that rests picks up the messages sent meanwhile (not one the
	// task was cancelled under).
	if r.State.Resting() && r.State != StateCancelled {
		if err := s.wake(ctx, t.ID); err != nil {
			s.log.Warn("follow-up", "task_id", t.ID, "err", err)
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
	t, changed, err := s.store.ApplyTransition(ctx, item.TaskID, item.Run, StateFailed, reason, Patch{Error: &msg, Reason: &reason})
	if err != nil {
		s.log.Warn("max deliveries: fail task", "task_id", item.TaskID, "err", err)
	} else if changed {
		s.cfg.Metrics.transition(StateFailed)
		s.announce(ctx, t, reason)
	}
	if err := st.DeleteMsg(ctx, adv.StreamSeq); err != nil {
		s.log.Warn("max deliveries: remove run", "seq", adv.StreamSeq, "err", err)
	}
}

func (s *Scheduler) ackOrRetry(msg jetstream.Msg, err error) {
	switch {
	case err == nil:
		msg.Ack()
	case errors.Is(err, ErrNotFound), isTransition(err):
		s.log.Debug("stale report", "subject", msg.Subject(), "err", err)
		msg.Ack()
	default:
		s.log.Error("record report; will retry", "subject", msg.Subject(), "err", err)
		msg.NakWithDelay(time.Second)
	}
}
