package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/agent/modelserver"
)

// TestClaudeAskHumanResumesSession: the real Claude Code CLI calls the MCP
// tool ask_human (the scripted model's tool_use of
// mcp__nightshift__ask_human) and ends its turn; the task waits in
// needs_input with the question; the answer resumes the same session (the
// model sees the first prompt, its question and the answer) and the task
// ends in review with the work pushed.
func TestClaudeAskHumanResumesSession(t *testing.T) {
	t.Parallel()
	s, ms, _ := realAgentServer(t, "claude")
	const question = "Should the note say from-agent or from-human?"
	ms.Script(
		modelserver.Step{Name: "ask", ToolCalls: []modelserver.ToolCall{{ID: "toolu_ask", Name: "mcp__nightshift__ask_human",
			Input: map[string]any{"question": question}}}},
		modelserver.Step{Name: "end turn", Check: func(r *modelserver.Request) error {
			out, err := r.Result("toolu_ask")
			if err == nil && !strings.Contains(out, "end your turn") {
				return fmt.Errorf("ask_human answered %q", out)
			}
			return err
		}, Text: "I asked which text the note should have."},
		modelserver.Step{Name: "answered", Check: func(r *modelserver.Request) error {
			if !r.HasText("add a note") || !r.HasText("from-agent, please") {
				return fmt.Errorf("the answer did not resume the conversation: %q", r.Texts)
			}
			return nil
		}, ToolCalls: []modelserver.ToolCall{{ID: "toolu_edit", Name: "Bash",
			Input: map[string]any{"command": "echo from-agent > NOTES.md", "description": "write"}}}},
		modelserver.Step{Name: "done", Text: "Wrote the note."},
	)
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "claude", "add a note")
	asked := s.waitState(t, id, 3*time.Minute, orchestrator.StateNeedsInput, orchestrator.StateReview, orchestrator.StateFailed)
	if asked.State != orchestrator.StateNeedsInput || asked.Question != question || asked.SessionID == "" {
		logs, _ := s.cli(t, "tasks", "logs", id)
		t.Fatalf("after ask_human: %s question %q session %q (%s)\n%s\nmodel server: %v", asked.State, asked.Question,
			asked.SessionID, asked.Error, logs, ms.Errors())
	}
	if out, err := s.cli(t, "tasks", "message", id, "from-agent, please"); err != nil {
		t.Fatalf("answer: %v %s", err, out)
	}
	task := s.waitRunReview(t, id, 2, 3*time.Minute)
	if task.SessionID != asked.SessionID || task.Question != "" {
		t.Errorf("session %q → %q, question %q", asked.SessionID, task.SessionID, task.Question)
	}
	if errs := ms.Errors(); len(errs) > 0 {
		t.Fatalf("model server: %v", errs)
	}
	if got := gitRun(t, origin, "show", "nightshift/"+id+":NOTES.md"); got != "from-agent" {
		t.Fatalf("NOTES.md = %q", got)
	}
}
