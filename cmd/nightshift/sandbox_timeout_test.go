package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestSandboxExecTimeout: a command that outlives --timeout is killed, and
// "sandbox exec" says so in one sentence and exits 124, like timeout(1);
// a command's own exit code still passes through untouched.
func TestSandboxExecTimeout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"nightshift", "sandbox", "exec", "--driver", "process", "--dir", dir, "--timeout", "300ms", "--",
		"sh", "-c", "sleep 30"}, baseEnv(t), strings.NewReader(""), &out, &errb)
	var stderr bytes.Buffer
	if code := exitCode(err, &stderr); code != 124 {
		t.Fatalf("exit code %d, want 124 (err %v, stderr %q)", code, err, stderr.String())
	}
	if got := stderr.String(); got != "nightshift: timed out after 300ms; the sandbox was killed\n" {
		t.Fatalf("stderr %q", got)
	}

	err = run(context.Background(), []string{"nightshift", "sandbox", "exec", "--driver", "process", "--dir", dir, "--timeout", "1m", "--",
		"sh", "-c", "exit 7"}, baseEnv(t), strings.NewReader(""), &out, &errb)
	stderr.Reset()
	if code := exitCode(err, &stderr); code != 7 || stderr.Len() != 0 {
		t.Fatalf("own exit code: %d, stderr %q", code, stderr.String())
	}
}
