package agent_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator/agent"
	"github.com/nightshift/nightshift/orchestrator/agent/modelserver"
	"github.com/nightshift/nightshift/orchestrator/gateway"
	"github.com/nightshift/nightshift/sandbox"
)

// TestBudgetStopsRun gives a task a 300-token budget; every scripted turn
// costs 120. The soft limit fires after the second turn, the hard limit
// after the third, whose tool call sleeps: the hard-limit hook cancels the
// run the way the orchestrator does, and the sandbox kills the agent
// mid-command.
func TestBudgetStopsRun(t *testing.T) {
	t.Parallel()
	needCLI(t, "claude")
	w := newWorld(t)
	bash := func(cmd string) []modelserver.ToolCall {
		return []modelserver.ToolCall{{Name: "Bash", Input: map[string]any{"command": cmd, "description": "step"}}}
	}
	w.ms.Script(
		modelserver.Step{Name: "1", ToolCalls: bash("echo one")},
		modelserver.Step{Name: "2", ToolCalls: bash("echo two")},
		modelserver.Step{Name: "3", ToolCalls: bash("sleep 30; echo late > late.txt")},
	)
	for range 5 {
		w.ms.Script(modelserver.Step{Name: "never", ToolCalls: bash("echo never")})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var soft, hard atomic.Int32
	req, fw := w.request("budget", "loop forever", gateway.Budget{Tokens: 300}, gateway.Hooks{
		OnSoftLimit: func(u gateway.Usage) { soft.Add(1) },
		OnHardLimit: func(u gateway.Usage) { hard.Add(1); stop() },
	})
	req.Model = claudeModel
	a, err := agent.New("claude", nil)
	if err != nil {
		t.Fatal(err)
	}
	r := w.runSandboxed(runCtx, a, req, fw)
	t.Logf("log:\n%s\nreason %s after %v", r.log(), r.res.Reason, r.res.Duration)
	if soft.Load() != 1 || hard.Load() != 1 {
		t.Errorf("hooks: soft %d hard %d, want 1 and 1", soft.Load(), hard.Load())
	}
	if r.res.Reason != sandbox.ReasonKilled || r.outcome.Err == nil {
		t.Errorf("run ended with %q, outcome err %v; want killed", r.res.Reason, r.outcome.Err)
	}
	if got := w.ms.Remaining(); got != 5 {
		t.Errorf("%d scripted turns left, want 5", got)
	}
	if u := w.gw.Usage("budget"); u.Tokens() != 360 {
		t.Errorf("usage %+v, want 360 tokens", u)
	}
	// Any further request with the task's token is refused in Anthropic's format.
	hreq, _ := http.NewRequest(http.MethodPost, "http://"+w.gwAddr+"/anthropic/v1/messages", strings.NewReader(`{"model":"x","messages":[]}`))
	hreq.Header.Set("X-Api-Key", req.GatewayToken)
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("request after the hard limit: %d", resp.StatusCode)
	}
}
