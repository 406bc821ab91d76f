package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/nightshift/nightshift/ingress/api"
	"github.com/nightshift/nightshift/orchestrator"
)

func runDispatch(ctx context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("dispatch", flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	var cf clientFlags
	cf.register(fs, a)
	repo := fs.String("repo", "", "repository URL or local path (required)")
	branch := fs.String("branch", "", "base branch or commit (default: the repository's default branch)")
	agentName := fs.String("agent", "", "agent to run (default: the repo's or default_agent)")
	follow := fs.Bool("follow", false, "stream the task's progress until it finishes")
	if err := fs.Parse(interleave(fs, args)); err != nil {
		return usageErrorf("%v", err)
	}
	prompt := strings.TrimSpace(strings.Join(fs.Args(), " "))
	if *repo == "" {
		return usageErrorf("dispatch needs --repo")
	}
	if prompt == "" {
		return usageErrorf("dispatch needs a prompt: nightshift dispatch --repo R \"what to do\"")
	}
	r := *repo
	if !strings.Contains(r, "://") && !strings.Contains(r, "@") {
		if abs, err := filepath.Abs(r); err == nil {
			if _, err := os.Stat(abs); err != nil {
				return fmt.Errorf("repository %s does not exist", abs)
			}
			r = abs
		}
	}
	c := cf.client()
	var resp api.CreateResponse
	if err := c.do(ctx, "POST", "/api/v1/tasks", api.CreateRequest{Repo: r, Prompt: prompt, Branch: *branch, Agent: *agentName}, &resp); err != nil {
		return err
	}
	if !*follow {
		if cf.json {
			return printJSON(a.stdout, resp)
		}
		fmt.Fprintf(a.stdout, "task %s %s (queue position %d)\n", resp.ID, resp.State, resp.Position)
		return nil
	}
	if !cf.json {
		fmt.Fprintf(a.stdout, "task %s queued\n", resp.ID)
	}
	return followTask(ctx, a, c, resp.ID, cf.json)
}

// interleave lets flags follow positional arguments (dispatch "prompt" --follow).
func interleave(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if strings.HasPrefix(arg, "-") && len(arg) > 1 {
			flags = append(flags, arg)
			name := strings.TrimLeft(arg, "-")
			if strings.Contains(name, "=") {
				continue
			}
			if f := fs.Lookup(name); f != nil {
				if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
					continue
				}
				if i+1 < len(args) {
					flags = append(flags, args[i+1])
					i++
				}
			}
			continue
		}
		pos = append(pos, arg)
	}
	return append(flags, append([]string{"--"}, pos...)...)
}

// followTask prints a task's events until it comes to rest: live progress
// on a terminal, plain lines otherwise, JSON lines with --json. It returns
// an error when the task failed or was cancelled.
func followTask(ctx context.Context, a *app, c *client, id string, asJSON bool) error {
	start, err := getTask(ctx, c, id)
	for deadline := time.Now().Add(10 * time.Second); err != nil && strings.HasPrefix(err.Error(), "no task") && time.Now().Before(deadline); {
		// Just dispatched: the scheduler may not have stored it yet.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		start, err = getTask(ctx, c, id)
	}
	if err != nil {
		return err
	}
	var final orchestrator.State
	var p *progress
	if !asJSON {
		p = newProgress(a, start)
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { defer close(done); p.run(stop) }()
		defer func() { close(stop); <-done; p.stop() }()
	}
	err = c.stream(ctx, "/api/v1/tasks/"+url.PathEscape(id)+"/events", func(ev sseEvent) bool {
		if asJSON {
			fmt.Fprintf(a.stdout, "{\"event\":%q,\"data\":%s}\n", ev.Event, ev.Data)
		}
		switch ev.Event {
		case "log":
			var l orchestrator.LogLine
			if json.Unmarshal(ev.Data, &l) == nil && p != nil {
				p.log(l)
			}
		case "state":
			var r orchestrator.StateReport
			if json.Unmarshal(ev.Data, &r) == nil {
				if p != nil {
					p.report(r)
				}
				// History replays first: only a resting state of the
				// task's current run ends the follow.
				if restState(r.State) && r.Run >= start.Run {
					final = r.State
					return false
				}
			}
		case "error":
			return false
		}
		return true
	})
	if p != nil {
		p.stop()
	}
	if err != nil {
		return err
	}
	t, err := getTask(ctx, c, id)
	// The worker reports before the scheduler records: give the store a
	// moment to catch up so the summary shows the final state.
	for deadline := time.Now().Add(5 * time.Second); err == nil && final != "" && t.State != final && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		t, err = getTask(ctx, c, id)
	}
	if err != nil {
		return err
	}
	if !asJSON {
		printTaskSummary(a.stdout, t)
	}
	switch final {
	case orchestrator.StateFailed:
		return fmt.Errorf("task %s failed: %s", id, t.Error)
	case orchestrator.StateCancelled:
		return fmt.Errorf("task %s was cancelled", id)
	}
	return nil
}

func restState(s orchestrator.State) bool {
	switch s {
	case orchestrator.StateReview, orchestrator.StateDone, orchestrator.StateFailed, orchestrator.StateCancelled, orchestrator.StateNeedsInput:
		return true
	}
	return false
}

func padStream(s string) string { return fmt.Sprintf("%-6s", s) }

func getTask(ctx context.Context, c *client, id string) (orchestrator.Task, error) {
	var t orchestrator.Task
	err := c.do(ctx, "GET", "/api/v1/tasks/"+url.PathEscape(id), nil, &t)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == 404 {
		return t, fmt.Errorf("no task %s", id)
	}
	return t, err
}

func printTaskSummary(w io.Writer, t orchestrator.Task) {
	fmt.Fprintf(w, "task %s: %s\n", t.ID, t.State)
	if t.Review != "" {
		fmt.Fprintf(w, "review: %s\n", t.Review)
	}
	if t.PRURL != "" {
		fmt.Fprintf(w, "pull request: %s\n", t.PRURL)
	}
	if t.Error != "" {
		fmt.Fprintf(w, "error: %s\n", t.Error)
	}
}

func runTasks(ctx context.Context, a *app, args []string) error {
	if len(args) == 0 {
		return usageErrorf("usage: nightshift tasks ls | show ID | logs ID [-f] | diff ID | cancel ID | retry ID | message ID TEXT")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("tasks "+sub, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	var cf clientFlags
	cf.register(fs, a)
	var state, repo, source, before *string
	var limit *int
	var follow *bool
	switch sub {
	case "ls", "list":
		state = fs.String("state", "", "only tasks in these states (comma-separated)")
		repo = fs.String("repo", "", "only tasks on this repository")
		source = fs.String("source", "", "only tasks from this source: github, linear, slack or api")
		before = fs.String("before", "", "page cursor: list tasks older than this task id")
		limit = fs.Int("limit", 50, "how many tasks")
	case "logs":
		follow = fs.Bool("f", false, "follow the log live")
		fs.BoolVar(follow, "follow", false, "follow the log live")
	case "show", "diff", "cancel", "retry", "message":
	default:
		return usageErrorf("unknown tasks command %q (want ls, show, logs, diff, cancel, retry, message)", sub)
	}
	if err := fs.Parse(interleave(fs, args)); err != nil {
		return usageErrorf("%v", err)
	}
	c := cf.client()
	if sub == "ls" || sub == "list" {
		q := url.Values{}
		if *state != "" {
			q.Set("state", *state)
		}
		if *repo != "" {
			q.Set("repo", *repo)
		}
		if *source != "" {
			q.Set("source", *source)
		}
		if *before != "" {
			q.Set("before", *before)
		}
		q.Set("limit", fmt.Sprint(*limit))
		var resp api.ListResponse
		if err := c.do(ctx, "GET", "/api/v1/tasks?"+q.Encode(), nil, &resp); err != nil {
			return err
		}
		if cf.json {
			return printJSON(a.stdout, resp.Tasks)
		}
		if resp.Next != "" {
			defer fmt.Fprintf(a.stderr, "more: nightshift tasks ls --before %s\n", resp.Next)
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATE\tAGE\tAGENT\tREPO\tPROMPT")
		now := time.Now()
		for _, t := range resp.Tasks {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.State, since(t.CreatedAt, now), t.Agent, t.Repo, clip(firstLineOf(t.Prompt), 50))
		}
		return tw.Flush()
	}
	if fs.NArg() < 1 {
		return usageErrorf("tasks %s needs a task id", sub)
	}
	id := fs.Arg(0)
	path := "/api/v1/tasks/" + url.PathEscape(id)
	switch sub {
	case "show":
		t, err := getTask(ctx, c, id)
		if err != nil {
			return err
		}
		if cf.json {
			return printJSON(a.stdout, t)
		}
		printTask(a.stdout, t)
		return nil
	case "logs":
		if _, err := getTask(ctx, c, id); err != nil {
			return err
		}
		if *follow {
			return followTask(ctx, a, c, id, cf.json)
		}
		var resp struct {
			Lines []orchestrator.LogLine `json:"lines"`
		}
		if err := c.do(ctx, "GET", path+"/logs", nil, &resp); err != nil {
			return err
		}
		if cf.json {
			return printJSON(a.stdout, resp.Lines)
		}
		for _, l := range resp.Lines {
			fmt.Fprintf(a.stdout, "%s %s | %s\n", l.At.Local().Format("15:04:05"), padStream(l.Stream), l.Text)
		}
		return nil
	case "diff":
		if _, err := getTask(ctx, c, id); err != nil {
			return err
		}
		if cf.json {
			var sb strings.Builder
			if err := c.do(ctx, "GET", path+"/diff", nil, &sb); err != nil {
				return err
			}
			t, _ := getTask(ctx, c, id)
			return printJSON(a.stdout, map[string]any{"id": id, "stat": t.Diff, "patch": sb.String()})
		}
		return c.do(ctx, "GET", path+"/diff", nil, a.stdout)
	case "cancel", "retry", "message":
		var body any
		action := sub
		if sub == "message" {
			text := strings.TrimSpace(strings.Join(fs.Args()[1:], " "))
			if text == "" {
				return usageErrorf("tasks message needs the text of the follow-up")
			}
			body = map[string]string{"text": text}
			action = "messages"
		}
		var resp map[string]any
		if err := c.do(ctx, "POST", path+"/"+action, body, &resp); err != nil {
			var ae *apiError
			if errors.As(err, &ae) && ae.Status == 404 {
				return fmt.Errorf("no task %s", id)
			}
			return err
		}
		if cf.json {
			return printJSON(a.stdout, resp)
		}
		fmt.Fprintf(a.stdout, "task %s: %s requested\n", id, sub)
		return nil
	}
	return nil
}

func printTask(w io.Writer, t orchestrator.Task) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("id", t.ID)
	row("state", string(t.State))
	row("repo", t.Repo)
	row("base", t.Base)
	row("branch", t.Branch)
	row("agent", t.Agent)
	row("identity", strings.TrimSpace(t.Identity.Name+" <"+t.Identity.Email+">"))
	row("commit", t.Commit)
	row("review", t.Review)
	row("pr", t.PRURL)
	row("error", t.Error)
	if t.Usage.InputTokens+t.Usage.OutputTokens > 0 {
		row("tokens", fmt.Sprintf("%d in / %d out ($%.4f)", t.Usage.InputTokens, t.Usage.OutputTokens, t.Usage.CostUSD))
	}
	if t.Diff.Files > 0 {
		row("diff", fmt.Sprintf("%d files, +%d -%d", t.Diff.Files, t.Diff.Added, t.Diff.Deleted))
	}
	row("created", t.CreatedAt.Local().Format(time.RFC3339))
	row("updated", t.UpdatedAt.Local().Format(time.RFC3339))
	row("prompt", t.Prompt)
	tw.Flush()
}

func firstLineOf(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

// progress shows a followed task. On a terminal, log lines scroll above a
// status line that is redrawn in place (state, current step, elapsed time,
// tokens); elsewhere (a pipe, a file, a test buffer) every state change and
// log line is one plain line. Colors only on a terminal, and never with
// NO_COLOR set.
type progress struct {
	mu      sync.Mutex
	w       io.Writer
	tty     bool
	color   bool
	width   func() int
	now     func() time.Time
	start   time.Time
	state   orchestrator.State
	step    string
	usage   orchestrator.Usage
	frame   int
	drawn   bool
	stopped bool
}

// isTerminal reports whether w is a terminal: an *os.File that is a
// character device answering terminal ioctls (so /dev/null is not one).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	_, err = unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func newProgress(a *app, t orchestrator.Task) *progress {
	p := &progress{w: a.stdout, now: time.Now, start: t.CreatedAt, state: t.State, usage: t.Usage, width: func() int { return 80 }}
	p.tty = isTerminal(a.stdout)
	if p.tty {
		_, noColor := a.env["NO_COLOR"]
		p.color = !noColor && a.getenv("TERM") != "dumb"
		f := a.stdout.(*os.File)
		p.width = func() int {
			if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
				return int(ws.Col)
			}
			return 80
		}
	}
	if p.start.IsZero() {
		p.start = p.now()
	}
	return p
}

// run redraws the status line until stop is closed (terminals only).
func (p *progress) run(stop <-chan struct{}) {
	if !p.tty {
		return
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			p.mu.Lock()
			if !p.stopped {
				p.frame++
				p.redraw()
			}
			p.mu.Unlock()
		}
	}
}

const (
	ansiReset = "\x1b[0m"
	ansiBold  = "\x1b[1m"
	ansiDim   = "\x1b[2m"
	ansiRed   = "\x1b[31m"
	ansiGreen = "\x1b[32m"
	ansiYel   = "\x1b[33m"
	ansiBlue  = "\x1b[34m"
	ansiMag   = "\x1b[35m"
	ansiCyan  = "\x1b[36m"
	clearLine = "\r\x1b[2K"
)

func (p *progress) paint(code, s string) string {
	if !p.color || s == "" {
		return s
	}
	return code + s + ansiReset
}

func stateColor(s orchestrator.State) string {
	switch s {
	case orchestrator.StateReview, orchestrator.StateDone:
		return ansiGreen
	case orchestrator.StateFailed, orchestrator.StateCancelled:
		return ansiRed
	case orchestrator.StateNeedsInput:
		return ansiYel
	}
	return ansiBlue
}

func streamColor(s string) string {
	switch s {
	case "agent":
		return ansiCyan
	case "tool":
		return ansiMag
	case "test":
		return ansiYel
	}
	return ansiDim
}

// line prints one line above the status line.
func (p *progress) line(s string) {
	if p.tty {
		if p.drawn {
			io.WriteString(p.w, clearLine)
			p.drawn = false
		}
		io.WriteString(p.w, s+"\n")
		p.redraw()
		return
	}
	io.WriteString(p.w, s+"\n")
}

func (p *progress) log(l orchestrator.LogLine) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch l.Stream {
	case "agent", "tool", "test", "setup":
		p.step = l.Stream
	}
	p.line(p.paint(streamColor(l.Stream), padStream(l.Stream)) + " | " + l.Text)
}

func (p *progress) report(r orchestrator.StateReport) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state = r.State
	p.step = stepOf(r.State)
	if r.Patch.Usage != nil {
		p.usage = *r.Patch.Usage
	}
	if r.Task != nil && r.Task.Usage.InputTokens+r.Task.Usage.OutputTokens > 0 {
		p.usage = r.Task.Usage
	}
	s := "==> " + p.paint(ansiBold+stateColor(r.State), string(r.State))
	if r.Reason != "" {
		s += " (" + r.Reason + ")"
	}
	p.line(s)
}

func stepOf(s orchestrator.State) string {
	switch s {
	case orchestrator.StateQueued:
		return "waiting for a worker"
	case orchestrator.StateProvisioning:
		return "cloning"
	case orchestrator.StateRunning:
		return "agent"
	case orchestrator.StateTesting:
		return "tests"
	case orchestrator.StatePushing:
		return "push"
	}
	return ""
}

var spinner = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// status is the in-place line: spinner, state, step, elapsed, tokens.
func (p *progress) status() string {
	parts := []string{string(p.state)}
	if p.step != "" && p.step != string(p.state) {
		parts = append(parts, p.step)
	}
	parts = append(parts, fmtElapsed(p.now().Sub(p.start)))
	if n := p.usage.InputTokens + p.usage.OutputTokens; n > 0 {
		tok := compactCount(n) + " tokens"
		if p.usage.CostUSD > 0 {
			tok += fmt.Sprintf(" $%.2f", p.usage.CostUSD)
		}
		parts = append(parts, tok)
	}
	s := spinner[p.frame%len(spinner)] + " " + strings.Join(parts, " · ")
	if w := p.width() - 1; utf8.RuneCountInString(s) > w && w > 10 {
		s = string([]rune(s)[:w-1]) + "…"
	}
	return s
}

func (p *progress) redraw() {
	if !p.tty || p.stopped {
		return
	}
	io.WriteString(p.w, clearLine+p.paint(ansiDim, p.status()))
	p.drawn = true
}

// stop clears the status line for good.
func (p *progress) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.drawn {
		io.WriteString(p.w, clearLine)
	}
	p.drawn, p.stopped = false, true
}

func fmtElapsed(d time.Duration) string {
	d = d.Round(time.Second)
	if d < 0 {
		d = 0
	}
	h, m, s := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	if h > 0 {
		return fmt.Sprintf("%d:%02d:%02d", h, m, s)
	}
	return fmt.Sprintf("%d:%02d", m, s)
}

func compactCount(n int64) string {
	switch {
	case n >= 1_000_000:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(n)/1e6), ".0") + "M"
	case n >= 1000:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(n)/1e3), ".0") + "k"
	}
	return fmt.Sprint(n)
}
