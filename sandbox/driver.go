package sandbox

import (
	"context"
	"log/slog"
	"os"
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
// connect to the host unix socket at Socket.
type Listener struct {
	Port   int
	Socket string
}

// Launch is what the Manager hands a driver: the Spec with defaults applied
// (Timeout, Limits, Env with LANG and proxy variables) and the resources the
// Manager prepared.
type Launch struct {
	Spec         Spec
	Listeners    []Listener // loopback ports to bridge to host unix sockets (proxy, forwards)
	HelperBinary string     // host path of the binary that runs the helper (see Reexec)
	StateDir     string     // private host dir for this run, removed after Process.Close
	Stdin        *os.File   // the command's standard streams (the driver must not close them)
	Stdout       *os.File
	Stderr       *os.File
	Logger       *slog.Logger
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
