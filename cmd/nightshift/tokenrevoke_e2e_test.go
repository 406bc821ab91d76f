package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
)

// TestCrashedRunTokenDiesWhenTheTaskIsRedelivered kills the server
// (SIGKILL, no drain) while its agent runs and restarts it on the same data
// dir. The MCP token the crashed run handed its agent still answers on the
// main listener's /mcp until the redelivered run starts; from then on, and
// after that run reached review, it is refused while the new run's own
// token works.
func TestCrashedRunTokenDiesWhenTheTaskIsRedelivered(t *testing.T) {
	t.Parallel()
	bin := nightshiftBinary(t)
	dir := t.TempDir()
	mark := filepath.Join(dir, "run")
	// First run: keep the token and sleep. Redelivered run: keep its token,
	// wait for the test's go-ahead, then make the change.
	yaml := fmt.Sprintf(`
sandbox: {driver: process}
identity: {smtp_listen: "127.0.0.1:0"}
agents:
  sleeper:
    command: ["sh", "-c", "if [ -e %[1]s.1 ]; then printf %%s \"$NIGHTSHIFT_MCP_TOKEN\" > %[1]s.2.tmp; mv %[1]s.2.tmp %[1]s.2; while [ ! -e %[1]s.go ]; do sleep 0.05; done; echo more >> NOTES.md; else echo $$ > %[1]s.pid; printf %%s \"$NIGHTSHIFT_MCP_TOKEN\" > %[1]s.1.tmp; mv %[1]s.1.tmp %[1]s.1; sleep 1000; fi"]
repos:
  - match: "*"
    test: "test -f NOTES.md"
`, mark)
	if err := os.WriteFile(filepath.Join(dir, "nightshift.yaml"), []byte(withTempRepos(t, yaml)), 0o600); err != nil {
		t.Fatal(err)
	}
	origin := newOrigin(t)
	cmd, s := startProcess(t, bin, dir)
	id := s.dispatch(t, origin, "sleeper", "add a note")
	agentPID := readPID(t, mark+".pid", 30*time.Second)
	oldTok := readToken(t, mark+".1")
	if status := mcpInitialize(t, s.URL+"/mcp", oldTok); status != http.StatusOK {
		t.Fatalf("the running task's token got %d on /mcp, want 200", status)
	}

	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	syscall.Kill(agentPID, syscall.SIGKILL)

	_, s2 := startProcess(t, bin, dir)
	newTok := readToken(t, mark+".2")
	if status := mcpInitialize(t, s2.URL+"/mcp", newTok); status != http.StatusOK {
		t.Fatalf("the redelivered run's token got %d on /mcp, want 200", status)
	}
	if status := mcpInitialize(t, s2.URL+"/mcp", oldTok); status != http.StatusUnauthorized {
		t.Fatalf("the crashed run's token got %d on /mcp while the redelivered run runs, want 401", status)
	}
	if err := os.WriteFile(mark+".go", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	task := s2.waitState(t, id, 60*time.Second, orchestrator.StateReview, orchestrator.StateFailed)
	if task.State != orchestrator.StateReview {
		log, _ := os.ReadFile(filepath.Join(dir, "serve.log"))
		t.Fatalf("state %s error %q\n%s", task.State, task.Error, log)
	}
	for name, tok := range map[string]string{"crashed": oldTok, "redelivered": newTok} {
		if status := mcpInitialize(t, s2.URL+"/mcp", tok); status != http.StatusUnauthorized {
			t.Fatalf("the %s run's token got %d on /mcp after review, want 401", name, status)
		}
	}
}

// readToken waits for an agent to have written its token to path.
func readToken(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && strings.HasPrefix(string(b), "nsa_") {
			return string(b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no token in %s", path)
	return ""
}
