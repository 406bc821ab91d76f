package main

import (
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/agent/modelserver"
)

// realAgentServer starts nightshift with the bwrap sandbox and the model
// gateway pointed at a scripted model server; the upstream API key is a
// random canary that must never reach the agent.
func realAgentServer(t *testing.T, cli string) (*testServer, *modelserver.Server, string) {
	t.Helper()
	if _, err := exec.LookPath(cli); err != nil {
		t.Skipf("%s CLI not installed (scripts/test installs the pinned npm package)", cli)
	}
	if _, err := exec.LookPath("bwrap"); err != nil {
		t.Skip("bubblewrap not installed (scripts/test installs it)")
	}
	ms := modelserver.New(modelserver.Config{})
	up := httptest.NewServer(ms)
	t.Cleanup(up.Close)
	canary := "sk-canary-" + orchestrator.NewID() + orchestrator.NewID()
	keyFile := filepath.Join(t.TempDir(), "key")
	os.WriteFile(keyFile, []byte(canary), 0o600)
	s := startTestServer(t, fmt.Sprintf(`
identity: {smtp_listen: "127.0.0.1:0"}
models:
  anthropic: {base_url: %[1]q, api_key: "${file:%[2]s}"}
  openai: {base_url: %[3]q, api_key: "${file:%[2]s}"}
agents:
  claude: {model: claude-sonnet-4-5}
  codex: {model: gpt-5.1-codex-mini}
repos:
  - match: "*"
    test: "grep -q from-agent NOTES.md"
    timeout: 3m
`, up.URL, keyFile, up.URL+"/v1"))
	return s, ms, canary
}

// checkAgentTask checks a real-agent task ended in review with its change
// pushed, usage recorded, and the canary key nowhere the agent could see.
func checkAgentTask(t *testing.T, s *testServer, ms *modelserver.Server, origin, id, canary string) {
	t.Helper()
	task := s.waitState(t, id, 3*time.Minute, orchestrator.StateReview, orchestrator.StateFailed)
	logs, _ := s.cli(t, "tasks", "logs", id)
	if task.State != orchestrator.StateReview {
		t.Fatalf("task failed: %s\n%s\nmodel server errors: %v", task.Error, logs, ms.Errors())
	}
	if errs := ms.Errors(); len(errs) > 0 {
		t.Errorf("the CLI did not answer as scripted: %v", errs)
	}
	if got := gitRun(t, origin, "show", "nightshift/"+id+":NOTES.md"); got != "from-agent" {
		t.Fatalf("NOTES.md = %q", got)
	}
	if task.Usage.InputTokens == 0 || task.Usage.OutputTokens == 0 {
		t.Errorf("usage not recorded on the task: %+v", task.Usage)
	}
	// The upstream got the real key; the agent's world never did.
	sawKey := false
	for _, r := range ms.Requests() {
		if strings.Contains(r.Header.Get("X-Api-Key")+r.Header.Get("Authorization"), canary) {
			sawKey = true
		}
	}
	if !sawKey {
		t.Fatal("the upstream never received the real key: the canary check below proves nothing")
	}
	if strings.Contains(logs, canary) {
		t.Error("the real API key appears in the task log")
	}
	filepath.Walk(filepath.Join(s.DataDir, "tasks", id), func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && info.Size() < 10<<20 {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), canary) {
				t.Errorf("the real API key is in the worktree: %s", p)
			}
		}
		return nil
	})
	if strings.Contains(gitRun(t, origin, "log", "-p", "nightshift/"+id), canary) {
		t.Error("the real API key was pushed")
	}
}

func TestClaudeCodeTaskEndToEnd(t *testing.T) {
	t.Parallel()
	s, ms, canary := realAgentServer(t, "claude")
	ms.Script(
		modelserver.Step{Name: "edit", Check: func(r *modelserver.Request) error {
			if r.Model != "claude-sonnet-4-5" {
				return fmt.Errorf("model %q, want the configured claude-sonnet-4-5", r.Model)
			}
			return nil
		}, ToolCalls: []modelserver.ToolCall{{ID: "toolu_edit", Name: "Bash",
			Input: map[string]any{"command": "echo from-agent > NOTES.md && env > /tmp/env.txt", "description": "write the note"}}}},
		modelserver.Step{Name: "test", Check: func(r *modelserver.Request) error { _, err := r.Result("toolu_edit"); return err },
			ToolCalls: []modelserver.ToolCall{{ID: "toolu_test", Name: "Bash",
				Input: map[string]any{"command": "grep -q from-agent NOTES.md && echo TESTS PASS; grep -c " + canary[:12] + " /tmp/env.txt || true", "description": "run the tests"}}}},
		modelserver.Step{Name: "done", Check: func(r *modelserver.Request) error {
			out, err := r.Result("toolu_test")
			if err == nil && !strings.Contains(out, "TESTS PASS") {
				return fmt.Errorf("test result %q", out)
			}
			// The command prints the number of env lines holding the key.
			if err == nil && !strings.Contains(out, "TESTS PASS\n0\n") {
				return fmt.Errorf("the canary key is in the sandbox environment: %q", out)
			}
			return err
		}, Text: "Added the note; tests pass."},
	)
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "claude", "add a note saying from-agent")
	checkAgentTask(t, s, ms, origin, id, canary)
}

func TestCodexTaskEndToEnd(t *testing.T) {
	t.Parallel()
	s, ms, canary := realAgentServer(t, "codex")
	ms.Script(
		modelserver.Step{Name: "edit", Check: func(r *modelserver.Request) error {
			if r.Model != "gpt-5.1-codex-mini" {
				return fmt.Errorf("model %q, want the configured gpt-5.1-codex-mini", r.Model)
			}
			return nil
		}, ToolCalls: []modelserver.ToolCall{{ID: "call_edit", Name: "exec_command",
			Input: map[string]any{"cmd": "echo from-agent > NOTES.md && grep -q from-agent NOTES.md && echo TESTS PASS; env | grep -c " + canary[:12] + " || true"}}}},
		modelserver.Step{Name: "done", Check: func(r *modelserver.Request) error {
			out, err := r.Result("call_edit")
			if err == nil && !strings.Contains(out, "TESTS PASS") {
				return fmt.Errorf("shell result %q", out)
			}
			return err
		}, Text: "Added the note; tests pass."},
	)
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "codex", "add a note saying from-agent")
	checkAgentTask(t, s, ms, origin, id, canary)
}

// TestBudgetStopsClaudeAndPushesCheckpoint gives a task a 300-token budget:
// the hard limit stops the run, the work is checkpointed once the sandbox is
// gone, and the task fails with budget_exceeded and its work pushed.
func TestBudgetStopsClaudeAndPushesCheckpoint(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("claude"); err != nil {
		t.Skip("claude CLI not installed (scripts/test installs the pinned npm package)")
	}
	ms := modelserver.New(modelserver.Config{})
	up := httptest.NewServer(ms)
	t.Cleanup(up.Close)
	s := startTestServer(t, fmt.Sprintf(`
identity: {smtp_listen: "127.0.0.1:0"}
models:
  anthropic: {base_url: %q, api_key: "sk-test"}
agents:
  claude: {model: claude-sonnet-4-5}
repos:
  - match: "*"
    budget: {tokens: 300}
    timeout: 3m
`, up.URL))
	ms.Script(
		modelserver.Step{Name: "edit", ToolCalls: []modelserver.ToolCall{{ID: "toolu_1", Name: "Bash",
			Input: map[string]any{"command": "echo from-agent > NOTES.md", "description": "write"}}}},
		modelserver.Step{Name: "more", ToolCalls: []modelserver.ToolCall{{ID: "toolu_2", Name: "Bash",
			Input: map[string]any{"command": "echo more >> NOTES.md", "description": "write more"}}}},
		modelserver.Step{Name: "over", ToolCalls: []modelserver.ToolCall{{ID: "toolu_3", Name: "Bash",
			Input: map[string]any{"command": "sleep 60", "description": "too long"}}}},
		modelserver.Step{Name: "never", Text: "unreachable"},
	)
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "claude", "write notes")
	task := s.waitState(t, id, 3*time.Minute, orchestrator.StateFailed, orchestrator.StateReview)
	logs, _ := s.cli(t, "tasks", "logs", id)
	if task.State != orchestrator.StateFailed || task.Reason != "budget_exceeded" {
		t.Fatalf("state %s reason %q error %q\n%s", task.State, task.Reason, task.Error, logs)
	}
	ref := "nightshift/" + id
	notes, err := gitTry(origin, "show", ref+":NOTES.md")
	if err != nil || !strings.HasPrefix(notes, "from-agent") {
		t.Fatalf("checkpoint not pushed: %v %q\n%s", err, notes, logs)
	}
	if msg := gitRun(t, origin, "log", "-1", "--format=%B", ref); !strings.Contains(msg, "Nightshift-Checkpoint: true") {
		t.Fatalf("pushed commit is not a checkpoint:\n%s", msg)
	}
	if task.Usage.InputTokens+task.Usage.OutputTokens < 300 {
		t.Fatalf("usage %+v under the budget", task.Usage)
	}
}

// TestClaudeFollowUpResumesSession sends a follow-up to a Claude Code task in
// review: the second run resumes the same conversation (the model sees the
// first prompt) and adds a commit.
func TestClaudeFollowUpResumesSession(t *testing.T) {
	t.Parallel()
	s, ms, _ := realAgentServer(t, "claude")
	ms.Script(
		modelserver.Step{Name: "edit", ToolCalls: []modelserver.ToolCall{{ID: "toolu_a", Name: "Bash",
			Input: map[string]any{"command": "echo from-agent > NOTES.md", "description": "write"}}}},
		modelserver.Step{Name: "done", Text: "Wrote the note."},
		modelserver.Step{Name: "follow-up", Check: func(r *modelserver.Request) error {
			if !r.HasText("add a note saying from-agent") || !r.HasText("now add a second line") {
				return fmt.Errorf("the follow-up did not resume the conversation: %q", r.Texts)
			}
			return nil
		}, ToolCalls: []modelserver.ToolCall{{ID: "toolu_b", Name: "Bash",
			Input: map[string]any{"command": "echo second >> NOTES.md", "description": "append"}}}},
		modelserver.Step{Name: "done again", Text: "Added the second line."},
	)
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "claude", "add a note saying from-agent")
	first := s.waitState(t, id, 3*time.Minute, orchestrator.StateReview, orchestrator.StateFailed)
	if first.State != orchestrator.StateReview || first.SessionID == "" {
		logs, _ := s.cli(t, "tasks", "logs", id)
		t.Fatalf("first run: %s %q session %q\n%s", first.State, first.Error, first.SessionID, logs)
	}
	if out, err := s.cli(t, "tasks", "message", id, "now add a second line"); err != nil {
		t.Fatalf("message: %v %s", err, out)
	}
	if task := s.waitRunReview(t, id, 2, 3*time.Minute); task.SessionID != first.SessionID {
		t.Errorf("session changed: %q → %q", first.SessionID, task.SessionID)
	}
	if errs := ms.Errors(); len(errs) > 0 {
		t.Fatalf("model server: %v", errs)
	}
	if got := gitRun(t, origin, "show", "nightshift/"+id+":NOTES.md"); got != "from-agent\nsecond" {
		t.Fatalf("NOTES.md = %q", got)
	}
}
