package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nightshift/nightshift/bench/cluster"
	"github.com/nightshift/nightshift/orchestrator"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// nightshiftBinary builds the binary once per test run.
func nightshiftBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nightshift-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "nightshift")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// startProcess runs `nightshift serve` as a child process.
func startProcess(t *testing.T, bin, dir string, extra ...string) (*exec.Cmd, *testServer) {
	t.Helper()
	data := filepath.Join(dir, "data")
	os.Remove(filepath.Join(data, "serve.addr"))
	cmd := exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", data,
		"--config", filepath.Join(dir, "nightshift.yaml"), "--ack-wait", "3s"}, extra...)...)
	cmd.Env = baseEnv(t)
	logf, err := os.OpenFile(filepath.Join(dir, "serve.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(data, "serve.addr"))
		if err == nil && len(b) > 0 {
			return cmd, &testServer{URL: strings.TrimSpace(string(b)), DataDir: data, stderr: &syncBuffer{}}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "serve.log"))
			t.Fatalf("serve did not start:\n%s", log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRestartRedeliversExactlyOnce kills the server (SIGKILL: no drain) while
// its agent runs, starts it again on the same data dir, and checks the task is
// redelivered and finishes exactly once: one task, one branch, one commit.
func TestRestartRedeliversExactlyOnce(t *testing.T) {
	t.Parallel()
	bin := nightshiftBinary(t)
	dir := t.TempDir()
	mark := filepath.Join(dir, "first-run")
	yaml := fmt.Sprintf(`
sandbox: {driver: process}
identity: {smtp_listen: "127.0.0.1:0"}
agents:
  flaky:
    command: ["sh", "-c", "if [ -e %[1]s ]; then echo more >> NOTES.md; else echo $$ > %[1]s.pid; touch %[1]s; sleep 1000; fi"]
repos:
  - match: "*"
    test: "test -f NOTES.md"
`, mark)
	if err := os.WriteFile(filepath.Join(dir, "nightshift.yaml"), []byte(withTempRepos(t, yaml)), 0o600); err != nil {
		t.Fatal(err)
	}
	origin := newOrigin(t)
	cmd, s := startProcess(t, bin, dir)
	id := s.dispatch(t, origin, "flaky", "add a note")
	agentPID := readPID(t, mark+".pid", 30*time.Second)
	s.waitState(t, id, 30*time.Second, orchestrator.StateRunning)

	// Crash: no drain, no acknowledgement. The orphaned agent is killed too,
	// as a machine crash would.
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	syscall.Kill(agentPID, syscall.SIGKILL)

	_, s2 := startProcess(t, bin, dir)
	task := s2.waitState(t, id, 60*time.Second, orchestrator.StateReview, orchestrator.StateFailed)
	if task.State != orchestrator.StateReview {
		log, _ := os.ReadFile(filepath.Join(dir, "serve.log"))
		t.Fatalf("state %s error %q\n%s", task.State, task.Error, log)
	}
	out, err := s2.cli(t, "tasks", "ls", "--json")
	var tasks []orchestrator.Task
	if err != nil || json.Unmarshal([]byte(out), &tasks) != nil || len(tasks) != 1 || tasks[0].Run != 1 {
		t.Fatalf("want exactly one task in its first run: %v\n%s", err, out)
	}
	branches := gitRun(t, origin, "for-each-ref", "--format=%(refname)", "refs/heads/nightshift/")
	if branches != "refs/heads/nightshift/"+id {
		t.Fatalf("branches: %q", branches)
	}
	if n := gitRun(t, origin, "rev-list", "--count", "main..nightshift/"+id); n != "1" {
		t.Fatalf("%s commits on the branch, want 1", n)
	}
	// The stored history shows the redelivery: provisioning twice, one review.
	trs, _ := s2.cli(t, "tasks", "logs", id, "-f")
	if strings.Count(trs, "==> provisioning") != 2 || strings.Count(trs, "==> review") != 1 {
		t.Fatalf("want two provisioning runs and one review:\n%s", trs)
	}
}

// TestSIGTERMStopsCleanly sends SIGTERM to a serving process and expects it
// to drain and exit 0.
func TestSIGTERMStopsCleanly(t *testing.T) {
	t.Parallel()
	bin := nightshiftBinary(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "nightshift.yaml"), []byte(processConfig), 0o600)
	cmd, s := startProcess(t, bin, dir)
	if _, err := s.cli(t, "tasks", "ls"); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "serve.log"))
			t.Fatalf("exit after SIGTERM: %v\n%s", err, log)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30s of SIGTERM")
	}
}

// TestRolesInSeparateProcesses runs ingress (with the embedded NATS server
// open on TCP), scheduler and worker as three processes that talk only
// through NATS, each on a data dir of its own; a dispatched
// task is done by the worker process.
func TestRolesInSeparateProcesses(t *testing.T) {
	t.Parallel()
	bin := nightshiftBinary(t)
	natsAddr := fmt.Sprintf("127.0.0.1:%d", cluster.FreePort(t))
	yaml := fmt.Sprintf(`
sandbox: {driver: process}
identity: {smtp_listen: "127.0.0.1:0"}
nats: {listen: %q}
agents:
  script:
    command: ["sh", "-c", "echo \"worked by $NIGHTSHIFT_TASK_ID\" >> NOTES.md"]
`, natsAddr)
	front, workerDir := t.TempDir(), t.TempDir()
	for _, d := range []string{front, workerDir} {
		if err := os.WriteFile(filepath.Join(d, "nightshift.yaml"), []byte(withTempRepos(t, yaml)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, ingress := startProcess(t, bin, front, "--role", "ingress")
	natsURL := "nats://" + natsAddr
	schedDir := filepath.Join(front, "sched")
	os.MkdirAll(schedDir, 0o700)
	os.WriteFile(filepath.Join(schedDir, "nightshift.yaml"), []byte(yaml), 0o600)
	// Every role has a data dir of its own: a data dir is held by one
	// process, and the task records live in NATS.
	schedCmd := exec.Command(bin, "serve", "--role", "scheduler", "--nats", natsURL, "--listen", "127.0.0.1:0",
		"--data-dir", filepath.Join(schedDir, "data"), "--config", filepath.Join(schedDir, "nightshift.yaml"))
	schedCmd.Env = baseEnv(t)
	schedLog, _ := os.Create(filepath.Join(schedDir, "serve.log"))
	schedCmd.Stdout, schedCmd.Stderr = schedLog, schedLog
	if err := schedCmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { schedCmd.Process.Kill(); schedCmd.Wait() })
	_, worker := startProcess(t, bin, workerDir, "--role", "worker", "--nats", natsURL)

	origin := newOrigin(t)
	id := ingress.dispatch(t, origin, "script", "add a note")
	task := ingress.waitState(t, id, 60*time.Second, orchestrator.StateReview, orchestrator.StateFailed)
	if task.State != orchestrator.StateReview {
		log, _ := os.ReadFile(filepath.Join(workerDir, "serve.log"))
		t.Fatalf("state %s error %q\nworker log:\n%s", task.State, task.Error, log)
	}
	if got := gitRun(t, origin, "show", "nightshift/"+id+":NOTES.md"); got != "worked by "+id {
		t.Fatalf("NOTES.md = %q", got)
	}
	// The clone lives in the worker's data dir, not the front's.
	if _, err := os.Stat(filepath.Join(worker.DataDir, "tasks", id)); err != nil {
		t.Fatalf("the worker process did not run the task: %v", err)
	}
	if _, err := os.Stat(filepath.Join(ingress.DataDir, "tasks", id)); err == nil {
		t.Fatal("the ingress process ran the task itself")
	}
}
