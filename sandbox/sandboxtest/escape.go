package sandboxtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nightshift/nightshift/sandbox"
)

// EscapeOptions adjusts the escape suite to a host.
type EscapeOptions struct {
	// Missing maps a check to the capability this host lacks for it (e.g.
	// "fork_bomb": "cgroup pids controller"). Only such checks may be
	// skipped; any other skip fails the suite.
	Missing map[string]string
	// MemoryLimit is the sandbox's memory limit in the memory-bomb check;
	// the bomb allocates twice as much (at least 512 MiB). Zero means
	// 128 MiB. A prlimit host needs more: RLIMIT_DATA also counts the race
	// detector's reservations.
	MemoryLimit int64
}

// Escape runs the escape-test suite against a driver: a probe (this test
// binary re-executed as EscapeTool) tries to read, write, connect, signal
// and exhaust its way out. The same probe first runs unsandboxed as the
// positive control, where every check must escape, so a broken probe
// cannot pass. Canaries are random per run. The test sets a host
// environment variable, so it must not run in parallel with others.
func Escape(t *testing.T, newDriver func(t *testing.T) sandbox.Driver, opts EscapeOptions) {
	canary := Canary(t)
	self := Self(t)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	mk := func(parts ...string) string {
		p := filepath.Join(append([]string{root}, parts...)...)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write := func(path, content string) {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	wt := mk("tasks", "t1", "worktree")
	gitDir := mk("tasks", "t1", "worktree", ".git")
	mk("tasks", "t1", "worktree", ".git", "hooks")
	gitConfig := filepath.Join(gitDir, "config")
	write(gitConfig, "[core]\n\tbare = false\n")
	other := mk("tasks", "t2", "worktree")
	write(filepath.Join(other, "secret.go"), "package secret // "+canary)
	outside := mk("host-secrets")
	write(filepath.Join(outside, "canary.txt"), canary)
	data := mk("data")
	write(filepath.Join(data, "nightshift.db"), "SQLite format 3\x00"+canary)
	write(filepath.Join(data, "vault.key"), canary)
	mk("data", "jetstream", "nightshift", "streams", canary)
	ro := mk("shared-git-objects")
	writeOut := mk("write-outside")
	linkTarget := mk("link-target")
	if err := os.Symlink(linkTarget, filepath.Join(wt, "escape-link")); err != nil {
		t.Fatal(err)
	}
	envVar := "NIGHTSHIFT_ESCAPE_CANARY"
	t.Setenv(envVar, canary)

	// A host process whose environment holds the canary.
	hostProc := exec.Command(sleep, sleepArg())
	hostProc.Env = []string{envVar + "=" + canary}
	if err := hostProc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hostProc.Process.Kill(); hostProc.Wait() })

	serveCanary := func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, canary) }
	orchestrator := httptest.NewServer(http.HandlerFunc(serveCanary))
	t.Cleanup(orchestrator.Close)
	upstream := httptest.NewServer(http.HandlerFunc(serveCanary))
	t.Cleanup(upstream.Close)
	tcpLn := listenCanary(t, "tcp", "127.0.0.1:0", canary)
	abstract := "nightshift-escape-" + canary
	listenCanary(t, "unix", "@"+abstract, canary)

	up := upstream.Listener.Addr().String()
	_, upPort, _ := net.SplitHostPort(up)
	cfg := ProbeConfig{
		Canary: canary,
		ReadFiles: map[string]string{
			"read_outside_mounts":  filepath.Join(outside, "canary.txt"),
			"read_other_worktree":  filepath.Join(other, "secret.go"),
			"read_sqlite_database": filepath.Join(data, "nightshift.db"),
			"read_vault_key":       filepath.Join(data, "vault.key"),
		},
		Readable: map[string]string{"read_etc_shadow": "/etc/shadow"},
		ListDirs: map[string]string{"list_nats_store": filepath.Join(data, "jetstream", "nightshift", "streams")},
		WriteFiles: map[string]string{
			"write_outside_worktree": filepath.Join(writeOut, "pwned"),
			"write_via_symlink":      filepath.Join(wt, "escape-link", "pwned"),
			"write_git_hook":         filepath.Join(gitDir, "hooks", "pre-commit"),
			"write_git_config":       gitConfig,
			"write_readonly_mount":   filepath.Join(ro, "pwned"),
		},
		ReplaceDirs: []Replace{
			{Check: "replace_hooks_dir", Dir: filepath.Join(gitDir, "hooks"), File: "post-merge"},
			{Check: "replace_git_dir", Dir: gitDir, File: "hooks/post-checkout"},
		},
		EnvVar:       envVar,
		HostHTTP:     orchestrator.Listener.Addr().String(),
		HostTCP:      tcpLn,
		HostAbstract: abstract,
		Tunnels: map[string]Tunnel{
			"proxy_not_allowlisted":            {Target: "denied.test:" + upPort, Direct: up},
			"proxy_allowlisted_to_loopback":    {Target: "loop.allowed.test:" + upPort, Direct: up},
			"proxy_allowlisted_to_metadata_ip": {Target: "meta.allowed.test:" + upPort, Direct: up},
			"proxy_ip_literal":                 {Target: up, Direct: up},
		},
		HostPid:  hostProc.Process.Pid,
		ForkBomb: 200,
		Daemon:   sleepArg(),
		Sleep:    sleep,
	}
	hostChecks := map[string]func() bool{
		"write_outside_worktree": func() bool { return fileHas(filepath.Join(writeOut, "pwned"), canary) },
		"write_via_symlink":      func() bool { return fileHas(filepath.Join(linkTarget, "pwned"), canary) },
		// The probe's moves scatter these files; whatever the order, a
		// canary-bearing copy anywhere in the worktree means the write landed.
		"write_git_hook":       func() bool { return fileUnder(wt, "pre-commit", canary) },
		"write_git_config":     func() bool { return fileUnder(wt, "config", canary) },
		"write_readonly_mount": func() bool { return fileHas(filepath.Join(ro, "pwned"), canary) },
		"setsid_daemon":        func() bool { return len(ProcessesWith(cfg.Daemon)) > 0 },
		"replace_git_dir":      func() bool { return fileUnder(wt, "post-checkout", canary) },
		"replace_hooks_dir":    func() bool { return fileUnder(wt, "post-merge", canary) },
	}
	reset := func() {
		for _, p := range []string{gitDir, gitDir + "-moved", filepath.Join(writeOut, "pwned"),
			filepath.Join(linkTarget, "pwned"), filepath.Join(ro, "pwned")} {
			if err := os.RemoveAll(p); err != nil {
				t.Fatal(err)
			}
		}
		mk("tasks", "t1", "worktree", ".git", "hooks")
		write(gitConfig, "[core]\n\tbare = false\n")
		for _, pid := range ProcessesWith(cfg.Daemon) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}

	// Positive control: the same probe, unsandboxed, with the host's environment.
	control := exec.Command(self, EncodeProbeConfig(cfg))
	control.Args[0] = EscapeTool
	control.Dir = wt
	outsideDir, err := os.Open(outside) // the control inherits it, as fd 3
	if err != nil {
		t.Fatal(err)
	}
	defer outsideDir.Close()
	control.ExtraFiles = []*os.File{outsideDir}
	control.Env = append(os.Environ(), "NSESCAPE_CONTROL=1", "GORACE=atexit_sleep_ms=0")
	var cerr bytes.Buffer
	control.Stderr = &cerr
	cout, err := control.Output()
	if err != nil {
		t.Fatalf("control probe failed: %v\n%s", err, cerr.String())
	}
	want := parseProbe(t, cout)
	for check, f := range hostChecks {
		if r, ok := want[check]; ok && r.Result != Unsupported {
			want[check] = result(check, f())
		}
	}
	reset()
	var skipped []string
	for check, r := range want {
		if capName, ok := opts.Missing[check]; ok {
			skipped = append(skipped, check+" (missing capability: "+capName+")")
			delete(want, check)
			continue
		}
		switch r.Result {
		case Escaped:
		case Unsupported:
			if r.Detail == "" {
				t.Errorf("check %s skipped without naming a missing capability", check)
			}
			skipped = append(skipped, check+" (missing capability: "+r.Detail+")")
			delete(want, check)
		default:
			t.Errorf("positive control: check %s did not escape unsandboxed (%s): the probe is broken", check, r.Detail)
		}
	}
	if len(want) < 25 {
		t.Errorf("positive control ran only %d checks", len(want))
	}

	// The sandboxed run.
	var dialMu sync.Mutex
	var dialedNonLoopback []string
	m, err := sandbox.NewManager(newDriver(t), sandbox.Config{
		StateDir: t.TempDir(),
		LookupIPFunc: func(ctx context.Context, host string) ([]netip.Addr, error) {
			switch host {
			case "loop.allowed.test":
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			case "meta.allowed.test":
				return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
			}
			return nil, errors.New("test resolver: no such host")
		},
		DialFunc: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if h, _, _ := net.SplitHostPort(addr); h != "127.0.0.1" {
				dialMu.Lock()
				dialedNonLoopback = append(dialedNonLoopback, addr)
				dialMu.Unlock()
				return nil, fmt.Errorf("test guard: refusing to dial %s", addr)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec := sandbox.Spec{
		ID:            "escape",
		Dir:           wt,
		ReadOnly:      []string{ro},
		ReadOnlyInDir: []string{".git/hooks", ".git/config"},
		Command:       []string{EscapeTool, EncodeProbeConfig(cfg)},
		Env:           RaceEnv(nil),
		Tools:         map[string]string{EscapeTool: self},
		AllowHosts:    []string{"*.allowed.test:" + upPort},
		Limits:        sandbox.Limits{Processes: 64},
		Timeout:       60 * time.Second,
	}
	var sout, serr Sync
	spec.Stdout, spec.Stderr = &sout, &serr
	// A descriptor this process holds without close-on-exec, as one
	// inherited from whoever started the service would be.
	leak, err := syscall.Open(outside, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	res, err := m.Run(context.Background(), spec)
	syscall.Close(leak)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK() {
		t.Errorf("sandboxed probe: %+v\nstderr: %s", res, serr.String())
	}
	got := parseProbe(t, []byte(sout.String()))
	for check, f := range hostChecks {
		if _, ok := got[check]; ok {
			got[check] = result(check, f())
		}
	}
	reset()
	names := make([]string, 0, len(want))
	for check := range want {
		names = append(names, check)
	}
	sort.Strings(names)
	for _, check := range names {
		r, ok := got[check]
		switch {
		case !ok:
			t.Errorf("ESCAPE CHECK %s: no result from the sandboxed probe", check)
		case r.Result != Blocked:
			t.Errorf("ESCAPE CHECK %s: %s (%s)", check, r.Result, r.Detail)
		default:
			t.Logf("blocked %-34s %s", check, r.Detail)
		}
	}
	for _, s := range skipped {
		t.Logf("skipped %s", s)
	}
	dialMu.Lock()
	if len(dialedNonLoopback) > 0 {
		t.Errorf("the proxy tried to dial non-loopback addresses: %v", dialedNonLoopback)
	}
	dialMu.Unlock()

	t.Run("memory_bomb", func(t *testing.T) {
		if capName, ok := opts.Missing["memory_bomb"]; ok {
			t.Skipf("missing capability: %s", capName)
		}
		limit := opts.MemoryLimit
		if limit == 0 {
			limit = 128 << 20
		}
		bomb := ProbeConfig{MemoryBomb: max(2*limit, 512<<20)}
		control := exec.Command(self, EncodeProbeConfig(bomb))
		control.Args[0] = EscapeTool
		control.Env = []string{"GORACE=atexit_sleep_ms=0"}
		start := time.Now()
		out, err := control.Output()
		t.Logf("control took %v", time.Since(start))
		if err != nil || !bytes.Contains(out, []byte(Escaped)) {
			t.Fatalf("positive control: allocating the bomb unsandboxed failed: %v %s", err, out)
		}
		var sout Sync
		res, err := m.Run(context.Background(), sandbox.Spec{ID: "membomb", Dir: wt,
			Command: []string{EscapeTool, EncodeProbeConfig(bomb)}, Env: RaceEnv(nil),
			Tools: map[string]string{EscapeTool: self}, Stdout: &sout,
			Limits: sandbox.Limits{MemoryBytes: limit}, Timeout: 60 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(sout.String(), Escaped) {
			t.Errorf("memory bomb not contained: %+v %s", res, sout.String())
		}
		if res.Reason != sandbox.ReasonOOMKilled && !strings.Contains(sout.String(), Blocked) {
			t.Errorf("memory bomb: the probe neither was OOM-killed nor reported a failed allocation: %+v %q", res, sout.String())
		}
		t.Logf("memory bomb ended with %q: %s", res.Reason, sout.String())
	})
}

func result(check string, escaped bool) ProbeResult {
	if escaped {
		return ProbeResult{Check: check, Result: Escaped, Detail: "seen on the host"}
	}
	return ProbeResult{Check: check, Result: Blocked, Detail: "not seen on the host"}
}

// fileUnder reports whether a file named name under root contains s.
func fileUnder(root, name, s string) bool {
	found := false
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == name && fileHas(p, s) {
			found = true
		}
		return nil
	})
	return found
}

func fileHas(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && bytes.Contains(b, []byte(s))
}

func parseProbe(t *testing.T, out []byte) map[string]ProbeResult {
	t.Helper()
	res := map[string]ProbeResult{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r ProbeResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Errorf("probe output line %q: %v", sc.Text(), err)
			continue
		}
		res[r.Check] = r
	}
	return res
}

// listenCanary serves canary to every connection and returns the address.
func listenCanary(t *testing.T, network, addr, canary string) string {
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(canary))
			c.Close()
		}
	}()
	return ln.Addr().String()
}
