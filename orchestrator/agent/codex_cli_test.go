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

func TestCodexEditsAndTests(t *testing.T) {
	t.Parallel()
	needCLI(t, "codex")
	ms := modelserver.New(modelserver.Config{})
	srv := httptest.NewServer(ms)
	defer srv.Close()
	dir, home := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "test.sh"), []byte("#!/bin/sh\ngrep -q 'hello nightshift' hello.txt && echo TESTS PASS\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ms.Script(
		modelserver.Step{Name: "write", Text: "Writing the file.", ToolCalls: []modelserver.ToolCall{{ID: "call_write", Name: "exec_command",
			Input: map[string]any{"cmd": "printf 'hello nightshift\\n' > hello.txt && echo written"}}}},
		modelserver.Step{Name: "test", Check: func(r *modelserver.Request) error {
			_, err := r.Result("call_write")
			return err
		}, ToolCalls: []modelserver.ToolCall{{ID: "call_test", Name: "exec_command", Input: map[string]any{"cmd": "sh test.sh"}}}},
		modelserver.Step{Name: "done", Check: func(r *modelserver.Request) error {
			out, err := r.Result("call_test")
			if err == nil && !strings.Contains(out, "TESTS PASS") {
				err = fmt.Errorf("test result = %q", out)
			}
			return err
		}, Text: "Done: tests pass."},
	)
	a, err := agent.New("codex", nil)
	if err != nil {
		t.Fatal(err)
	}
	req := agent.Request{Prompt: "write hello.txt and run the tests", Dir: dir, Home: home, GatewayURL: srv.URL, GatewayToken: "task-token", Model: "gpt-5.5"}
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
