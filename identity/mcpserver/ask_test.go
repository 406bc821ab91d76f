package mcpserver_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/nightshift/nightshift/identity/mcpserver"
)

// TestAskHuman: ask_human hands the question to Config.Ask with the
// token's task and tells the agent to end its turn; without a question, or
// when the hook fails or is missing, the agent gets an error result.
func TestAskHuman(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var asked []string
	fail := false
	f := setup(t, func(c *mcpserver.Config) {
		c.Ask = func(_ context.Context, taskID, q string) error {
			mu.Lock()
			defer mu.Unlock()
			if fail {
				return errors.New("bus down")
			}
			asked = append(asked, taskID+": "+q)
			return nil
		}
	})
	_, tok := f.agent(t, "task-ask", "", "")
	c := dial(t, f.url, tok)
	ctx := context.Background()
	out, err := c.Text(ctx, mcpserver.ToolAskHuman, map[string]any{"question": "Which port?"})
	if err != nil || out != mcpserver.AskedText || !strings.Contains(out, "end your turn") {
		t.Fatalf("ask_human = %q, %v", out, err)
	}
	if _, err := c.Text(ctx, mcpserver.ToolAskHuman, map[string]any{"question": "  "}); err == nil {
		t.Error("an empty question was accepted")
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	if _, err := c.Text(ctx, mcpserver.ToolAskHuman, map[string]any{"question": "Again?"}); err == nil || !strings.Contains(err.Error(), "could not be sent") {
		t.Errorf("failing hook: %v", err)
	}
	mu.Lock()
	if len(asked) != 1 || asked[0] != "task-ask: Which port?" {
		t.Errorf("asked %q", asked)
	}
	mu.Unlock()
	var sawTool bool
	for _, ev := range f.events() {
		sawTool = sawTool || (ev.Tool == mcpserver.ToolAskHuman && ev.TaskID == "task-ask")
	}
	if !sawTool {
		t.Error("ask_human calls are not audited")
	}

	// A server nobody can be asked through says so.
	g := setup(t)
	_, tok = g.agent(t, "task-lonely", "", "")
	if _, err := dial(t, g.url, tok).Text(ctx, mcpserver.ToolAskHuman, map[string]any{"question": "Anyone?"}); err == nil ||
		!strings.Contains(err.Error(), "nobody can be asked") {
		t.Errorf("without Ask: %v", err)
	}
}
