package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSecondServeOnOneDataDirRefuses starts two servers on one data dir:
// the second refuses with one sentence naming the holder (pid, host,
// since) and exits 1, and the first keeps serving. Once the holder is
// killed (no clean exit), a new server takes the dir over.
func TestSecondServeOnOneDataDirRefuses(t *testing.T) {
	t.Parallel()
	bin := nightshiftBinary(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nightshift.yaml"), []byte(processConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	first := haSpawn(t, bin, dir)
	url := first.url(t, 60*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	second := exec.CommandContext(ctx, bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", first.data,
		"--config", filepath.Join(dir, "nightshift.yaml"))
	second.Env = baseEnv(t)
	out, err := second.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("second serve on the same data dir: %v, want exit 1\n%s", err, out)
	}
	host, _ := os.Hostname()
	msg := strings.TrimSpace(string(out))
	want := fmt.Sprintf("nightshift: data dir %s is held by nightshift serve pid %d on host %s since ", first.data, first.cmd.Process.Pid, host)
	if strings.Count(msg, "\n") != 0 || !strings.HasPrefix(msg, want) || !strings.Contains(msg, "--data-dir") {
		t.Fatalf("second serve said:\n%s\nwant one line starting %q", msg, want)
	}
	if code, checks := haReadyz(t, url); code != 200 {
		t.Fatalf("the first server after the refused start: /readyz %d %v", code, checks)
	}

	// A holder that dies leaves its record but not its lock.
	first.cmd.Process.Signal(syscall.SIGKILL)
	first.exited(10 * time.Second)
	third := haSpawn(t, bin, dir)
	third.url(t, 60*time.Second)
	b, _ := os.ReadFile(filepath.Join(first.data, "serve.lock"))
	if !strings.Contains(string(b), fmt.Sprintf(`"pid":%d`, third.cmd.Process.Pid)) {
		t.Fatalf("serve.lock after the takeover: %s", b)
	}
}
