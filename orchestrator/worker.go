package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/orchestrator/gateway"
	"github.com/nightshift/nightshift/worktree"
)

// RepoSettings is what a worker needs to know about a repository.
type RepoSettings struct {
	Setup          string
	Test           string
	Timeout        time.Duration
	AllowHosts     []string
	Protected      []string
	AllowProtected bool
	// Auth for fetching and pushing.
	Auth worktree.Auth
	// Budget limits the model usage of one task (through the gateway).
	Budget gateway.Budget
}

// Ports inside the sandbox where the task's services are forwarded.
const (
	MCPPort     = 7311
	GatewayPort = 7312
)

// WorkerConfig configures a Worker. Zero values mean the documented defaults.
type WorkerConfig struct {
	// Concurrency is how many tasks this worker runs at once. Default 2.
	Concurrency int
	// MaxAckPending caps the runs in flight across all workers: the work
	// consumer is one durable shared by every worker, and the last worker
	// to start sets it. Default: no cap (-1). Each worker fetches a run
	// only when one of its Concurrency slots is free, so the cluster runs
	// at most the sum of its workers' Concurrency; a cap here could only
	// hold back a worker that has free slots (a default of 64 did).
	MaxAckPending int
	// AckWait is how long a run may go without a heartbeat before JetStream
	// redelivers it to another worker. Heartbeats go out every AckWait/3.
	// Default 60s.
	AckWait time.Duration
	// MaxDeliver bounds redeliveries of one run (crashes). Default 5.
	MaxDeliver int
	// Durable is the consumer name shared by all workers. Default "workers".
	Durable string
	// Holder names this worker in the leases it takes (host and pid by
	// default).
	Holder string
	// Ready, when set, is asked before each run is taken (serve: the data
	// dir takes writes); an error leaves the run to other workers.
	Ready func(ctx context.Context) error
	// Repo returns the settings for a repository. Required.
	Repo func(repo string) RepoSettings
	// Env returns extra environment for a task's agent (its configured env,
	// with secret references resolved from the scopes granted to the task).
	// An error fails the run before the agent starts. Optional.
	Env func(ctx context.Context, taskID, agent, repo string) (map[string]string, error)
	// Preflight checks what a run needs before anything is provisioned
	// (the agent's command on the sandbox's PATH, a model key, push
	// credentials, a reachable repository host). An error fails the run at
	// once with reason "preflight" and the error's text, which should be
	// one sentence saying what is missing and how to fix it. Optional.
	Preflight func(ctx context.Context, item WorkItem) error
	// Model returns the model an agent is asked to use ("" = the CLI's
	// default). Optional.
	Model func(agent string) string
	// Redactor cleans every line that leaves the task. Optional.
	Redactor Redactor
	// PullRequests plans branches and opens pull requests. Nil: the branch
	// is pushed to the task's repository and the run rests in review.
	PullRequests PullRequests
	// MCP is the identity MCP handler (identity/mcpserver). Each run serves
	// it at /mcp, and nothing else, on a listener of its own that accepts
	// only the run's task's tokens; the sandbox reaches it on loopback port
	// MCPPort. Nil: no MCP for agents.
	MCP http.Handler
	// Gateway puts the model gateway in front of agents: each run serves
	// Gateway.TaskHandler(task) on a listener of its own, which the sandbox
	// reaches on loopback port GatewayPort. Nil: no gateway.
	Gateway Gateway
	// ServiceDir holds each run's service sockets, in a 0700 directory
	// <ServiceDir>/<task>-<run> removed when the run ends. Empty (or a
	// path too long for socket names): a private temporary directory.
	ServiceDir string
	// DirectNetwork serves a run's services on loopback TCP ports of the
	// host, given to agents as is, instead of sockets forwarded into the
	// sandbox (the process driver shares the host's network).
	DirectNetwork bool
	// TokenMargin is added to the lifetime of a run's MCP token, three
	// times the repository's timeout (setup, agent and test steps), and of
	// its gateway token, the timeout (agent step). The tokens are revoked
	// when the run ends; the expiry covers a run that never got there.
	// Default 10 minutes.
	TokenMargin time.Duration
	// Secrets returns the secret values visible to a task (name → value),
	// which are then removed from everything the task emits. Optional.
	Secrets func(ctx context.Context, taskID, agent, repo string) (map[string]string, error)
	// NewRedactor builds a redactor over secret values. Required with Secrets.
	NewRedactor func(map[string]string) Redactor
	// SandboxHome is where the task's home directory appears inside the
	// sandbox ($HOME); empty means at its host path (process driver).
	SandboxHome string
	// Tools are executables put on the sandbox PATH (name → host path),
	// e.g. ravi and nightshift.
	Tools map[string]string
	// DrainTimeout bounds how long Run waits for running tasks on shutdown
	// before cancelling them. Default 30s.
	DrainTimeout time.Duration
	Clock        func() time.Time
	Logger       *slog.Logger
	Metrics      *Metrics
}

func (c WorkerConfig) withDefaults() WorkerConfig {
	if c.Concurrency <= 0 {
		c.Concurrency = 2
	}
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = -1
	}
	if c.AckWait <= 0 {
		c.AckWait = 60 * time.Second
	}
	if c.Holder == "" {
		host, _ := os.Hostname()
		c.Holder = fmt.Sprintf("%s/%d", host, os.Getpid())
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 5
	}
	if c.Durable == "" {
		c.Durable = "workers"
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.TokenMargin <= 0 {
		c.TokenMargin = 10 * time.Minute
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Env == nil {
		c.Env = func(context.Context, string, string, string) (map[string]string, error) { return nil, nil }
	}
	return c
}

// Worker takes task runs from the work queue and drives each through
// provision → agent → test → commit → push. It acknowledges a run only when
// the run's final state is published; a crash mid-run leaves the message
// unacknowledged and JetStream redelivers it once AckWait passes without a
// heartbeat.
type Worker struct {
	bus        *Bus
	sandboxes  Sandboxes
	worktrees  Worktrees
	identities Identities
	agents     Agents
	cfg        WorkerConfig
	log        *slog.Logger
	running    sync.Map // task id → struct{}
}

// Running reports whether this worker is running task id right now.
func (w *Worker) Running(id string) bool {
	_, ok := w.running.Load(id)
	return ok
}

// NewWorker returns a worker.
func NewWorker(bus *Bus, sb Sandboxes, wt Worktrees, ids Identities, agents Agents, cfg WorkerConfig) (*Worker, error) {
	if cfg.Repo == nil {
		return nil, errors.New("orchestrator: WorkerConfig.Repo is required")
	}
	cfg = cfg.withDefaults()
	return &Worker{bus: bus, sandboxes: sb, worktrees: wt, identities: ids, agents: agents, cfg: cfg,
		log: cfg.Logger.With("component", "worker")}, nil
}

// Run takes work until ctx is done, then stops taking work and waits up to
// DrainTimeout for running tasks before cancelling them (their runs are
// handed back to JetStream for redelivery).
func (w *Worker) Run(ctx context.Context) error {
	cons, err := w.bus.js.CreateOrUpdateConsumer(ctx, WorkStream, jetstream.ConsumerConfig{
		Durable:       w.cfg.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.cfg.AckWait,
		MaxAckPending: w.cfg.MaxAckPending,
		MaxDeliver:    w.cfg.MaxDeliver,
		FilterSubject: workPrefix + ">",
	})
	if err != nil {
		return fmt.Errorf("create work consumer: %w", err)
	}
	// Tasks run on their own context so that stopping to take work does not
	// kill them; it is cancelled after the drain timeout.
	taskCtx, cancelTasks := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelTasks()
	var wg sync.WaitGroup
	for i := 0; i < w.cfg.Concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop(ctx, taskCtx, cons)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	<-ctx.Done()
	select {
	case <-done:
	case <-time.After(w.cfg.DrainTimeout):
		w.log.Warn("drain timeout: cancelling running tasks")
		cancelTasks()
		<-done
	}
	return nil
}

func (w *Worker) loop(ctx, taskCtx context.Context, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		if w.cfg.Ready != nil {
			// A worker that cannot write its disk takes no run: another
			// worker does, or this one once the disk is back.
			if err := w.cfg.Ready(ctx); err != nil {
				w.log.Warn("not taking work", "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(2 * time.Second):
				}
				continue
			}
		}
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return
			}
			w.log.Warn("fetch work", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		for msg := range batch.Messages() {
			w.handle(taskCtx, msg)
		}
		cancel()
	}
}

// errCancelled is the cause of a run's context when the task was cancelled.
var errCancelled = errors.New("orchestrator: task cancelled")

// errAsked ends a run whose agent asked a question (needs_input).
var errAsked = errors.New("orchestrator: the agent asked a question")

// errFenced is the cause of a run's context when the authority refused its
// write: another delivery took the run over, or the task moved on.
var errFenced = errors.New("orchestrator: the run lost its task")

// errUnrecorded is the cause of a run's context when its state could not be
// recorded (the authority unreachable): the run is handed back.
var errUnrecorded = errors.New("orchestrator: the run's state could not be recorded")

// errBudget is the cause of a run's context when its budget ran out.
var errBudget = errors.New("orchestrator: budget exceeded")

func (w *Worker) handle(ctx context.Context, msg jetstream.Msg) {
	var item WorkItem
	if err := json.Unmarshal(msg.Data(), &item); err != nil || item.TaskID == "" {
		w.log.Error("bad work item", "err", err)
		msg.TermWithReason("malformed work item")
		return
	}
	log := w.log.With("task_id", item.TaskID, "run", item.Run)
	w.running.Store(item.TaskID, struct{}{})
	defer w.running.Delete(item.TaskID)
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// Heartbeats keep the message ours while the run is long.
	hbDone := make(chan struct{})
	defer close(hbDone)
	go func() {
		t := time.NewTicker(w.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-hbDone:
				return
			case <-t.C:
				if err := msg.InProgress(); err != nil {
					log.Warn("heartbeat", "err", err)
				}
			}
		}
	}()
	sub, err := w.bus.nc.Subscribe(ControlSubject(item.TaskID), func(*nats.Msg) { cancel(errCancelled) })
	if err == nil {
		defer sub.Unsubscribe()
	}
	attempt, seq := 1, uint64(0)
	if md, err := msg.Metadata(); err == nil {
		attempt, seq = int(md.NumDelivered), md.Sequence.Stream
	}
	// The run's lease: from here on, only this delivery may write the
	// task's state; a stale one (a frozen worker resumed) is refused.
	fence, claimed, err := w.bus.records.Claim(ctx, item.TaskID, item.Run, w.cfg.Holder, attempt, seq)
	// The authority unreachable or unwritable (a full disk under NATS, no
	// quorum): keep the item (heartbeats) and try again for a while rather
	// than spend its deliveries in seconds.
	for delay := time.Second; err != nil && !errors.Is(err, ErrStale) && !errors.Is(err, ErrNotFound) && delay <= 32*time.Second; delay *= 2 {
		log.Warn("claim run; trying again", "err", err, "in", delay)
		msg.InProgress()
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		if ctx.Err() != nil {
			break
		}
		fence, claimed, err = w.bus.records.Claim(ctx, item.TaskID, item.Run, w.cfg.Holder, attempt, seq)
	}
	switch {
	case errors.Is(err, ErrStale), errors.Is(err, ErrNotFound):
		log.Info("work item dropped: its run ended or another delivery holds it", "err", err)
		w.finalAck(ctx, msg, log)
		return
	case err != nil:
		log.Warn("claim run; handing back", "err", err)
		msg.NakWithDelay(2 * time.Second)
		return
	}
	log = log.With("epoch", fence.Epoch)
	rep := &reporter{bus: w.bus, recs: w.bus.records, fence: fence, landing: claimed.landing(fence), stop: cancel, item: item, attempt: attempt,
		clock: w.cfg.Clock, log: log, logs: w.bus.TaskLogs(item.TaskID)}
	// The tokens the run hands its agent are redacted from the moment each
	// is issued; execute adds the task's secrets (redactRun) before
	// anything runs, and fails closed when they cannot be loaded.
	rep.tokens = &tokenRedactor{newRedactor: w.cfg.NewRedactor}
	rep.redact = chainRedactors(rep.tokens, w.cfg.Redactor)
	started := w.cfg.Clock()
	err = w.execute(runCtx, cancel, item, rep)
	final := context.WithoutCancel(ctx)
	switch cause := context.Cause(runCtx); {
	case errors.Is(cause, errFenced) || rep.fenced.Load():
		// Another delivery holds the run, or the task ended under it:
		// touch nothing of the task (not even its identity).
		w.lostLease(final, msg, item, fence, log)
	case errors.Is(cause, errUnrecorded):
		log.Warn("run state could not be recorded; handing back")
		msg.NakWithDelay(5 * time.Second)
	case errors.Is(cause, errBudget):
		text := "the task's model budget was exhausted"
		reason := "budget_exceeded"
		rep.line(final, "system", "failed: "+text)
		w.release(final, item.TaskID, log)
		rep.state(final, StateFailed, reason, Patch{Error: &text, Reason: &reason, Usage: rep.usage})
		w.finalAck(final, msg, log)
	case errors.Is(cause, errCancelled):
		rep.line(final, "system", "cancelled")
		w.release(final, item.TaskID, log)
		rep.state(final, StateCancelled, "cancelled", Patch{Usage: rep.usage})
		w.finalAck(final, msg, log)
	case ctx.Err() != nil:
		// Shutting down: hand the run back for another worker.
		log.Info("run interrupted by shutdown; handing back")
		msg.NakWithDelay(time.Second)
	case err != nil && w.finishRetryable(final, msg, rep, err, attempt):
		// A transient failure with deliveries left: the run waits in the
		// queue for its next delivery (same run, same lease rules).
		_, text := failure(err)
		rep.state(final, StateQueued, "retrying: "+text, Patch{})
	case err != nil:
		reason, text := failure(err)
		rep.line(final, "system", "failed: "+text)
		w.release(final, item.TaskID, log)
		rep.state(final, StateFailed, reason, Patch{Error: &text, Reason: &reason, Usage: rep.usage})
		w.finalAck(final, msg, log)
	default:
		w.finalAck(final, msg, log)
	}
	w.cfg.Metrics.observeRun(w.cfg.Clock().Sub(started))
	fctx, cancelFlush := context.WithTimeout(final, 10*time.Second)
	if err := rep.logs.Flush(fctx); err != nil {
		log.Warn("log lines not all stored", "err", err)
	}
	cancelFlush()
}

// finalAck acknowledges a work item and waits for the server to confirm
// it (a lost ack would run the item again).
func (w *Worker) finalAck(ctx context.Context, msg jetstream.Msg, log *slog.Logger) {
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := msg.DoubleAck(actx); err != nil {
		log.Warn("final ack not confirmed", "err", err)
	}
}

// lostLease ends a run the authority no longer lets write: when another
// delivery of the same run holds the task, the work item is theirs (not
// acknowledged here); otherwise (the task was cancelled or moved on) the
// item is done.
func (w *Worker) lostLease(ctx context.Context, msg jetstream.Msg, item WorkItem, f Fence, log *slog.Logger) {
	rec, _, err := w.bus.records.Get(ctx, item.TaskID)
	if err == nil && rec.Task.Run == item.Run && rec.Lease.Run == item.Run && rec.Lease.Epoch != f.Epoch {
		log.Warn("run lost its lease to another delivery; leaving the task to it", "holder", rec.Lease.Holder, "epoch", rec.Lease.Epoch)
		return
	}
	log.Info("run stopped: its task moved on", "state", rec.Task.State)
	if rec.Task.State == StateCancelled && rec.Task.Run == item.Run {
		w.release(ctx, item.TaskID, log)
	}
	w.finalAck(ctx, msg, log)
}

func (w *Worker) release(ctx context.Context, taskID string, log *slog.Logger) {
	if err := w.identities.Release(ctx, taskID); err != nil {
		log.Warn("release identity", "err", err)
	}
}
