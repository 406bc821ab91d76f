package cgroup

import (
	"os/exec"
	"slices"
	"testing"
)

func TestAcquireLimitKillRelease(t *testing.T) {
	h, err := Detect("")
	if err != nil {
		t.Skipf("missing capability: writable cgroup hierarchy: %v", err)
	}
	defer h.Close()
	g, err := h.Acquire(64<<20, 16)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := g.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(g.Procs(), cmd.Process.Pid) {
		t.Errorf("procs %v lack %d", g.Procs(), cmd.Process.Pid)
	}
	if g.OOMKilled() {
		t.Error("OOMKilled on a fresh group")
	}
	g.Kill()
	if err := cmd.Wait(); err == nil {
		t.Error("sleep was not killed")
	}
	dirs := g.dirs
	if err := g.Release(); err != nil {
		t.Fatal(err)
	}
	// The pool hands the same, emptied group out again with new limits.
	g2, err := h.Acquire(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(g2.dirs, dirs) {
		t.Errorf("pooled group not reused: %v vs %v", g2.dirs, dirs)
	}
	if len(g2.Procs()) != 0 {
		t.Errorf("reused group not empty: %v", g2.Procs())
	}
	g2.Release()
}
