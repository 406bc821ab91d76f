package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Faults the chaos suite can inject.
const (
	FaultFreezeWorker  = "freeze-worker"  // SIGSTOP a worker running an agent past its ack wait, then SIGCONT
	FaultKillWorker    = "kill-worker"    // kill -9 a worker running an agent (and its agents), restart it
	FaultKillScheduler = "kill-scheduler" // kill -9 a scheduler, restart it
	FaultKillIngress   = "kill-ingress"   // kill -9 an ingress while tasks arrive, restart it
	FaultKillNATS      = "kill-nats"      // kill -9 one NATS node of three, restart it
	FaultFillDisk      = "fill-disk"      // fill worker-1's data dir (a size-capped tmpfs) while tasks arrive, then free it
)

// AllFaults is every fault, in the order Chaos injects them.
var AllFaults = []string{FaultFreezeWorker, FaultKillWorker, FaultKillScheduler, FaultKillIngress, FaultKillNATS, FaultFillDisk}

// ChaosOptions size a chaos run.
type ChaosOptions struct {
	// Tasks submitted: even ones through POST /api/v1/tasks (each posted
	// to both ingresses with one Idempotency-Key), odd ones as GitHub
	// comments (each delivered twice under one delivery id, to both
	// ingresses, and once more under a second hook's id). Default 6.
	Tasks int
	// Messages are follow-ups posted to API tasks while faults run. Default 2.
	Messages int
	// Faults to inject, in AllFaults order. Default AllFaults.
	Faults []string
	// AgentSleep is how long each agent run sleeps (sleep(1) word). Default "4".
	AgentSleep string
	// AckWait is every role's --ack-wait. Default 6s.
	AckWait time.Duration
	// Settle bounds the wait for every task to rest. Default 4m.
	Settle time.Duration
	// Out gets the progress lines and the table. Default discard.
	Out io.Writer
}

func (o ChaosOptions) withDefaults() ChaosOptions {
	if o.Tasks == 0 {
		o.Tasks = 6
	}
	if o.Messages == 0 {
		o.Messages = 2
	}
	if o.Faults == nil {
		o.Faults = AllFaults
	}
	if o.AgentSleep == "" {
		o.AgentSleep = "4"
	}
	if o.AckWait == 0 {
		o.AckWait = 6 * time.Second
	}
	if o.Settle == 0 {
		o.Settle = 4 * time.Minute
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	return o
}

// FaultRecord is one injected fault.
type FaultRecord struct {
	Fault, Target string
	// At and Recovered are offsets from the first submission; Recovered
	// is when the process was back (restarted and listening, resumed,
	// disk freed), 0 when the fault was skipped.
	At, Recovered time.Duration
	Note          string
}

// ChaosReport is what a chaos run saw.
type ChaosReport struct {
	Faults   []FaultRecord
	Tasks    []Task // as ingress-1 reports them at the end
	API      int    // tasks submitted through the REST API
	Webhook  int    // tasks submitted as GitHub comments
	Messages int    // follow-ups sent
	Outcomes map[string]int
	// Problems are the failed assertions, one sentence each.
	Problems []string
	// Evidence holds, for each task that failed or whose branch failed a check, its
	// record, transitions, the agent runs (worker, time) and every
	// accepted update of its branch with the commit's WORK.md.
	Evidence []string
	Elapsed  time.Duration
}

type submission struct {
	n       int
	api     bool
	token   string // unique text in the prompt
	id      string // known at once for API tasks, by prompt for webhook tasks
	done    bool
	lastErr string
}

type message struct {
	taskID, token string
	sent          bool
	lastErr       string
}

type chaos struct {
	t        testing.TB
	o        ChaosOptions
	forge    *Forge
	nats     *NATS
	agent    *Agent
	ingress  []*Role
	sched    []*Role
	workers  []*Role
	subs     []*submission
	msgs     []*message
	start    time.Time
	problems []string
	ctx      context.Context
}

func (c *chaos) problem(format string, a ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, a...))
}

func (c *chaos) logf(format string, a ...any) {
	fmt.Fprintf(c.o.Out, "%7.1fs  %s\n", time.Since(c.start).Seconds(), fmt.Sprintf(format, a...))
}

// Chaos runs the chaos suite under dir: a 3-node JetStream cluster, two
// ingresses, two schedulers and two workers as processes, the test forge,
// tasks in through both APIs and duplicated webhooks while the faults are
// injected; then it checks that every task rests in one final state, that
// each task branch holds the recorded commit (one per run, only ever
// fast-forwarded), one pull request per task, every follow-up produced a
// run, and that both ingresses answer the same. The table goes to o.Out;
// failed checks are in the report's Problems (the caller decides).
func Chaos(t testing.TB, dir string, o ChaosOptions) *ChaosReport {
	t.Helper()
	o = o.withDefaults()
	c := &chaos{t: t, o: o, ctx: context.Background()}
	c.start = time.Now()
	c.forge = NewForge(t, dir)
	c.nats = StartNATS(t, filepath.Join(dir, "nats"), 3)
	c.agent = NewAgent(t, dir, o.AgentSleep)
	cfg := c.forge.Config(ConfigOptions{Agent: c.agent.Script, Replicas: 3, Concurrency: 4})
	rep := &ChaosReport{Outcomes: map[string]int{}}

	// worker-1's data dir is a size-capped tmpfs when it is to be filled.
	w1data := ""
	fillNote := ""
	if slices.Contains(o.Faults, FaultFillDisk) {
		w1data, fillNote = MountSmall(t, filepath.Join(dir, "worker-1", "disk"), 256)
	}
	start := func(name, role, data string) *Role {
		return StartRole(t, filepath.Join(dir, name), RoleOptions{Name: name, Role: role, NATS: c.nats.URL, Config: cfg,
			AckWait: o.AckWait, DataDir: data})
	}
	c.sched = []*Role{start("scheduler-1", "scheduler", ""), start("scheduler-2", "scheduler", "")}
	c.workers = []*Role{start("worker-1", "worker", w1data), start("worker-2", "worker", "")}
	c.ingress = []*Role{start("ingress-1", "ingress", ""), start("ingress-2", "ingress", "")}
	c.start = time.Now()
	c.logf("cluster up: 3 NATS nodes, 2 ingress, 2 scheduler, 2 worker")

	for i := range o.Tasks {
		s := &submission{n: i, api: i%2 == 0, token: fmt.Sprintf("chaos-task-%03d", i)}
		if s.api {
			rep.API++
		} else {
			rep.Webhook++
		}
		c.subs = append(c.subs, s)
	}
	// A third before the faults, the rest spread over them.
	next := 0
	submitUpTo := func(n int) {
		for ; next < min(n, len(c.subs)); next++ {
			c.submit(c.subs[next])
		}
	}
	submitUpTo(max(1, o.Tasks/3))
	perFault := 0
	if len(o.Faults) > 0 {
		perFault = (o.Tasks - next + len(o.Faults) - 1) / len(o.Faults)
	}
	msgsPerFault := 0
	if len(o.Faults) > 0 {
		msgsPerFault = (o.Messages + len(o.Faults) - 1) / len(o.Faults)
	}
	during := func() {
		submitUpTo(next + perFault)
		for range msgsPerFault {
			if len(c.msgs) < o.Messages {
				c.message()
			}
		}
		c.retryPending()
	}

	for _, f := range AllFaults {
		if !slices.Contains(o.Faults, f) {
			continue
		}
		rec := FaultRecord{Fault: f, At: time.Since(c.start)}
		switch f {
		case FaultFreezeWorker:
			during() // first, so the fault hits a running agent
			w := c.busyWorker(30 * time.Second)
			rec.At = time.Since(c.start)
			rec.Target = w.Name
			running := c.agentsOn(w)
			w.Freeze()
			c.logf("froze %s (running %d agents)", w.Name, running)
			sleepUntil(c.start.Add(rec.At).Add(2*o.AckWait + 2*time.Second))
			w.Thaw()
			rec.Recovered = time.Since(c.start)
			rec.Note = fmt.Sprintf("frozen %s (ack wait %s) while running %d agents", (rec.Recovered - rec.At).Round(100*time.Millisecond), o.AckWait, running)
		case FaultKillWorker:
			during()
			w := c.busyWorker(30 * time.Second)
			rec.At = time.Since(c.start)
			rec.Target = w.Name
			n := c.agentsOn(w)
			w.Kill()
			c.logf("killed %s (running %d agents)", w.Name, n)
			time.Sleep(2 * time.Second)
			w.Start(t)
			rec.Recovered = time.Since(c.start)
			rec.Note = fmt.Sprintf("kill -9 while running %d agents (killed too)", n)
		case FaultKillScheduler:
			s := c.sched[0]
			rec.Target = s.Name
			s.Kill()
			c.logf("killed %s", s.Name)
			during()
			time.Sleep(2 * time.Second)
			s.Start(t)
			rec.Recovered = time.Since(c.start)
		case FaultKillIngress:
			in := c.ingress[0]
			rec.Target = in.Name
			in.Kill()
			c.logf("killed %s", in.Name)
			during() // submissions fail over to ingress-2
			time.Sleep(2 * time.Second)
			in.Start(t)
			rec.Recovered = time.Since(c.start)
		case FaultKillNATS:
			node := c.nats.Nodes[0]
			rec.Target = node.Name
			node.Kill()
			c.logf("killed %s", node.Name)
			during()
			time.Sleep(3 * time.Second)
			c.nats.Restart(t, node)
			rec.Recovered = time.Since(c.start)
		case FaultFillDisk:
			w := c.workers[0]
			rec.Target = w.Name
			if w1data == "" {
				rec.Note = "skipped: " + fillNote
				c.logf("fill-disk %s", rec.Note)
				break
			}
			filled, err := FillDisk(filepath.Join(w1data, "chaos-fill"))
			c.logf("filled %s's disk (%d MiB, %v)", w.Name, filled>>20, err)
			during()
			readyWhileFull := w.API.Ready(c.ctx)
			sleepUntil(c.start.Add(rec.At).Add(2*o.AckWait + 2*time.Second))
			os.Remove(filepath.Join(w1data, "chaos-fill"))
			rec.Recovered = time.Since(c.start)
			rec.Note = fmt.Sprintf("tmpfs 256 MiB filled; /readyz while full: %s", readyText(readyWhileFull))
			if readyWhileFull == nil {
				c.problem("%s answered /readyz ready while its data dir was full", w.Name)
			}
		}
		c.logf("%s on %s: recovered", f, rec.Target)
		rep.Faults = append(rep.Faults, rec)
	}
	submitUpTo(len(c.subs))
	for len(c.msgs) < o.Messages {
		c.message()
	}
	deadline := time.Now().Add(2 * time.Minute)
	for c.pending() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Second)
		c.retryPending()
	}
	for _, s := range c.subs {
		if !s.done {
			c.problem("submission %s was never accepted by either ingress: %s", s.token, s.lastErr)
		}
	}
	for _, m := range c.msgs {
		if !m.sent {
			c.problem("follow-up %s to %s was never accepted: %s", m.token, m.taskID, m.lastErr)
		}
	}
	rep.Messages = len(c.msgs)
	c.logf("all submitted; waiting for every task to rest")

	tasks := c.settle()
	c.check(tasks, rep)
	rep.Tasks = tasks
	rep.Problems = c.problems
	rep.Elapsed = time.Since(c.start)
	c.print(rep)
	return rep
}

func readyText(err error) string {
	if err == nil {
		return "ready"
	}
	return "not ready"
}

func sleepUntil(t time.Time) {
	if d := time.Until(t); d > 0 {
		time.Sleep(d)
	}
}

// submit tries a submission once on each ingress; retryPending tries again.
func (c *chaos) submit(s *submission) {
	if s.done {
		return
	}
	prompt := "chaos: append a line (" + s.token + ")"
	if s.api {
		var ids []string
		for _, in := range c.ingress {
			if in.Exited() {
				continue
			}
			id, code, err := in.API.CreateTask(c.ctx, c.forge.RepoURL(), prompt, "script", "chaos-key-"+s.token)
			if err != nil {
				s.lastErr = fmt.Sprintf("%s: %v", in.Name, err)
				if code >= 400 && code < 500 {
					c.problem("POST /api/v1/tasks %s on %s: %v", s.token, in.Name, err)
				}
				continue
			}
			ids = append(ids, id)
		}
		if len(ids) == 0 {
			return
		}
		for _, id := range ids[1:] {
			if id != ids[0] {
				c.problem("one Idempotency-Key, two tasks: %s and %s (%s)", ids[0], id, s.token)
			}
		}
		if s.id != "" && s.id != ids[0] {
			c.problem("one Idempotency-Key, two tasks over retries: %s and %s (%s)", s.id, ids[0], s.token)
		}
		s.id, s.done = ids[0], true
		return
	}
	body := c.forge.CommentPayload(c.t, 100+s.n, 880000000+int64(s.n), "@nightshift "+prompt)
	delivery := fmt.Sprintf("chaos-delivery-%03d", s.n)
	accepted := false
	firstAccepted := false
	// The repository hook delivers (and GitHub redelivers) under one id to
	// both ingresses; an organization hook delivers the same comment under
	// its own id.
	for _, d := range []struct {
		in       *Role
		delivery string
	}{{c.ingress[0], delivery}, {c.ingress[1], delivery}, {c.ingress[1], delivery + "-org"}} {
		if d.in.Exited() {
			continue
		}
		code, out, err := d.in.API.PostGitHub(c.ctx, c.forge.WebhookSecret, "issue_comment", d.delivery, body)
		if d.delivery == delivery && err == nil && code == 202 {
			if firstAccepted {
				c.problem("delivery %s was accepted (202) by both ingresses, not answered duplicate", delivery)
			}
			firstAccepted = true
		}
		switch {
		case err != nil && code >= 400 && code < 500:
			c.problem("webhook %s to %s: %v", d.delivery, d.in.Name, err)
		case err != nil:
			s.lastErr = fmt.Sprintf("%s: %v", d.in.Name, err)
		case code == 202 || out["status"] == "duplicate":
			accepted = true
		default:
			c.problem("webhook %s to %s: %d %v", d.delivery, d.in.Name, code, out)
		}
	}
	s.done = accepted
}

func (c *chaos) pending() int {
	n := 0
	for _, s := range c.subs[:] {
		if !s.done {
			n++
		}
	}
	for _, m := range c.msgs {
		if !m.sent {
			n++
		}
	}
	return n
}

func (c *chaos) retryPending() {
	for _, s := range c.subs {
		if !s.done && s.lastErr != "" {
			c.submit(s)
		}
	}
	for _, m := range c.msgs {
		if !m.sent {
			c.sendMessage(m)
		}
	}
}

// message sends a follow-up to an API task (round robin), to whichever
// ingress is up.
func (c *chaos) message() {
	var ids []string
	for _, s := range c.subs {
		if s.api && s.id != "" {
			ids = append(ids, s.id)
		}
	}
	if len(ids) == 0 {
		return
	}
	m := &message{taskID: ids[len(c.msgs)%len(ids)], token: fmt.Sprintf("chaos-follow-up-%03d", len(c.msgs))}
	c.msgs = append(c.msgs, m)
	c.sendMessage(m)
}

func (c *chaos) sendMessage(m *message) {
	for _, in := range c.ingress {
		if in.Exited() {
			continue
		}
		code, err := in.API.Message(c.ctx, m.taskID, "chaos: also append this line ("+m.token+")")
		if err == nil {
			m.sent = true
			return
		}
		m.lastErr = fmt.Sprintf("%s: %v", in.Name, err)
		if code >= 400 && code < 500 {
			c.problem("follow-up %s to %s refused by %s: %v", m.token, m.taskID, in.Name, err)
			m.sent = true // refused for good: counted as a problem, not retried
			return
		}
	}
}

// agentsOn counts the agents running under worker w now.
func (c *chaos) agentsOn(w *Role) int {
	n := 0
	pid := w.PID()
	for _, s := range c.agent.Started() {
		if pid != 0 && IsAncestor(pid, s.PID) {
			n++
		}
	}
	return n
}

// busyWorker waits (bounded) for a worker that runs an agent, so the fault
// hits a run, and returns the busiest (worker-1 when none is busy).
func (c *chaos) busyWorker(timeout time.Duration) *Role {
	deadline := time.Now().Add(timeout)
	for {
		best, most := c.workers[0], 0
		for _, w := range c.workers {
			if n := c.agentsOn(w); n > most {
				best, most = w, n
			}
		}
		if most > 0 || time.Now().After(deadline) {
			return best
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type snapshot map[string]Task

// settle waits until both ingresses list every submission, every task
// rests, and nothing changes over two ack waits; it returns ingress-1's view.
func (c *chaos) settle() []Task {
	deadline := time.Now().Add(c.o.Settle)
	var last snapshot
	var lastDesc string
	for time.Now().Before(deadline) {
		snap, desc := c.snapshot()
		lastDesc = desc
		if desc == "" {
			if last != nil && sameSnapshot(last, snap) {
				return snapshotTasks(snap)
			}
			last = snap
			time.Sleep(2*c.o.AckWait + time.Second)
			continue
		}
		last = nil
		time.Sleep(time.Second)
	}
	c.problem("not settled after %s: %s", c.o.Settle, lastDesc)
	snap, _ := c.snapshot()
	return snapshotTasks(snap)
}

// snapshot reads ingress-1's tasks; desc says why it is not settled ("" when it is).
func (c *chaos) snapshot() (snapshot, string) {
	ts, err := c.ingress[0].API.Tasks(c.ctx)
	if err != nil {
		return nil, err.Error()
	}
	snap := snapshot{}
	for _, tk := range ts {
		snap[tk.ID] = tk
	}
	if len(ts) < len(c.subs) {
		return snap, fmt.Sprintf("%s lists %d tasks of %d submitted", c.ingress[0].Name, len(ts), len(c.subs))
	}
	var moving []string
	for _, tk := range ts {
		if !Final[tk.State] {
			moving = append(moving, tk.ID+" "+tk.State)
		}
	}
	for _, m := range c.msgs {
		if tk, ok := snap[m.taskID]; ok && tk.Run < 2 {
			moving = append(moving, m.taskID+" awaits its follow-up")
		}
	}
	if len(moving) > 0 {
		sort.Strings(moving)
		return snap, "not resting: " + strings.Join(moving, ", ")
	}
	return snap, ""
}

func sameSnapshot(a, b snapshot) bool {
	if len(a) != len(b) {
		return false
	}
	for id, x := range a {
		y, ok := b[id]
		if !ok || x.State != y.State || x.Commit != y.Commit || x.Run != y.Run {
			return false
		}
	}
	return true
}

func snapshotTasks(s snapshot) []Task {
	var out []Task
	for _, tk := range s {
		out = append(out, tk)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out
}

func (c *chaos) check(tasks []Task, rep *ChaosReport) {
	byID := map[string]Task{}
	for _, tk := range tasks {
		byID[tk.ID] = tk
	}
	// Webhook tasks are found by the token in their prompt.
	for _, s := range c.subs {
		if s.id != "" {
			continue
		}
		for _, tk := range tasks {
			if strings.Contains(tk.Prompt, s.token) {
				if s.id != "" {
					c.problem("two tasks for one comment (%s): %s and %s", s.token, s.id, tk.ID)
				}
				s.id = tk.ID
			}
		}
	}
	if len(tasks) != len(c.subs) {
		c.problem("%s lists %d tasks for %d submissions", c.ingress[0].Name, len(tasks), len(c.subs))
	}
	// Both APIs agree, in the list and one by one.
	other, err := c.ingress[1].API.Tasks(c.ctx)
	if err != nil {
		c.problem("%s: list tasks: %v", c.ingress[1].Name, err)
	}
	otherByID := map[string]Task{}
	for _, tk := range other {
		otherByID[tk.ID] = tk
	}
	if len(other) != len(tasks) {
		c.problem("%s lists %d tasks, %s %d", c.ingress[0].Name, len(tasks), c.ingress[1].Name, len(other))
	}
	for _, s := range c.subs {
		if s.id == "" {
			c.problem("no task for submission %s (lost)", s.token)
			continue
		}
		tk, ok := byID[s.id]
		if !ok {
			got, err := c.ingress[0].API.Task(c.ctx, s.id)
			if err != nil {
				c.problem("task %s (%s) unknown to %s: %v", s.id, s.token, c.ingress[0].Name, err)
				continue
			}
			tk = got
		}
		for _, in := range c.ingress {
			one, err := in.API.Task(c.ctx, s.id)
			if err != nil {
				c.problem("GET task %s on %s: %v", s.id, in.Name, err)
				continue
			}
			if one.State != tk.State || one.Commit != tk.Commit || one.Run != tk.Run {
				c.problem("APIs disagree on %s: list %s/%s/run %d, %s %s/%s/run %d", s.id, tk.State, short(tk.Commit), tk.Run,
					in.Name, one.State, short(one.Commit), one.Run)
			}
		}
		if o, ok := otherByID[s.id]; ok && (o.State != tk.State || o.Commit != tk.Commit) {
			c.problem("%s lists %s as %s/%s, %s as %s/%s", c.ingress[0].Name, s.id, tk.State, short(tk.Commit),
				c.ingress[1].Name, o.State, short(o.Commit))
		}
		rep.Outcomes[tk.State]++
		if !Final[tk.State] {
			c.problem("task %s does not rest: %s", tk.ID, tk.State)
			continue
		}
		if tk.State != "review" && tk.State != "done" {
			c.problem("task %s (%s) ended %s: reason %q error %q", tk.ID, s.token, tk.State, tk.Reason, tk.Error)
			rep.Evidence = append(rep.Evidence, c.evidence(tk))
			continue
		}
		if bad := c.forge.CheckBranch(tk, tk.Run); len(bad) > 0 {
			c.problems = append(c.problems, bad...)
			rep.Evidence = append(rep.Evidence, c.evidence(tk))
		}
		if n := c.forge.PRsFor(tk.Branch); n != 1 {
			c.problem("task %s: %d pull requests for %s, want 1", tk.ID, n, tk.Branch)
		}
	}
	// One pull request per task, none for anything else.
	if n := len(c.forge.PullRequests(c.forge.Owner, c.forge.Name)); n != len(c.subs) {
		c.problem("%d pull requests on the forge for %d tasks", n, len(c.subs))
	}
	// Every follow-up produced a run whose commit carries it.
	for _, m := range c.msgs {
		tk, ok := byID[m.taskID]
		if !ok || tk.Branch == "" {
			continue
		}
		out, err := c.forge.GitTry("log", "-p", "main..refs/heads/"+tk.Branch)
		if err != nil || !strings.Contains(out, m.token) {
			c.problem("follow-up %s to %s is in no commit on %s (lost): run %d, state %s", m.token, m.taskID, tk.Branch, tk.Run, tk.State)
		}
	}
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func (c *chaos) print(rep *ChaosReport) {
	w := c.o.Out
	fmt.Fprintf(w, "\n%-16s %-12s %9s %11s  %s\n", "fault", "target", "at", "recovered", "note")
	for _, f := range rep.Faults {
		rec := "-"
		if f.Recovered > 0 {
			rec = fmt.Sprintf("%.1fs", f.Recovered.Seconds())
		}
		fmt.Fprintf(w, "%-16s %-12s %8.1fs %11s  %s\n", f.Fault, f.Target, f.At.Seconds(), rec, f.Note)
	}
	var outs []string
	for st, n := range rep.Outcomes {
		outs = append(outs, fmt.Sprintf("%s %d", st, n))
	}
	sort.Strings(outs)
	fmt.Fprintf(w, "\ntasks checked: %d (API %d, webhook %d), follow-ups %d, in %s\n", len(c.subs), rep.API, rep.Webhook,
		rep.Messages, rep.Elapsed.Round(time.Second))
	fmt.Fprintf(w, "outcomes: %s\n", strings.Join(outs, ", "))
	if len(rep.Problems) == 0 {
		fmt.Fprintln(w, "problems: none")
		return
	}
	fmt.Fprintf(w, "problems: %d\n", len(rep.Problems))
	for _, p := range rep.Problems {
		fmt.Fprintln(w, "  - "+p)
	}
	for _, e := range rep.Evidence {
		fmt.Fprintln(w, "\n"+e)
	}
}

// evidence describes what happened to tk's branch, for the report.
func (c *chaos) evidence(tk Task) string {
	var b strings.Builder
	fmt.Fprintf(&b, "evidence for task %s: state %s run %d commit %s reason %q error %q\n", tk.ID, tk.State, tk.Run, tk.Commit, tk.Reason, tk.Error)
	if trs, err := c.ingress[0].API.Transitions(c.ctx, tk.ID); err == nil {
		for _, tr := range trs {
			fmt.Fprintf(&b, "  transition %7.1fs run %d %s -> %s %s\n", tr.At.Sub(c.start).Seconds(), tr.Run, tr.From, tr.To, tr.Reason)
		}
	}
	for _, s := range c.agent.Started() {
		if s.TaskID != tk.ID {
			continue
		}
		where := "?"
		for _, w := range c.workers {
			if w.Ran(s) {
				where = w.Name
			}
		}
		fmt.Fprintf(&b, "  agent    %7.1fs pid %d on %s\n", s.At.Sub(c.start).Seconds(), s.PID, where)
	}
	for i, p := range c.forge.Pushes("refs/heads/" + tk.Branch) {
		work, _ := c.forge.GitTry("show", p.New+":WORK.md")
		parent, _ := c.forge.GitTry("rev-parse", "--short=12", p.New+"^")
		fmt.Fprintf(&b, "  update %d %s -> %s (parent %s), WORK.md: %q\n", i+1, short(p.Old), short(p.New), parent, work)
	}
	return b.String()
}

// MountSmall mounts a tmpfs of mib MiB at dir (root only) and returns it,
// or "" and why not. It is unmounted when the test ends.
func MountSmall(t testing.TB, dir string, mib int) (string, string) {
	if os.Geteuid() != 0 {
		return "", "not root: cannot mount a size-capped tmpfs"
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err.Error()
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm,mode=0700", mib), "tmpfs", dir).CombinedOutput(); err != nil {
		return "", fmt.Sprintf("mount tmpfs: %v: %s", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir, ""
}

// FillDisk writes zeros to path until the filesystem is full.
func FillDisk(path string) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := f.Write(buf)
		n += int64(k)
		if err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return n, nil
			}
			return n, err
		}
	}
}
