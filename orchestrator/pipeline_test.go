package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gh "github.com/google/go-github/v60/github"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/orchestrator/agent"
	"github.com/nightshift/nightshift/sandbox"
	"github.com/nightshift/nightshift/vault"
	"github.com/nightshift/nightshift/worktree"
)

// The worker's run pipeline over in-memory fakes of its ports (Sandboxes,
// Worktrees, Identities, Agents, PullRequests) and a real embedded NATS
// server for the bus and the task-state authority. The fakes record every
// call, in order, in one journal and fail on demand.

// journal is the order of what a run did through its ports.
type journal struct {
	mu    sync.Mutex
	calls []string
}

func (j *journal) add(call string) {
	j.mu.Lock()
	j.calls = append(j.calls, call)
	j.mu.Unlock()
}

func (j *journal) list() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.calls)
}

func (j *journal) count(call string) int {
	n := 0
	for _, c := range j.list() {
		if c == call {
			n++
		}
	}
	return n
}

// faults makes the next calls of an operation fail, one error per call.
type faults struct {
	mu sync.Mutex
	m  map[string][]error
}

func (f *faults) inject(op string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string][]error{}
	}
	f.m[op] = append(f.m[op], errs...)
}

func (f *faults) next(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.m[op]) == 0 {
		return nil
	}
	err := f.m[op][0]
	f.m[op] = f.m[op][1:]
	return err
}

// ports are the fakes a test worker runs on.
type ports struct {
	j      *journal
	faults *faults
	root   string

	mu sync.Mutex
	// agentOut is what the agent prints (its last line is the summary).
	agentOut string
	// exit is the exit code of each kind of step (setup, agent, test).
	exit map[string]int
	// patch is the diff the worktree reports.
	patch string
	// pushed are the pushes that went through.
	pushed []worktree.PushRequest
	// opened are the pull requests opened.
	opened []RunResult
	// heads are the remote branches the pushes left, branch → commit.
	heads map[string]string
}

// fakeCommit is the commit every fake run makes.
const fakeCommit = "c0ffee0000000000000000000000000000000000"

func newPorts(t *testing.T) *ports {
	return &ports{j: &journal{}, faults: &faults{}, root: t.TempDir(), agentOut: "working\nfixed the bug\n",
		exit: map[string]int{}, patch: "--- a/main.go\n+++ b/main.go\n@@ -1 +1 @@\n-bug\n+fix\n"}
}

func (p *ports) call(op string) error {
	p.j.add(op)
	return p.faults.next(op)
}

// sandboxes fakes Sandboxes: a step's kind comes from its spec ID
// (<task>-<kind>-<run>...); the agent step prints agentOut.
type sandboxes struct{ *ports }

func (s sandboxes) Run(ctx context.Context, spec sandbox.Spec) (sandbox.Result, error) {
	kind := "unknown"
	for _, k := range []string{"setup", "agent", "test"} {
		if strings.Contains(spec.ID, "-"+k+"-") {
			kind = k
		}
	}
	if err := s.call("sandbox." + kind); err != nil {
		return sandbox.Result{}, err
	}
	if kind == "agent" && spec.Stdout != nil {
		io.WriteString(spec.Stdout, s.agentOut)
	}
	s.mu.Lock()
	code := s.exit[kind]
	s.mu.Unlock()
	return sandbox.Result{ExitCode: code, Reason: sandbox.ExitReason(code)}, nil
}

// worktrees fakes Worktrees: a directory per task, a fixed commit, the
// configured patch; Push scans the patch and the commit message the way
// the real one scans every object it sends.
type worktrees struct{ *ports }

func (w worktrees) Provision(ctx context.Context, ref worktree.Ref, progress io.Writer) (*worktree.Worktree, error) {
	if err := w.call("worktree.provision"); err != nil {
		return nil, err
	}
	dir := filepath.Join(w.root, ref.TaskID, "work")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &worktree.Worktree{TaskID: ref.TaskID, Dir: dir, Repo: ref.Repo, Branch: ref.Branch, BaseRef: "main",
		BaseCommit: "ba5e000000000000000000000000000000000000"}, nil
}

func (w worktrees) Commit(ctx context.Context, wt *worktree.Worktree, req worktree.CommitRequest) (worktree.Commit, error) {
	if err := w.call("worktree.commit"); err != nil {
		return worktree.Commit{}, err
	}
	return worktree.Commit{SHA: fakeCommit, Created: true, Changed: true, Files: []string{"main.go"}}, nil
}

func (w worktrees) Diff(ctx context.Context, wt *worktree.Worktree) (worktree.Diff, error) {
	if err := w.call("worktree.diff"); err != nil {
		return worktree.Diff{}, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return worktree.Diff{Patch: w.patch, Files: []worktree.FileStat{{Path: "main.go", Added: 1, Deleted: 1}}, Added: 1, Deleted: 1}, nil
}

func (w worktrees) Push(ctx context.Context, wt *worktree.Worktree, req worktree.PushRequest) (worktree.PushResult, error) {
	if err := w.call("worktree.push"); err != nil {
		return worktree.PushResult{}, err
	}
	w.mu.Lock()
	patch := w.patch
	w.mu.Unlock()
	if req.Scan == nil {
		return worktree.PushResult{}, errors.New("fake worktree: a push without a secret scan")
	}
	if err := req.Scan("blob main.go", []byte(patch)); err != nil {
		return worktree.PushResult{}, &worktree.SecretFoundError{What: "blob main.go", Err: err}
	}
	w.mu.Lock()
	w.pushed = append(w.pushed, req)
	if w.heads == nil {
		w.heads = map[string]string{}
	}
	w.heads[req.Branch] = fakeCommit
	w.mu.Unlock()
	return worktree.PushResult{}, nil
}

func (w worktrees) Remove(ctx context.Context, taskID string) error { return nil }

// BranchHead says where the pushes that went through left branch.
func (w worktrees) BranchHead(ctx context.Context, remote, branch string, auth worktree.Auth) (string, error) {
	if err := w.call("worktree.branch_head"); err != nil {
		return "", err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.heads[branch], nil
}

// identities fakes Identities: one identity per task.
type identities struct{ *ports }

func (i identities) ForTask(ctx context.Context, taskID string) (identity.Identity, error) {
	if err := i.call("identity.for_task"); err != nil {
		return identity.Identity{}, err
	}
	return identity.Identity{ID: "id-" + taskID, Name: "Nightshift Bot", Email: "bot@nightshift.test"}, nil
}

func (i identities) Release(ctx context.Context, taskID string) error {
	return i.call("identity.release")
}

func (i identities) IssueTokenTTL(ctx context.Context, identityID string, scope identity.Scope, ttl time.Duration) (string, error) {
	return "tok-" + identityID, i.call("identity.issue_token")
}

func (i identities) RevokeToken(ctx context.Context, token string) error { return nil }

func (i identities) RevokeTaskTokens(ctx context.Context, taskID string) error { return nil }

func (i identities) Authenticate(ctx context.Context, token string) (identity.Identity, identity.Scope, error) {
	return identity.Identity{}, identity.Scope{}, identity.ErrUnauthorized
}

// agents gives the real command adapter: its parser reads what the fake
// sandbox prints.
type agents struct{ *ports }

func (a agents) Adapter(name string) (agent.Adapter, error) {
	if err := a.call("agents.adapter"); err != nil {
		return nil, err
	}
	return agent.New("command", []string{"fake-agent"})
}

// pullRequests fakes PullRequests.
type pullRequests struct{ *ports }

func (p pullRequests) Plan(ctx context.Context, item WorkItem) (Plan, error) {
	if err := p.call("pr.plan"); err != nil {
		return Plan{}, err
	}
	return Plan{Force: true}, nil
}

func (p pullRequests) Open(ctx context.Context, item WorkItem, plan Plan, res RunResult) (string, error) {
	if err := p.call("pr.open"); err != nil {
		return "", err
	}
	p.mu.Lock()
	p.opened = append(p.opened, res)
	p.mu.Unlock()
	return "https://forge.test/acme/app/pull/1", nil
}

var (
	_ Sandboxes    = sandboxes{}
	_ Worktrees    = worktrees{}
	_ Identities   = identities{}
	_ Agents       = agents{}
	_ PullRequests = pullRequests{}
)

// secretValue is a secret the test task may read.
const secretValue = "sk-test-0123456789abcdef0123456789"

// pipeline is a worker running on fakes against a real NATS server.
type pipeline struct {
	*ports
	bus *Bus
	w   *Worker
	cfg WorkerConfig
}

// startPipeline starts a worker; mod adjusts its configuration first.
func startPipeline(t *testing.T, mod func(*WorkerConfig)) *pipeline {
	t.Helper()
	p := &pipeline{ports: newPorts(t), bus: newBus(t)}
	p.cfg = WorkerConfig{
		MaxDeliver: 3,
		Repo: func(string) RepoSettings {
			return RepoSettings{Setup: "make deps", Test: "make test", Timeout: time.Minute}
		},
		PullRequests: pullRequests{p.ports},
		Secrets: func(ctx context.Context, taskID, agent, repo string) (map[string]string, error) {
			if err := p.call("secrets"); err != nil {
				return nil, err
			}
			return map[string]string{"API_KEY": secretValue}, nil
		},
		NewRedactor: func(m map[string]string) Redactor { return vault.NewRedactor(m) },
	}
	if mod != nil {
		mod(&p.cfg)
	}
	w, err := NewWorker(p.bus, sandboxes{p.ports}, worktrees{p.ports}, identities{p.ports}, agents{p.ports}, p.cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.w = w
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return p
}

// submit creates a task and dispatches its first run.
func (p *pipeline) submit(t *testing.T, prompt string) string {
	t.Helper()
	ctx := context.Background()
	ev := &Event{ID: NewID(), Source: SourceAPI, Kind: KindTaskRequested, Repo: "https://forge.test/acme/app.git",
		Instruction: prompt, IdempotencyKey: "api:" + NewID(), ReceivedAt: time.Now()}
	res, err := p.bus.Records().CreateFromEvent(ctx, ev, "fake")
	if err != nil {
		t.Fatal(err)
	}
	return res.Task.ID
}

// reported is what the worker reported of a task: its states in order and
// the task as it stands. It reads the task-state authority the worker
// writes to (the Records KV).
type reported struct {
	States []State
	Task   Task
}

func (p *pipeline) reported(t *testing.T, id string) reported {
	t.Helper()
	rec, _, err := p.bus.Records().Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var r reported
	for _, tr := range rec.Transitions {
		r.States = append(r.States, tr.To)
	}
	r.Task = rec.Task
	return r
}

// waitRest waits until the task rests in a state no run is working on.
func (p *pipeline) waitRest(t *testing.T, id string) reported {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := p.reported(t, id)
		if r.Task.State.Resting() {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s still %s; calls %v", id, r.Task.State, p.j.list())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPipelineHappyPath: a run provisions, sets up, runs the agent, tests,
// commits, pushes, then opens the pull request, in that order, reporting
// each state; the task rests in review with the pull request.
func TestPipelineHappyPath(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, nil)
	id := p.submit(t, "fix the bug")
	r := p.waitRest(t, id)
	want := []State{StateQueued, StateProvisioning, StateRunning, StateTesting, StatePushing, StateReview}
	if !slices.Equal(r.States, want) {
		t.Fatalf("states %v, want %v", r.States, want)
	}
	if r.Task.PRURL != "https://forge.test/acme/app/pull/1" || r.Task.Commit == "" {
		t.Fatalf("task %+v", r.Task)
	}
	order := []string{"secrets", "identity.for_task", "pr.plan", "worktree.provision", "sandbox.setup", "agents.adapter",
		"sandbox.agent", "sandbox.test", "worktree.commit", "worktree.diff", "worktree.push", "pr.open"}
	got := p.j.list()
	if !slices.Equal(without(got, "secrets"), without(order, "secrets")) || got[0] != "secrets" {
		t.Fatalf("calls %v, want %v", got, order)
	}
	p.mu.Lock()
	opened := slices.Clone(p.opened)
	p.mu.Unlock()
	if len(opened) != 1 || opened[0].Summary != "fixed the bug" || opened[0].Branch != BranchName(id) {
		t.Fatalf("pull request %+v", opened)
	}
	if n := p.j.count("identity.release"); n != 0 {
		t.Fatalf("identity released %d times while the task is in review", n)
	}
}

// without drops every call of name (one a worker may repeat, like the
// secrets lookup of a handle that still loads them itself).
func without(calls []string, name string) []string {
	return slices.DeleteFunc(slices.Clone(calls), func(c string) bool { return c == name })
}

// TestPipelineTestsFail: failing tests fail the task as tests_failed and
// nothing is committed, pushed or opened.
func TestPipelineTestsFail(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, nil)
	p.mu.Lock()
	p.exit["test"] = 1
	p.mu.Unlock()
	id := p.submit(t, "fix the bug")
	r := p.waitRest(t, id)
	if r.Task.State != StateFailed || r.Task.Reason != "tests_failed" {
		t.Fatalf("task %s %q (%s)", r.Task.State, r.Task.Reason, r.Task.Error)
	}
	want := []State{StateQueued, StateProvisioning, StateRunning, StateTesting, StateFailed}
	if !slices.Equal(r.States, want) {
		t.Fatalf("states %v, want %v", r.States, want)
	}
	for _, c := range []string{"worktree.commit", "worktree.push", "pr.open"} {
		if n := p.j.count(c); n != 0 {
			t.Errorf("%s called %d times after the tests failed", c, n)
		}
	}
	if n := p.j.count("identity.release"); n != 1 {
		t.Errorf("identity released %d times, want once", n)
	}
}

// TestPipelineSecretInDiff: a change carrying a secret's value fails the
// task as secret_in_diff and is never pushed, and the secret does not
// reach the task's error.
func TestPipelineSecretInDiff(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, nil)
	p.mu.Lock()
	p.patch = "+++ b/config.go\n+const key = \"" + secretValue + "\"\n"
	p.mu.Unlock()
	id := p.submit(t, "add the key")
	r := p.waitRest(t, id)
	if r.Task.State != StateFailed || r.Task.Reason != "secret_in_diff" {
		t.Fatalf("task %s %q (%s)", r.Task.State, r.Task.Reason, r.Task.Error)
	}
	if strings.Contains(r.Task.Error, secretValue) || !strings.Contains(r.Task.Error, "API_KEY") {
		t.Fatalf("error %q", r.Task.Error)
	}
	if n := p.j.count("worktree.push"); n != 0 {
		t.Fatalf("push tried %d times", n)
	}
	if n := p.j.count("pr.open"); n != 0 {
		t.Fatalf("pull request opened")
	}
}

// TestPipelineSecretsUnavailable: when the task's secrets cannot be loaded
// the run has no redactor, and nothing of it runs: no identity, worktree,
// sandbox or push; the run is handed back (retryable) and, its deliveries
// spent, fails as "secrets".
func TestPipelineSecretsUnavailable(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, nil)
	busy := errors.New("vault: database is locked (5) (SQLITE_BUSY)")
	p.faults.inject("secrets", busy, busy, busy, busy, busy, busy)
	id := p.submit(t, "fix the bug")
	r := p.waitRest(t, id)
	if r.Task.State != StateFailed || r.Task.Reason != "secrets" {
		t.Fatalf("task %s %q (%s)", r.Task.State, r.Task.Reason, r.Task.Error)
	}
	for _, c := range []string{"identity.for_task", "pr.plan", "worktree.provision", "sandbox.setup", "sandbox.agent", "worktree.push"} {
		if n := p.j.count(c); n != 0 {
			t.Errorf("%s called %d times without a redactor", c, n)
		}
	}
	if n := count(r.States, StateProvisioning); n != p.cfg.MaxDeliver {
		t.Errorf("%d deliveries, want %d: %v", n, p.cfg.MaxDeliver, r.States)
	}
	if !strings.Contains(r.Task.Error, fmt.Sprintf("(after %d attempts)", p.cfg.MaxDeliver)) {
		t.Errorf("error %q does not say how many attempts", r.Task.Error)
	}
}

func count(states []State, s State) int {
	n := 0
	for _, x := range states {
		if x == s {
			n++
		}
	}
	return n
}

// TestPipelineNoPushWithoutRedactor: publishing a run that has no redactor
// for the task's secrets (whatever let it get that far) refuses before it
// commits or pushes, and so does a budget checkpoint.
func TestPipelineNoPushWithoutRedactor(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, nil)
	ctx := context.Background()
	item := WorkItem{TaskID: "t-unredacted", Run: 1, Repo: "https://forge.test/acme/app.git", Branch: "nightshift/t-unredacted"}
	rep := &reporter{bus: p.bus, item: item, attempt: 1, clock: time.Now, log: p.w.log, logs: p.bus.TaskLogs(item.TaskID),
		tokens: &tokenRedactor{}, redact: chainRedactors(&tokenRedactor{})}
	r := &run{item: item, rep: rep, plan: Plan{Force: true}, wt: &worktree.Worktree{Dir: t.TempDir(), Branch: item.Branch}}
	err := p.w.publish(ctx, r, agent.Outcome{Summary: "done"})
	var se *StepError
	if !errors.As(err, &se) || se.Reason != "secrets" || se.Class != StepRetryable {
		t.Fatalf("publish without a redactor: %v", err)
	}
	p.w.checkpoint(ctx, r)
	for _, c := range []string{"worktree.commit", "worktree.push"} {
		if n := p.j.count(c); n != 0 {
			t.Errorf("%s called %d times without a redactor", c, n)
		}
	}
}

// forgeError is what go-github returns for an API answer of status.
func forgeError(status int) error {
	req := httptest.NewRequest(http.MethodPost, "https://api.forge.test/repos/acme/app/pulls", nil)
	return &gh.ErrorResponse{Response: &http.Response{StatusCode: status, Request: req, Header: http.Header{}}, Message: http.StatusText(status)}
}

// TestPipelineTransientOpenIsRetried: a forge answering 502 to the pull
// request hands the run back (Nak with a delay) after its push landed; the
// next delivery finds the branch at the commit the first one announced and
// finishes the run from there: the agent does not run again, nothing is
// pushed twice, the pull request gets the first delivery's summary, and
// the task never shows failed.
func TestPipelineTransientOpenIsRetried(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, nil)
	p.faults.inject("pr.open", fmt.Errorf("github: create pull request on acme/app: %w", forgeError(http.StatusBadGateway)))
	id := p.submit(t, "fix the bug")
	r := p.waitRest(t, id)
	if r.Task.State != StateReview || r.Task.PRURL == "" || r.Task.Commit != fakeCommit {
		t.Fatalf("task %s %q (%s) commit %q", r.Task.State, r.Task.Reason, r.Task.Error, r.Task.Commit)
	}
	if n := p.j.count("pr.open"); n != 2 {
		t.Fatalf("pull request opened %d times, want 2", n)
	}
	for _, c := range []string{"sandbox.agent", "worktree.commit", "worktree.push", "worktree.provision"} {
		if n := p.j.count(c); n != 1 {
			t.Errorf("%s called %d times, want once: the second delivery ran the run again (%v)", c, n, p.j.list())
		}
	}
	p.mu.Lock()
	opened := slices.Clone(p.opened)
	p.mu.Unlock()
	if len(opened) != 1 || opened[0].Summary != "fixed the bug" || opened[0].Commit != fakeCommit || opened[0].Diff.Files != 1 ||
		!slices.Equal(opened[0].Files, []string{"main.go"}) {
		t.Fatalf("pull request %+v", opened)
	}
	// The first delivery rests in queued (retrying) until the next one.
	attempt := []State{StateProvisioning, StateRunning, StateTesting, StatePushing}
	want := slices.Concat([]State{StateQueued}, attempt, []State{StateQueued, StateProvisioning, StateReview})
	if !slices.Equal(r.States, want) {
		t.Fatalf("states %v, want %v", r.States, want)
	}
}

// TestPipelineUnlandedPushRunsAgain: a delivery that announced its push
// but whose push never reached the branch leaves nothing to finish from:
// the next delivery runs the agent again and pushes.
func TestPipelineUnlandedPushRunsAgain(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, nil)
	p.faults.inject("worktree.push", fmt.Errorf("push: %w", syscall.ECONNRESET))
	id := p.submit(t, "fix the bug")
	r := p.waitRest(t, id)
	if r.Task.State != StateReview || r.Task.Commit != fakeCommit {
		t.Fatalf("task %s %q (%s)", r.Task.State, r.Task.Reason, r.Task.Error)
	}
	p.mu.Lock()
	pushes := len(p.pushed)
	p.mu.Unlock()
	if a := p.j.count("sandbox.agent"); a != 2 || pushes != 1 {
		t.Fatalf("agent ran %d times and %d pushes went through, want 2 and 1 (%v)", a, pushes, p.j.list())
	}
}

// TestPipelinePermanentOpenFails: a forge refusing the pull request (422)
// fails the task at once.
func TestPipelinePermanentOpenFails(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, nil)
	p.faults.inject("pr.open", fmt.Errorf("github: create pull request on acme/app: %w", forgeError(http.StatusUnprocessableEntity)))
	id := p.submit(t, "fix the bug")
	r := p.waitRest(t, id)
	if r.Task.State != StateFailed || r.Task.Reason != "pull_request" {
		t.Fatalf("task %s %q (%s)", r.Task.State, r.Task.Reason, r.Task.Error)
	}
	if n := p.j.count("pr.open"); n != 1 {
		t.Fatalf("pull request tried %d times, want once", n)
	}
	if n := count(r.States, StateProvisioning); n != 1 {
		t.Fatalf("%d deliveries: %v", n, r.States)
	}
}

// TestPipelineTransientProvisionIsRetried: a git fetch refused by the
// network is retried on a later delivery, which completes the run.
func TestPipelineTransientProvisionIsRetried(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, nil)
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}
	p.faults.inject("worktree.provision", fmt.Errorf("worktree: fetch https://forge.test/acme/app.git: %w", refused))
	id := p.submit(t, "fix the bug")
	r := p.waitRest(t, id)
	if r.Task.State != StateReview {
		t.Fatalf("task %s %q (%s)", r.Task.State, r.Task.Reason, r.Task.Error)
	}
	if n := p.j.count("worktree.provision"); n != 2 {
		t.Fatalf("provisioned %d times, want 2", n)
	}
	if n := p.j.count("sandbox.agent"); n != 1 {
		t.Fatalf("agent ran %d times, want once", n)
	}
}

// TestFinishRetryableNaksWithDelay: a retryable step error hands the
// JetStream message back with a delay (it is redelivered, not before),
// until the last delivery, which it leaves to fail with its attempts.
func TestFinishRetryableNaksWithDelay(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, func(c *WorkerConfig) { c.Durable = "unused" })
	ctx := context.Background()
	js := p.bus.js
	if _, err := js.CreateStream(ctx, jsStreamConfig("RETRYTEST", "retrytest.>")); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "retrytest.a", []byte("run")); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "RETRYTEST", jsConsumerConfig("c", 3))
	if err != nil {
		t.Fatal(err)
	}
	rep := &reporter{bus: p.bus, item: WorkItem{TaskID: "t-retry", Run: 1}, attempt: 1, clock: time.Now, log: p.w.log,
		logs: p.bus.TaskLogs("t-retry"), redact: chainRedactors(&tokenRedactor{})}
	fail := func() error {
		return remoteErr("pull_request", "open pull request: %w", forgeError(http.StatusServiceUnavailable))
	}
	for attempt := 1; attempt <= 3; attempt++ {
		msg := fetchOne(t, cons, 10*time.Second)
		md, _ := msg.Metadata()
		if int(md.NumDelivered) != attempt {
			t.Fatalf("delivery %d, want %d", md.NumDelivered, attempt)
		}
		err := fail()
		handed := p.w.finishRetryable(ctx, msg, rep, err, attempt)
		if attempt < 3 {
			if !handed {
				t.Fatalf("attempt %d not handed back", attempt)
			}
			if early := fetchOne(t, cons, 0); early != nil {
				t.Fatalf("attempt %d redelivered at once", attempt)
			}
			continue
		}
		if handed {
			t.Fatal("the last delivery was handed back")
		}
		if reason, text := failure(err); reason != "pull_request" || !strings.HasSuffix(text, "(after 3 attempts)") {
			t.Fatalf("final failure %q %q", reason, text)
		}
		msg.Ack()
	}
	if p.w.finishRetryable(ctx, nil, rep, stepErr("tests_failed", "tests failed"), 1) {
		t.Fatal("a permanent error was handed back")
	}
}

func jsStreamConfig(name, subjects string) jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: name, Subjects: []string{subjects}, Retention: jetstream.WorkQueuePolicy}
}

func jsConsumerConfig(name string, maxDeliver int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute, MaxDeliver: maxDeliver}
}

// fetchOne fetches a message, waiting up to wait (a short look when 0); nil
// when none came.
func fetchOne(t *testing.T, cons jetstream.Consumer, wait time.Duration) jetstream.Msg {
	t.Helper()
	if wait == 0 {
		wait = 300 * time.Millisecond
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(wait))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		return m
	}
	if wait > time.Second {
		t.Fatalf("no message within %s", wait)
	}
	return nil
}
