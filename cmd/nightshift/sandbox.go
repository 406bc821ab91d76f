package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/sandbox"
	"github.com/nightshift/nightshift/sandbox/bwrap"
	"github.com/nightshift/nightshift/sandbox/process"
)

const sandboxUsage = `usage:
  nightshift sandbox exec --dir DIR [--driver bwrap|process] [--allow-host HOST]... [--env K=V]...
                          [--ro PATH]... [--ro-in-dir REL]... [--forward PORT=tcp:HOST:PORT|unix:PATH]...
                          [--tool NAME=PATH]... [--timeout DURATION] [--memory BYTES] [--processes N]
                          [--data-dir DIR] -- CMD...
  nightshift sandbox check [--driver bwrap|process]

exec runs CMD in the sandbox the agents get, so you can check what they see.
As root, CMD runs as an unprivileged host uid (1900000000 and up), as agents
do, and DIR is handed to that uid first (every entry re-owned, set-id bits
cleared). exec refuses a DIR that is /, a system directory (/usr, /etc,
/var, /tmp, ...) or inside /usr, /etc, /bin, /sbin, /lib*, /boot, /proc,
/sys, /dev, /var or /run, a shared world-writable sticky directory, a
user's home directory or an ancestor of one, the data directory
(--data-dir, env NIGHTSHIFT_DATA_DIR, default ./.nightshift) or an
ancestor of it, or a DIR holding setuid or setgid files.
check reports whether the driver works here and how limits are enforced.

exec exits with CMD's own exit code; when the sandbox ended CMD it prints
why and exits 124 (--timeout elapsed, like timeout(1)), 137 (out of
memory), 125 (output limit) or 130 (interrupted).`

// runSandbox implements "nightshift sandbox exec|check".
func runSandbox(ctx context.Context, a *app, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(a.stderr, sandboxUsage)
		if len(args) == 0 {
			return usageErrorf("sandbox: missing subcommand (exec or check)")
		}
		return nil
	}
	switch args[0] {
	case "exec":
		return runSandboxExec(ctx, a, args[1:])
	case "check":
		return runSandboxCheck(ctx, a, args[1:])
	}
	fmt.Fprintln(a.stderr, sandboxUsage)
	return usageErrorf("sandbox: unknown subcommand %q", args[0])
}

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// commandExitError carries the sandboxed command's exit code.
type commandExitError struct {
	code   int
	reason string
}

func (e *commandExitError) Error() string {
	if e.reason == sandbox.ExitReason(e.code) {
		return fmt.Sprintf("sandboxed command exited with code %d", e.code)
	}
	return "sandboxed command ended: " + e.reason
}

// ExitCode is the sandboxed command's exit code (1 when it did not exit on its own).
func (e *commandExitError) ExitCode() int {
	if e.code > 0 {
		return e.code
	}
	return 1
}

// newSandboxDriver returns the driver exec and check use: for bwrap the
// one agents get (newBwrapDriver: their PATH and uid range), with the
// sandbox section's defaults.
func newSandboxDriver(ctx context.Context, name string) (sandbox.Driver, func(), error) {
	switch name {
	case "bwrap":
		d, err := newBwrapDriver(ctx, config.Sandbox{})
		if err != nil {
			return nil, nil, err
		}
		return d, func() { d.Close() }, nil
	case "process":
		return process.New(process.Config{}), func() {}, nil
	}
	return nil, nil, usageErrorf("sandbox: --driver must be bwrap or process, not %q", name)
}

func runSandboxCheck(ctx context.Context, a *app, args []string) error {
	fl := flag.NewFlagSet("sandbox check", flag.ContinueOnError)
	fl.SetOutput(a.stderr)
	driver := fl.String("driver", "bwrap", "sandbox driver: bwrap or process")
	fl.String("data-dir", "", "unused (accepted as a global flag)")
	if err := fl.Parse(args); err != nil {
		return usageErrorf("sandbox check: %v", err)
	}
	switch *driver {
	case "process":
		fmt.Fprintln(a.stdout, "driver process: available; it does NOT isolate (no mounts, no network namespace)")
		return nil
	case "bwrap":
		d, err := newBwrapDriver(ctx, config.Sandbox{})
		if err != nil {
			return err
		}
		defer d.Close()
		fmt.Fprintf(a.stdout, "driver bwrap: available; limits via %s\n", d.Mode())
		return nil
	}
	return usageErrorf("sandbox check: --driver must be bwrap or process, not %q", *driver)
}

func runSandboxExec(ctx context.Context, a *app, args []string) error {
	fl := flag.NewFlagSet("sandbox exec", flag.ContinueOnError)
	fl.SetOutput(a.stderr)
	var hosts, envs, ros, roInDir, forwards, tools listFlag
	dir := fl.String("dir", "", "working directory, bound read-write (required)")
	driver := fl.String("driver", "bwrap", "sandbox driver: bwrap or process (no isolation)")
	timeout := fl.Duration("timeout", 10*time.Minute, "wall-clock limit")
	memory := fl.Int64("memory", 0, "memory limit in bytes (0: default 4 GiB)")
	procs := fl.Int("processes", 0, "process limit (0: default 1024)")
	dataDir := fl.String("data-dir", "", "data directory exec refuses to hand out (default ./.nightshift, env NIGHTSHIFT_DATA_DIR)")
	verbose := fl.Bool("v", false, "log sandbox events to stderr")
	fl.Var(&hosts, "allow-host", "allow egress to HOST or *.SUFFIX through the proxy (repeatable)")
	fl.Var(&envs, "env", "set K=V in the sandbox environment (repeatable); nothing else is inherited")
	fl.Var(&ros, "ro", "bind a host path read-only (repeatable)")
	fl.Var(&roInDir, "ro-in-dir", "re-bind a path relative to --dir read-only, e.g. .git/hooks (repeatable)")
	fl.Var(&forwards, "forward", "PORT=tcp:HOST:PORT or PORT=unix:PATH: make a host address reachable at 127.0.0.1:PORT inside (repeatable)")
	fl.Var(&tools, "tool", "NAME=PATH: put a host executable on the sandbox PATH (repeatable)")
	if err := fl.Parse(args); err != nil {
		return usageErrorf("sandbox exec: %v", err)
	}
	command := fl.Args()
	if *dir == "" {
		return usageErrorf("sandbox exec: --dir is required")
	}
	if len(command) == 0 {
		return usageErrorf("sandbox exec: missing command after --")
	}
	absDir, err := filepath.Abs(*dir)
	if err != nil {
		return usageErrorf("sandbox exec: --dir: %v", err)
	}
	if *dataDir == "" {
		*dataDir = a.getenv("NIGHTSHIFT_DATA_DIR")
	}
	if *dataDir == "" {
		*dataDir = ".nightshift"
	}
	if err := checkSandboxDir(absDir, *dataDir); err != nil {
		return err
	}
	if *driver == "bwrap" && os.Geteuid() == 0 {
		uid := bwrap.DefaultUID
		if o := hostOwner(absDir); o >= bwrap.DefaultUID && o < bwrap.DefaultUID+bwrap.DefaultUIDs {
			uid = o
		}
		fmt.Fprintf(a.stderr, "nightshift: %s is handed to uid %d: every entry in it is re-owned and loses its set-id bits\n", absDir, uid)
	}
	spec := sandbox.Spec{
		ID:            "cli-" + strconv.Itoa(os.Getpid()),
		Dir:           absDir,
		Command:       command,
		Env:           map[string]string{},
		Stdin:         a.stdin,
		Stdout:        a.stdout,
		Stderr:        a.stderr,
		Timeout:       *timeout,
		AllowHosts:    hosts,
		ReadOnlyInDir: roInDir,
		Tools:         map[string]string{},
		Limits:        sandbox.Limits{MemoryBytes: *memory, Processes: *procs},
	}
	for _, kv := range envs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usageErrorf("sandbox exec: --env %q: want K=V", kv)
		}
		spec.Env[k] = v
	}
	for _, p := range ros {
		abs, err := filepath.Abs(p)
		if err != nil {
			return usageErrorf("sandbox exec: --ro %q: %v", p, err)
		}
		spec.ReadOnly = append(spec.ReadOnly, abs)
	}
	for _, f := range forwards {
		port, target, ok := strings.Cut(f, "=")
		n, err := strconv.Atoi(port)
		if !ok || err != nil {
			return usageErrorf("sandbox exec: --forward %q: want PORT=tcp:HOST:PORT or PORT=unix:PATH", f)
		}
		spec.Forwards = append(spec.Forwards, sandbox.Forward{Port: n, Target: target})
	}
	for _, t := range tools {
		name, path, ok := strings.Cut(t, "=")
		if !ok || name == "" {
			return usageErrorf("sandbox exec: --tool %q: want NAME=PATH", t)
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return usageErrorf("sandbox exec: --tool %q: %v", t, err)
		}
		spec.Tools[name] = abs
	}
	d, closeDriver, err := newSandboxDriver(ctx, *driver)
	if err != nil {
		return err
	}
	defer closeDriver()
	var logger *slog.Logger
	if *verbose {
		logger = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	m, err := sandbox.NewManager(d, sandbox.Config{}, logger)
	if err != nil {
		return err
	}
	res, err := m.Run(ctx, spec)
	if err != nil {
		if errors.Is(err, sandbox.ErrInvalidSpec) {
			return usageErrorf("%v", err)
		}
		return err
	}
	if !res.OK() {
		return sandboxEnded(res, *timeout, *memory)
	}
	return nil
}

// systemDirs are the directories sandbox exec never hands to the sandbox
// uid (nor an ancestor of one); under systemTrees no directory at all.
var (
	systemDirs  = []string{"/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/var", "/root", "/home", "/srv", "/opt", "/proc", "/sys", "/dev", "/run", "/tmp"}
	systemTrees = []string{"/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/proc", "/sys", "/dev", "/var", "/run"}
)

// checkSandboxDir refuses, in one sentence, a --dir that sandbox exec must
// not re-own to the sandbox uid: /, a system directory, anything under a
// system tree, a user's home directory or an ancestor of one, the data
// directory or an ancestor of it, or a tree holding setuid or setgid
// files. Symlinks are resolved first.
func checkSandboxDir(dir, dataDir string) error {
	real := resolvePath(dir)
	refuse := func(why string) error {
		return usageErrorf("sandbox exec: refusing --dir %s: %s", dir, why)
	}
	if real == "/" {
		return refuse("it is the root directory")
	}
	for _, sys := range systemDirs {
		if within(resolvePath(sys), real) {
			return refuse(sys + " is a system directory")
		}
	}
	for _, sys := range systemTrees {
		if within(real, resolvePath(sys)) {
			return refuse("it is inside the system directory " + sys)
		}
	}
	for _, home := range passwdHomes() {
		if home != "/" && within(resolvePath(home), real) {
			return refuse(home + " is a user's home directory")
		}
	}
	if abs, err := filepath.Abs(dataDir); err == nil && within(resolvePath(abs), real) {
		return refuse(abs + " is the data directory (--data-dir)")
	}
	if fi, err := os.Stat(real); err == nil && fi.Mode()&os.ModeSticky != 0 && fi.Mode().Perm()&0o002 != 0 {
		return refuse("it is a shared directory (world-writable with the sticky bit, like /tmp)")
	}
	if f := setIDFile(real); f != "" {
		return refuse(f + " is setuid or setgid")
	}
	return nil
}

// within reports whether path is dir or lies under it (dir is path or one
// of its ancestors).
func within(path, dir string) bool {
	return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
}

// resolvePath returns path with its symlinks resolved, or path itself
// when it cannot be resolved (it does not exist).
func resolvePath(path string) string {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		return real
	}
	return filepath.Clean(path)
}

// passwdHomes returns the home directories in /etc/passwd.
func passwdHomes() []string {
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return nil
	}
	var homes []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Split(line, ":"); len(f) >= 7 && strings.HasPrefix(f[5], "/") {
			homes = append(homes, filepath.Clean(f[5]))
		}
	}
	return homes
}

// setIDFile returns the first setuid or setgid file under dir, or "".
// It follows no symlink; entries it cannot read are skipped.
func setIDFile(dir string) string {
	var found string
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.Type()&os.ModeSymlink != 0 {
			return nil
		}
		if fi, err := d.Info(); err == nil && fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 {
			found = path
			return filepath.SkipAll
		}
		return nil
	})
	return found
}

// hostOwner returns the host uid owning path, or -1.
func hostOwner(path string) int {
	fi, err := os.Lstat(path)
	if err != nil {
		return -1
	}
	return int(fi.Sys().(*syscall.Stat_t).Uid)
}

// Exit codes of "sandbox exec" when the command did not exit on its own
// (otherwise its own code passes through).
const (
	exitSandboxTimedOut    = 124 // --timeout elapsed, as timeout(1) reports it
	exitSandboxOutputLimit = 125 // the output limit was hit
	exitSandboxOOM         = 137 // the memory limit was hit (128+SIGKILL, as a shell reports it)
)

// sandboxEnded is the error of a command that did not succeed: its own exit
// code, or one sentence and a documented code when the sandbox ended it.
func sandboxEnded(res sandbox.Result, timeout time.Duration, memory int64) error {
	switch res.Reason {
	case sandbox.ReasonTimedOut:
		return &exitError{code: exitSandboxTimedOut, msg: fmt.Sprintf("timed out after %s; the sandbox was killed", timeout)}
	case sandbox.ReasonOOMKilled:
		limit := "the default 4 GiB"
		if memory > 0 {
			limit = strconv.FormatInt(memory, 10) + " bytes"
		}
		return &exitError{code: exitSandboxOOM, msg: fmt.Sprintf("out of memory (limit %s, --memory); the sandbox was killed", limit)}
	case sandbox.ReasonOutputLimit:
		return &exitError{code: exitSandboxOutputLimit, msg: "the command printed more than the output limit; the sandbox was killed"}
	case sandbox.ReasonKilled:
		return &exitError{code: 130, msg: "interrupted; the sandbox was killed"}
	}
	return &commandExitError{code: res.ExitCode, reason: res.Reason}
}
