package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nightshift/nightshift/ingress/api"
	"github.com/nightshift/nightshift/orchestrator"
)

// cliRun runs the program in-process and returns stdout, stderr (with the
// final error printed the way main prints it) and the exit code.
func cliRun(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), append([]string{"nightshift"}, args...), baseEnv(t), strings.NewReader(stdin), &out, &errb)
	code = exitCode(err, &errb)
	return out.String(), errb.String(), code
}

func TestGlobalFlagsBeforeBetweenAndAfter(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, tokenYAML)
	origin := newOrigin(t)
	srv, tok := "--server="+s.URL, "--token=adm1n-token"
	for _, args := range [][]string{
		{srv, tok, "--json", "tasks", "ls"},
		{"--server", s.URL, "tasks", "--token", "adm1n-token", "--json", "ls"},
		{"tasks", srv, "--json", "ls", tok},
		{"tasks", "ls", "--json", srv, tok},
		{"--server=http://127.0.0.1:1", "--json", "tasks", "ls", srv, tok}, // the later one wins
		{"--json", "--", "tasks", "ls", srv, tok},
	} {
		out, errOut, code := cliRun(t, "", args...)
		var list []orchestrator.Task
		if code != 0 || json.Unmarshal([]byte(out), &list) != nil {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}

	// A flag-looking word after the first prompt word is prompt text:
	// dispatch returns at once (no --follow) with the whole sentence.
	out, errOut, code := cliRun(t, "", srv, tok, "--json", "dispatch", "--repo", origin, "--agent", "fail", "make", "the", "--follow", "flag", "faster")
	var created api.CreateResponse
	if code != 0 || json.Unmarshal([]byte(out), &created) != nil || created.ID == "" {
		t.Fatalf("dispatch: exit %d %q %q", code, out, errOut)
	}
	if !strings.Contains(errOut, `"--follow" is part of the prompt`) {
		t.Errorf("no note about --follow in the prompt: %q", errOut)
	}
	if got := s.taskAuth(t, created.ID).Prompt; got != "make the --follow flag faster" {
		t.Errorf("prompt %q", got)
	}
	// "--" ends the flags: the prompt may start with a dash.
	out, errOut, code = cliRun(t, "", "dispatch", srv, tok, "--json", "--repo", origin, "--agent", "fail", "--", "--help", "is", "a", "prompt")
	if code != 0 || json.Unmarshal([]byte(out), &created) != nil {
		t.Fatalf("dispatch --: exit %d %q %q", code, out, errOut)
	}
	if got := s.taskAuth(t, created.ID).Prompt; got != "--help is a prompt" {
		t.Errorf("prompt after --: %q", got)
	}
	// The prompt from stdin, with flags after the "-".
	out, errOut, code = cliRun(t, "fix the\nthing\n", "dispatch", "--repo", origin, "-", "--agent", "fail", "--json", srv, tok)
	if code != 0 || json.Unmarshal([]byte(out), &created) != nil {
		t.Fatalf("dispatch -: exit %d %q %q", code, out, errOut)
	}
	if got := s.taskAuth(t, created.ID).Prompt; got != "fix the\nthing" {
		t.Errorf("prompt from stdin: %q", got)
	}
	// A global flag the command does not take is an error after it.
	_, errOut, code = cliRun(t, "", "vault", "ls", srv)
	if code != 2 || !strings.Contains(errOut, "unknown flag") {
		t.Errorf("vault ls --server: exit %d %q", code, errOut)
	}
}

// taskAuth reads a task with the admin token of tokenYAML.
func (s *testServer) taskAuth(t *testing.T, id string) orchestrator.Task {
	t.Helper()
	out, errOut, code := cliRun(t, "", "--server", s.URL, "--token", "adm1n-token", "--json", "tasks", "show", id)
	var task orchestrator.Task
	if code != 0 || json.Unmarshal([]byte(out), &task) != nil {
		t.Fatalf("tasks show %s: exit %d %q %q", id, code, out, errOut)
	}
	return task
}

func TestHelpOnEveryCommand(t *testing.T) {
	t.Parallel()
	var invocations [][]string
	for _, verb := range verbNames() {
		invocations = append(invocations, []string{verb, "--help"}, []string{verb, "-h"}, []string{"help", verb}, []string{"--help", verb})
		for _, sub := range complSubs()[verb] {
			invocations = append(invocations, []string{verb, sub, "--help"}, []string{verb, sub, "-h"}, []string{"help", verb, sub})
		}
	}
	invocations = append(invocations, []string{"--help"}, []string{"-h"}, []string{"help"},
		[]string{"tasks", "--json", "-h"}, []string{"--server", "http://x", "tasks", "logs", "ID", "-f", "--help"})
	for _, args := range invocations {
		out, errOut, code := cliRun(t, "", args...)
		if code != 0 || errOut != "" || !strings.HasPrefix(out, "usage:") || !strings.Contains(out, "example") {
			t.Errorf("%q: exit %d, stderr %q, stdout:\n%s", args, code, errOut, out)
		}
	}
	// A sub-command with its own text gets it, not its command's.
	out, _, _ := cliRun(t, "", "tasks", "logs", "--help")
	if !strings.HasPrefix(out, "usage: nightshift tasks logs") || !strings.Contains(out, "130") {
		t.Errorf("tasks logs --help:\n%s", out)
	}
	out, _, _ = cliRun(t, "", "dispatch", "-h")
	for _, want := range []string{"--prompt-file", "every word is prompt text", "130", "needs input"} {
		if !strings.Contains(out, want) {
			t.Errorf("dispatch --help lacks %q:\n%s", want, out)
		}
	}
	// -h after "--" or inside a prompt is not a request for help.
	_, errOut, code := cliRun(t, "", "dispatch", "--repo", "/nonexistent-repo", "explain", "-h")
	if code != 1 || !strings.Contains(errOut, "does not exist") {
		t.Errorf("dispatch with -h in the prompt: exit %d %q", code, errOut)
	}
}

func TestBadUsageIsOneSentence(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "missing command"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"tasks"}, "tasks: missing command"},
		{[]string{"tasks", "frob"}, `tasks: unknown command "frob"`},
		{[]string{"vault", "frob"}, `vault: unknown command "frob"`},
		{[]string{"--frob", "tasks", "ls"}, "unknown flag --frob before the command"},
		{[]string{"tasks", "--frob", "ls"}, "tasks: unknown flag --frob"},
		{[]string{"tasks", "ls", "--frob"}, "tasks ls: unknown flag --frob"},
		{[]string{"dispatch", "--repo"}, "flag --repo needs a value"},
		{[]string{"dispatch", "--frob", "x"}, "dispatch: unknown flag --frob"},
		{[]string{"dispatch", "--repo", "."}, "dispatch needs a prompt"},
		{[]string{"tasks", "show"}, "tasks show needs a task id"},
		{[]string{"tasks", "show", "a", "b"}, `unexpected argument "b"`},
		{[]string{"--server"}, "flag --server needs a value"},
		{[]string{"version", "extra"}, `unexpected argument "extra"`},
		{[]string{"completion", "tcsh"}, `unknown shell "tcsh"`},
		{[]string{"identity", "ls", "--frob"}, "identity ls: unknown flag --frob"},
		{[]string{"hooks", "replay", "--frob"}, "hooks replay: unknown flag --frob"},
		{[]string{"vault", "ls", "--frob"}, "vault ls: unknown flag --frob"},
		{[]string{"vault", "get", "--version"}, "vault get: flag --version needs a value"},
	} {
		out, errOut, code := cliRun(t, "", tc.args...)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		last := lines[len(lines)-1]
		if code != 2 || !strings.Contains(last, tc.want) {
			t.Errorf("%q: exit %d, stderr %q, want %q", tc.args, code, errOut, tc.want)
		}
		// One sentence: only the missing command prints the command list.
		if len(tc.args) > 0 && (len(lines) != 1 || out != "") {
			t.Errorf("%q: more than one line of output: stdout %q stderr %q", tc.args, out, errOut)
		}
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	bi := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/nightshift/nightshift", Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "57fd1704e4514f8b706e35b7a569a1d950fba554"},
			{Key: "vcs.time", Value: "2026-12-06T04:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	for _, tc := range []struct {
		bi       *debug.BuildInfo
		override string
		want     string
	}{
		{bi, "", "nightshift (devel) (revision 57fd1704e451+dirty, 2026-12-06T04:00:00Z)"},
		{&debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}, "", "nightshift v1.4.0"},
		{bi, "v2.0.0-rc1", "nightshift v2.0.0-rc1 (revision 57fd1704e451+dirty, 2026-12-06T04:00:00Z)"},
		{nil, "", "nightshift (devel)"},
	} {
		if got := versionOf(tc.bi, tc.override).String(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
	// The command prints what the running binary's build info says.
	own, _ := debug.ReadBuildInfo()
	want := versionOf(own, version).String() + "\n"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		if out, errOut, code := cliRun(t, "", args...); code != 0 || out != want {
			t.Errorf("%q: exit %d %q %q, want %q", args, code, out, errOut, want)
		}
	}
	for _, args := range [][]string{{"version", "--json"}, {"--version", "--json"}, {"--json", "--version"}, {"--json", "version"}} {
		out, errOut, code := cliRun(t, "", args...)
		var v buildVersion
		if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v != versionOf(own, version) {
			t.Errorf("%q: exit %d %q %q", args, code, out, errOut)
		}
	}
}

// promptAPI is a stand-in for POST /api/v1/tasks that records the prompts
// it receives, or answers 413 past limit bytes of body.
func promptAPI(t *testing.T, limit int64) (*httptest.Server, func() []string) {
	var mu sync.Mutex
	var prompts []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/api/v1/tasks" {
			http.NotFound(w, r)
			return
		}
		var req api.CreateRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit)).Decode(&req); err != nil {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			io.WriteString(w, `{"error":"request body too large"}`)
			return
		}
		mu.Lock()
		prompts = append(prompts, req.Prompt)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(api.CreateResponse{ID: "t1", State: orchestrator.StateQueued})
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(prompts)
	}
}

func TestDispatchPromptFromStdinAndFile(t *testing.T) {
	t.Parallel()
	srv, prompts := promptAPI(t, 4<<20)
	dir := t.TempDir()
	file := filepath.Join(dir, "prompt.md")
	os.WriteFile(file, []byte("# Task\n\nfix --everything\n"), 0o644)
	empty := filepath.Join(dir, "empty.md")
	os.WriteFile(empty, []byte(" \n\n"), 0o644)
	big := strings.Repeat("0123456789abcde\n", 1<<16) // 1 MiB
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"from stdin\n", []string{"-"}, "from stdin"},
		{"from stdin too", []string{"-", "--agent", "x"}, "from stdin too"},
		{"", []string{"--prompt-file", file}, "# Task\n\nfix --everything"},
		{"dash file", []string{"--prompt-file", "-"}, "dash file"},
		{big, []string{"-"}, strings.TrimSpace(big)},
	} {
		before := len(prompts())
		_, errOut, code := cliRun(t, tc.stdin, append([]string{"dispatch", "--server", srv.URL, "--repo", "https://example.com/r.git"}, tc.args...)...)
		got := prompts()
		if code != 0 || len(got) != before+1 || got[before] != tc.want {
			t.Errorf("%q: exit %d %q; prompts received %d, want %d bytes", tc.args, code, errOut, len(got)-before, len(tc.want))
		}
	}
	// Refused before anything is sent: exit 2, one sentence.
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"  \n", []string{"-"}, "the prompt from stdin is empty"},
		{"", []string{"--prompt-file", empty}, "is empty"},
		{"", []string{"--prompt-file", filepath.Join(dir, "missing")}, "no such file"},
		{"x", []string{"-", "more", "words"}, `remove the words after "-"`},
		{"", []string{"--prompt-file", file, "and", "words"}, "not both"},
	} {
		before := len(prompts())
		_, errOut, code := cliRun(t, tc.stdin, append([]string{"dispatch", "--server", srv.URL, "--repo", "https://example.com/r.git"}, tc.args...)...)
		if code != 2 || !strings.Contains(errOut, tc.want) || strings.Count(errOut, "\n") != 1 || len(prompts()) != before {
			t.Errorf("%q: exit %d %q, want %q", tc.args, code, errOut, tc.want)
		}
	}
	// A server that finds the prompt too large answers 413.
	small, _ := promptAPI(t, 64<<10)
	_, errOut, code := cliRun(t, big, "dispatch", "--server", small.URL, "--repo", "https://example.com/r.git", "-")
	if code != 1 || !strings.Contains(errOut, "refused the prompt (1.0 MiB) as too large; request body too large") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("413: exit %d %q", code, errOut)
	}
}

// cutProxy forwards loopback TCP connections to a server and can drop them
// all, or stop listening for a while and listen again on the same port.
type cutProxy struct {
	t       *testing.T
	target  string
	addr    string
	mu      sync.Mutex
	ln      net.Listener
	conns   map[net.Conn]bool
	dialed  int
	stopped chan struct{}
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	p := &cutProxy{t: t, target: strings.TrimPrefix(target, "http://"), conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() { p.pause(); p.cut() })
	return p
}

func (p *cutProxy) URL() string { return "http://" + p.addr }

func (p *cutProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[up] = true, true
			p.dialed++
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
}

// cut closes every open connection, as a restarting server would.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// pause stops listening: connections are refused until resume.
func (p *cutProxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
}

func (p *cutProxy) resume() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("listen again on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

func (p *cutProxy) connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dialed
}

// followGated starts `dispatch --follow` of a gated task through url and
// waits until its agent runs. It returns the task id and the result.
func followGated(t *testing.T, ctx context.Context, url, origin string, stdout, stderr *syncBuffer, extra ...string) (string, <-chan error) {
	t.Helper()
	done := make(chan error, 1)
	args := append([]string{"nightshift", "--server", url, "dispatch", "--repo", origin, "--agent", "gated", "--follow"}, extra...)
	args = append(args, "write hello")
	go func() { done <- run(ctx, args, baseEnv(t), strings.NewReader(""), stdout, stderr) }()
	id := waitOutput(t, stdout, regexp.MustCompile(`task ([0-9a-z]{16}) queued`), "task id")[1]
	waitOutput(t, stdout, regexp.MustCompile(`waiting for the test to open the gate`), "agent started")
	return id, done
}

func waitDone(t *testing.T, done <-chan error, out *syncBuffer) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(90 * time.Second):
		t.Fatalf("follow did not end:\n%s", out.String())
	}
	return nil
}

func TestFollowSurvivesADroppedConnection(t *testing.T) {
	t.Parallel()
	yaml, gates := gatedYAML(t)
	s := startTestServer(t, yaml)
	origin := newOrigin(t)
	p := newCutProxy(t, s.URL)
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	id, done := followGated(t, context.Background(), p.URL(), origin, stdout, stderr)

	// The connection drops and the server is unreachable for a while; the
	// task moves on meanwhile.
	p.pause()
	p.cut()
	waitOutput(t, stderr, regexp.MustCompile(`lost the event stream of task `+id+`.*reconnecting`), "reconnect notice")
	openGate(t, gates, id)
	s.waitState(t, id, 60*time.Second, orchestrator.StateReview)
	before := p.connections()
	p.resume()
	err := waitDone(t, done, stdout)
	if code := exitCode(err, io.Discard); code != 0 {
		t.Fatalf("follow ended with %v (exit %d)\nstdout:\n%s\nstderr:\n%s", err, code, stdout, stderr)
	}
	if p.connections() <= before {
		t.Errorf("follow did not reconnect through the proxy")
	}
	got := stdout.String()
	// Resumed after the last event shown: nothing twice, nothing missing.
	for _, line := range []string{"agent  | waiting for the test to open the gate", "agent  | writing hello.go", "==> running (agent gated)", "==> review"} {
		if n := strings.Count(got, line); n != 1 {
			t.Errorf("%q shown %d times:\n%s", line, n, got)
		}
	}
	if !strings.Contains(got, "task "+id+": review") {
		t.Errorf("no summary:\n%s", got)
	}
	if !strings.Contains(stderr.String(), "reconnected to the event stream of task "+id) {
		t.Errorf("stderr: %s", stderr)
	}

	// The same through tasks logs -f, with a connection cut mid-stream
	// and the proxy still listening.
	stdout2, stderr2 := &syncBuffer{}, &syncBuffer{}
	id2, done2 := followGated(t, context.Background(), s.URL, origin, &syncBuffer{}, &syncBuffer{})
	logsDone := make(chan error, 1)
	go func() {
		logsDone <- run(context.Background(), []string{"nightshift", "tasks", "logs", id2, "-f", "--json", "--server", p.URL()}, baseEnv(t), strings.NewReader(""), stdout2, stderr2)
	}()
	waitOutput(t, stdout2, regexp.MustCompile(`waiting for the test to open the gate`), "logs -f started")
	p.cut()
	waitOutput(t, stderr2, regexp.MustCompile(`reconnected to the event stream`), "reconnected")
	openGate(t, gates, id2)
	if err := waitDone(t, logsDone, stdout2); err != nil {
		t.Fatalf("logs -f: %v\n%s\n%s", err, stdout2, stderr2)
	}
	if err := waitDone(t, done2, stdout2); err != nil {
		t.Fatalf("dispatch --follow: %v", err)
	}
	if n := strings.Count(stdout2.String(), "waiting for the test to open the gate"); n != 1 {
		t.Errorf("log line shown %d times after the reconnect:\n%s", n, stdout2)
	}
}

func TestFollowExitCodes(t *testing.T) {
	t.Parallel()
	yaml, gates := gatedYAML(t)
	s := startTestServer(t, yaml)
	origin := newOrigin(t)

	// Ctrl-C: stop following, say so, exit 130; the task keeps running.
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	id, done := followGated(t, ctx, s.URL, origin, stdout, stderr)
	cancel()
	err := waitDone(t, done, stdout)
	var msg bytes.Buffer
	if code := exitCode(err, &msg); code != 130 || msg.String() != "nightshift: stopped following (task "+id+" keeps running)\n" {
		t.Fatalf("Ctrl-C: exit %d %q", code, msg.String())
	}
	if strings.Contains(stderr.String()+stdout.String(), "cannot reach") {
		t.Errorf("Ctrl-C reported as unreachable:\n%s\n%s", stdout, stderr)
	}
	if st := s.task(t, id).State; st != orchestrator.StateRunning {
		t.Errorf("task %s after Ctrl-C: %s", id, st)
	}
	openGate(t, gates, id)
	s.waitState(t, id, 60*time.Second, orchestrator.StateReview)
	// Following a task already in review: exit 0.
	if _, errOut, code := cliRun(t, "", "--server", s.URL, "tasks", "logs", "-f", id); code != 0 {
		t.Errorf("logs -f of a task in review: exit %d %q", code, errOut)
	}

	// A failed task: exit 1 with the reason.
	out, errOut, code := cliRun(t, "", "--server", s.URL, "dispatch", "--repo", origin, "--agent", "fail", "--follow", "break it")
	if code != 1 || !regexp.MustCompile(`nightshift: task [0-9a-z]{16} failed`).MatchString(errOut) || !strings.Contains(out, ": failed") {
		t.Errorf("failed task: exit %d\n%s\n%s", code, out, errOut)
	}

	// A cancelled task: exit 1.
	stdout, stderr = &syncBuffer{}, &syncBuffer{}
	id, done = followGated(t, context.Background(), s.URL, origin, stdout, stderr)
	if _, errOut, code := cliRun(t, "", "--server", s.URL, "tasks", "cancel", id); code != 0 {
		t.Fatalf("cancel: %d %q", code, errOut)
	}
	err = waitDone(t, done, stdout)
	msg.Reset()
	if code := exitCode(err, &msg); code != 1 || !strings.Contains(msg.String(), "task "+id+" was cancelled") {
		t.Errorf("cancelled task: exit %d %q", code, msg.String())
	}
}

func TestCompletionScripts(t *testing.T) {
	t.Parallel()
	for _, shell := range []string{"bash", "zsh", "fish"} {
		out, errOut, code := cliRun(t, "", "completion", shell)
		if code != 0 || errOut != "" {
			t.Fatalf("completion %s: exit %d %q", shell, code, errOut)
		}
		for _, want := range append(verbNames(), "prompt-file", "rotate-key", "follow", "data-dir") {
			if !strings.Contains(out, want) {
				t.Errorf("%s script lacks %q", shell, want)
			}
		}
		if path, err := exec.LookPath(shell); err == nil && shell != "bash" {
			cmd := exec.Command(path, "-n")
			cmd.Stdin = strings.NewReader(out)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s -n: %v\n%s", shell, err, b)
			}
		}
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	script, _, _ := cliRun(t, "", "completion", "bash")
	f := filepath.Join(t.TempDir(), "nightshift.bash")
	os.WriteFile(f, []byte(script), 0o644)
	for _, tc := range []struct {
		words []string
		want  []string
	}{
		{[]string{"ta"}, []string{"tasks"}},
		{[]string{"--server", "http://x", "ta"}, []string{"tasks"}},
		{[]string{"tasks", ""}, []string{"ls", "show", "logs", "diff", "cancel", "retry", "message", "--server", "--token", "--json", "--help"}},
		{[]string{"tasks", "--json", "l"}, []string{"ls", "logs"}},
		{[]string{"tasks", "logs", "--f"}, []string{"--follow"}},
		{[]string{"dispatch", "--pr"}, []string{"--prompt-file"}},
		{[]string{"vault", "set", "--s"}, []string{"--scope"}},
		{[]string{"completion", ""}, []string{"bash", "zsh", "fish", "--help"}},
		{[]string{"--j"}, []string{"--json"}},
	} {
		cmd := exec.Command(bash, "--norc", "-c", `source "$1"; shift; COMP_WORDS=(nightshift "$@"); COMP_CWORD=$#; _nightshift; printf '%s\n' "${COMPREPLY[@]}"`, "x", f)
		cmd.Args = append(cmd.Args, tc.words...)
		b, err := cmd.CombinedOutput()
		got := strings.Fields(string(b))
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("complete %q: got %q (%v), want %q", tc.words, got, err, tc.want)
		}
	}
}

// TestCompletionFlagsExist checks every flag completion offers is one the
// command accepts: passing it must not be an unknown flag.
func TestCompletionFlagsExist(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	for key, flags := range complFlags {
		if key == "" || key == "ravi" {
			continue
		}
		for _, f := range flags {
			if f == "help" {
				continue
			}
			args := append([]string{"--server", "http://127.0.0.1:1", "--data-dir", dataDir}, strings.Fields(key)...)
			if verb := strings.Fields(key)[0]; complSubs()[verb] != nil && len(strings.Fields(key)) == 1 {
				args = append(args, complSubs()[verb][0])
			}
			name := "--" + f
			if len(f) == 1 {
				name = "-" + f
			}
			args = append(args, name)
			if key == "version" || key == "completion" {
				continue // run for real: nothing to check
			}
			_, errOut, _ := cliRun(t, "", args...)
			if strings.Contains(errOut, "unknown flag") || strings.Contains(errOut, "not defined") {
				t.Errorf("%q: %s", args, errOut)
			}
		}
	}
}

// TestFollowRetriesAreBounded follows a task on a stand-in API whose
// event stream misbehaves: an "error" event is a broken stream to reopen
// (not the end of the task), a 503 is retried until the bound, and a
// refusal (401) is not retried.
func TestFollowRetriesAreBounded(t *testing.T) {
	t.Parallel()
	task := orchestrator.Task{ID: "t1", State: orchestrator.StateRunning, Run: 1}
	state := func(seq int, s orchestrator.State) string {
		b, _ := json.Marshal(orchestrator.StateReport{TaskID: "t1", Run: 1, State: s})
		return "id: " + strconv.Itoa(seq) + "\nevent: state\ndata: " + string(b) + "\n\n"
	}
	var mu sync.Mutex
	var streams int
	fake := func(events func(n int, w http.ResponseWriter)) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/api/v1/tasks/t1":
				t := task
				mu.Lock()
				if streams > 1 { // the stand-in's task rests after the second stream
					t.State = orchestrator.StateReview
				}
				mu.Unlock()
				json.NewEncoder(w).Encode(t)
			case "/api/v1/tasks/t1/events":
				mu.Lock()
				streams++
				n := streams
				mu.Unlock()
				events(n, w)
			default:
				http.NotFound(w, r)
			}
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	follow := func(srv *httptest.Server) (string, string, error) {
		mu.Lock()
		streams = 0
		mu.Unlock()
		var out, errb bytes.Buffer
		a := &app{env: map[string]string{}, stdin: strings.NewReader(""), stdout: &out, stderr: &errb, followRetry: 300 * time.Millisecond}
		err := followTask(context.Background(), a, &client{base: srv.URL, hc: &http.Client{}}, "t1", false)
		return out.String(), errb.String(), err
	}

	errorThenReview := fake(func(n int, w http.ResponseWriter) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, state(1, orchestrator.StateRunning))
		if n == 1 {
			io.WriteString(w, "event: error\ndata: \"consumer deleted\"\n\n")
			return
		}
		io.WriteString(w, state(2, orchestrator.StateReview))
	})
	out, errOut, err := follow(errorThenReview)
	if err != nil || strings.Count(out, "==> running") != 1 || !strings.Contains(out, "==> review") {
		t.Errorf("error event: %v\n%s\n%s", err, out, errOut)
	}
	if !strings.Contains(errOut, "consumer deleted") || !strings.Contains(errOut, "reconnected") {
		t.Errorf("error event: stderr %q", errOut)
	}

	// A stream that only ever replays what was shown and breaks is no
	// progress: bounded too.
	errorAlways := fake(func(n int, w http.ResponseWriter) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, state(1, orchestrator.StateRunning))
		io.WriteString(w, "event: error\ndata: \"consumer deleted\"\n\n")
	})
	_, _, err = follow(errorAlways)
	if code := exitCode(err, io.Discard); code != 1 || !strings.Contains(err.Error(), "gave up following task t1") {
		t.Errorf("error events forever: exit %d, %v", code, err)
	}

	unavailable := fake(func(n int, w http.ResponseWriter) {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":"not ready"}`)
	})
	_, _, err = follow(unavailable)
	mu.Lock()
	tries := streams
	mu.Unlock()
	if code := exitCode(err, io.Discard); code != 1 || !strings.Contains(err.Error(), "gave up following task t1 after 300ms") || tries < 2 {
		t.Errorf("503: exit %d, %v, %d tries", code, err, tries)
	}

	refused := fake(func(n int, w http.ResponseWriter) {
		w.WriteHeader(http.StatusUnauthorized)
	})
	_, _, err = follow(refused)
	mu.Lock()
	tries = streams
	mu.Unlock()
	if err == nil || !strings.Contains(err.Error(), "refused the token") || tries != 1 {
		t.Errorf("401: %v after %d tries", err, tries)
	}
}

// TestInterruptIsNotUnreachable: Ctrl-C during a request says so and exits
// 130, instead of blaming the server.
func TestInterruptIsNotUnreachable(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"nightshift", "tasks", "ls", "--server", srv.URL}, baseEnv(t), strings.NewReader(""), io.Discard, io.Discard)
	}()
	<-arrived
	cancel()
	var msg bytes.Buffer
	if code := exitCode(<-done, &msg); code != 130 || msg.String() != "nightshift: interrupted\n" {
		t.Errorf("exit %d %q", code, msg.String())
	}
}

// TestGlobalDataDirReachesVault: --data-dir and --json before "vault" (or
// between it and its sub-command) are handed to it.
func TestGlobalDataDirReachesVault(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	if _, errOut, code := cliRun(t, "s3cret\n", "--data-dir", dir, "vault", "set", "API_KEY"); code != 0 {
		t.Fatalf("vault set: exit %d %q", code, errOut)
	}
	for _, args := range [][]string{{"--data-dir", dir, "--json", "vault", "ls"}, {"vault", "--data-dir=" + dir, "--json", "ls"}, {"--server", "http://ignored", "vault", "ls", "--json", "--data-dir", dir}} {
		out, errOut, code := cliRun(t, "", args...)
		if code != 0 || !json.Valid([]byte(out)) || !strings.Contains(out, "API_KEY") {
			t.Errorf("%q: exit %d %q %q", args, code, out, errOut)
		}
	}
}

// TestGlobalFlagsAmongPromptWords: --server, --token and --json after the
// first word of a dispatch prompt or a follow-up message are flags, never
// text the agent reads (the CLI has no server or token from its
// environment here, so ignoring them fails the call); a command's own flag
// there and any word after "--" stay text; a global flag the command does
// not take is refused rather than sent.
func TestGlobalFlagsAmongPromptWords(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, `
sandbox: {driver: process}
identity: {smtp_listen: "127.0.0.1:0"}
api: {tokens: ["adm1n-token"]}
agents:
  echo: {command: ["sh", "-c", "echo \"$NIGHTSHIFT_PROMPT\" >> NOTES.md"]}
repos:
  - match: "*"
    test: "true"
    timeout: 2m
`)
	origin := newOrigin(t)
	out, errOut, code := cliRun(t, "", "dispatch", "--repo", origin, "--agent", "echo", "first", "--token", "adm1n-token", "--follow", "line", "--server="+s.URL, "--json")
	var created api.CreateResponse
	if code != 0 || json.Unmarshal([]byte(out), &created) != nil || created.ID == "" {
		t.Fatalf("dispatch with global flags after the prompt: exit %d %q %q", code, out, errOut)
	}
	if got := s.taskAuth(t, created.ID).Prompt; got != "first --follow line" {
		t.Fatalf("prompt %q, want %q", got, "first --follow line")
	}
	waitRun := func(run int) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			task := s.taskAuth(t, created.ID)
			if task.Run == run && task.State == orchestrator.StateReview {
				return
			}
			if task.Run == run && task.State == orchestrator.StateFailed || time.Now().After(deadline) {
				t.Fatalf("run %d: state %s (run %d) error %q", run, task.State, task.Run, task.Error)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitRun(1)

	out, errOut, code = cliRun(t, "", "tasks", "message", created.ID, "second", "--json", "line", "--token", "adm1n-token", "--server", s.URL, "--", "--token", "kept")
	if code != 0 || !json.Valid([]byte(out)) {
		t.Fatalf("tasks message with global flags after the text: exit %d %q %q", code, out, errOut)
	}
	waitRun(2)
	if got := gitRun(t, origin, "show", "nightshift/"+created.ID+":NOTES.md"); got != "first --follow line\nsecond line --token kept" {
		t.Fatalf("the agent read %q", got)
	}

	for _, args := range [][]string{
		{"dispatch", "--repo", origin, "fix", "it", "--data-dir", "/tmp"},
		{"tasks", "message", created.ID, "hi", "--token"},
		{"tasks", "message", created.ID, "hi", "--json=maybe"},
	} {
		_, errOut, code := cliRun(t, "", append([]string{"--server=" + s.URL, "--token=adm1n-token"}, args...)...)
		if code != 2 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%q: exit %d, stderr %q; want 2 and one sentence", args, code, errOut)
		}
	}
}
