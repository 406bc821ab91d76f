package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nightshift/nightshift/bench/cluster"
	"github.com/nightshift/nightshift/worktree"
)

// runDispatch is `go run ./bench dispatch`: an external nats-server, one
// ingress, one scheduler and two worker processes (each its own data dir),
// a local repository whose mirror both workers have warmed; n tasks posted
// at once with an agent that only records when it started. It prints p50
// and p95 of event stored (the task's created_at) → agent process started,
// the orchestrator's CPU per task (utime+stime of the four serve processes
// over the run, from /proc), and last ratio=<p50 / one worktree
// provisioning of the same repository> measured in the same run with the
// worktree package. The whole run is bounded by -timeout.
func runDispatch(ctx context.Context, w io.Writer, args []string) error {
	fs := flag.NewFlagSet("dispatch", flag.ContinueOnError)
	fs.SetOutput(w)
	n := fs.Int("tasks", 200, "tasks posted at once")
	files := fs.Int("files", 500, "files in the repository")
	concurrency := fs.Int("concurrency", 100, "worker.concurrency of each worker")
	timeout := fs.Duration("timeout", 5*time.Minute, "abort the run after this long")
	keep := fs.Bool("keep", false, "keep the work directory (logs of every process)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	return cluster.Main(w, *keep, func(t testing.TB) { dispatchBench(ctx, t, w, *n, *files, *concurrency) })
}

func dispatchBench(ctx context.Context, t testing.TB, w io.Writer, n, files, concurrency int) {
	dir := t.TempDir()
	origin := filepath.Join(dir, "origin.git")
	if err := makeRepo(origin, files); err != nil {
		t.Fatal(err)
	}
	agent := cluster.NewAgent(t, dir, "0")
	cfg := fmt.Sprintf(`sandbox: {driver: process}
identity: {smtp_listen: "127.0.0.1:0"}
worker: {concurrency: %d}
agents:
  script: {command: ["sh", %q]}
default_agent: script
repos:
  - match: %q
    test: "test -f WORK.md"
`, concurrency, agent.Script, origin)
	nats := cluster.StartNATS(t, filepath.Join(dir, "nats"), 1)
	start := func(name, role string) *cluster.Role {
		return cluster.StartRole(t, filepath.Join(dir, name), cluster.RoleOptions{Name: name, Role: role, NATS: nats.URL, Config: cfg})
	}
	// Warm each worker's mirror with one task while it is the only worker
	// (JetStream may hand every early task to one puller): worker-1 alone,
	// then worker-2 alone, then both.
	ingress, sched := start("ingress", "ingress"), start("scheduler", "scheduler")
	w1 := start("worker-1", "worker")
	warm := func(wk *cluster.Role, k int) {
		id, _, err := ingress.API.CreateTask(ctx, origin, "warm up", "script", fmt.Sprintf("warm-%d", k))
		if err != nil {
			t.Fatalf("warm-up task: %v\n%s", err, ingress.Tail(3000))
		}
		waitAgent(ctx, t, agent, id)
		for _, s := range agent.Started() {
			if s.TaskID == id && !wk.Ran(s) {
				t.Fatalf("warm-up task %s ran outside %s (in %s)", id, wk.Name, s.Dir)
			}
		}
		waitRest(ctx, t, ingress, []string{id}, 10*time.Second)
	}
	warm(w1, 1)
	if err := w1.Term(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	w2 := start("worker-2", "worker")
	warm(w2, 2)
	w1.Start(t)
	procs := []*cluster.Role{ingress, sched, w1, w2}
	workers := procs[2:]
	fmt.Fprintf(w, "dispatch: %d tasks, %d-file repository, external nats-server (1 node), 1 ingress, 1 scheduler, 2 workers (concurrency %d each), mirrors warm\n",
		n, files, concurrency)

	cpu0 := map[string]time.Duration{}
	for _, p := range procs {
		cpu0[p.Name] = p.CPU()
	}
	natsCPU0 := nats.Nodes[0].CPU()

	// n tasks at once: 32 clients posting in parallel.
	ids := make([]string, n)
	accepted := make([]time.Time, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	sem := make(chan struct{}, 32)
	t0 := time.Now()
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			id, _, err := ingress.API.CreateTask(ctx, origin, fmt.Sprintf("dispatch task %d", i), "script", fmt.Sprintf("dispatch-%d", i))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err.Error())
				return
			}
			ids[i], accepted[i] = id, time.Now()
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d posts failed, first: %s", len(errs), n, errs[0])
	}
	fmt.Fprintf(w, "posted %d tasks in %s\n", n, time.Since(t0).Round(time.Millisecond))

	// Every agent starts, then every task rests (CPU is read after).
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	started := map[string]time.Time{}
	for len(started) < n {
		for _, s := range agent.Started() {
			if want[s.TaskID] {
				if _, ok := started[s.TaskID]; !ok {
					started[s.TaskID] = s.At
				}
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("aborted: %d of %d agents started\n%s", len(started), n, workers[0].Tail(2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	allStarted := time.Since(t0)
	states := waitRest(ctx, t, ingress, ids, 30*time.Second)
	var cpu time.Duration
	var per []string
	for _, p := range procs {
		d := p.CPU() - cpu0[p.Name]
		cpu += d
		per = append(per, fmt.Sprintf("%s %s", p.Name, d.Round(time.Millisecond)))
	}
	natsCPU := nats.Nodes[0].CPU() - natsCPU0

	// Event stored = the task's created_at; where the API cannot say, the
	// moment the 202 arrived (the event was durably stored by then).
	var lat []time.Duration
	fallback := 0
	for i, id := range ids {
		stored := accepted[i]
		if tk, err := ingress.API.Task(ctx, id); err == nil && !tk.CreatedAt.IsZero() {
			stored = tk.CreatedAt
		} else {
			fallback++
		}
		lat = append(lat, started[id].Sub(stored))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p50, p95 := lat[len(lat)/2], lat[len(lat)*95/100]
	fmt.Fprintf(w, "all %d agents started %s after the first post; outcomes: %s\n", n, allStarted.Round(time.Millisecond), states)
	shown := 0
	for _, id := range ids {
		if tk, err := ingress.API.Task(ctx, id); err == nil && tk.State == "failed" && shown < 3 {
			fmt.Fprintf(w, "failed: %s reason %q error %q\n", id, tk.Reason, tk.Error)
			shown++
		}
	}
	if fallback > 0 {
		fmt.Fprintf(w, "(%d tasks unknown to the ingress API: their 202 time stands in for created_at)\n", fallback)
	}
	fmt.Fprintf(w, "event stored → agent started: p50 %s  p95 %s  max %s\n", p50.Round(time.Millisecond),
		p95.Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	fmt.Fprintf(w, "orchestrator CPU: %s per task (%s total: %s); nats-server %s per task\n",
		(cpu / time.Duration(n)).Round(10*time.Microsecond), cpu.Round(time.Millisecond), strings.Join(per, ", "),
		(natsCPU / time.Duration(n)).Round(10*time.Microsecond))

	// One provisioning of the same repository from a warm mirror, as a
	// worker does it for a new task (fetch + default branch), median of 5.
	m, err := worktree.New(worktree.Config{MirrorDir: filepath.Join(dir, "wt", "mirrors"), TaskDir: filepath.Join(dir, "wt", "tasks")})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	wt0, err := m.Provision(ctx, worktree.Ref{TaskID: "warm", Repo: origin}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var prov []time.Duration
	for i := range 5 {
		t1 := time.Now()
		if _, err := m.Provision(ctx, worktree.Ref{TaskID: fmt.Sprintf("p%d", i), Repo: origin}, nil); err != nil {
			t.Fatal(err)
		}
		prov = append(prov, time.Since(t1))
		_ = m.Remove(ctx, fmt.Sprintf("p%d", i))
	}
	sort.Slice(prov, func(i, j int) bool { return prov[i] < prov[j] })
	fmt.Fprintf(w, "one worktree provisioning (warm mirror, fetch + default branch, median of 5): %s\n", prov[2].Round(100*time.Microsecond))
	// The floor no scheduler can beat: every task needs at least its own
	// checkout before its agent starts (the fetch can be shared between
	// tasks, the checkout cannot), so the median task starts no sooner
	// than n/2 checkouts' CPU spread over the cores. A checkout alone is
	// a provisioning from a commit the mirror has (no fetch).
	base := wt0.BaseCommit
	var checkoutCPU time.Duration
	for i := range 5 {
		c0 := selfCPU()
		if _, err := m.Provision(ctx, worktree.Ref{TaskID: fmt.Sprintf("c%d", i), Repo: origin, Base: base}, nil); err != nil {
			t.Fatal(err)
		}
		if d := selfCPU() - c0; i == 0 || d < checkoutCPU {
			checkoutCPU = d
		}
		_ = m.Remove(ctx, fmt.Sprintf("c%d", i))
	}
	cores := runtime.NumCPU()
	floor := time.Duration(int64(n/2) * int64(checkoutCPU) / int64(cores))
	fmt.Fprintf(w, "floor: the median task waits for %d checkouts (%s CPU each, the least of 5) over %d cores: p50 >= %s, ratio >= %.2f; measured p50 is %.2fx the floor\n",
		n/2, checkoutCPU.Round(100*time.Microsecond), cores, floor.Round(time.Millisecond), float64(floor)/float64(prov[2]), float64(p50)/float64(floor))
	fmt.Fprintf(w, "ratio=%.2f\n", float64(p50)/float64(prov[2]))
}

// selfCPU is the user and system CPU this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func waitAgent(ctx context.Context, t testing.TB, a *cluster.Agent, id string) {
	for ctx.Err() == nil {
		for _, s := range a.Started() {
			if s.TaskID == id {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("agent for %s never started", id)
}

// waitRest waits until every task rests and returns the outcome counts
// ("unknown" when the API cannot find a task; those are not waited for
// longer than grace).
func waitRest(ctx context.Context, t testing.TB, in *cluster.Role, ids []string, grace time.Duration) string {
	since := time.Now()
	for {
		counts := map[string]int{}
		resting := 0
		for _, id := range ids {
			tk, err := in.API.Task(ctx, id)
			switch {
			case err != nil:
				counts["unknown"]++
			case cluster.Final[tk.State]:
				counts[tk.State]++
				resting++
			default:
				counts[tk.State]++
			}
		}
		var parts []string
		for st, k := range counts {
			parts = append(parts, fmt.Sprintf("%s %d", st, k))
		}
		sort.Strings(parts)
		desc := strings.Join(parts, ", ")
		if resting == len(ids) || (counts["unknown"] == len(ids)-resting && time.Since(since) > grace) {
			return desc
		}
		if ctx.Err() != nil {
			t.Fatalf("aborted waiting for tasks to rest: %s", desc)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// makeRepo creates a bare repository with files files in one commit on main.
func makeRepo(bare string, files int) error {
	work := bare + ".seed"
	for i := range files {
		p := filepath.Join(work, fmt.Sprintf("pkg%02d/file%04d.go", i/50, i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(fmt.Sprintf("package pkg\n\n// File %d.\nvar V%d = %d\n", i, i, i*7)), 0o644); err != nil {
			return err
		}
	}
	os.WriteFile(filepath.Join(work, "README.md"), []byte("# dispatch bench\n"), 0o644)
	for _, c := range [][]string{
		{"init", "-q", "--bare", "-b", "main", bare},
		{"-C", work, "init", "-q", "-b", "main"},
		{"-C", work, "add", "-A"},
		{"-C", work, "-c", "user.name=Bench", "-c", "user.email=bench@example.test", "commit", "-q", "-m", "init"},
		{"-C", work, "push", "-q", bare, "main"},
	} {
		cmd := exec.Command("git", c...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %v: %v: %s", c, err, out)
		}
	}
	return nil
}
