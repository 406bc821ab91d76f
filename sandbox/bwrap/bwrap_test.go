package bwrap_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nightshift/nightshift/sandbox"
	"github.com/nightshift/nightshift/sandbox/bwrap"
	"github.com/nightshift/nightshift/sandbox/sandboxtest"
)

func TestMain(m *testing.M) { sandboxtest.Main(m) }

func newDriver(t *testing.T) *bwrap.Driver {
	t.Helper()
	if err := bwrap.Available(context.Background()); err != nil {
		t.Fatalf("bubblewrap unavailable (a CI host must provide it): %v", err)
	}
	return newDriverWith(t, bwrap.Config{})
}

func newDriverWith(t *testing.T, cfg bwrap.Config) *bwrap.Driver {
	t.Helper()
	d, err := bwrap.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestConformance(t *testing.T) {
	d := newDriver(t)
	sandboxtest.Run(t, func(*testing.T) sandbox.Driver { return d }, sandboxtest.Options{Isolated: true})
}

// TestConformancePrlimitHelper covers the fallbacks: no cgroup, and the
// in-sandbox helper bridging loopback ports instead of listeners created
// in the sandbox's network namespace.
func TestConformancePrlimitHelper(t *testing.T) {
	newDriver(t)
	d := newDriverWith(t, bwrap.Config{DisableCgroups: true, UseHelper: true})
	sandboxtest.Run(t, func(*testing.T) sandbox.Driver { return d }, sandboxtest.Options{Isolated: true})
}

func TestEscape(t *testing.T) {
	escape(t, newDriver(t))
}

func TestEscapePrlimit(t *testing.T) {
	newDriver(t)
	escape(t, newDriverWith(t, bwrap.Config{DisableCgroups: true, UseHelper: true}))
}

func escape(t *testing.T, d *bwrap.Driver) {
	// No Missing: even as root, the sandbox runs as an unprivileged host
	// uid, which RLIMIT_NPROC binds.
	opts := sandboxtest.EscapeOptions{}
	if strings.HasPrefix(d.Mode(), "prlimit") {
		opts.MemoryLimit = 600 << 20
	}
	t.Logf("limits via %s", d.Mode())
	sandboxtest.Escape(t, func(*testing.T) sandbox.Driver { return d }, opts)
}

// TestNoSecretOnHostCommandLines starts a sandbox whose environment holds
// a canary and checks, while it runs, every host process: no command line
// holds the canary (bubblewrap's options travel through --args), and no
// environment does except the command's own (and the helper's, which
// starts it). It also reads the command's credentials from the host: as
// root, the command's host uid is never 0.
func TestNoSecretOnHostCommandLines(t *testing.T) {
	newDriver(t)
	for _, helper := range []bool{false, true} {
		t.Run(fmt.Sprint("helper=", helper), func(t *testing.T) {
			d := newDriverWith(t, bwrap.Config{UseHelper: helper})
			m, err := sandbox.NewManager(d, sandbox.Config{StateDir: t.TempDir()}, nil)
			if err != nil {
				t.Fatal(err)
			}
			canary := sandboxtest.Canary(t)
			dur := fmt.Sprintf("1000.%d", time.Now().UnixNano()%1_000_000_000)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			var stderr sandboxtest.Sync
			go func() {
				res, err := m.Run(ctx, sandbox.Spec{ID: "canary", Dir: t.TempDir(), Command: []string{"sleep", dur},
					Env:        sandboxtest.RaceEnv(map[string]string{"NIGHTSHIFT_MCP_TOKEN": canary, "PROMPT": "fix it " + canary}),
					AllowHosts: []string{"example.com"}, Timeout: time.Minute, Stderr: &stderr})
				if err == nil && res.Reason != sandbox.ReasonKilled {
					err = fmt.Errorf("sandbox ended before it was cancelled: %+v %s", res, stderr.String())
				}
				done <- err
			}()
			var agent int
			for deadline := time.Now().Add(30 * time.Second); agent == 0; {
				for _, p := range sandboxtest.ProcessesWith(dur) { // bwrap's command lines hold dur too
					if args := cmdline(p); len(args) == 2 && args[0] == "sleep" {
						agent = p
					}
				}
				if agent != 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the sandboxed command did not appear")
				} else {
					select {
					case err := <-done:
						t.Fatalf("sandbox ended: %v", err)
					case <-time.After(10 * time.Millisecond):
					}
				}
			}
			var bwrapPid int
			for p := ppid(agent); p > 1 && p != os.Getpid(); p = ppid(p) {
				if args := cmdline(p); len(args) > 0 && filepath.Base(args[0]) == "bwrap" {
					bwrapPid = p
				}
			}
			if bwrapPid == 0 {
				t.Fatal("no bwrap process above the sandboxed command")
			}
			if args := cmdline(bwrapPid); !slices.Contains(args, "--args") {
				t.Errorf("bwrap command line %q does not use --args", args)
			}
			ents, _ := os.ReadDir("/proc")
			checked := 0
			for _, e := range ents {
				pid, err := strconv.Atoi(e.Name())
				if err != nil {
					continue
				}
				cl, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
				if err != nil {
					continue
				}
				checked++
				if strings.Contains(string(cl), canary) {
					t.Errorf("pid %d has the secret on its command line: %q", pid, cl)
				}
				if pid == agent || strings.Contains(string(cl), sandbox.HelperArg) {
					continue
				}
				if env, _ := os.ReadFile("/proc/" + e.Name() + "/environ"); strings.Contains(string(env), canary) {
					t.Errorf("pid %d (%q) has the secret in its environment", pid, cl)
				}
			}
			if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", agent)); err != nil || !strings.Contains(string(env), canary) {
				t.Errorf("the command's own environment lacks the canary (%v): the check is blind", err)
			}
			t.Logf("checked %d processes; bwrap pid %d, command pid %d", checked, bwrapPid, agent)

			// Credentials seen from the host.
			uid := statusIDs(t, agent, "Uid:")
			uidMap, _ := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", agent))
			t.Logf("command host uids %v; uid_map from the host %q", uid, strings.TrimSpace(string(uidMap)))
			for _, u := range uid {
				if os.Geteuid() == 0 && (u == 0 || u < bwrap.DefaultUID) {
					t.Errorf("as root, the command runs as host uid %d, want one of the sandbox uids", u)
				}
				if os.Geteuid() != 0 && u != os.Geteuid() {
					t.Errorf("not root, the command runs as host uid %d, want ours (%d)", u, os.Geteuid())
				}
			}
			if f := strings.Fields(string(uidMap)); len(f) != 3 || f[0] != "1000" || f[1] == "0" {
				t.Errorf("uid_map of the command from the host: %q, want 1000 -> a non-root uid", uidMap)
			}
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
}

func cmdline(pid int) []string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

func ppid(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		if f := strings.Fields(s[i+1:]); len(f) > 1 {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// statusIDs returns the ids on a line ("Uid:", "Gid:") of /proc/pid/status.
func statusIDs(t *testing.T, pid int, key string) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			var ids []int
			for _, f := range strings.Fields(rest) {
				n, _ := strconv.Atoi(f)
				ids = append(ids, n)
			}
			return ids
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return nil
}

// TestEscapeUnprivileged runs the escape and conformance suites (and the
// command-line and symlink tests) again as an unprivileged user when the
// tests run as root (as in CI): the test binary is copied where uid 65534
// can run it and re-executed as that uid.
func TestEscapeUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: TestEscape and TestEscapePrlimit already run unprivileged")
	}
	newDriver(t)
	const nobody = 65534
	dir, err := os.MkdirTemp("", "nightshift-escape-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bwrap.test")
	self, err := os.ReadFile(sandboxtest.Self(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "tmp")
	if err := errors.Join(os.Mkdir(tmp, 0o700), os.Chown(tmp, nobody, nobody)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run", "^(TestEscape|TestEscapePrlimit|TestConformance|TestConformancePrlimitHelper|TestNoSecretOnHostCommandLines|TestReadOnlyInDirRefusesSymlinks)$", "-test.v", "-test.count=1")
	cmd.Dir = tmp
	cmd.Env = []string{"TMPDIR=" + tmp, "HOME=" + tmp, "PATH=" + os.Getenv("PATH"), "GORACE=atexit_sleep_ms=0"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("escape suite as uid %d: %v\n%s", nobody, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "--- ") || strings.Contains(line, "uid_map from the host") {
			t.Log(strings.TrimSpace(line))
		}
	}
	for _, want := range []string{"--- PASS: TestEscape ", "--- PASS: TestEscapePrlimit ", "--- PASS: TestConformance ",
		"--- PASS: TestConformancePrlimitHelper ", "--- PASS: TestNoSecretOnHostCommandLines ", "blocked read_outside_mounts"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("escape suite as uid %d: no %q in its output:\n%s", nobody, want, out)
		}
	}
	if strings.Contains(string(out), "--- SKIP: TestEscape") {
		t.Errorf("escape suite as uid %d skipped:\n%s", nobody, out)
	}
}

// TestReadOnlyInDirRefusesSymlinks: a protected path reached through a
// symlink the command left in Dir (to a directory outside, or inside) is
// refused, so it can never be bound in place of the real one.
func TestReadOnlyInDirRefusesSymlinks(t *testing.T) {
	d := newDriver(t)
	m, err := sandbox.NewManager(d, sandbox.Config{StateDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	if err := os.MkdirAll(filepath.Join(outside, "hooks"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, setup := range map[string]func(dir string) error{
		"git dir to outside": func(dir string) error { return os.Symlink(outside, filepath.Join(dir, ".git")) },
		"hooks to outside": func(dir string) error {
			return errors.Join(os.Mkdir(filepath.Join(dir, ".git"), 0o755), os.Symlink(filepath.Join(outside, "hooks"), filepath.Join(dir, ".git", "hooks")))
		},
		"hooks within Dir": func(dir string) error {
			return errors.Join(os.MkdirAll(filepath.Join(dir, "h"), 0o755), os.Mkdir(filepath.Join(dir, ".git"), 0o755),
				os.Symlink("../h", filepath.Join(dir, ".git", "hooks")))
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := setup(dir); err != nil {
				t.Fatal(err)
			}
			res, err := m.Run(context.Background(), sandbox.Spec{ID: "symlink", Dir: dir, Command: []string{"true"},
				ReadOnlyInDir: []string{".git/hooks"}})
			if err == nil || !strings.Contains(err.Error(), "without symlinks") {
				t.Fatalf("ran (%+v, %v) with .git/hooks behind a symlink, or failed for another reason", res, err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

func TestConfigIDsNeverRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the uid range applies when root")
	}
	newDriver(t)
	for _, cfg := range []bwrap.Config{
		{UID: -1}, {GID: -5}, {UIDs: -1}, {UID: 2147483600, UIDs: 100},
	} {
		if d, err := bwrap.New(cfg); err == nil {
			d.Close()
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

// TestRefusedStartLeavesNoThread: as root, each start stages its binds on
// a thread kept in a mount namespace of its own until bubblewrap exits. A
// start refused while staging (here .git a symlink, which a command can
// leave in Dir at will) must let that thread go too, or every such run
// costs the service a thread and a mount namespace for good.
func TestRefusedStartLeavesNoThread(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("bind sources are staged only as root")
	}
	d := newDriver(t)
	m, err := sandbox.NewManager(d, sandbox.Config{StateDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(t.TempDir(), filepath.Join(dir, ".git")); err != nil {
		t.Fatal(err)
	}
	threads := func() int {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	before := threads()
	const runs = 40
	for range runs {
		if _, err := m.Run(context.Background(), sandbox.Spec{ID: "refused", Dir: dir, Command: []string{"true"},
			ReadOnlyInDir: []string{".git/hooks"}}); err == nil {
			t.Fatal("ran with .git behind a symlink")
		}
	}
	// The threads exit once their goroutines next run: wait for that.
	for deadline := time.Now().Add(30 * time.Second); threads()-before >= runs/2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d refused starts left %d more threads (%d before)", runs, threads()-before, before)
		}
	}
}
