package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator/agent/modelserver"
)

// codexModel is a model name the pinned Codex has no metadata for: its
// fallback tool set offers exec_command and exposes MCP tools directly as
// functions in an "mcp__<server>" namespace (the default model defers MCP
// tools behind a client-side tool_search and calls tools through a
// JavaScript "exec" tool).
const codexModel = "gpt-5.1-codex-mini"

func TestCodexEditsTestsAndCallsMCP(t *testing.T) {
	t.Parallel()
	needCLI(t, "codex")
	w := newWorld(t)
	w.ms.Script(
		modelserver.Step{Name: "write", Text: "Writing the file.", ToolCalls: []modelserver.ToolCall{{ID: "call_write", Name: "exec_command",
			Input: map[string]any{"cmd": "printf 'hello nightshift\\n' > hello.txt && echo written"}}}},
		modelserver.Step{Name: "test", Check: func(r *modelserver.Request) error {
			out, err := r.Result("call_write")
			if err == nil && !strings.Contains(out, "written") {
				err = fmt.Errorf("write result = %q", out)
			}
			return err
		}, ToolCalls: []modelserver.ToolCall{{ID: "call_test", Name: "exec_command", Input: map[string]any{"cmd": "sh test.sh"}}}},
		modelserver.Step{Name: "mcp", Check: func(r *modelserver.Request) error {
			out, err := r.Result("call_test")
			if err == nil && !strings.Contains(out, "TESTS PASS") {
				err = fmt.Errorf("test result = %q", out)
			}
			return err
		}, ToolCalls: []modelserver.ToolCall{{ID: "call_mcp", Namespace: "mcp__nightshift", Name: "get_identity", Input: map[string]any{}}}},
		modelserver.Step{Name: "done", Check: func(r *modelserver.Request) error {
			out, err := r.Result("call_mcp")
			if err == nil && !strings.Contains(out, "agent-7@agents.localhost") {
				err = fmt.Errorf("mcp result = %q", out)
			}
			return err
		}, Text: "Done: tests pass."},
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := w.runCLI(ctx, "codex", "codex-1", "write hello.txt and run the tests", "", false)
	w.checkScript()
	if r.outcome.Err != nil || r.res.Reason != "exit 0" {
		t.Fatalf("outcome err: %v (%s)", r.outcome.Err, r.res.Reason)
	}
	if b, err := os.ReadFile(filepath.Join(w.dir, "hello.txt")); err != nil || string(b) != "hello nightshift\n" {
		t.Errorf("hello.txt = %q, %v", b, err)
	}
	if r.outcome.SessionID == "" || r.outcome.Summary != "Done: tests pass." {
		t.Errorf("outcome = %+v", r.outcome)
	}
	gu := w.gw.Usage("codex-1")
	if r.outcome.Usage.InputTokens != 400 || r.outcome.Usage.OutputTokens != 80 || gu.InputTokens < 400 || gu.OutputTokens < 80 {
		t.Errorf("usage: agent %+v, gateway %+v", r.outcome.Usage, gu)
	}
	w.checkCanary(r)
}
