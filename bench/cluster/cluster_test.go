package cluster

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMainTurnsFatalIntoAnError: a program's Fatal stops f, runs the
// cleanups (last first) and becomes Main's error; Errorf fails without
// stopping; TempDir is removed at the end.
func TestMainTurnsFatalIntoAnError(t *testing.T) {
	var log bytes.Buffer
	var order []string
	var dir string
	err := Main(&log, false, func(tb testing.TB) {
		dir = tb.TempDir()
		tb.Cleanup(func() { order = append(order, "first") })
		tb.Cleanup(func() { order = append(order, "second") })
		tb.Fatalf("stop here: %d", 42)
		order = append(order, "after fatal")
	})
	if err == nil || err.Error() != "stop here: 42" {
		t.Fatalf("Main = %v, want the Fatal message", err)
	}
	if strings.Join(order, ",") != "second,first" {
		t.Fatalf("cleanups ran %v", order)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("TempDir %s left behind: %v", dir, err)
	}
	err = Main(&log, false, func(tb testing.TB) { tb.Errorf("one check failed") })
	if err == nil || !strings.Contains(log.String(), "one check failed") {
		t.Fatalf("Errorf: Main = %v, log %q", err, log.String())
	}
	if err := Main(&log, false, func(tb testing.TB) {}); err != nil {
		t.Fatalf("a clean run: %v", err)
	}
}

// TestProcKillReachesDescendants: a Proc's Kill takes the process and
// what it started (an agent in another process group too), and the /proc
// readers see the tree and its CPU while it lives.
func TestProcKillReachesDescendants(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "grandchild")
	// The grandchild leaves the process group (setsid), as an agent does.
	p := &Proc{Name: "sh", Dir: dir, Log: filepath.Join(dir, "log"), bin: "/bin/sh",
		args: []string{"-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; setsid sh -c 'echo $$ > " + pidFile + "; exec sleep 600' & sleep 600"},
		env:  []string{"PATH=" + os.Getenv("PATH")}}
	p.start(t)
	defer p.Kill()
	var grandchild int
	Eventually(t, 10*time.Second, "the grandchild", func() (bool, string) {
		b, _ := os.ReadFile(pidFile)
		_, err := fmt.Sscan(string(b), &grandchild)
		return err == nil && grandchild > 0 && IsAncestor(p.PID(), grandchild), string(b)
	})
	if p.CPU() <= 0 {
		t.Fatalf("CPU of a busy shell is %v", p.CPU())
	}
	if len(Descendants(p.PID())) < 2 {
		t.Fatalf("descendants of %d: %v", p.PID(), Descendants(p.PID()))
	}
	p.Kill()
	if !p.Exited() {
		t.Fatal("still running after Kill")
	}
	Eventually(t, 5*time.Second, "the grandchild to die", func() (bool, string) {
		// A killed child of init is reaped; one still listed is a zombie at most.
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(grandchild), "stat"))
		return err != nil || strings.Contains(string(b), ") Z "), string(b)
	})
}

// TestAgentStartsParse: the agent script records its start, pid, task id
// and worktree, and Started reads them back.
func TestAgentStartsParse(t *testing.T) {
	dir := t.TempDir()
	a := NewAgent(t, dir, "0")
	wt := filepath.Join(dir, "data", "tasks", "t1")
	os.MkdirAll(wt, 0o755)
	cmd := exec.Command("sh", a.Script)
	cmd.Dir = wt
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "NIGHTSHIFT_TASK_ID=t1", "NIGHTSHIFT_PROMPT=do it"}
	before := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("agent: %v %s", err, out)
	}
	s := a.Started()
	if len(s) != 1 || s[0].TaskID != "t1" || s[0].Dir != wt || s[0].At.Before(before.Add(-time.Second)) || s[0].PID <= 0 {
		t.Fatalf("starts: %+v", s)
	}
	if r := (&Role{DataDir: filepath.Join(dir, "data")}); !r.Ran(s[0]) {
		t.Fatal("Ran does not place the run under its data dir")
	}
	if r := (&Role{DataDir: filepath.Join(dir, "dat")}); r.Ran(s[0]) {
		t.Fatal("Ran matched a data dir that is only a prefix")
	}
	work, _ := os.ReadFile(filepath.Join(wt, "WORK.md"))
	if !strings.Contains(string(work), "do it\nagent pid ") {
		t.Fatalf("WORK.md: %q", work)
	}
}
