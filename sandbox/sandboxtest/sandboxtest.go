// Package sandboxtest is the conformance suite every sandbox.Driver runs.
// A driver's test package calls Main from TestMain and Run from a test:
//
//	func TestMain(m *testing.M) { sandboxtest.Main(m) }
//	func TestConformance(t *testing.T) { sandboxtest.Run(t, newDriver, sandboxtest.Options{Isolated: true}) }
package sandboxtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nightshift/nightshift/sandbox"
)

// Options says what a driver claims beyond the portable contract.
type Options struct {
	// Isolated drivers hide host paths outside the mounts, cut the network
	// unless AllowHosts or Forwards say otherwise, enforce ReadOnlyInDir
	// and kill processes that left the session.
	Isolated bool
}

// Canary returns a random token for one test run.
func Canary(t testing.TB) string {
	b := make([]byte, 8)
	rand.Read(b)
	return "canary" + hex.EncodeToString(b)
}

// sleepArg returns a unique, valid sleep(1) duration to find processes by.
func sleepArg() string {
	b := make([]byte, 8)
	rand.Read(b)
	n := uint64(0)
	for _, x := range b {
		n = n<<8 | uint64(x)
	}
	return fmt.Sprintf("1000.%d", n%1_000_000_000_000)
}

// RaceEnv returns env plus GORACE=atexit_sleep_ms=0, so that a test binary
// built with -race and re-executed as helper or probe does not sleep a
// second at exit.
func RaceEnv(env map[string]string) map[string]string {
	out := map[string]string{"GORACE": "atexit_sleep_ms=0"}
	for k, v := range env {
		out[k] = v
	}
	return out
}

// Sync is a goroutine-safe bytes.Buffer.
type Sync struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Sync) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Sync) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ProcessesWith returns the host pids whose command line contains s.
func ProcessesWith(s string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(b, []byte(s)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// FreePort returns a TCP port that was free on the host loopback.
func FreePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Self returns the test binary's path, bound into sandboxes as ProbeTool.
func Self(t testing.TB) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// Run runs the conformance suite. newDriver is called once per subtest.
func Run(t *testing.T, newDriver func(t *testing.T) sandbox.Driver, opts Options) {
	newManager := func(t *testing.T, cfg sandbox.Config) *sandbox.Manager {
		if cfg.StateDir == "" {
			cfg.StateDir = t.TempDir()
		}
		m, err := sandbox.NewManager(newDriver(t), cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	run := func(t *testing.T, m *sandbox.Manager, spec sandbox.Spec) (sandbox.Result, string, string) {
		t.Helper()
		var stdout, stderr Sync
		if spec.Stdout == nil {
			spec.Stdout = &stdout
		}
		if spec.Stderr == nil {
			spec.Stderr = &stderr
		}
		if spec.ID == "" {
			spec.ID = strings.ReplaceAll(t.Name(), "/", "-")
		}
		if spec.Dir == "" {
			spec.Dir = t.TempDir()
		}
		if spec.Tools != nil || len(spec.Forwards) > 0 || len(spec.AllowHosts) > 0 {
			spec.Env = RaceEnv(spec.Env)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		res, err := m.Run(ctx, spec)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		return res, stdout.String(), stderr.String()
	}

	t.Run("ExitCodeAndStreams", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, sandbox.Config{})
		res, out, errOut := run(t, m, sandbox.Spec{Command: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}})
		if res.Reason != "exit 3" || res.ExitCode != 3 || res.OK() {
			t.Errorf("result = %+v, want exit 3", res)
		}
		if out != "out\n" || errOut != "err\n" {
			t.Errorf("stdout %q stderr %q", out, errOut)
		}
		res, _, _ = run(t, m, sandbox.Spec{Command: []string{"true"}})
		if !res.OK() || res.Reason != "exit 0" {
			t.Errorf("true: %+v", res)
		}
	})

	t.Run("Stdin", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, sandbox.Config{})
		in := strings.Repeat("line of input\n", 5000)
		res, out, _ := run(t, m, sandbox.Spec{Command: []string{"cat"}, Stdin: strings.NewReader(in)})
		if !res.OK() || out != in {
			t.Errorf("result %+v, got %d bytes, want %d", res, len(out), len(in))
		}
	})

	t.Run("SameWriterForStdoutAndStderr", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, sandbox.Config{})
		var both Sync
		res, _, _ := run(t, m, sandbox.Spec{Command: []string{"sh", "-c", "echo a; echo b >&2; echo c"}, Stdout: &both, Stderr: &both})
		if !res.OK() || both.String() != "a\nb\nc\n" {
			t.Errorf("result %+v output %q", res, both.String())
		}
	})

	t.Run("EnvironmentIsExplicit", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, sandbox.Config{})
		dir := t.TempDir()
		res, out, errOut := run(t, m, sandbox.Spec{Dir: dir, Command: []string{"env"}, Env: map[string]string{"FOO": "bar baz"}})
		if !res.OK() {
			t.Fatalf("%+v %s", res, errOut)
		}
		var keys []string
		vals := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			k, v, _ := strings.Cut(line, "=")
			if k == "PWD" && v == dir { // set by some drivers to the working directory
				continue
			}
			keys = append(keys, k)
			vals[k] = v
		}
		sort.Strings(keys)
		if want := []string{"FOO", "HOME", "LANG", "PATH", "TMPDIR"}; !slices.Equal(keys, want) {
			t.Errorf("environment keys %v, want exactly %v", keys, want)
		}
		if vals["FOO"] != "bar baz" {
			t.Errorf("FOO=%q", vals["FOO"])
		}
		res, out, _ = run(t, m, sandbox.Spec{Command: []string{"env"}, Env: map[string]string{"PATH": "/usr/bin:/bin", "LANG": "C"}})
		if !res.OK() || !strings.Contains(out, "PATH=/usr/bin:/bin\n") || !strings.Contains(out, "LANG=C\n") {
			t.Errorf("spec PATH/LANG not kept: %q", out)
		}
	})

	t.Run("DirHomeTmpWritable", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, sandbox.Config{})
		dir := t.TempDir()
		script := `set -e; pwd; echo hi > out.txt; echo h > "$HOME/h"; cat "$HOME/h"; echo t > "$TMPDIR/t"; cat "$TMPDIR/t"`
		res, out, errOut := run(t, m, sandbox.Spec{Dir: dir, Command: []string{"sh", "-c", script}})
		if !res.OK() {
			t.Fatalf("%+v %s", res, errOut)
		}
		if want := dir + "\nh\nt\n"; out != want {
			t.Errorf("output %q, want %q", out, want)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "out.txt")); err != nil || string(b) != "hi\n" {
			t.Errorf("file written in Dir: %q %v", b, err)
		}
	})

	t.Run("HomePersistsAcrossRuns", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, sandbox.Config{})
		dir, home := t.TempDir(), t.TempDir()
		res, _, errOut := run(t, m, sandbox.Spec{Dir: dir, Home: home, Command: []string{"sh", "-c", `mkdir -p "$HOME/.session" && echo kept > "$HOME/.session/id"`}})
		if !res.OK() {
			t.Fatalf("%+v %s", res, errOut)
		}
		res, out, errOut := run(t, m, sandbox.Spec{Dir: dir, Home: home, Command: []string{"sh", "-c", `cat "$HOME/.session/id"`}})
		if !res.OK() || out != "kept\n" {
			t.Fatalf("second run saw %q (%+v %s)", out, res, errOut)
		}
		if b, err := os.ReadFile(filepath.Join(home, ".session", "id")); err != nil || string(b) != "kept\n" {
			t.Fatalf("Home not backed by the host dir: %q %v", b, err)
		}
		res, _, _ = run(t, m, sandbox.Spec{Dir: dir, Command: []string{"sh", "-c", `test ! -e "$HOME/.session/id"`}})
		if !res.OK() {
			t.Fatal("without Spec.Home the private HOME is not fresh")
		}
	})

	t.Run("TimeoutKillsTree", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, sandbox.Config{})
		dur := sleepArg()
		script := fmt.Sprintf("sleep %s & (sleep %s &) ; echo started; wait", dur, dur)
		res, out, errOut := run(t, m, sandbox.Spec{Command: []string{"sh", "-c", script}, Timeout: 500 * time.Millisecond})
		if res.Reason != sandbox.ReasonTimedOut || res.OK() {
			t.Errorf("result %+v, want timed_out (stdout %q stderr %q)", res, out, errOut)
		}
		if pids := ProcessesWith(dur); len(pids) > 0 {
			t.Errorf("processes survived the timeout: %v", pids)
		}
	})

	t.Run("CancelKillsTree", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, sandbox.Config{})
		dur := sleepArg()
		started := make(chan struct{})
		w := &signalWriter{ch: started}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		var res sandbox.Result
		go func() {
			var err error
			res, err = m.Run(ctx, sandbox.Spec{ID: "cancel", Dir: t.TempDir(), Stdout: w,
				Command: []string{"sh", "-c", fmt.Sprintf("sleep %s & echo started; wait", dur)}})
			errc <- err
		}()
		select {
		case <-started:
		case err := <-errc:
			t.Fatalf("ended before start: %v %+v", err, res)
		case <-time.After(30 * time.Second):
			t.Fatal("command did not start")
		}
		cancel()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if res.Reason != sandbox.ReasonKilled || res.ExitCode != -1 {
			t.Errorf("result %+v, want killed", res)
		}
		if pids := ProcessesWith(dur); len(pids) > 0 {
			t.Errorf("processes survived cancel: %v", pids)
		}
	})

	t.Run("OutputLimit", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, sandbox.Config{})
		res, out, _ := run(t, m, sandbox.Spec{Command: []string{"yes"}, Limits: sandbox.Limits{OutputBytes: 10000}})
		if res.Reason != sandbox.ReasonOutputLimit {
			t.Errorf("result %+v, want output_limit", res)
		}
		if len(out) != 10000 {
			t.Errorf("got %d bytes of output, want exactly the 10000 allowed", len(out))
		}
	})

	t.Run("InvalidSpec", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, sandbox.Config{})
		for _, spec := range []sandbox.Spec{
			{ID: "x", Dir: "relative", Command: []string{"true"}},
			{ID: "x", Dir: t.TempDir()},
			{ID: "", Dir: t.TempDir(), Command: []string{"true"}},
			{ID: "x", Dir: t.TempDir(), Command: []string{"true"}, ReadOnlyInDir: []string{"../up"}},
			{ID: "x", Dir: t.TempDir(), Command: []string{"true"}, AllowHosts: []string{"127.0.0.1"}},
			{ID: "x", Dir: t.TempDir(), Command: []string{"true"}, AllowHosts: []string{"example.com:0"}},
			{ID: "x", Dir: t.TempDir(), Command: []string{"true"}, AllowHosts: []string{"*.example.com:https"}},
			{ID: "x", Dir: t.TempDir(), Command: []string{"true"}, Forwards: []sandbox.Forward{{Port: 80, Target: "http://x"}}},
		} {
			if _, err := m.Run(context.Background(), spec); !errors.Is(err, sandbox.ErrInvalidSpec) {
				t.Errorf("spec %+v: err %v, want ErrInvalidSpec", spec, err)
			}
		}
	})

	t.Run("ToolsOnPath", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, sandbox.Config{})
		res, out, errOut := run(t, m, sandbox.Spec{Command: []string{"sh", "-c", ProbeTool + " echo hello from tool"},
			Tools: map[string]string{ProbeTool: Self(t)}})
		if !res.OK() || out != "hello from tool\n" {
			t.Errorf("result %+v stdout %q stderr %q", res, out, errOut)
		}
	})

	t.Run("Forwards", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, sandbox.Config{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "gateway") }))
		defer srv.Close()
		sockDir, err := os.MkdirTemp("", "fwd")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(sockDir)
		sock := filepath.Join(sockDir, "mcp.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		us := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "mcp") })}
		go us.Serve(ln)
		defer us.Close()
		p1, p2 := FreePort(t), FreePort(t)
		script := fmt.Sprintf("%s get http://127.0.0.1:%d/ && echo && %s get http://127.0.0.1:%d/", ProbeTool, p1, ProbeTool, p2)
		res, out, errOut := run(t, m, sandbox.Spec{Command: []string{"sh", "-c", script},
			Tools: map[string]string{ProbeTool: Self(t)},
			Forwards: []sandbox.Forward{
				{Port: p1, Target: "tcp:" + srv.Listener.Addr().String()},
				{Port: p2, Target: "unix:" + sock},
			}})
		if !res.OK() || out != "200 gateway\n200 mcp" {
			t.Errorf("result %+v stdout %q stderr %q", res, out, errOut)
		}
	})

	t.Run("EgressProxy", func(t *testing.T) {
		t.Parallel()
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "upstream") }))
		defer up.Close()
		upPort := up.Listener.Addr().(*net.TCPAddr).Port
		resolver := func(ctx context.Context, host string) ([]netip.Addr, error) {
			switch host {
			case "allowed.test", "other.test", "noport.test":
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			case "meta.allowed.test":
				return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
			}
			return nil, errors.New("no such host")
		}
		var dialed sync.Map
		dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed.Store(addr, true)
			if host, _, _ := net.SplitHostPort(addr); host != "127.0.0.1" {
				return nil, fmt.Errorf("test guard: refusing to dial %s", addr)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
		// Loopback is allowed upstream only in this test; 169.254/16 stays denied.
		m := newManager(t, sandbox.Config{LookupIPFunc: resolver, DialFunc: dial,
			EgressDeny: []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16")}, ProxyPort: FreePort(t)})
		var logMu sync.Mutex
		var logs []string
		logf := func(msg string, attrs ...any) {
			logMu.Lock()
			defer logMu.Unlock()
			logs = append(logs, fmt.Sprint(append([]any{msg}, attrs...)...))
		}
		// The upstream listens on a random port, so it is allowlisted as
		// name:port; noport.test, listed without a port, gets 443 and 80 only.
		script := fmt.Sprintf(`%[1]s get http://allowed.test:%[2]d/; echo; %[1]s connect allowed.test:%[2]d; echo; %[1]s get http://other.test:%[2]d/; echo; %[1]s connect meta.allowed.test:%[2]d; echo; %[1]s connect 127.0.0.1:%[2]d; echo; %[1]s get http://noport.test:%[2]d/`, ProbeTool, upPort)
		res, out, errOut := run(t, m, sandbox.Spec{Command: []string{"sh", "-c", script},
			Tools: map[string]string{ProbeTool: Self(t)}, Log: logf,
			AllowHosts: []string{"allowed.test:" + strconv.Itoa(upPort), "*.allowed.test:" + strconv.Itoa(upPort), "noport.test"}})
		want := "200 upstream\n200 Connection established|upstream\n403 egress refused: host not allowlisted\n\n403 Forbidden|\n403 Forbidden|\n403 egress refused: port not allowlisted for this host\n"
		if !res.OK() || out != want {
			t.Errorf("result %+v\nstdout %q\nwant   %q\nstderr %q", res, out, want, errOut)
		}
		if _, ok := dialed.Load("169.254.169.254:" + strconv.Itoa(upPort)); ok {
			t.Error("proxy dialed a denied metadata address")
		}
		logMu.Lock()
		joined := strings.Join(logs, "\n")
		logMu.Unlock()
		for _, s := range []string{"egress allowed", "not_allowlisted", "port_not_allowed", "internal_address", "ip_literal"} {
			if !strings.Contains(joined, s) {
				t.Errorf("log lacks %q:\n%s", s, joined)
			}
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, sandbox.Config{})
		var wg sync.WaitGroup
		errs := make(chan string, 10)
		for i := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var out Sync
				res, err := m.Run(context.Background(), sandbox.Spec{ID: fmt.Sprint("c", i), Dir: t.TempDir(), Stdout: &out,
					Command: []string{"sh", "-c", "echo $X"}, Env: map[string]string{"X": strconv.Itoa(i)}})
				if err != nil || !res.OK() || out.String() != strconv.Itoa(i)+"\n" {
					errs <- fmt.Sprintf("run %d: %v %+v %q", i, err, res, out.String())
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	})

	if !opts.Isolated {
		return
	}

	t.Run("IsolatedHostInvisible", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, sandbox.Config{})
		secret := filepath.Join(t.TempDir(), "secret")
		c := Canary(t)
		if err := os.WriteFile(secret, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
		ro := t.TempDir()
		os.WriteFile(filepath.Join(ro, "f"), []byte("ro"), 0o644)
		script := fmt.Sprintf(`cat %s; cat %s/f; echo x > %s/g && echo wrote`, secret, ro, ro)
		_, out, _ := run(t, m, sandbox.Spec{Command: []string{"sh", "-c", script}, ReadOnly: []string{ro}})
		if strings.Contains(out, c) {
			t.Error("read a host file outside the mounts")
		}
		if !strings.Contains(out, "ro") || strings.Contains(out, "wrote") {
			t.Errorf("read-only mount: output %q", out)
		}
	})

	t.Run("IsolatedReadOnlyInDir", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, sandbox.Config{})
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, ".git", "hooks"), 0o755)
		os.WriteFile(filepath.Join(dir, ".git", "config"), []byte("[core]\n"), 0o644)
		script := `echo x > .git/hooks/pre-commit && echo hook; echo y >> .git/config && echo config; rm -rf .git/hooks && echo rmhooks; mv .git/config .git/c2 && echo mvconfig;
echo z > .git/info/attributes && echo attributes; mkdir -p .git/new/d && echo z > .git/new/d/f && echo newdir; mv .git/info .git/info2 && echo mvinfo; echo ok > file && echo file`
		res, out, _ := run(t, m, sandbox.Spec{Dir: dir, Command: []string{"sh", "-c", script},
			ReadOnlyInDir: []string{".git/hooks", ".git/config", ".git/info/attributes", ".git/new/d/"}})
		if out != "file\n" {
			t.Errorf("result %+v output %q, want only the worktree write to succeed", res, out)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, ".git", "config")); string(b) != "[core]\n" {
			t.Errorf(".git/config changed: %q", b)
		}
		// Missing paths were held by empty mount points: a file, and a
		// directory for the trailing slash.
		if fi, err := os.Stat(filepath.Join(dir, ".git", "info", "attributes")); err != nil || !fi.Mode().IsRegular() || fi.Size() != 0 {
			t.Errorf(".git/info/attributes on the host: %v %v, want an empty file", fi, err)
		}
		if fi, err := os.Stat(filepath.Join(dir, ".git", "new", "d")); err != nil || !fi.IsDir() {
			t.Errorf(".git/new/d on the host: %v %v, want a directory", fi, err)
		}
	})

	t.Run("IsolatedDirReadOnly", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, sandbox.Config{})
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, ".git"), 0o755)
		os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n"), 0o644)
		script := `cat main.go; echo x >> main.go && echo appended; echo y > new && echo created; rm main.go && echo removed;
echo z > .git/config && echo gitconfig; echo ok > "$HOME/note" && echo home`
		res, out, errOut := run(t, m, sandbox.Spec{Dir: dir, DirReadOnly: true, Command: []string{"sh", "-c", script},
			ReadOnlyInDir: []string{".git/hooks", ".git/config"}})
		if out != "package main\nhome\n" {
			t.Errorf("result %+v output %q stderr %q: want the worktree readable, not writable (HOME still is)", res, out, errOut)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "main.go")); string(b) != "package main\n" {
			t.Errorf("main.go changed: %q", b)
		}
	})

	t.Run("IsolatedSetsidDaemonKilled", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, sandbox.Config{})
		dur := sleepArg()
		res, _, errOut := run(t, m, sandbox.Spec{Command: []string{"sh", "-c", fmt.Sprintf("setsid sleep %s < /dev/null > /dev/null 2>&1 & echo started", dur)}})
		if !res.OK() {
			t.Errorf("%+v %s", res, errOut)
		}
		if pids := ProcessesWith(dur); len(pids) > 0 {
			t.Errorf("setsid daemon survived: %v", pids)
		}
	})

	t.Run("IsolatedNoNetwork", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, sandbox.Config{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "host") }))
		defer srv.Close()
		_, out, _ := run(t, m, sandbox.Spec{Command: []string{ProbeTool, "dial", srv.Listener.Addr().String()},
			Tools: map[string]string{ProbeTool: Self(t)}})
		if strings.Contains(out, "connected") {
			t.Error("reached a host loopback server without a forward")
		}
	})
}

type signalWriter struct {
	once sync.Once
	ch   chan struct{}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.ch) })
	return len(p), nil
}
