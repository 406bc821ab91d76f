package orchestrator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/orchestrator/agent"
	"github.com/nightshift/nightshift/orchestrator/gateway"
	"github.com/nightshift/nightshift/sandbox"
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
	// MaxAckPending caps the runs in flight across all workers. Default 64.
	MaxAckPending int
	// AckWait is how long a run may go without a heartbeat before JetStream
	// redelivers it to another worker. Heartbeats go out every AckWait/3.
	// Default 60s.
	AckWait time.Duration
	// MaxDeliver bounds redeliveries of one run (crashes). Default 5.
	MaxDeliver int
	// Durable is the consumer name shared by all workers. Default "workers".
	Durable string
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
		c.MaxAckPending = 64
	}
	if c.AckWait <= 0 {
		c.AckWait = 60 * time.Second
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
	attempt := 1
	if md, err := msg.Metadata(); err == nil {
		attempt = int(md.NumDelivered)
	}
	rep := &reporter{bus: w.bus, item: item, attempt: attempt, clock: w.cfg.Clock, log: log}
	if c, err := w.bus.Cancelled(runCtx, item.TaskID, item.Run); err == nil && c {
		cancel(errCancelled)
	}
	// The tokens the run hands its agent are redacted, from the moment each
	// is issued, and so are the task's secrets.
	rep.tokens = &tokenRedactor{newRedactor: w.cfg.NewRedactor}
	var secretsRedactor Redactor
	if w.cfg.Secrets != nil && w.cfg.NewRedactor != nil {
		secrets, err := w.cfg.Secrets(runCtx, item.TaskID, item.Agent, item.Repo)
		if err != nil {
			log.Warn("load task secrets for redaction", "err", err)
		} else {
			secretsRedactor = w.cfg.NewRedactor(secrets)
		}
	}
	rep.redact = chainRedactors(rep.tokens, secretsRedactor, w.cfg.Redactor)
	started := w.cfg.Clock()
	err = w.execute(runCtx, cancel, item, rep)
	final := context.WithoutCancel(ctx)
	switch {
	case errors.Is(context.Cause(runCtx), errBudget):
		text := "the task's model budget was exhausted"
		reason := "budget_exceeded"
		rep.line(final, "system", "failed: "+text)
		w.release(final, item.TaskID, log)
		rep.state(final, StateFailed, reason, Patch{Error: &text, Reason: &reason, Usage: rep.usage})
		msg.Ack()
	case errors.Is(context.Cause(runCtx), errCancelled):
		rep.line(final, "system", "cancelled")
		w.release(final, item.TaskID, log)
		rep.state(final, StateCancelled, "cancelled", Patch{Usage: rep.usage})
		msg.Ack()
	case ctx.Err() != nil:
		// Shutting down: hand the run back for another worker.
		log.Info("run interrupted by shutdown; handing back")
		msg.NakWithDelay(time.Second)
	case err != nil:
		reason, text := failure(err)
		rep.line(final, "system", "failed: "+text)
		w.release(final, item.TaskID, log)
		rep.state(final, StateFailed, reason, Patch{Error: &text, Reason: &reason, Usage: rep.usage})
		msg.Ack()
	default:
		msg.Ack()
	}
	w.cfg.Metrics.observeRun(w.cfg.Clock().Sub(started))
	fctx, cancelFlush := context.WithTimeout(final, 10*time.Second)
	if err := w.bus.FlushLogs(fctx); err != nil {
		log.Warn("log lines not all stored", "err", err)
	}
	cancelFlush()
}

func (w *Worker) release(ctx context.Context, taskID string, log *slog.Logger) {
	if err := w.identities.Release(ctx, taskID); err != nil {
		log.Warn("release identity", "err", err)
	}
}

// StepError is a failed step with a machine-readable reason.
type StepError struct {
	Reason string // e.g. agent_failed, tests_failed, push_rejected, timed_out
	Err    error
}

func (e *StepError) Error() string { return e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

func stepErr(reason string, format string, args ...any) error {
	return &StepError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

func failure(err error) (reason, text string) {
	var se *StepError
	if errors.As(err, &se) {
		return se.Reason, se.Error()
	}
	return "error", err.Error()
}

// run is one run of a task as the worker drives it; its fields are filled
// in step by step.
type run struct {
	item  WorkItem
	rep   *reporter
	repo  RepoSettings
	plan  Plan
	auth  worktree.Auth
	ident identity.Identity
	wt    *worktree.Worktree
	// env is what every sandboxed step of the run gets.
	env map[string]string
	// spec is the sandbox every step starts from.
	spec             sandbox.Spec
	mcpURL, mcpToken string
	// services are the run's own MCP and gateway listeners.
	services runServices
}

// execute drives one run: provision, setup, agent, tests, then publish.
func (w *Worker) execute(ctx context.Context, stop context.CancelCauseFunc, item WorkItem, rep *reporter) error {
	if err := context.Cause(ctx); err != nil {
		return err
	}
	r := &run{item: item, rep: rep, repo: w.cfg.Repo(item.Repo)}
	// Whatever the outcome, the run's services stop and its tokens die
	// with it (the gateway token in runAgent).
	defer func() {
		r.services.close()
		w.revokeRunTokens(ctx, r)
	}()
	rep.state(ctx, StateProvisioning, fmt.Sprintf("run %d", item.Run), Patch{})
	if w.cfg.Preflight != nil {
		if err := w.cfg.Preflight(ctx, item); err != nil {
			return &StepError{Reason: "preflight", Err: err}
		}
	}
	if err := w.provision(ctx, r); err != nil {
		return err
	}
	if err := w.setup(ctx, r); err != nil {
		return err
	}
	out, err := w.runAgent(ctx, stop, r)
	if errors.Is(err, errAsked) {
		return nil // the task rests in needs_input
	}
	if err != nil {
		return err
	}
	if r.repo.Test != "" {
		spec := r.spec
		spec.ID = fmt.Sprintf("%s-test-%d", item.TaskID, item.Run)
		spec.Command = []string{"sh", "-c", r.repo.Test}
		spec.Env = r.env
		if err := w.runStep(ctx, rep, spec, "test", "tests_failed"); err != nil {
			return err
		}
	}
	return w.publish(ctx, r, out)
}

// provision gives the run its identity, its plan, its worktree and the
// sandbox its steps share.
func (w *Worker) provision(ctx context.Context, r *run) error {
	item, rep := r.item, r.rep
	var err error
	if r.ident, err = w.identities.ForTask(ctx, item.TaskID); err != nil {
		return stepErr("identity", "acquire identity: %w", err)
	}
	r.plan = Plan{Force: true}
	if w.cfg.PullRequests != nil {
		if r.plan, err = w.cfg.PullRequests.Plan(ctx, item); err != nil {
			return stepErr("plan", "plan pull request: %w", err)
		}
	}
	r.auth = r.repo.Auth
	if r.plan.Auth != nil {
		r.auth = *r.plan.Auth
	}
	base := item.Base
	// A retry starts afresh from the task's pushed branch, so commits
	// earlier runs and follow-ups pushed are kept (unless FromBase).
	fromBranch := item.Retry && !item.FromBase
	if item.FollowUp || fromBranch {
		// A follow-up continues the task's pushed branch; its worktree is
		// reused when still there, else provisioned from that branch.
		base = item.Branch
	}
	if item.Retry && item.FromBase {
		rep.line(ctx, "system", "retry from base: starting over from "+orDefault(item.Base)+"; the commits on "+item.Branch+" are replaced")
	}
	if r.plan.Base != "" {
		base = r.plan.Base
	}
	progress := rep.writer(ctx, "system")
	ref := worktree.Ref{TaskID: item.TaskID, Repo: item.Repo, Base: base, Branch: item.Branch, Reuse: item.FollowUp, Auth: r.auth}
	r.wt, err = w.worktrees.Provision(ctx, ref, progress)
	if err != nil && (item.FollowUp || fromBranch) && r.plan.Base == "" && errors.Is(err, worktree.ErrBaseNotFound) {
		// The earlier run never pushed and its worktree is gone: start
		// the follow-up from the task's own base.
		rep.line(ctx, "system", "no pushed branch to continue from; starting from "+orDefault(item.Base))
		ref.Base = item.Base
		r.wt, err = w.worktrees.Provision(ctx, ref, progress)
	}
	progress.Close()
	if err != nil {
		return stepErr("provision", "provision worktree: %w", err)
	}
	rep.line(ctx, "system", fmt.Sprintf("worktree on %s from %s (%s)", r.wt.Branch, r.wt.BaseRef, short(r.wt.BaseCommit)))

	r.env = map[string]string{
		"NIGHTSHIFT_TASK_ID":  item.TaskID,
		"GIT_AUTHOR_NAME":     r.ident.Name,
		"GIT_AUTHOR_EMAIL":    r.ident.Email,
		"GIT_COMMITTER_NAME":  r.ident.Name,
		"GIT_COMMITTER_EMAIL": r.ident.Email,
	}
	extra, err := w.cfg.Env(ctx, item.TaskID, item.Agent, item.Repo)
	if err != nil {
		return stepErr("agent_env", "agent environment: %w", err)
	}
	for k, v := range extra {
		r.env[k] = v
	}
	r.spec = sandbox.Spec{Dir: r.wt.Dir, ReadOnly: r.wt.ReadOnlyPaths, ReadOnlyInDir: r.wt.ProtectedGitPaths,
		Timeout: r.repo.Timeout, AllowHosts: r.repo.AllowHosts, Tools: w.cfg.Tools,
		Log: func(msg string, attrs ...any) { rep.line(ctx, "sandbox", fmtAttrs(msg, attrs)) }}
	if w.cfg.MCP != nil {
		// Tokens of earlier runs of this task (one that crashed and is
		// redelivered now) die before this run's token is issued.
		if err := w.identities.RevokeTaskTokens(ctx, item.TaskID); err != nil {
			return stepErr("identity", "revoke earlier agent tokens: %w", err)
		}
		scope := identity.Scope{TaskID: item.TaskID, Repo: item.Repo, Agent: item.Agent}
		tok, err := w.identities.IssueTokenTTL(ctx, r.ident.ID, scope, w.tokenTTL(r.repo.Timeout))
		if err != nil {
			return stepErr("identity", "issue agent token: %w", err)
		}
		r.mcpToken = tok
		rep.tokens.add("NIGHTSHIFT_MCP_TOKEN", tok)
		url, fwd, _, err := w.serveRunService(r, "mcp", MCPPort, taskMCP(w.cfg.MCP, w.identities, item.TaskID))
		if err != nil {
			return stepErr("provision", "serve MCP to the sandbox: %w", err)
		}
		if fwd != nil {
			r.spec.Forwards = append(r.spec.Forwards, *fwd)
		}
		r.mcpURL = url + "/mcp"
		r.env["NIGHTSHIFT_MCP_URL"], r.env["NIGHTSHIFT_MCP_TOKEN"] = r.mcpURL, r.mcpToken
	}
	return nil
}

// setup runs the repo's configured command, then the setup files users
// already have (.nightshift/setup.sh, Cursor's and 1Code's worktree
// configs), with network per the repo's allowlist. A follow-up reuses a
// worktree that is already set up.
func (w *Worker) setup(ctx context.Context, r *run) error {
	if r.item.FollowUp {
		return nil
	}
	setups, err := agent.SetupCommands(r.wt.Dir, r.repo.Setup)
	if err != nil {
		return stepErr("setup_failed", "read setup files: %w", err)
	}
	env := merge(r.env, agent.SetupEnv(r.wt.Dir))
	for i, argv := range setups {
		spec := r.spec
		spec.ID = fmt.Sprintf("%s-setup-%d-%d", r.item.TaskID, r.item.Run, i)
		spec.Command = argv
		spec.Env = env
		if err := w.runStep(ctx, r.rep, spec, "setup", "setup_failed"); err != nil {
			return err
		}
	}
	return nil
}

// runAgent runs the agent in the sandbox, through the model gateway when
// there is one, and returns what it reported.
func (w *Worker) runAgent(ctx context.Context, stop context.CancelCauseFunc, r *run) (agent.Outcome, error) {
	item, rep := r.item, r.rep
	ti := TaskIdentity{ID: r.ident.ID, Name: r.ident.Name, Email: r.ident.Email, Phone: r.ident.Phone}
	rep.state(ctx, StateRunning, "agent "+item.Agent, Patch{Identity: &ti, BaseCommit: &r.wt.BaseCommit})
	adapter, err := w.agents.Adapter(item.Agent)
	if err != nil {
		return agent.Outcome{}, stepErr("agent_unknown", "agent %q: %w", item.Agent, err)
	}
	// The agent's HOME lives beside the worktree and persists across the
	// task's runs (a follow-up resumes the session stored there); a fresh
	// run starts with an empty one.
	home := filepath.Join(filepath.Dir(r.wt.Dir), "home")
	if err := prepareHome(home, !item.FollowUp); err != nil {
		return agent.Outcome{}, stepErr("agent_home", "%w", err)
	}
	insideHome := home
	if w.cfg.SandboxHome != "" {
		insideHome = w.cfg.SandboxHome
	}
	spec := r.spec
	req := agent.Request{Prompt: prompt(item, r.plan), SessionID: item.SessionID, Dir: r.wt.Dir, Home: insideHome,
		Env: r.env, MCPURL: r.mcpURL, MCPToken: r.mcpToken}
	if w.cfg.Model != nil {
		req.Model = w.cfg.Model(item.Agent)
	}
	if w.cfg.Gateway != nil {
		hooks := gateway.Hooks{
			// The host never touches the worktree while the agent's
			// processes live: the soft limit is only noted. Work is
			// checkpointed after the sandbox is gone (hard limit, below).
			OnSoftLimit: func(u gateway.Usage) {
				rep.line(ctx, "system", fmt.Sprintf("budget: %d tokens used; nearing the limit", u.Tokens()))
			},
			OnHardLimit: func(u gateway.Usage) {
				rep.line(ctx, "system", fmt.Sprintf("budget exhausted at %d tokens ($%.4f); stopping the agent", u.Tokens(), u.CostUSD))
				stop(errBudget)
			},
		}
		hooks.Redact = rep.redact.String
		gtok := w.cfg.Gateway.RegisterTTL(item.TaskID, r.repo.Budget, hooks, w.agentTokenTTL(r.repo.Timeout))
		defer w.cfg.Gateway.Unregister(item.TaskID)
		rep.tokens.add("NIGHTSHIFT_GATEWAY_TOKEN", gtok)
		url, fwd, stopGateway, err := w.serveRunService(r, "gateway", GatewayPort, w.cfg.Gateway.TaskHandler(item.TaskID))
		if err != nil {
			return agent.Outcome{}, stepErr("provision", "serve the model gateway to the sandbox: %w", err)
		}
		defer stopGateway()
		if fwd != nil {
			spec.Forwards = append(spec.Forwards, *fwd)
		}
		req.GatewayURL, req.GatewayToken = url, gtok
	}
	inv, err := adapter.Prepare(req)
	if err != nil {
		return agent.Outcome{}, stepErr("agent_failed", "prepare agent: %w", err)
	}
	if err := writeHomeFiles(home, inv.Files); err != nil {
		return agent.Outcome{}, stepErr("agent_home", "write agent files: %w", err)
	}
	parser := adapter.NewParser(func(l agent.Line) { rep.line(ctx, "agent", kindPrefix(l.Kind)+l.Text) })
	stderr := rep.writer(ctx, "agent")
	spec.ID = fmt.Sprintf("%s-agent-%d", item.TaskID, item.Run)
	spec.Home = home
	spec.Command = inv.Argv
	spec.Env = merge(r.env, inv.Env)
	spec.Stdin = strings.NewReader(inv.Stdin)
	spec.Stdout = parser
	spec.Stderr = stderr
	// A question asked during this run (MCP ask_human) is one recorded
	// after this point.
	_, askedBefore, qerr := w.bus.lastQuestion(ctx, item.TaskID)
	if qerr != nil {
		rep.log.Warn("read the task's questions", "err", qerr)
	}
	res, err := w.sandboxes.Run(ctx, spec)
	stderr.Close()
	if err != nil {
		return agent.Outcome{}, stepErr("sandbox", "start agent: %w", err)
	}
	w.cfg.Metrics.sandboxEnded(res.Reason)
	out := parser.Outcome(res.ExitCode)
	usage := Usage{InputTokens: out.Usage.InputTokens, OutputTokens: out.Usage.OutputTokens, CostUSD: out.Usage.CostUSD}
	if w.cfg.Gateway != nil {
		if g := w.cfg.Gateway.Usage(item.TaskID); g.Tokens() > 0 {
			usage = Usage{InputTokens: g.InputTokens, OutputTokens: g.OutputTokens, CostUSD: g.CostUSD}
		}
	}
	rep.usage = &usage
	if errors.Is(context.Cause(ctx), errBudget) {
		// Keep the work: commit what the agent left and push it.
		w.checkpoint(context.WithoutCancel(ctx), r)
		return out, context.Cause(ctx)
	}
	if err := context.Cause(ctx); err != nil {
		return out, err
	}
	if q, seq, err := w.bus.lastQuestion(ctx, item.TaskID); err != nil {
		rep.log.Warn("read the task's questions", "err", err)
	} else if seq > askedBefore && qerr == nil {
		out.Question = q.Question
	}
	if out.Question != "" {
		// The agent asked and ended its turn: the task waits for an
		// answer, which resumes this session; nothing is published.
		q := rep.redact.String(out.Question)
		rep.line(ctx, "system", "the agent asks: "+q)
		rep.state(ctx, StateNeedsInput, "question", Patch{SessionID: &out.SessionID, Usage: &usage, Question: &q})
		return out, errAsked
	}
	if !res.OK() {
		return out, stepErr(reasonOf(res, "agent_failed"), "agent %s: %s", item.Agent, res.Reason)
	}
	if out.Err != nil {
		return out, stepErr("agent_failed", "agent %s: %w", item.Agent, out.Err)
	}
	rep.state(ctx, StateTesting, "", Patch{SessionID: &out.SessionID, Usage: &usage})
	return out, nil
}

// prompt is what the agent is asked: the task's prompt, or a follow-up's
// messages, plus what the plan adds (a failing CI log).
func prompt(item WorkItem, plan Plan) string {
	p := item.Prompt
	if item.FollowUp && len(item.Messages) > 0 {
		texts := make([]string, len(item.Messages))
		for i, m := range item.Messages {
			texts[i] = m.Text
		}
		p = strings.Join(texts, "\n\n")
	}
	if plan.PromptContext != "" {
		p += "\n\n" + plan.PromptContext
	}
	return p
}

// publish commits what the agent left as the task identity, checks and
// publishes the diff, pushes, and opens the pull request.
func (w *Worker) publish(ctx context.Context, r *run, out agent.Outcome) error {
	item, rep := r.item, r.rep
	// The summary goes into the commit and the PR: no secret may ride along.
	summary := rep.redact.String(out.Summary)
	var coAuthors []worktree.Signature
	if item.Actor.Email != "" {
		name := item.Actor.Name
		if name == "" {
			name = item.Actor.Login
		}
		coAuthors = append(coAuthors, worktree.Signature{Name: name, Email: item.Actor.Email})
	}
	commit, err := w.worktrees.Commit(ctx, r.wt, worktree.CommitRequest{
		Author: worktree.Signature{Name: r.ident.Name, Email: r.ident.Email}, Message: commitMessage(item, summary),
		Trailers:  []worktree.Trailer{{Key: "Nightshift-Run", Value: fmt.Sprint(item.Run)}},
		CoAuthors: coAuthors, AllowProtected: r.repo.AllowProtected, Protected: r.repo.Protected, When: w.cfg.Clock()})
	if err != nil {
		var pe *worktree.ProtectedPathError
		if errors.As(err, &pe) {
			return &StepError{Reason: "protected_path", Err: err}
		}
		// commit_too_large, tree_too_deep: the work tree is over a limit.
		var le *worktree.LimitError
		if errors.As(err, &le) {
			return &StepError{Reason: le.Reason, Err: err}
		}
		return stepErr("commit", "commit: %w", err)
	}
	// Nothing new since the base or the task's last pushed commit, and an
	// answer: a question. The answer is the result; a task that owns a
	// pull request keeps it in review, any other task is done.
	answer := strings.TrimSpace(summary)
	if unchanged := !commit.Changed || (item.Commit != "" && commit.SHA == item.Commit); unchanged && answer != "" {
		to := StateDone
		if item.PRURL != "" {
			to = StateReview
		}
		rep.line(ctx, "system", "no changes; the agent answered")
		rep.state(ctx, to, "answered", Patch{Answer: &answer})
		return nil
	}
	if !commit.Changed {
		return stepErr("no_changes", "the agent made no changes")
	}
	result := RunResult{Commit: commit.SHA, Branch: item.Branch, Summary: summary, Files: commit.Files}
	// The diff is published (redacted) for the API and the board, and is
	// the last check before anything leaves: a change that contains the
	// value of a secret the task could read is never pushed.
	d, err := w.worktrees.Diff(ctx, r.wt)
	if err != nil {
		return stepErr("diff", "diff against the base: %w", err)
	}
	result.Diff = DiffStat{Files: len(d.Files), Added: d.Added, Deleted: d.Deleted}
	patch := rep.redact.String(d.Patch)
	if patch != d.Patch {
		names := secretNames(patch)
		rep.line(ctx, "system", "the change contains the value of "+names+"; not pushing it")
		return stepErr("secret_in_diff", "the change contains the value of %s; nothing was pushed", names)
	}
	if len(patch) > 2<<20 {
		patch = patch[:2<<20] + "\n[diff truncated]\n"
	}
	if err := w.bus.publishDiff(ctx, DiffReport{TaskID: item.TaskID, Run: item.Run, Stat: result.Diff, Patch: patch}); err != nil {
		rep.log.Warn("publish diff", "err", err)
	}

	rep.state(ctx, StatePushing, "commit "+short(commit.SHA), Patch{Commit: &commit.SHA})
	result.Branch = r.pushBranch()
	if leaked, where, err := w.push(ctx, r, result.Branch); leaked != "" {
		rep.line(ctx, "system", "the change contains the value of "+leaked+" (in "+where+"); not pushing it")
		return stepErr("secret_in_diff", "the change contains the value of %s; nothing was pushed", leaked)
	} else if err != nil {
		w.cfg.Metrics.pushFailed()
		return stepErr("push_rejected", "push %s: %w", result.Branch, err)
	}
	rep.line(ctx, "system", fmt.Sprintf("pushed %s to %s", short(commit.SHA), result.Branch))
	review := item.Repo + "#" + result.Branch
	p := Patch{Review: &review}
	if w.cfg.PullRequests != nil {
		url, err := w.cfg.PullRequests.Open(ctx, item, r.plan, result)
		if err != nil {
			w.cfg.Metrics.pushFailed()
			return stepErr("pull_request", "open pull request: %w", err)
		}
		if url != "" {
			p.PRURL, p.Review = &url, &url
			rep.line(ctx, "system", "pull request: "+url)
		}
	}
	rep.state(ctx, StateReview, "pushed", p)
	return nil
}

func orDefault(base string) string {
	if base == "" {
		return "the default branch"
	}
	return base
}

// pushBranch is the remote branch the run's work goes to.
func (r *run) pushBranch() string {
	if r.plan.PushBranch != "" {
		return r.plan.PushBranch
	}
	return r.item.Branch
}

// merge returns a new map with base's entries, then extra's.
func merge(base, extra map[string]string) map[string]string {
	out := make(map[string]string, len(base)+len(extra))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// checkpoint commits what the agent has left so far and pushes the task
// branch, so work survives a run stopped by its budget. It runs only once
// the agent's sandbox is gone.
func (w *Worker) checkpoint(ctx context.Context, r *run) {
	rep := r.rep
	c, err := w.worktrees.Commit(ctx, r.wt, worktree.CommitRequest{Author: worktree.Signature{Name: r.ident.Name, Email: r.ident.Email},
		Message:   "nightshift: checkpoint of task " + r.item.TaskID,
		Trailers:  []worktree.Trailer{{Key: "Nightshift-Run", Value: fmt.Sprint(r.item.Run)}, {Key: "Nightshift-Checkpoint", Value: "true"}},
		Protected: r.repo.Protected, AllowProtected: r.repo.AllowProtected, When: w.cfg.Clock()})
	if err != nil {
		rep.line(ctx, "system", "checkpoint: "+err.Error())
		return
	}
	if !c.Changed {
		rep.line(ctx, "system", "checkpoint: nothing to commit")
		return
	}
	rep.line(ctx, "system", "checkpoint commit "+short(c.SHA))
	branch := r.pushBranch()
	if leaked, where, err := w.push(ctx, r, branch); leaked != "" {
		rep.line(ctx, "system", "checkpoint: the change contains the value of "+leaked+" (in "+where+"); not pushing it")
		return
	} else if err != nil {
		rep.line(ctx, "system", "checkpoint push: "+err.Error())
		return
	}
	sha := c.SHA
	rep.state(ctx, StatePushing, "checkpoint "+short(sha), Patch{Commit: &sha})
	rep.line(ctx, "system", fmt.Sprintf("pushed checkpoint %s to %s", short(sha), branch))
}

// push pushes the run's commit to branch. The patch is not all that leaves:
// every object the push sends (binary and large files whole, file names,
// the commit message and identities) goes through the run's redactor first,
// and one carrying a secret's value stops the push; leaked then names the
// secrets and where says in which object.
func (w *Worker) push(ctx context.Context, r *run, branch string) (leaked, where string, err error) {
	red := r.rep.redact
	req := worktree.PushRequest{Remote: r.plan.PushRemote, Branch: branch, Auth: r.auth, Force: r.plan.Force,
		Scan: func(what string, data []byte) error {
			if s := string(data); red.String(s) != s {
				leaked = secretNames(red.String(s))
				return errors.New("contains the value of " + leaked)
			}
			return nil
		}}
	_, err = w.worktrees.Push(ctx, r.wt, req)
	var sf *worktree.SecretFoundError
	if errors.As(err, &sf) {
		return leaked, sf.What, err
	}
	return "", "", err
}

var redactedRe = regexp.MustCompile(`\[REDACTED(?::([A-Z][A-Z0-9_]*))?\]`)

// secretNames lists the secrets whose markers a redacted text carries.
func secretNames(redacted string) string {
	seen := map[string]bool{}
	var names []string
	for _, m := range redactedRe.FindAllStringSubmatch(redacted, -1) {
		n := m[1]
		if n == "" {
			n = "a secret"
		}
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "a secret"
	}
	return strings.Join(names, ", ")
}

func fmtAttrs(msg string, attrs []any) string {
	var b strings.Builder
	b.WriteString(msg)
	for i := 0; i+1 < len(attrs); i += 2 {
		fmt.Fprintf(&b, " %v=%v", attrs[i], attrs[i+1])
	}
	return b.String()
}

type redactors []Redactor

func (rs redactors) String(s string) string {
	for _, r := range rs {
		s = r.String(s)
	}
	return s
}

func chainRedactors(list ...Redactor) Redactor {
	var rs redactors
	for _, r := range list {
		if r != nil {
			rs = append(rs, r)
		}
	}
	return rs
}

// runStep runs a setup or test command in the sandbox, logging its output.
func (w *Worker) runStep(ctx context.Context, rep *reporter, spec sandbox.Spec, stream, reason string) error {
	out := rep.writer(ctx, stream)
	spec.Stdout, spec.Stderr = out, out
	shown := strings.Join(spec.Command, " ")
	if len(spec.Command) == 3 && spec.Command[0] == "sh" && spec.Command[1] == "-c" {
		shown = spec.Command[2]
	}
	rep.line(ctx, stream, "$ "+shown)
	res, err := w.sandboxes.Run(ctx, spec)
	out.Close()
	if err != nil {
		return stepErr("sandbox", "start %s: %w", stream, err)
	}
	w.cfg.Metrics.sandboxEnded(res.Reason)
	if err := context.Cause(ctx); err != nil {
		return err
	}
	if !res.OK() {
		return stepErr(reasonOf(res, reason), "%s command failed: %s", stream, res.Reason)
	}
	return nil
}

func reasonOf(res sandbox.Result, fallback string) string {
	switch res.Reason {
	case sandbox.ReasonTimedOut, "oom_killed", "output_limit":
		return res.Reason
	}
	return fallback
}

func commitMessage(item WorkItem, summary string) string {
	title := firstLine(item.Prompt)
	if item.FollowUp && len(item.Messages) > 0 {
		title = firstLine(item.Messages[len(item.Messages)-1].Text)
	}
	if len(title) > 72 {
		title = title[:69] + "..."
	}
	if title == "" {
		title = "nightshift task " + item.TaskID
	}
	body := strings.TrimSpace(summary)
	if body == "" {
		return title
	}
	return title + "\n\n" + body
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

func kindPrefix(kind string) string {
	switch kind {
	case "", agent.KindText:
		return ""
	}
	return "[" + kind + "] "
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// reporter publishes a run's states and log lines.
type reporter struct {
	bus  *Bus
	item WorkItem
	// usage is the run's model usage once the agent has run.
	usage *Usage
	// attempt is the delivery attempt of the run: a redelivered run's
	// reports must not be taken for duplicates of the crashed attempt's.
	attempt int
	clock   func() time.Time
	// redact removes the run's tokens and the task's secrets from all the
	// run emits; never nil.
	redact Redactor
	log    *slog.Logger
	mu     sync.Mutex
	seq    int
	// tokens redacts the tokens issued to the run's agent (part of redact).
	tokens *tokenRedactor
}

func (r *reporter) state(ctx context.Context, s State, reason string, p Patch) {
	r.mu.Lock()
	r.seq++
	seq := r.seq
	r.mu.Unlock()
	reason = r.redact.String(reason)
	if p.Error != nil {
		e := r.redact.String(*p.Error)
		p.Error = &e
	}
	rep := StateReport{TaskID: r.item.TaskID, Run: r.item.Run, Attempt: r.attempt, Seq: seq, State: s, Reason: reason, At: r.clock(), Patch: p}
	if err := r.bus.publishState(ctx, rep); err != nil {
		r.log.Error("publish state", "state", s, "err", err)
	}
}

func (r *reporter) line(ctx context.Context, stream, text string) {
	text = r.redact.String(text)
	if err := r.bus.publishLog(ctx, LogLine{TaskID: r.item.TaskID, Run: r.item.Run, At: r.clock(), Stream: stream, Text: text}); err != nil {
		r.log.Warn("publish log", "err", err)
	}
}

// writer returns a line-splitting writer that logs each line to stream.
func (r *reporter) writer(ctx context.Context, stream string) io.WriteCloser {
	return &lineWriter{emit: func(s string) { r.line(ctx, stream, s) }}
}

type lineWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	emit func(string)
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		b := l.buf.Bytes()
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if l.buf.Len() > 64<<10 {
				l.emit(l.buf.String())
				l.buf.Reset()
			}
			return len(p), nil
		}
		line := strings.TrimRight(string(b[:i]), "\r")
		if j := strings.LastIndexByte(line, '\r'); j >= 0 {
			line = line[j+1:] // progress output: keep the final state
		}
		l.emit(line)
		l.buf.Next(i + 1)
	}
}

func (l *lineWriter) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() > 0 {
		l.emit(l.buf.String())
		l.buf.Reset()
	}
	return nil
}
