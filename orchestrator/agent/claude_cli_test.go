package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator/agent/modelserver"
)

const claudeModel = "claude-sonnet-4-5"

func TestClaudeEditsTestsAndCallsMCP(t *testing.T) {
	t.Parallel()
	needCLI(t, "claude")
	w := newWorld(t)
	w.ms.Script(
		modelserver.Step{Name: "write", Check: func(r *modelserver.Request) error {
			if !slices.Contains(r.ToolNames, "mcp__nightshift__get_identity") {
				return fmt.Errorf("MCP tool not offered directly; tools %v", r.ToolNames)
			}
			return nil
		}, Text: "I'll write the file.", ToolCalls: []modelserver.ToolCall{{ID: "toolu_write", Name: "Write",
			Input: map[string]any{"file_path": filepath.Join(w.dir, "hello.txt"), "content": "hello nightshift\n"}}}},
		modelserver.Step{Name: "test", Check: func(r *modelserver.Request) error {
			_, err := r.Result("toolu_write")
			return err
		}, ToolCalls: []modelserver.ToolCall{{ID: "toolu_bash", Name: "Bash", Input: map[string]any{"command": "sh test.sh", "description": "run tests"}}}},
		modelserver.Step{Name: "mcp", Check: func(r *modelserver.Request) error {
			out, err := r.Result("toolu_bash")
			if err == nil && !strings.Contains(out, "TESTS PASS") {
				err = fmt.Errorf("bash result = %q", out)
			}
			return err
		}, ToolCalls: []modelserver.ToolCall{{ID: "toolu_mcp", Name: "mcp__nightshift__get_identity", Input: map[string]any{}}}},
		modelserver.Step{Name: "done", Check: func(r *modelserver.Request) error {
			out, err := r.Result("toolu_mcp")
			if err == nil && !strings.Contains(out, "agent-7@agents.localhost") {
				err = fmt.Errorf("mcp result = %q", out)
			}
			return err
		}, Text: "Done: tests pass."},
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := w.runCLI(ctx, "claude", "claude-1", "write hello.txt and run the tests", "", false)
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
	gu := w.gw.Usage("claude-1")
	if r.outcome.Usage.InputTokens != 400 || r.outcome.Usage.OutputTokens != 80 || r.outcome.Usage.CostUSD <= 0 ||
		gu.InputTokens < 400 || gu.OutputTokens < 80 || gu.CostUSD <= 0 {
		t.Errorf("usage: agent %+v, gateway %+v", r.outcome.Usage, gu)
	}
	w.checkCanary(r)
}
