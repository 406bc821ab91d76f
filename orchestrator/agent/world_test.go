package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/nightshift/nightshift/orchestrator/agent"
	"github.com/nightshift/nightshift/orchestrator/agent/modelserver"
	"github.com/nightshift/nightshift/orchestrator/gateway"
	"github.com/nightshift/nightshift/sandbox"
	"github.com/nightshift/nightshift/sandbox/bwrap"
	"github.com/nightshift/nightshift/sandbox/process"
)

var driverFlag = flag.String("driver", "auto", "sandbox driver for agent runs: auto (bwrap when available), bwrap or process")

var record = flag.Bool("record", false, "write each agent run's stdout to testdata/<test>.stdout")

// world is everything an agent run talks to: a scripted model server
// behind the real gateway (with a random canary as the real API key), an MCP
// server, and a sandbox manager.
type world struct {
	t       *testing.T
	canary  string
	ms      *modelserver.Server
	gw      *gateway.Gateway
	gwAddr  string // host address of the gateway listener
	mcpAddr string
	mcpTok  string
	mcpSeen chan string // Authorization headers the MCP server saw on tool calls
	mgr     *sandbox.Manager
	root    string // the sandbox Dir: holds dir and home
	dir     string // the worktree
	home    string // the agent's private HOME (kept across runs of a task)
	trans   string // transcript dir
}

func newWorld(t *testing.T) *world {
	t.Helper()
	var b [16]byte
	_, _ = rand.Read(b[:])
	// The sandbox binds only Spec.Dir read-write and gives each run a fresh
	// tmpfs HOME, but a follow-up needs the agent's session files from the
	// previous run. So the sandbox Dir is a task root holding the worktree
	// and the private home, and the command starts with cd into the
	// worktree. (sandbox.Spec could grow a Home field to do this directly.)
	root := t.TempDir()
	w := &world{t: t, canary: "sk-canary-" + hex.EncodeToString(b[:]), mcpTok: "mcp-token-" + hex.EncodeToString(b[:4]),
		mcpSeen: make(chan string, 16), root: root, dir: filepath.Join(root, "wt"), home: filepath.Join(root, "home"), trans: t.TempDir()}
	for _, d := range []string{w.dir, w.home} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	w.ms = modelserver.New(modelserver.Config{})
	up := httptest.NewServer(w.ms)
	t.Cleanup(up.Close)
	key := func(context.Context) (string, error) { return w.canary, nil }
	gw, err := gateway.New(gateway.Config{
		Upstreams: map[string]gateway.Upstream{
			"anthropic": {BaseURL: up.URL, Key: key},
			"openai":    {BaseURL: up.URL + "/v1", Key: key},
		},
		TranscriptDir: w.trans,
	})
	if err != nil {
		t.Fatal(err)
	}
	w.gw = gw
	w.gwAddr = serve(t, gw)
	w.mcpAddr = serve(t, w.mcpServer())
	w.mgr = newManager(t)
	if err := os.WriteFile(filepath.Join(w.dir, "test.sh"), []byte("#!/bin/sh\ngrep -q 'hello nightshift' hello.txt && echo TESTS PASS\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return w
}

// newManager returns a sandbox manager over bubblewrap, or over the process
// driver when bubblewrap cannot run here.
func newManager(t *testing.T) *sandbox.Manager {
	t.Helper()
	var d sandbox.Driver
	var err error
	if *driverFlag != "process" {
		var bw *bwrap.Driver
		bw, err = bwrap.New(bwrap.Config{})
		if err == nil {
			err = bwrap.Available(context.Background())
		}
		if err == nil {
			d = bw
		} else if *driverFlag == "bwrap" {
			t.Fatalf("bubblewrap: %v", err)
		}
	}
	if d == nil {
		t.Logf("using the process driver (bubblewrap: %v)", err)
		d = process.New(process.Config{})
	}
	mgr, err := sandbox.NewManager(d, sandbox.Config{StateDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return mgr
}

// serve serves h on a loopback port for the test's lifetime.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// mcpServer is a streamable-HTTP MCP server with one tool, get_identity,
// that insists on the task's bearer token.
func (w *world) mcpServer() http.Handler {
	s := server.NewMCPServer("nightshift-test", "1.0.0", server.WithToolCapabilities(false))
	s.AddTool(mcp.NewTool("get_identity", mcp.WithDescription("Returns the task identity.")),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			auth := req.Header.Get("Authorization")
			select {
			case w.mcpSeen <- auth:
			default:
			}
			if auth != "Bearer "+w.mcpTok {
				return mcp.NewToolResultError("unauthorized"), nil
			}
			return mcp.NewToolResultText(`{"email":"agent-7@agents.localhost","name":"Nightshift Agent 7"}`), nil
		})
	h := server.NewStreamableHTTPServer(s, server.WithEndpointPath("/mcp"), server.WithStateLess(true))
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+w.mcpTok {
			http.Error(rw, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(rw, r)
	})
}

// freePorts returns n distinct loopback ports that are free right now. The
// process driver's forwards listen on the host's loopback, so parallel
// tests need distinct ports.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// request returns an agent request wired to the world through forwarded
// sandbox ports, with a fresh gateway registration for taskID.
func (w *world) request(taskID, prompt string, b gateway.Budget, hooks gateway.Hooks) (agent.Request, []sandbox.Forward) {
	ports := freePorts(w.t, 2)
	gwPort, mcpPort := ports[0], ports[1]
	tok := w.gw.Register(taskID, b, hooks)
	req := agent.Request{
		Prompt: prompt, Dir: w.dir, Home: w.home,
		GatewayURL: "http://127.0.0.1:" + strconv.Itoa(gwPort), GatewayToken: tok,
		MCPURL: "http://127.0.0.1:" + strconv.Itoa(mcpPort) + "/mcp", MCPToken: w.mcpTok,
	}
	fw := []sandbox.Forward{{Port: gwPort, Target: "tcp:" + w.gwAddr}, {Port: mcpPort, Target: "tcp:" + w.mcpAddr}}
	return req, fw
}

// sandboxRun is one sandboxed agent run's result.
type sandboxRun struct {
	run
	res sandbox.Result
	inv agent.Invocation
}

// lockedBuf is a goroutine-safe buffer.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runCLI runs the real CLI of kind ("claude" or "codex") as task taskID
// on prompt against the scripted model server, resuming session when set,
// read-only the way plan and answer runs are or read-write, and logs what
// it printed.
func (w *world) runCLI(ctx context.Context, kind, taskID, prompt, session string, readOnly bool) *sandboxRun {
	t := w.t
	t.Helper()
	a, err := agent.New(kind, nil)
	if err != nil {
		t.Fatal(err)
	}
	req, fw := w.request(taskID, prompt, gateway.Budget{}, gateway.Hooks{})
	req.Model, req.SessionID = map[string]string{"claude": claudeModel, "codex": codexModel}[kind], session
	var r *sandboxRun
	if readOnly {
		r = w.runReadOnly(ctx, a, req, fw)
	} else {
		r = w.runSandboxed(ctx, a, req, fw)
	}
	t.Logf("%s log:\n%s\nstderr:\n%s", taskID, r.log(), r.stderr)
	return r
}

// runSandboxed prepares req with a, writes the invocation's files into the
// private HOME and runs it in the sandbox, streaming stdout into the parser
// the way the orchestrator's worker does.
func (w *world) runSandboxed(ctx context.Context, a agent.Adapter, req agent.Request, fw []sandbox.Forward) *sandboxRun {
	return w.runLayout(ctx, a, req, fw, false)
}

// runReadOnly runs req the way the orchestrator runs a plan or an answer:
// the worktree is the sandbox's Dir bound read-only, the private HOME is
// bound read-write at bwrap.Home, and the adapter is asked for its
// read-only mode. It needs bubblewrap (the process driver cannot make a
// directory read-only).
func (w *world) runReadOnly(ctx context.Context, a agent.Adapter, req agent.Request, fw []sandbox.Forward) *sandboxRun {
	req.ReadOnly = true
	return w.runLayout(ctx, a, req, fw, true)
}

func (w *world) runLayout(ctx context.Context, a agent.Adapter, req agent.Request, fw []sandbox.Forward, readOnly bool) *sandboxRun {
	t := w.t
	t.Helper()
	hostHome := req.Home
	if readOnly {
		req.Home = bwrap.Home
	}
	inv, err := a.Prepare(req)
	if err != nil {
		t.Fatal(err)
	}
	for rel, content := range inv.Files {
		p := filepath.Join(hostHome, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := &sandboxRun{inv: inv}
	var mu sync.Mutex
	p := a.NewParser(func(l agent.Line) {
		mu.Lock()
		r.lines = append(r.lines, l)
		mu.Unlock()
	})
	var stdout, stderr lockedBuf
	env := map[string]string{"PATH": "/usr/local/bin:/usr/bin:/bin"}
	for k, v := range inv.Env {
		env[k] = v
	}
	spec := sandbox.Spec{
		ID: strings.ReplaceAll(t.Name(), "/", "_"), Dir: w.root,
		Command: append([]string{"/bin/sh", "-c", `cd "$0" && exec "$@"`, req.Dir}, inv.Argv...), Env: env,
		Stdin: strings.NewReader(inv.Stdin), Stdout: io2(&stdout, p), Stderr: &stderr,
		Timeout: 60 * time.Second, Forwards: fw,
	}
	if readOnly {
		spec.Dir, spec.DirReadOnly, spec.Home, spec.Command = w.dir, true, hostHome, inv.Argv
	}
	res, err := w.mgr.Run(ctx, spec)
	if err != nil {
		t.Fatalf("sandbox run: %v", err)
	}
	r.res, r.exit = res, res.ExitCode
	r.outcome = p.Outcome(res.ExitCode)
	r.stdout, r.stderr = stdout.String(), stderr.String()
	if *record {
		name := filepath.Join("testdata", strings.ReplaceAll(t.Name(), "/", "_")+".stdout")
		if err := os.WriteFile(name, []byte(r.stdout), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// checkCanary fails if the real API key appears in the invocation, the
// worktree, the agent's HOME, its output or the transcripts, and insists
// that the upstream did receive it (so the check can fail).
func (w *world) checkCanary(runs ...*sandboxRun) {
	t := w.t
	t.Helper()
	sawKey := false
	for _, r := range w.ms.Requests() {
		if r.Header.Get("X-Api-Key") == w.canary || r.Header.Get("Authorization") == "Bearer "+w.canary {
			sawKey = true
		}
	}
	if !sawKey {
		t.Errorf("the upstream never received the real key")
	}
	for _, r := range runs {
		for k, v := range r.inv.Env {
			if strings.Contains(v, w.canary) {
				t.Errorf("canary in sandbox env %s", k)
			}
		}
		if strings.Contains(strings.Join(r.inv.Argv, " "), w.canary) {
			t.Errorf("canary in argv")
		}
		for _, s := range []string{r.stdout, r.stderr, r.log()} {
			if strings.Contains(s, w.canary) {
				t.Errorf("canary in agent output")
			}
		}
	}
	for _, root := range []string{w.dir, w.home, w.trans} {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(w.canary)) {
				t.Errorf("canary in file %s", p)
			}
			return nil
		})
	}
}

func (w *world) checkScript() {
	w.t.Helper()
	for _, e := range w.ms.Errors() {
		w.t.Error(e)
	}
}
