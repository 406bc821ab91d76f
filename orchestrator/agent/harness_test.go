package agent_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator/agent"
)

// run is one agent run's captured result.
type run struct {
	outcome agent.Outcome
	lines   []agent.Line
	stdout  string
	stderr  string
	exit    int
}

func (r *run) log() string {
	var b strings.Builder
	for _, l := range r.lines {
		b.WriteString(l.Kind + ": " + l.Text + "\n")
	}
	return b.String()
}

// pinnedCLIs are the npm packages the CLI tests are written against
// (scripts/test installs the same versions).
var pinnedCLIs = map[string]string{
	"claude": "@anthropic-ai/claude-code@2.1.328",
	"codex":  "@openai/codex@0.169.0",
}

// needCLI skips the test when bin is not installed.
func needCLI(t *testing.T, bin string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		t.Skipf("%s CLI not installed; skipping (npm install -g %s)", bin, pinnedCLIs[bin])
	}
	return p
}

// runProcess runs inv directly (no sandbox) with a clean environment.
func runProcess(ctx context.Context, t *testing.T, a agent.Adapter, req agent.Request, inv agent.Invocation) *run {
	t.Helper()
	for rel, content := range inv.Files {
		p := filepath.Join(req.Home, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.CommandContext(ctx, inv.Argv[0], inv.Argv[1:]...)
	cmd.Dir = req.Dir
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"}
	for k, v := range inv.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = strings.NewReader(inv.Stdin)
	cmd.WaitDelay = 5 * time.Second
	r := &run{}
	var mu sync.Mutex
	p := a.NewParser(func(l agent.Line) {
		mu.Lock()
		r.lines = append(r.lines, l)
		mu.Unlock()
	})
	var out, errb bytes.Buffer
	cmd.Stdout = io2(&out, p)
	cmd.Stderr = &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
	default:
		t.Fatalf("run %v: %v", inv.Argv, err)
	}
	r.outcome = p.Outcome(r.exit)
	r.stdout, r.stderr = out.String(), errb.String()
	return r
}

type multi struct {
	a, b interface{ Write([]byte) (int, error) }
}

func (m multi) Write(p []byte) (int, error) {
	_, _ = m.a.Write(p)
	return m.b.Write(p)
}

func io2(a, b interface{ Write([]byte) (int, error) }) multi { return multi{a, b} }
