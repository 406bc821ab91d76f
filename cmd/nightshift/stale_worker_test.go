package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/bench/cluster"
)

// TestStaleWorkerCannotFailOrMoveATask is issue 13's stale worker, with real
// processes: an external nats-server, ingress, scheduler and two workers
// (--ack-wait 6s), each with its own data dir, and an agent that sleeps 25 s.
// The worker running it is frozen (SIGSTOP) for 30 s: its run loses the
// lease, the other worker gets the run and finishes it, then the frozen
// worker resumes and its (stale) run finishes too. The task must rest in
// review, its branch must hold exactly one Nightshift commit, the recorded
// one, made by the second run's agent, and the stale run must never have
// moved the branch (the forge logs every accepted ref update). Then the
// fresh worker dies and a follow-up runs on the once-stale worker: it must
// build on the recorded commit, and nothing of the stale run may reach the
// branch.
func TestStaleWorkerCannotFailOrMoveATask(t *testing.T) {
	dir := t.TempDir()
	forge := cluster.NewForge(t, dir)
	nats := cluster.StartNATS(t, filepath.Join(dir, "nats"), 1)
	// The first run sleeps 25 s; a follow-up (the worktree has WORK.md) does not.
	agent := cluster.NewAgent(t, dir, "$([ -f WORK.md ] && echo 0 || echo 25)")
	cfg := forge.Config(cluster.ConfigOptions{Agent: agent.Script, Replicas: 1})
	start := func(name, role string) *cluster.Role {
		return cluster.StartRole(t, filepath.Join(dir, name), cluster.RoleOptions{Name: name, Role: role, NATS: nats.URL,
			Config: cfg, AckWait: 6 * time.Second})
	}
	ingress := start("ingress", "ingress")
	sched := start("scheduler", "scheduler")
	workers := []*cluster.Role{start("worker-1", "worker"), start("worker-2", "worker")}
	logs := func() string {
		var b strings.Builder
		for _, r := range append([]*cluster.Role{ingress, sched}, workers...) {
			fmt.Fprintf(&b, "--- %s (tail)\n%s\n", r.Name, r.Tail(5000))
		}
		return b.String()
	}

	ctx := context.Background()
	id, code, err := ingress.API.CreateTask(ctx, forge.RepoURL(), "write the stale-worker note", "script", "stale-worker-1")
	if err != nil {
		t.Fatalf("create task: %d %v", code, err)
	}
	// The first run's agent starts on one of the workers: freeze that worker.
	var first cluster.AgentStart
	cluster.Eventually(t, 60*time.Second, "the first agent to start", func() (bool, string) {
		s := agent.Started()
		if len(s) > 0 {
			first = s[0]
		}
		return len(s) > 0, "no agent started"
	})
	var stale, fresh *cluster.Role
	for i, w := range workers {
		if cluster.IsAncestor(w.PID(), first.PID) {
			stale, fresh = w, workers[1-i]
		}
	}
	if stale == nil {
		t.Fatalf("agent %d runs under no worker process\n%s", first.PID, logs())
	}
	frozeAt := time.Now()
	stale.Freeze()
	thawed := false
	defer func() {
		if !thawed {
			stale.Thaw()
		}
	}()
	for time.Since(frozeAt) < 30*time.Second {
		time.Sleep(200 * time.Millisecond)
	}
	stale.Thaw()
	thawed = true
	t.Logf("froze %s (agent %d) for %s", stale.Name, first.PID, time.Since(frozeAt).Round(time.Millisecond))

	// The run was handed to the other worker while the first was frozen.
	starts := agent.Started()
	var second *cluster.AgentStart
	for i := range starts[1:] {
		if s := starts[1+i]; s.TaskID == id && s.At.After(frozeAt) {
			second = &s
			break
		}
	}
	if second == nil {
		t.Fatalf("no second run started while %s was frozen for 30s past a 6s ack wait: %+v\n%s", stale.Name, starts, logs())
	}

	// Whatever the API says, the forge saw every accepted update of the
	// task's branch: none may move it backwards or sideways.
	branch := "refs/heads/nightshift/" + id
	defer func() {
		for i, p := range forge.Pushes(branch) {
			if p.Old != strings.Repeat("0", 40) && !forge.IsAncestor(p.Old, p.New) {
				t.Errorf("update %d of %s went from %s to %s, not a fast-forward: the stale run rewrote the branch", i+1, branch, p.Old, p.New)
			}
		}
	}()

	// Wait for the task to rest, then long enough for the stale run (its
	// agent finished while frozen) to have tried everything it would.
	var tk cluster.Task
	cluster.Eventually(t, 60*time.Second, "the task to rest in a final state", func() (bool, string) {
		tk, err = ingress.API.Task(ctx, id)
		return err == nil && cluster.Final[tk.State], fmt.Sprintf("task %+v err %v\npushes of %s: %+v\n%s", tk, err, branch, forge.Pushes(branch), logs())
	})
	time.Sleep(10 * time.Second)
	tk, err = ingress.API.Task(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if tk.State != "review" && tk.State != "done" {
		t.Fatalf("task %s rests %s (reason %q, error %q), want review: a stale worker turned a good task into a failure\n%s",
			id, tk.State, tk.Reason, tk.Error, logs())
	}
	if bad := forge.CheckBranch(tk, 1); len(bad) > 0 {
		out, _ := forge.GitTry("log", "--format=%H %s%n%b", "main.."+branch)
		t.Fatalf("branch %s:\n%s\nbranch log:\n%s\npushes: %+v", tk.Branch, strings.Join(bad, "\n"), out, forge.Pushes(branch))
	}
	if p := forge.Pushes(branch); len(p) != 1 {
		t.Fatalf("%d accepted updates of %s, want 1 (the stale run moved it): %+v", len(p), tk.Branch, p)
	}
	work, err := forge.GitTry("show", tk.Commit+":WORK.md")
	if err != nil || !strings.Contains(work, "agent pid "+strconv.Itoa(second.PID)) {
		t.Fatalf("the recorded commit %s is not the second run's work (agent %d on %s; stale agent %d):\n%s %v",
			tk.Commit, second.PID, fresh.Name, first.PID, work, err)
	}
	if n := forge.PRsFor(tk.Branch); n != 1 {
		t.Fatalf("%d pull requests for %s, want 1", n, tk.Branch)
	}

	t.Run("follow-up on the once-stale worker", func(t *testing.T) {
		fresh.Kill()
		if code, err := ingress.API.Message(ctx, id, "stale-worker follow-up"); err != nil {
			t.Fatalf("follow-up: %d %v", code, err)
		}
		var tk2 cluster.Task
		cluster.Eventually(t, 90*time.Second, "the follow-up run to rest", func() (bool, string) {
			tk2, err = ingress.API.Task(ctx, id)
			return err == nil && tk2.Run == 2 && cluster.Final[tk2.State], fmt.Sprintf("task %+v err %v\n%s", tk2, err, logs())
		})
		if tk2.State != "review" {
			t.Fatalf("the follow-up ended %s (reason %q, error %q)\n%s", tk2.State, tk2.Reason, tk2.Error, logs())
		}
		bad := forge.CheckBranch(tk2, 2)
		work, _ := forge.GitTry("show", tk2.Commit+":WORK.md")
		if !strings.Contains(work, "agent pid "+strconv.Itoa(second.PID)) || !strings.Contains(work, "stale-worker follow-up") {
			bad = append(bad, "the follow-up's commit does not build on the recorded run-1 commit")
		}
		if strings.Contains(work, "agent pid "+strconv.Itoa(first.PID)+"\n") {
			bad = append(bad, fmt.Sprintf("the stale run's output (agent %d) reached the branch", first.PID))
		}
		if len(bad) > 0 {
			out, _ := forge.GitTry("log", "--format=%H parent %P", "main.."+branch)
			t.Fatalf("%s\nrun-1 commit %s; branch log:\n%s\npushes: %+v\nWORK.md at %s:\n%s", strings.Join(bad, "\n"), tk.Commit, out,
				forge.Pushes(branch), tk2.Commit, work)
		}
	})
}
