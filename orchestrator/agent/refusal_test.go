package agent_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator/agent"
	"github.com/nightshift/nightshift/orchestrator/agent/modelserver"
	"github.com/nightshift/nightshift/orchestrator/gateway"
)

// TestRefusalEndsAgent checks that each CLI gives up at once, with a failed
// outcome naming the budget, when the gateway refuses a request because the
// budget is spent (no hook stops the run here): the refusal statuses are
// ones the CLIs do not retry.
func TestRefusalEndsAgent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ kind, model, tool string }{{"claude", claudeModel, "Bash"}, {"codex", codexModel, "exec_command"}} {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			needCLI(t, tc.kind)
			w := newWorld(t)
			input := map[string]any{"command": "echo one", "description": "step"}
			if tc.kind == "codex" {
				input = map[string]any{"cmd": "echo one"}
			}
			w.ms.Script(modelserver.Step{Name: "1", ToolCalls: []modelserver.ToolCall{{Name: tc.tool, Input: input}}},
				modelserver.Step{Name: "never", Text: "should not be reached"})
			req, fw := w.request("refusal-"+tc.kind, "go", gateway.Budget{Tokens: 100}, gateway.Hooks{})
			req.Model = tc.model
			a, err := agent.New(tc.kind, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			start := time.Now()
			r := w.runSandboxed(ctx, a, req, fw)
			t.Logf("log:\n%s\nreason %s after %v", r.log(), r.res.Reason, time.Since(start))
			if r.outcome.Err == nil || !strings.Contains(r.log(), "budget is exhausted") {
				t.Errorf("outcome %+v; want a failure naming the budget", r.outcome)
			}
			if w.ms.Remaining() != 1 {
				t.Errorf("the refused request reached the model")
			}
			if u := w.gw.Usage("refusal-" + tc.kind); u.Requests != 1 {
				t.Errorf("gateway saw %d metered requests, want 1 (the refusal is not retried)", u.Requests)
			}
		})
	}
}
