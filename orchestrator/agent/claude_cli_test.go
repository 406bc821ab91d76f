package agent_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator/agent"
	"github.com/nightshift/nightshift/orchestrator/agent/modelserver"
)

func TestClaudeEditsAndTests(t *testing.T) {
	t.Parallel()
	needCLI(t, "claude")
	ms := modelserver.New(modelserver.Config{})
	srv := httptest.NewServer(ms)
	defer srv.Close()
	dir, home := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "test.sh"), []byte("#!/bin/sh\ngrep -q 'hello nightshift' hello.txt && echo TESTS PASS\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ms.Script(
		modelserver.Step{Name: "write", Text: "I'll write the file.", ToolCalls: []modelserver.ToolCall{{ID: "toolu_write", Name: "Write",
			Input: map[string]any{"file_path": filepath.Join(dir, "hello.txt"), "content": "hello nightshift\n"}}}},
		modelserver.Step{Name: "test", Check: func(r *modelserver.Request) error {
			_, err := r.Result("toolu_write")
			return err
		}, ToolCalls: []modelserver.ToolCall{{ID: "toolu_bash", Name: "Bash", Input: map[string]any{"command": "sh test.sh", "description": "run tests"}}}},
		modelserver.Step{Name: "done", Check: func(r *modelserver.Request) error {
			out, err := r.Result("toolu_bash")
			if err == nil && !strings.Contains(out, "TESTS PASS") {
				err = fmt.Errorf("bash result = %q", out)
			}
			return err
		}, Text: "Done: tests pass."},
	)
	a, err := agent.New("claude", nil)
	if err != nil {
		t.Fatal(err)
	}
	req := agent.Request{Prompt: "write hello.txt and run the tests", Dir: dir, Home: home, GatewayURL: srv.URL, GatewayToken: "task-token", Model: "claude-sonnet-4-5"}
	inv, err := a.Prepare(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := runProcess(ctx, t, a, req, inv)
	t.Logf("log:\n%s\nstderr:\n%s", r.log(), r.stderr)
	for _, e := range ms.Errors() {
		t.Error(e)
	}
	if r.outcome.Err != nil {
		t.Fatalf("outcome err: %v", r.outcome.Err)
	}
	t.Logf("outcome %+v", r.outcome)
}
