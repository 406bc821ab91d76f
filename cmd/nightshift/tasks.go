package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/nightshift/nightshift/ingress/api"
	"github.com/nightshift/nightshift/orchestrator"
)

const dispatchUsage = `usage: nightshift dispatch --repo URL|PATH [--branch B] [--agent NAME] [--follow] PROMPT...
       nightshift dispatch --repo URL|PATH [flags] -                   (prompt on stdin)
       nightshift dispatch --repo URL|PATH [flags] --prompt-file FILE

Creates a task: an agent works on the repository and proposes a change.

The prompt is the words after the flags. Flags go first: from the first
prompt word on, every word is prompt text, even one that looks like a flag
("make the --follow flag faster" is a prompt; it does not turn on --follow),
except the global flags --server, --token and --json, which are flags
wherever they appear before "--" (a token never ends up in the prompt).
"--" ends the flags; every word after it is prompt text. A lone "-" reads the prompt from stdin (flags may
follow it); --prompt-file reads it from a file ("-": stdin). An empty prompt
is refused. The prompt travels in the request body; a server that finds it
too large answers 413 and dispatch exits 1.

flags:
  --repo URL|PATH     repository (required): a clone URL or a local path
  --branch B          base branch or commit (default: the repository's default branch)
  --agent NAME        agent to run (default: the repository's, else default_agent)
  --prompt-file FILE  read the prompt from FILE
  --follow            stream the task's progress until it comes to rest
  --server URL, --token T, --json   global flags (also accepted before "dispatch")

--follow exit codes (also "tasks logs -f"):
  0    the task reached review or done
  1    the task failed or was cancelled, or following failed (the server
       stayed unreachable for 2 minutes, or refused the request)
  3    the task needs input (answer with: nightshift tasks message ID TEXT)
  130  Ctrl-C: following stopped, the task keeps running
A dropped connection or a restarting server is retried with backoff (up to
2 minutes); the stream resumes after the last event already shown.

examples:
  nightshift dispatch --repo . "fix the flaky test in ./store"
  nightshift dispatch --repo https://github.com/acme/api --agent codex --follow add rate limiting
  git log -1 --format=%B | nightshift dispatch --repo . --follow -
  nightshift dispatch --repo . --prompt-file task.md --json
  nightshift dispatch --repo . -- --help is a prompt here`

// maxPromptRead bounds a prompt read from stdin or a file; the server
// applies its own (smaller) limit and answers 413 past it.
const maxPromptRead = 64 << 20

func runDispatch(ctx context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("dispatch", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs, a)
	repo := fs.String("repo", "", "repository URL or local path (required)")
	branch := fs.String("branch", "", "base branch or commit (default: the repository's default branch)")
	agentName := fs.String("agent", "", "agent to run (default: the repo's or default_agent)")
	mode := fs.String("mode", "", "change (default), plan (read-only plan, approved with a /approve reply) or answer (read-only answer)")
	follow := fs.Bool("follow", false, "stream the task's progress until it finishes")
	promptFile := fs.String("prompt-file", "", "read the prompt from this file (-: stdin)")
	// The prompt starts at the first positional word, except a lone "-"
	// (stdin), after which flags may still follow.
	words, err := parseFlags(a, fs, "dispatch", args, func(pos []string) bool {
		return len(pos) > 1 || len(pos) == 1 && pos[0] != "-"
	})
	if err != nil {
		return err
	}
	if *repo == "" {
		return usageErrorf("dispatch needs --repo (see nightshift dispatch --help)")
	}
	var prompt, from string
	switch {
	case len(words) > 0 && words[0] == "-":
		if len(words) > 1 {
			return usageErrorf("dispatch -: the prompt comes from stdin; remove the words after \"-\" or put them on stdin")
		}
		if *promptFile != "" {
			return usageErrorf("dispatch: give the prompt on stdin (-) or with --prompt-file, not both")
		}
		from = "stdin"
	case *promptFile != "":
		if len(words) > 0 {
			return usageErrorf("dispatch: give the prompt as words or with --prompt-file, not both")
		}
		from = *promptFile
		if from == "-" {
			from = "stdin"
		}
	default:
		prompt = strings.TrimSpace(strings.Join(words, " "))
		if prompt == "" {
			return usageErrorf("dispatch needs a prompt: nightshift dispatch --repo R \"what to do\" (or - to read it from stdin)")
		}
		for _, w := range words[1:] {
			if name, ok := strings.CutPrefix(w, "--"); ok && fs.Lookup(strings.SplitN(name, "=", 2)[0]) != nil {
				fmt.Fprintf(a.stderr, "note: %q is part of the prompt: flags go before the first prompt word\n", w)
				break
			}
		}
	}
	if from != "" {
		var rd io.Reader = a.stdin
		if from != "stdin" {
			f, err := os.Open(from)
			if err != nil {
				return usageErrorf("dispatch --prompt-file: %v", err)
			}
			defer f.Close()
			rd = f
		}
		b, err := io.ReadAll(io.LimitReader(rd, maxPromptRead+1))
		if err != nil {
			return fmt.Errorf("read the prompt from %s: %w", from, err)
		}
		if len(b) > maxPromptRead {
			return usageErrorf("dispatch: the prompt from %s is larger than %d MiB", from, maxPromptRead>>20)
		}
		prompt = strings.TrimSpace(string(b))
		if prompt == "" {
			return usageErrorf("dispatch: the prompt from %s is empty", from)
		}
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
	if err := c.do(ctx, "POST", "/api/v1/tasks", api.CreateRequest{Repo: r, Prompt: prompt, Branch: *branch, Agent: *agentName, Mode: *mode}, &resp); err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.Status == http.StatusRequestEntityTooLarge {
			return fmt.Errorf("the server refused the prompt (%s) as too large; %s", byteSize(len(prompt)), strings.TrimPrefix(ae.Msg, "the server refused the request as too large: "))
		}
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

func byteSize(n int) string {
	switch {
	case n >= 1000<<10:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1000:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// exitError ends the program with a given exit code and message (printed
// by exitCode).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// Follow reconnects for this long without hearing from the server before
// it gives up; the wait between attempts doubles up to followMaxBackoff.
const (
	followRetryFor   = 2 * time.Minute
	followMinBackoff = 100 * time.Millisecond
	followMaxBackoff = 5 * time.Second
	// followHealthy is how long a stream must stay open, without new
	// events, to count as having worked.
	followHealthy = 10 * time.Second
)

// followTask prints a task's events until it comes to rest: live progress
// on a terminal, plain lines otherwise, JSON lines with --json. A broken
// stream (dropped connection, restarting server) is reopened with backoff
// and resumes after the last event shown (events carry their stream
// sequence as id; the server replays history first, so events already
// shown are skipped). It returns an *exitError saying how the task ended:
// nil for review or done, code 1 for failed or cancelled, 3 for
// needs_input, 130 when ctx ends (Ctrl-C).
func followTask(ctx context.Context, a *app, c *client, id string, asJSON bool) error {
	stopped := func() error {
		return &exitError{code: 130, msg: fmt.Sprintf("stopped following (task %s keeps running)", id)}
	}
	start, err := getTask(ctx, c, id)
	for deadline := time.Now().Add(10 * time.Second); err != nil && strings.HasPrefix(err.Error(), "no task") && time.Now().Before(deadline); {
		// Just dispatched: the scheduler may not have stored it yet.
		select {
		case <-ctx.Done():
			return stopped()
		case <-time.After(100 * time.Millisecond):
		}
		start, err = getTask(ctx, c, id)
	}
	if ctx.Err() != nil {
		return stopped()
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
	var (
		lastSeq   uint64
		streamErr error // an "error" event from the server
		reason    string
		// reconnecting is set while an outage lasts.
		reconnecting bool
	)
	handle := func(ev sseEvent) bool {
		if reconnecting {
			reconnecting = false
			p.notice(a.stderr, fmt.Sprintf("reconnected to the event stream of task %s", id))
		}
		if seq, err := strconv.ParseUint(ev.ID, 10, 64); err == nil {
			if seq <= lastSeq {
				return true // replayed history already shown
			}
			lastSeq = seq
		}
		if asJSON && ev.Event != "error" {
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
				if r.State.Resting() && r.Run >= start.Run {
					final, reason = r.State, r.Reason
					return false
				}
			}
		case "error":
			var msg string
			if json.Unmarshal(ev.Data, &msg) != nil {
				msg = string(ev.Data)
			}
			streamErr = fmt.Errorf("the server broke the event stream: %s", msg)
			return false
		}
		return true
	}
	path := "/api/v1/tasks/" + url.PathEscape(id) + "/events"
	retryFor := a.followRetry
	if retryFor <= 0 {
		retryFor = followRetryFor
	}
	var (
		failingSince time.Time
		backoff      = followMinBackoff
	)
	for {
		streamErr = nil
		lastID := ""
		if lastSeq > 0 {
			lastID = strconv.FormatUint(lastSeq, 10)
		}
		opened, seqBefore := time.Now(), lastSeq
		err := c.stream(ctx, path, lastID, handle)
		if final != "" {
			break
		}
		if ctx.Err() != nil {
			return stopped()
		}
		if err == nil {
			err = streamErr
		}
		if err == nil {
			err = errors.New("the server closed the event stream")
		}
		var ae *apiError
		if errors.As(err, &ae) && ae.Status < 500 && ae.Status != http.StatusTooManyRequests {
			return err // refused: retrying will not help
		}
		now := time.Now()
		if failingSince.IsZero() || lastSeq > seqBefore || now.Sub(opened) > followHealthy {
			// The stream worked since the last failure (new events, or it
			// stayed open a while): a new outage.
			p.notice(a.stderr, fmt.Sprintf("lost the event stream of task %s (%v); reconnecting", id, err))
			failingSince, backoff = now, followMinBackoff
		}
		reconnecting = true
		if now.Sub(failingSince) > retryFor {
			return fmt.Errorf("gave up following task %s after %s without the server (it may still be running): %w", id, retryFor, err)
		}
		select {
		case <-ctx.Done():
			return stopped()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, followMaxBackoff)
	}
	if p != nil {
		p.stop()
	}
	t, err := getTask(ctx, c, id)
	// The worker reports before the scheduler records: give the store a
	// moment to catch up so the summary shows the final state.
	for deadline := time.Now().Add(5 * time.Second); err == nil && t.State != final && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			err = ctx.Err()
			continue
		case <-time.After(50 * time.Millisecond):
		}
		t, err = getTask(ctx, c, id)
	}
	if err == nil && !asJSON {
		printTaskSummary(a.stdout, t)
	}
	switch final {
	case orchestrator.StateFailed:
		msg := fmt.Sprintf("task %s failed", id)
		if t.Error != "" {
			msg += ": " + t.Error
		}
		return &exitError{code: 1, msg: msg}
	case orchestrator.StateCancelled:
		return &exitError{code: 1, msg: fmt.Sprintf("task %s was cancelled", id)}
	case orchestrator.StateNeedsInput:
		msg := fmt.Sprintf("task %s needs input", id)
		if reason != "" {
			msg += " (" + reason + ")"
		}
		return &exitError{code: 3, msg: msg + fmt.Sprintf("; answer with: nightshift tasks message %s TEXT", id)}
	}
	return nil
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
	if t.Question != "" {
		fmt.Fprintf(w, "question: %s\n", t.Question)
	}
}

// taskSubs are the sub-commands of "nightshift tasks".
var taskSubs = []string{"ls", "show", "logs", "diff", "cancel", "retry", "message"}

const tasksUsage = `usage: nightshift tasks <command> [flags]

commands:
  ls [--state S] [--repo R] [--source S] [--limit N] [--before ID]   list tasks, newest first
  show ID                  show one task
  logs ID [-f]             print the task's log; -f follows it live until the task rests
  diff ID                  print the task's change as a unified diff
  cancel ID                cancel the task
  retry ID [--from-base]   run the task again, from its branch (or its base)
  message ID TEXT...       send a follow-up instruction (- reads it from stdin)

--server URL, --token T and --json work on every command, before or after it.
"nightshift tasks <command> --help" explains one command.

examples:
  nightshift tasks ls --state running,queued
  nightshift --json tasks show 01j9z8x7w6v5u4t3
  nightshift tasks logs -f 01j9z8x7w6v5u4t3
  nightshift tasks message 01j9z8x7w6v5u4t3 also update the changelog`

const tasksLsUsage = `usage: nightshift tasks ls [--state S[,S...]] [--repo R] [--source S] [--limit N] [--before ID] [--json]

Lists tasks, newest first.

flags:
  --state S    only tasks in these states (comma-separated): queued, provisioning,
               running, testing, pushing, review, done, needs_input, failed, cancelled
  --repo R     only tasks on this repository
  --source S   only tasks from github, gitlab, gitea, linear, slack, api or automation
  --limit N    how many tasks (default 50)
  --before ID  page cursor: tasks older than this one (printed as "more:")

examples:
  nightshift tasks ls
  nightshift tasks ls --state failed --json | jq -r '.[].id'`

const tasksLogsUsage = `usage: nightshift tasks logs ID [-f|--follow] [--json]

Prints the task's log. With -f, follows the task live (state changes and
log lines) until it comes to rest, like dispatch --follow, with the same
exit codes: 0 review or done, 1 failed or cancelled (or following failed),
3 needs input, 130 Ctrl-C (the task keeps running). A dropped connection or
a restarting server is retried with backoff for up to 2 minutes.

examples:
  nightshift tasks logs 01j9z8x7w6v5u4t3
  nightshift tasks logs -f 01j9z8x7w6v5u4t3 --json`

const tasksMessageUsage = `usage: nightshift tasks message ID TEXT...
       nightshift tasks message ID -          (text on stdin)

Sends a follow-up instruction: the task runs again with it. From the first
word of TEXT on, every word is text, even one that looks like a flag, except
the global flags --server, --token and --json, which are flags wherever they
appear before "--"; every word after "--" is text.

examples:
  nightshift tasks message 01j9z8x7w6v5u4t3 also cover the --dry-run flag
  nightshift tasks message 01j9z8x7w6v5u4t3 - < review-notes.md`

func runTasks(ctx context.Context, a *app, args []string) error {
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("tasks "+sub, flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs, a)
	var state, repo, source, before *string
	var limit *int
	var follow *bool
	var fromBase *bool
	var text func([]string) bool
	switch sub {
	case "ls", "list":
		state = fs.String("state", "", "only tasks in these states (comma-separated)")
		repo = fs.String("repo", "", "only tasks on this repository")
		source = fs.String("source", "", "only tasks from this source: github, gitlab, gitea, linear, slack, api or automation")
		before = fs.String("before", "", "page cursor: list tasks older than this task id")
		limit = fs.Int("limit", 50, "how many tasks")
	case "logs":
		follow = fs.Bool("f", false, "follow the log live")
		fs.BoolVar(follow, "follow", false, "follow the log live")
	case "message":
		text = func(pos []string) bool { return len(pos) > 1 }
	case "retry":
		fromBase = fs.Bool("from-base", false, "start over from the base branch, replacing the task's branch")
	case "show", "diff", "cancel":
	default:
		return usageErrorf("tasks: unknown command %q (want %s)", sub, strings.Join(taskSubs, ", "))
	}
	pos, err := parseFlags(a, fs, "tasks "+sub, args, text)
	if err != nil {
		return err
	}
	if sub == "ls" || sub == "list" {
		if len(pos) > 0 {
			return usageErrorf("tasks ls: unexpected argument %q (filters are flags: see nightshift tasks ls --help)", pos[0])
		}
	} else if len(pos) < 1 {
		return usageErrorf("tasks %s needs a task id", sub)
	} else if len(pos) > 1 && sub != "message" {
		return usageErrorf("tasks %s: unexpected argument %q after the task id", sub, pos[1])
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
	id := pos[0]
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
			text := strings.TrimSpace(strings.Join(pos[1:], " "))
			if len(pos) == 2 && pos[1] == "-" {
				b, err := io.ReadAll(io.LimitReader(a.stdin, maxPromptRead))
				if err != nil {
					return fmt.Errorf("read the message from stdin: %w", err)
				}
				text = strings.TrimSpace(string(b))
			}
			if text == "" {
				return usageErrorf("tasks message needs the text of the follow-up")
			}
			body = map[string]string{"text": text}
			action = "messages"
		}
		if sub == "retry" && *fromBase {
			body = map[string]bool{"from_base": true}
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
		if sub == "retry" && *fromBase {
			fmt.Fprintf(a.stdout, "task %s: retry requested, from the base branch (the task's branch is replaced)\n", id)
			return nil
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
	row("question", t.Question)
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

// notice writes a line to w (stderr) after clearing the status line, which
// the next tick redraws. p may be nil (--json).
func (p *progress) notice(w io.Writer, s string) {
	if p != nil {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.tty && p.drawn {
			io.WriteString(p.w, clearLine)
			p.drawn = false
		}
	}
	fmt.Fprintln(w, s)
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
