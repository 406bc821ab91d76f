package sandbox

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
)

// Driver isolates and runs one command tree. Drivers live in subpackages
// (sandbox/bwrap, sandbox/process) and must pass sandboxtest.Run.
type Driver interface {
	// Name is the driver's config name, e.g. "bwrap".
	Name() string
	// Start starts l.Spec.Command as described by l. It must not block
	// until the command ends. ctx bounds only the start itself; the Manager
	// kills through Process.Kill.
	Start(ctx context.Context, l *Launch) (Process, error)
}

// Process is a started command tree.
type Process interface {
	// Wait blocks until the command's main process has exited. The error
	// reports a failure to wait, not a non-zero exit.
	Wait() (Exit, error)
	// Kill kills the whole tree, including processes that left the
	// process group or session. It is idempotent and safe to call
	// concurrently with Wait.
	Kill()
	// Close releases what Start acquired (cgroups, files) after Wait
	// returned and Kill ran.
	Close() error
}

// Exit is how the main process of a tree ended.
type Exit struct {
	Code      int  // exit code, or 128+signal when killed by a signal
	OOMKilled bool // the driver observed the kernel's OOM killer in the tree
}

// ExitFromWaitStatus converts a wait status to an Exit.
func ExitFromWaitStatus(ws syscall.WaitStatus) Exit {
	if ws.Signaled() {
		return Exit{Code: 128 + int(ws.Signal())}
	}
	return Exit{Code: ws.ExitStatus()}
}

// Listener asks the driver to make 127.0.0.1:Port inside the sandbox
// reach a service of the Manager (the egress proxy or a forward). A driver
// either creates a listener inside the sandbox's network namespace itself
// and hands it to Serve, or bridges the port with the helper to the host
// unix socket Socket (see Launch.Sockets and HelperCommand).
type Listener struct {
	Port   int
	Socket string // set by Launch.Sockets
	// Serve serves connections from ln until ln is closed; the Manager
	// closes ln when the run ends. Nil in the Listeners given to
	// HelperCommand.
	Serve func(ln net.Listener)
}

// Launch is what the Manager hands a driver: the Spec with defaults applied
// (Timeout, Limits, Env with LANG and proxy variables) and the resources the
// Manager prepared.
type Launch struct {
	Spec         Spec
	Listeners    []Listener // loopback ports inside the sandbox and the Manager services behind them
	HelperBinary string     // host path of the binary that runs the helper (see Reexec)
	Stdin        *os.File   // the command's standard streams (the driver must not close them)
	Stdout       *os.File
	Stderr       *os.File
	Logger       *slog.Logger

	res *runResources
}

// runResources are created on demand for one run and released by the
// Manager after Process.Close.
type runResources struct {
	parent   string // Config.StateDir
	dir      string
	sockDir  string
	closers  []io.Closer
	sockets  []Listener
	socketsE error
	made     bool
}

// StateDir returns a private host directory for this run, created on first
// use and removed after Process.Close.
func (l *Launch) StateDir() (string, error) {
	r := l.res
	if r.dir == "" {
		dir, err := os.MkdirTemp(r.parent, "run-")
		if err != nil {
			return "", fmt.Errorf("sandbox: create run dir: %w", err)
		}
		r.dir = dir
	}
	return r.dir, nil
}

// Sockets returns l.Listeners with Socket set: a host unix socket per port,
// served by the Manager, for drivers that bridge ports with the helper.
// They are created on first use.
func (l *Launch) Sockets() ([]Listener, error) {
	r := l.res
	if r.made {
		return r.sockets, r.socketsE
	}
	r.made = true
	dir, err := l.StateDir()
	if err != nil {
		r.socketsE = err
		return nil, err
	}
	if len(dir) > 80 { // sun_path holds 108 bytes
		if dir, err = os.MkdirTemp("", "nssb-"); err != nil {
			r.socketsE = fmt.Errorf("sandbox: create socket dir: %w", err)
			return nil, r.socketsE
		}
		r.sockDir = dir
	}
	for i, ln := range l.Listeners {
		sock := filepath.Join(dir, "port-"+strconv.Itoa(i)+".sock")
		u, err := net.Listen("unix", sock)
		if err != nil {
			r.socketsE = fmt.Errorf("sandbox: listen on %s: %w", sock, err)
			return nil, r.socketsE
		}
		r.closers = append(r.closers, u)
		go ln.Serve(u)
		ln.Socket = sock
		r.sockets = append(r.sockets, ln)
	}
	return r.sockets, nil
}

func (r *runResources) release() {
	for _, c := range r.closers {
		c.Close()
	}
	if r.sockDir != "" {
		os.RemoveAll(r.sockDir)
	}
	if r.dir != "" {
		os.RemoveAll(r.dir)
	}
}

// Environ returns l.Spec.Env as a sorted KEY=VALUE list, with PATH, HOME
// and TMPDIR set to the given defaults where absent.
func (l *Launch) Environ(path, home, tmp string) []string {
	env := make(map[string]string, len(l.Spec.Env)+3)
	for k, v := range l.Spec.Env {
		env[k] = v
	}
	for k, v := range map[string]string{"PATH": path, "HOME": home, "TMPDIR": tmp} {
		if _, ok := env[k]; !ok {
			env[k] = v
		}
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// HelperCommand returns the argv that runs command under the helper, which
// first listens on the given loopback ports and bridges each to its unix
// socket (Socket paths as seen by the helper). helper is the helper
// binary's path as seen by the helper.
func HelperCommand(helper string, ls []Listener, command []string) []string {
	argv := []string{helper, HelperArg}
	for _, l := range ls {
		argv = append(argv, "-l", strconv.Itoa(l.Port)+"="+l.Socket)
	}
	argv = append(argv, "--")
	return append(argv, command...)
}
