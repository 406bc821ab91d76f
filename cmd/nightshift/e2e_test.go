package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/ravi/ravitest"
	"github.com/nightshift/nightshift/orchestrator"
)

// testServer is `nightshift serve` running in-process through run().
type testServer struct {
	URL     string
	DataDir string
	cancel  context.CancelFunc
	done    chan error
	stderr  *syncBuffer
}

// baseEnv is the environment every in-process run gets: nothing from the
// host but PATH and HOME (git needs them), so tests are hermetic.
func baseEnv(t *testing.T) []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "NIGHTSHIFT_VAULT_KEY=" + strings.Repeat("ab", 32)}
}

// startTestServer boots the whole server on a free port with a temp data dir
// and the given nightshift.yaml; extra args are appended to serve's.
func startTestServer(t *testing.T, yaml string, extra ...string) *testServer {
	t.Helper()
	dir := t.TempDir()
	return startTestServerIn(t, dir, yaml, extra...)
}

func startTestServerIn(t *testing.T, dir, yaml string, extra ...string) *testServer {
	t.Helper()
	cfgPath := filepath.Join(dir, "nightshift.yaml")
	yaml = withTempRepos(t, yaml) // lets the API dispatch the tests' origins
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	os.Remove(filepath.Join(data, "serve.addr"))
	ctx, cancel := context.WithCancel(context.Background())
	s := &testServer{DataDir: data, cancel: cancel, done: make(chan error, 1), stderr: &syncBuffer{}}
	args := append([]string{"nightshift", "serve", "--listen", "127.0.0.1:0", "--data-dir", data, "--config", cfgPath}, extra...)
	go func() { s.done <- run(ctx, args, baseEnv(t), strings.NewReader(""), &syncBuffer{}, s.stderr) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(data, "serve.addr"))
		if err == nil && len(b) > 0 {
			s.URL = strings.TrimSpace(string(b))
			break
		}
		select {
		case err := <-s.done:
			t.Fatalf("serve exited: %v\n%s", err, s.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start\n%s", s.stderr.String())
		}
	}
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop shuts the server down with a drain and checks it exits cleanly.
func (s *testServer) stop(t *testing.T) {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("serve returned %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("serve did not stop within 60s")
	}
}

// vaultSet stores value as secret name in the server's vault with
// "nightshift vault set" (scope "" means the default, server).
func (s *testServer) vaultSet(t *testing.T, name, scope, value string) {
	t.Helper()
	args := []string{"nightshift", "vault", "set", name, "--data-dir", s.DataDir}
	if scope != "" {
		args = append(args, "--scope", scope)
	}
	var out, errb bytes.Buffer
	if err := run(context.Background(), args, baseEnv(t), strings.NewReader(value), &out, &errb); err != nil {
		t.Fatalf("vault set %s: %v %s", name, err, errb.String())
	}
}

// cli runs a client command against the server.
func (s *testServer) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	// --server goes first: a global flag before the command reaches every
	// client command, and after a dispatch prompt it would be prompt text.
	full := append([]string{"nightshift", "--server", s.URL}, args...)
	err := run(context.Background(), full, baseEnv(t), strings.NewReader(""), &out, &errb)
	if err != nil {
		return out.String() + errb.String(), err
	}
	return out.String(), nil
}

func (s *testServer) task(t *testing.T, id string) orchestrator.Task {
	t.Helper()
	var task orchestrator.Task
	resp, err := http.Get(s.URL + "/api/v1/tasks/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return orchestrator.Task{}
	}
	json.NewDecoder(resp.Body).Decode(&task)
	return task
}

// waitState polls the task until it is in one of states.
func (s *testServer) waitState(t *testing.T, id string, timeout time.Duration, states ...orchestrator.State) orchestrator.Task {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last orchestrator.Task
	for time.Now().Before(deadline) {
		last = s.task(t, id)
		for _, st := range states {
			if last.State == st {
				return last
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("task %s: state %q after %s, want %v (error %q)\nserver log:\n%s", id, last.State, timeout, states, last.Error, s.stderr.String())
	return last
}

// waitRunReview waits until run `run` of task id rests in review, failing
// the test if that run fails or time runs out.
func (s *testServer) waitRunReview(t *testing.T, id string, run int, timeout time.Duration) orchestrator.Task {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		task := s.task(t, id)
		if task.Run == run && task.State == orchestrator.StateReview {
			return task
		}
		if (task.Run == run && task.State == orchestrator.StateFailed) || time.Now().After(deadline) {
			logs, _ := s.cli(t, "tasks", "logs", id)
			t.Fatalf("run %d: state %s (run %d) error %q\n%s", run, task.State, task.Run, task.Error, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *testServer) dispatch(t *testing.T, repo, agent, prompt string, flags ...string) string {
	t.Helper()
	args := append([]string{"dispatch", "--repo", repo, "--agent", agent, "--json"}, flags...)
	out, err := s.cli(t, append(args, prompt)...)
	if err != nil {
		t.Fatalf("dispatch: %v: %s", err, out)
	}
	var resp struct{ ID, State string }
	if err := json.Unmarshal([]byte(out), &resp); err != nil || resp.ID == "" {
		t.Fatalf("dispatch output %q: %v", out, err)
	}
	return resp.ID
}

// processConfig starts a test config: the unsafe process driver (these
// tests exercise the orchestration, not the sandbox) and a free SMTP port.
const processConfig = "sandbox: {driver: process}\nidentity: {smtp_listen: \"127.0.0.1:0\"}\n"

// assertNotPushed fails the test when task id's branch reached the origin.
func assertNotPushed(t *testing.T, origin, id, what string) {
	t.Helper()
	if _, err := gitTry(origin, "rev-parse", "--verify", "refs/heads/nightshift/"+id); err == nil {
		t.Fatal(what)
	}
}

// newOrigin makes a bare repository with one commit on main.
func newOrigin(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bare := filepath.Join(dir, "origin.git")
	work := filepath.Join(dir, "seed")
	gitRun(t, "", "init", "-q", "--bare", "-b", "main", bare)
	gitRun(t, "", "init", "-q", "-b", "main", work)
	os.WriteFile(filepath.Join(work, "README.md"), []byte("# demo\n"), 0o644)
	gitRun(t, work, "add", ".")
	gitRun(t, work, "-c", "user.name=Seed", "-c", "user.email=seed@example.test", "commit", "-q", "-m", "init")
	gitRun(t, work, "push", "-q", bare, "main")
	return bare
}

func gitRun(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func gitTry(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

const processYAML = processConfig + `
worker: {concurrency: 2}
agents:
  script:
    command: ["sh", "-c", "printf '%%s' \"$NIGHTSHIFT_PROMPT\" > prompt-env.txt; cat > prompt-stdin.txt; echo more >> NOTES.md"]
  fail:
    command: ["sh", "-c", "echo about to fail; exit 3"]
  slow:
    command: ["sh", "-c", "sleep 1000 & echo $! > child.pid; echo $$ > agent.pid; wait"]
repos:
  - match: "*"
    test: %s
    timeout: %s
`

func yamlWith(test, timeout string) string {
	return fmt.Sprintf(processYAML, strconv.Quote(test), timeout)
}

func TestBootDispatchToReview(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, yamlWith("test -f NOTES.md", "2m"))
	origin := newOrigin(t)
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(s.URL + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %v %v", path, resp.StatusCode, err)
		}
		resp.Body.Close()
	}
	id := s.dispatch(t, origin, "script", "add a note")
	task := s.waitState(t, id, 60*time.Second, orchestrator.StateReview, orchestrator.StateFailed)
	if task.State != orchestrator.StateReview {
		t.Fatalf("task failed: %s", task.Error)
	}
	if task.Branch != "nightshift/"+id || task.Commit == "" || task.Identity.Email == "" || task.Review == "" {
		t.Fatalf("task JSON incomplete: %+v", task)
	}
	for _, field := range []string{`"id"`, `"state"`, `"repo"`, `"base"`, `"branch"`, `"agent"`, `"prompt"`, `"identity"`, `"commit"`, `"pr_url"`, `"error"`, `"created_at"`, `"updated_at"`} {
		out, _ := s.cli(t, "tasks", "show", id, "--json")
		if !strings.Contains(out, field) {
			t.Errorf("task JSON lacks %s: %s", field, out)
		}
	}
	// The pushed branch: one commit on top of main, authored and committed by
	// the task identity, with the trailer, and exactly the agent's change.
	ref := "refs/heads/nightshift/" + id
	if got := gitRun(t, origin, "rev-parse", ref); got != task.Commit {
		t.Fatalf("origin %s = %s, task commit %s", ref, got, task.Commit)
	}
	if n := gitRun(t, origin, "rev-list", "--count", "main.."+ref); n != "1" {
		t.Fatalf("%s commits on the branch, want 1", n)
	}
	who := gitRun(t, origin, "log", "-1", "--format=%an <%ae>|%cn <%ce>", ref)
	wantWho := fmt.Sprintf("%s <%s>", task.Identity.Name, task.Identity.Email)
	if who != wantWho+"|"+wantWho || !strings.HasPrefix(task.Identity.Name, "agent-") || !strings.HasSuffix(task.Identity.Email, "@agents.localhost") {
		t.Fatalf("author|committer = %q, want identity %q", who, wantWho)
	}
	if msg := gitRun(t, origin, "log", "-1", "--format=%B", ref); !strings.Contains(msg, "Nightshift-Task: "+id) {
		t.Fatalf("commit message lacks trailer:\n%s", msg)
	}
	files := gitRun(t, origin, "diff", "--name-only", "main", ref)
	if files != "NOTES.md\nprompt-env.txt\nprompt-stdin.txt" {
		t.Fatalf("changed files:\n%s", files)
	}
	if got := gitRun(t, origin, "show", ref+":NOTES.md"); got != "more" {
		t.Fatalf("NOTES.md = %q", got)
	}
	// The prompt reached the agent in $NIGHTSHIFT_PROMPT and on stdin.
	if got := gitRun(t, origin, "show", ref+":prompt-env.txt"); got != "add a note" {
		t.Fatalf("prompt in env = %q", got)
	}
	if got := gitRun(t, origin, "show", ref+":prompt-stdin.txt"); got != "add a note" {
		t.Fatalf("prompt on stdin = %q", got)
	}
	// Every transition is stored, in order.
	var trs struct{ Transitions []orchestrator.Transition }
	resp, err := http.Get(s.URL + "/api/v1/tasks/" + id + "/transitions")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&trs)
	resp.Body.Close()
	var seq []string
	for _, tr := range trs.Transitions {
		seq = append(seq, string(tr.To))
	}
	if got := strings.Join(seq, ","); got != "queued,provisioning,running,testing,pushing,review" {
		t.Fatalf("transitions = %s", got)
	}
	// ... and published: the task's event stream replays them.
	out, err := s.cli(t, "tasks", "logs", id, "-f")
	if err != nil {
		t.Fatalf("logs -f: %v\n%s", err, out)
	}
	for _, st := range []string{"==> queued", "==> provisioning", "==> running", "==> testing", "==> pushing", "==> review"} {
		if !strings.Contains(out, st) {
			t.Errorf("followed log lacks %q:\n%s", st, out)
		}
	}
	// The CLI shows the same task and the diff.
	if out, err := s.cli(t, "tasks", "ls"); err != nil || !strings.Contains(out, id) {
		t.Fatalf("tasks ls: %v\n%s", err, out)
	}
	if out, err := s.cli(t, "tasks", "diff", id); err != nil || !strings.Contains(out, "+more") {
		t.Fatalf("tasks diff: %v\n%s", err, out)
	}
	if out, err := s.cli(t, "tasks", "logs", id); err != nil || !strings.Contains(out, "pushed") {
		t.Fatalf("tasks logs: %v\n%s", err, out)
	}
}

func TestFailingAgentPushesNothing(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, yamlWith("true", "2m"))
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "fail", "break things")
	task := s.waitState(t, id, 60*time.Second, orchestrator.StateFailed, orchestrator.StateReview)
	if task.State != orchestrator.StateFailed || !strings.Contains(task.Error, "exit 3") || task.Reason != "agent_failed" {
		t.Fatalf("state %s reason %q error %q", task.State, task.Reason, task.Error)
	}
	assertNotPushed(t, origin, id, "a failed task pushed its branch")
	out, _ := s.cli(t, "tasks", "logs", id)
	if !strings.Contains(out, "about to fail") || !strings.Contains(out, "exit 3") {
		t.Fatalf("logs lack the agent output and the reason:\n%s", out)
	}
}

func TestFailingTestsPushNothing(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, yamlWith("echo tests are red; exit 1", "2m"))
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "script", "add a note")
	task := s.waitState(t, id, 60*time.Second, orchestrator.StateFailed, orchestrator.StateReview)
	if task.State != orchestrator.StateFailed || task.Reason != "tests_failed" {
		t.Fatalf("state %s reason %q error %q", task.State, task.Reason, task.Error)
	}
	assertNotPushed(t, origin, id, "a task with failing tests pushed its branch")
	if out, _ := s.cli(t, "tasks", "logs", id); !strings.Contains(out, "tests are red") {
		t.Fatalf("logs lack the test output:\n%s", out)
	}
}

// pidAlive reports whether pid exists (and is not a zombie we could reap).
func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// state is the field after the parenthesized command
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func readPID(t *testing.T, path string, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(path)
		if err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				return pid
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no pid in %s after %s", path, timeout)
	return 0
}

func waitGone(t *testing.T, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for pidAlive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("%s (pid %d) still alive", what, pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAgentTimeoutKillsChildren(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, yamlWith("true", "2s"))
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "slow", "take forever")
	child := readPID(t, filepath.Join(s.DataDir, "tasks", id, "work", "child.pid"), 30*time.Second)
	task := s.waitState(t, id, 60*time.Second, orchestrator.StateFailed, orchestrator.StateReview)
	if task.State != orchestrator.StateFailed || task.Reason != "timed_out" {
		t.Fatalf("state %s reason %q error %q", task.State, task.Reason, task.Error)
	}
	waitGone(t, child, "the agent's child")
}

func TestCancelMidRun(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, yamlWith("true", "10m"))
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "slow", "take forever")
	dir := filepath.Join(s.DataDir, "tasks", id, "work")
	agentPID := readPID(t, filepath.Join(dir, "agent.pid"), 30*time.Second)
	child := readPID(t, filepath.Join(dir, "child.pid"), 30*time.Second)
	s.waitState(t, id, 30*time.Second, orchestrator.StateRunning)
	if out, err := s.cli(t, "tasks", "cancel", id); err != nil {
		t.Fatalf("cancel: %v\n%s", err, out)
	}
	task := s.waitState(t, id, 30*time.Second, orchestrator.StateCancelled, orchestrator.StateFailed)
	if task.State != orchestrator.StateCancelled {
		t.Fatalf("state %s error %q", task.State, task.Error)
	}
	waitGone(t, agentPID, "the agent")
	waitGone(t, child, "the agent's child")
	assertNotPushed(t, origin, id, "a cancelled task pushed its branch")
	// Cancelling again is refused clearly? A cancelled task may be retried.
	if out, err := s.cli(t, "tasks", "retry", id); err != nil {
		t.Fatalf("retry: %v\n%s", err, out)
	}
	s.waitState(t, id, 30*time.Second, orchestrator.StateProvisioning, orchestrator.StateRunning)
	s.cli(t, "tasks", "cancel", id)
	s.waitState(t, id, 30*time.Second, orchestrator.StateCancelled)
}

func TestInvalidConfigKeyIsNamed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "nightshift.yaml")
	os.WriteFile(cfg, []byte("sandbox:\n  drivr: process\n"), 0o600)
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"nightshift", "serve", "--config", cfg, "--data-dir", filepath.Join(dir, "d"), "--listen", "127.0.0.1:0"},
		baseEnv(t), strings.NewReader(""), &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "sandbox.drivr") {
		t.Fatalf("want an error naming sandbox.drivr, got %v", err)
	}
	if code := exitCode(err, &errb); code != 1 {
		t.Fatalf("exit code %d", code)
	}
	err = run(context.Background(), []string{"nightshift", "serve", "--role", "everything"}, baseEnv(t), strings.NewReader(""), &out, &errb)
	var u *usageError
	if !errors.As(err, &u) {
		t.Fatalf("bad flag value: want a usage error, got %v", err)
	}
}

func TestClientErrorsAreClear(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"nightshift", "tasks", "ls", "--server", "http://127.0.0.1:1"}, baseEnv(t), strings.NewReader(""), &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "cannot reach the nightshift server") {
		t.Fatalf("server down: %v", err)
	}
	err = run(context.Background(), []string{"nightshift", "dispatch", "--repo", "/x"}, baseEnv(t), strings.NewReader(""), &out, &errb)
	if code := exitCode(err, &errb); code != 2 {
		t.Fatalf("missing prompt: exit %d (%v)", code, err)
	}
}

// TestBwrapTaskUsesIdentityTools runs a task in the real bubblewrap sandbox:
// the agent asks `ravi` (through MCP, forwarded into the sandbox) for its
// email address and writes it into the worktree; the commit carries it.
func TestBwrapTaskUsesIdentityTools(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("bwrap"); err != nil {
		t.Skip("bubblewrap not installed (scripts/test installs it)")
	}
	s := startTestServer(t, `
identity: {smtp_listen: "127.0.0.1:0"}
agents:
  ravi-user:
    command: ["sh", "-c", "ravi get email > EMAIL.txt && ravi get-identity-name > NAME.txt && id -u > UID.txt && echo more >> NOTES.md"]
repos:
  - match: "*"
    test: "test -s EMAIL.txt"
`)
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "ravi-user", "who am i")
	task := s.waitState(t, id, 90*time.Second, orchestrator.StateReview, orchestrator.StateFailed)
	if task.State != orchestrator.StateReview {
		out, _ := s.cli(t, "tasks", "logs", id)
		t.Fatalf("task failed: %s\n%s", task.Error, out)
	}
	ref := "nightshift/" + id
	if got := gitRun(t, origin, "show", ref+":EMAIL.txt"); got != task.Identity.Email {
		t.Fatalf("ravi get email = %q, want %q", got, task.Identity.Email)
	}
	if got := gitRun(t, origin, "show", ref+":NAME.txt"); got != task.Identity.Name {
		t.Fatalf("ravi get-identity-name = %q, want %q", got, task.Identity.Name)
	}
	if got := gitRun(t, origin, "show", ref+":UID.txt"); got == "0" {
		t.Fatal("the agent ran as root inside the sandbox")
	}
	out, _ := s.cli(t, "tasks", "logs", id)
	if strings.Contains(out, "nsa_") {
		t.Fatalf("the agent's MCP token leaked into the task log:\n%s", out)
	}
}

// TestSetupRunsConfiguredThenRepoFiles checks the repo's configured setup and
// its own .nightshift/setup.sh run, in that order, before the agent.
func TestSetupRunsConfiguredThenRepoFiles(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, processConfig+`
agents:
  check:
    command: ["sh", "-c", "cp .setup-log SETUP.txt"]
repos:
  - match: "*"
    setup: "echo configured >> .setup-log"
`)
	origin := newOrigin(t)
	seed := filepath.Join(t.TempDir(), "seed")
	gitRun(t, "", "clone", "-q", origin, seed)
	os.MkdirAll(filepath.Join(seed, ".nightshift"), 0o755)
	os.WriteFile(filepath.Join(seed, ".nightshift", "setup.sh"), []byte("#!/bin/sh\necho repo-script >> .setup-log\n"), 0o755)
	os.WriteFile(filepath.Join(seed, ".gitignore"), []byte(".setup-log\n"), 0o644)
	gitRun(t, seed, "add", ".")
	gitRun(t, seed, "-c", "user.name=Seed", "-c", "user.email=seed@example.test", "commit", "-q", "-m", "setup")
	gitRun(t, seed, "push", "-q", "origin", "main")
	id := s.dispatch(t, origin, "check", "show setup")
	task := s.waitState(t, id, 60*time.Second, orchestrator.StateReview, orchestrator.StateFailed)
	if task.State != orchestrator.StateReview {
		t.Fatalf("task failed: %s", task.Error)
	}
	if got := gitRun(t, origin, "show", "nightshift/"+id+":SETUP.txt"); got != "configured\nrepo-script" {
		t.Fatalf("setup ran as %q", got)
	}
}

// TestIdempotencyKeyCreatesOneTask posts the same request twice with one
// Idempotency-Key: one task, the same id in both answers.
func TestIdempotencyKeyCreatesOneTask(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, yamlWith("true", "2m"))
	origin := newOrigin(t)
	post := func() string {
		req, _ := http.NewRequest("POST", s.URL+"/api/v1/tasks", strings.NewReader(`{"repo":"`+origin+`","prompt":"add a note","agent":"script"}`))
		req.Header.Set("Idempotency-Key", "deploy-42")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ ID string }
		json.NewDecoder(resp.Body).Decode(&body)
		if resp.StatusCode != http.StatusAccepted || body.ID == "" {
			t.Fatalf("POST: %d %+v", resp.StatusCode, body)
		}
		return body.ID
	}
	first, second := post(), post()
	if first != second {
		t.Fatalf("same key, two ids: %s %s", first, second)
	}
	s.waitState(t, first, 60*time.Second, orchestrator.StateReview)
	out, _ := s.cli(t, "tasks", "ls", "--json")
	var tasks []orchestrator.Task
	json.Unmarshal([]byte(out), &tasks)
	if len(tasks) != 1 {
		t.Fatalf("%d tasks for one idempotency key", len(tasks))
	}
}

// TestFollowUpMessageContinuesTheTask sends a follow-up to a task in review:
// the same task runs again on its worktree and adds a commit to its branch.
func TestFollowUpMessageContinuesTheTask(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, processConfig+`
agents:
  echo:
    command: ["sh", "-c", "echo \"$NIGHTSHIFT_PROMPT\" >> NOTES.md"]
`)
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "echo", "first line")
	s.waitState(t, id, 60*time.Second, orchestrator.StateReview)
	if out, err := s.cli(t, "tasks", "message", id, "second line"); err != nil {
		t.Fatalf("message: %v\n%s", err, out)
	}
	s.waitRunReview(t, id, 2, 60*time.Second)
	ref := "nightshift/" + id
	if got := gitRun(t, origin, "show", ref+":NOTES.md"); got != "first line\nsecond line" {
		t.Fatalf("NOTES.md = %q", got)
	}
	if n := gitRun(t, origin, "rev-list", "--count", "main.."+ref); n != "2" {
		t.Fatalf("%s commits, want 2 (one per run)", n)
	}
	if msg := gitRun(t, origin, "log", "-1", "--format=%s", ref); msg != "second line" {
		t.Fatalf("follow-up commit subject %q", msg)
	}
}

// TestAgentSignsUpWithItsOwnIdentity is the identity round trip: the agent
// reads its address through MCP (via ravi), the test "signs up" by mailing an
// OTP to it over SMTP, the agent reads the OTP with check_inbox and commits
// it; a vault secret it prints never reaches the task log.
func TestAgentSignsUpWithItsOwnIdentity(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("bwrap"); err != nil {
		t.Skip("bubblewrap not installed (scripts/test installs it)")
	}
	s := startTestServer(t, `
identity: {smtp_listen: "127.0.0.1:0"}
agents:
  signup:
    command: ["sh", "-c", "ravi get email > EMAIL.txt && ravi inbox email --wait 60s > INBOX.txt && grep -oE '[0-9]{6}' INBOX.txt | head -1 > OTP.txt && echo password is $(ravi secrets get SERVICE_PASSWORD)"]
`)
	secret := "pw-" + orchestrator.NewID()
	s.vaultSet(t, "SERVICE_PASSWORD", "agents", secret)
	m := regexp.MustCompile(`smtp listening.*addr=(127\.0\.0\.1:\d+)`).FindStringSubmatch(s.stderr.String())
	if m == nil {
		t.Fatalf("no SMTP address in the server log:\n%s", s.stderr.String())
	}
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "signup", "sign up for the service")
	task := s.waitState(t, id, 60*time.Second, orchestrator.StateRunning, orchestrator.StateFailed)
	if task.Identity.Email == "" {
		t.Fatalf("no identity on the running task: %+v", task)
	}
	body := "Subject: Verify your account\r\n\r\nWelcome! Your verification code is 482913.\r\n"
	if err := smtp.SendMail(m[1], nil, "noreply@service.test", []string{task.Identity.Email}, []byte(body)); err != nil {
		t.Fatalf("send mail: %v", err)
	}
	task = s.waitState(t, id, 60*time.Second, orchestrator.StateReview, orchestrator.StateFailed)
	logs, _ := s.cli(t, "tasks", "logs", id)
	if task.State != orchestrator.StateReview {
		t.Fatalf("task failed: %s\n%s", task.Error, logs)
	}
	ref := "nightshift/" + id
	if got := gitRun(t, origin, "show", ref+":OTP.txt"); got != "482913" {
		t.Fatalf("OTP.txt = %q", got)
	}
	if got := gitRun(t, origin, "show", ref+":EMAIL.txt"); got != task.Identity.Email {
		t.Fatalf("EMAIL.txt = %q, identity %q", got, task.Identity.Email)
	}
	if who := gitRun(t, origin, "log", "-1", "--format=%ae", ref); who != task.Identity.Email {
		t.Fatalf("commit author %q, identity %q", who, task.Identity.Email)
	}
	if strings.Contains(logs, secret) {
		t.Fatalf("the vault secret reached the task log:\n%s", logs)
	}
	if !strings.Contains(logs, "password is [REDACTED") {
		t.Fatalf("the agent's output line is missing (so the redaction check proves nothing):\n%s", logs)
	}
}

// TestProtectedPathFailsTheTask: an agent that changes a workflow fails the
// task unless the repository allows it; nothing is pushed.
func TestProtectedPathFailsTheTask(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, processConfig+`
agents:
  sneaky:
    command: ["sh", "-c", "mkdir -p .github/workflows && echo 'on: push' > .github/workflows/x.yml && echo ok > NOTES.md"]
repos:
  - match: "*"
`)
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "sneaky", "fix ci")
	task := s.waitState(t, id, 60*time.Second, orchestrator.StateFailed, orchestrator.StateReview)
	if task.State != orchestrator.StateFailed || task.Reason != "protected_path" || !strings.Contains(task.Error, ".github/workflows/x.yml") {
		t.Fatalf("state %s reason %q error %q", task.State, task.Reason, task.Error)
	}
	assertNotPushed(t, origin, id, "a task that changed a protected path pushed its branch")
}

// TestSecretInTheChangeIsNeverPushed: an agent that writes a vault secret into
// the worktree fails the task with secret_in_diff; nothing is pushed and the
// value appears nowhere in the task's log or diff.
func TestSecretInTheChangeIsNeverPushed(t *testing.T) {
	t.Parallel()
	assertSecretNeverPushed(t, "ravi secrets get DEPLOY_TOKEN | base64 > config.txt; echo fine > NOTES.md", "a change carrying a secret was pushed")
}

// assertSecretNeverPushed runs an agent (a sh -c script) that writes the
// vault secret DEPLOY_TOKEN into its change: the task fails with
// secret_in_diff naming it, nothing is pushed (why otherwise), and the
// value appears nowhere in the task's log, diff or error.
func assertSecretNeverPushed(t *testing.T, script, why string) {
	t.Helper()
	s := startTestServer(t, processConfig+fmt.Sprintf(`
agents:
  leaky:
    command: ["sh", "-c", %q]
`, script))
	secret := "tok-" + orchestrator.NewID()
	s.vaultSet(t, "DEPLOY_TOKEN", "agents", secret)
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "leaky", "use the deploy token")
	task := s.waitState(t, id, 60*time.Second, orchestrator.StateFailed, orchestrator.StateReview)
	logs, _ := s.cli(t, "tasks", "logs", id)
	if task.State != orchestrator.StateFailed || task.Reason != "secret_in_diff" || !strings.Contains(task.Error, "DEPLOY_TOKEN") {
		t.Fatalf("state %s reason %q error %q\n%s", task.State, task.Reason, task.Error, logs)
	}
	assertNotPushed(t, origin, id, why)
	diff, _ := s.cli(t, "tasks", "diff", id)
	for _, text := range []string{logs, diff, task.Error} {
		if strings.Contains(text, secret) {
			t.Fatalf("the secret leaked:\n%s", text)
		}
	}
}

// TestFollowUpAfterAFailedRunWhoseWorktreeIsGone: a follow-up to a task whose
// only run failed (nothing pushed) and whose worktree was collected starts
// again from the task's base.
func TestFollowUpAfterAFailedRunWhoseWorktreeIsGone(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, processConfig+`
agents:
  picky:
    command: ["sh", "-c", "if [ \"$NIGHTSHIFT_PROMPT\" = 'try again' ]; then echo ok > NOTES.md; else exit 1; fi"]
`)
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "picky", "first try")
	s.waitState(t, id, 60*time.Second, orchestrator.StateFailed)
	if err := os.RemoveAll(filepath.Join(s.DataDir, "tasks", id)); err != nil {
		t.Fatal(err)
	}
	if out, err := s.cli(t, "tasks", "message", id, "try again"); err != nil {
		t.Fatalf("message: %v %s", err, out)
	}
	s.waitRunReview(t, id, 2, 60*time.Second)
	if got := gitRun(t, origin, "show", "nightshift/"+id+":NOTES.md"); got != "ok" {
		t.Fatalf("NOTES.md = %q", got)
	}
}

// TestServeRefusesWithoutASafeSandbox: with bubblewrap unusable and the
// unsafe driver not chosen, serve does not start, and says what to do.
func TestServeRefusesWithoutASafeSandbox(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "nightshift.yaml")
	os.WriteFile(cfg, []byte("sandbox: {bwrap: /nonexistent/bwrap}\nidentity: {smtp_listen: \"127.0.0.1:0\"}\n"), 0o600)
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"nightshift", "serve", "--config", cfg, "--data-dir", filepath.Join(dir, "d"), "--listen", "127.0.0.1:0"},
		baseEnv(t), strings.NewReader(""), &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "bubblewrap is not usable") || !strings.Contains(err.Error(), "sandbox.driver: process") {
		t.Fatalf("want a refusal that names the way out, got %v", err)
	}
	if strings.Contains(out.String(), "listening") {
		t.Fatal("serve started without a sandbox")
	}
}

// TestRaviIdentityProvider runs a task with identity.provider: ravi against
// a fake Ravi API: the agent's identity (and its git author) comes from Ravi,
// its OTP arrives in Ravi's inbox, and the identity is deleted when the task
// is cancelled.
func TestRaviIdentityProvider(t *testing.T) {
	t.Parallel()
	fake := ravitest.New(t)
	s := startTestServer(t, fmt.Sprintf(`
sandbox: {driver: process}
identity:
  provider: ravi
  ravi: {api_url: %q, key: %q}
agents:
  signup:
    command: ["sh", "-c", "ravi get email > EMAIL.txt && ravi inbox sms --wait 60s | grep -oE 'code is [0-9]{6}' | grep -oE '[0-9]{6}' > OTP.txt"]
  waiter:
    command: ["sh", "-c", "sleep 1000"]
`, fake.URL, ravitest.Key))
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "signup", "sign up")
	task := s.waitState(t, id, 60*time.Second, orchestrator.StateRunning, orchestrator.StateFailed)
	var uuid string
	for _, ri := range fake.Identities() {
		if ri.Email == task.Identity.Email {
			uuid = ri.UUID
		}
	}
	if uuid == "" || !strings.HasSuffix(task.Identity.Email, "@raviapp.test") {
		t.Fatalf("task identity %+v is not one of Ravi's: %+v", task.Identity, fake.Identities())
	}
	fake.Deliver(uuid, identity.KindSMS, "", "Your code is 424242")
	task = s.waitState(t, id, 60*time.Second, orchestrator.StateReview, orchestrator.StateFailed)
	if task.State != orchestrator.StateReview {
		logs, _ := s.cli(t, "tasks", "logs", id)
		t.Fatalf("task failed: %s\n%s", task.Error, logs)
	}
	ref := "nightshift/" + id
	if got := gitRun(t, origin, "show", ref+":OTP.txt"); got != "424242" {
		t.Fatalf("OTP.txt = %q", got)
	}
	if who := gitRun(t, origin, "log", "-1", "--format=%ae", ref); who != task.Identity.Email {
		t.Fatalf("author %q, identity %q", who, task.Identity.Email)
	}
	// A task that ends releases its Ravi identity.
	other := s.dispatch(t, origin, "waiter", "wait")
	waiting := s.waitState(t, other, 60*time.Second, orchestrator.StateRunning)
	s.cli(t, "tasks", "cancel", other)
	s.waitState(t, other, 60*time.Second, orchestrator.StateCancelled)
	deadline := time.Now().Add(10 * time.Second)
	for {
		gone := true
		for _, ri := range fake.Identities() {
			if ri.Email == waiting.Identity.Email {
				gone = false
			}
		}
		if gone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cancelled task's Ravi identity %s was not deleted", waiting.Identity.Email)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServeRefusesAnOpenAPIOnTheNetwork: without api.tokens, serve will not
// listen on a non-loopback address.
func TestServeRefusesAnOpenAPIOnTheNetwork(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "nightshift.yaml")
	os.WriteFile(cfg, []byte(processConfig), 0o600)
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"nightshift", "serve", "--config", cfg, "--data-dir", filepath.Join(dir, "d"), "--listen", "0.0.0.0:0"},
		baseEnv(t), strings.NewReader(""), &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "api.tokens") {
		t.Fatalf("want a refusal naming api.tokens, got %v", err)
	}
	// Refused before anything is created: no data dir, no vault key.
	if _, err := os.Stat(filepath.Join(dir, "d")); !os.IsNotExist(err) {
		t.Fatalf("the refused start created the data dir: %v", err)
	}
}

// TestEveryLogLineIsKept: an agent that prints thousands of lines quickly
// (more than the log publisher keeps in flight) loses none of them, and they
// stay in order before the task's final state.
func TestEveryLogLineIsKept(t *testing.T) {
	t.Parallel()
	const n = 6000
	s := startTestServer(t, processConfig+fmt.Sprintf(`
agents:
  chatty:
    command: ["sh", "-c", "i=0; while [ $i -lt %d ]; do echo line $i; i=$((i+1)); done; echo done > NOTES.md"]
`, n))
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "chatty", "talk a lot")
	s.waitState(t, id, 60*time.Second, orchestrator.StateReview)
	out, err := s.cli(t, "tasks", "logs", id, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var lines []orchestrator.LogLine
	if err := json.Unmarshal([]byte(out), &lines); err != nil {
		t.Fatal(err)
	}
	next := 0
	for _, l := range lines {
		if l.Stream != "agent" || !strings.HasPrefix(l.Text, "line ") {
			continue
		}
		if l.Text != fmt.Sprintf("line %d", next) {
			t.Fatalf("after line %d came %q", next-1, l.Text)
		}
		next++
	}
	if next != n {
		t.Fatalf("%d of %d agent lines kept", next, n)
	}
}
