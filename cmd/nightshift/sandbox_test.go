package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestSandboxExec runs a command through "nightshift sandbox exec" in the
// bwrap sandbox: it writes its --dir, sees its --env, is uid 1000 inside
// and, under a root nightshift, not host root (files it writes are owned
// by the sandbox uid), and its exit code comes back.
func TestSandboxExec(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("bwrap"); err != nil {
		t.Skip("bubblewrap not installed (scripts/test installs it)")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "in.txt"), []byte("from host\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"nightshift", "sandbox", "exec", "--dir", dir, "--env", "GREETING=hello", "--",
		"sh", "-c", `id -u; cat in.txt; echo "$GREETING" > out.txt; echo "$PATH" > path.txt; exit 3`}, baseEnv(t), strings.NewReader(""), &out, &errb)
	var ce *commandExitError
	if !errors.As(err, &ce) || ce.ExitCode() != 3 {
		t.Fatalf("err = %v, want exit code 3 (stderr %s)", err, errb.String())
	}
	if got := out.String(); got != "1000\nfrom host\n" {
		t.Errorf("stdout %q", got)
	}
	b, err := os.ReadFile(filepath.Join(dir, "out.txt"))
	if err != nil || string(b) != "hello\n" {
		t.Fatalf("out.txt: %q %v", b, err)
	}
	// exec shows what agents see: the same PATH as the worker's sandboxes.
	if b, err := os.ReadFile(filepath.Join(dir, "path.txt")); err != nil || strings.TrimSpace(string(b)) != sandboxPath {
		t.Errorf("PATH inside exec = %q (%v), want the agents' %q", b, err, sandboxPath)
	}
	if os.Geteuid() == 0 {
		if owner := ownerUID(t, filepath.Join(dir, "out.txt")); owner == 0 {
			t.Error("the sandboxed command wrote as host root")
		}
	}
}

func ownerUID(t *testing.T, path string) int {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Sys().(*syscall.Stat_t).Uid)
}
