// Package process is the unsafe sandbox driver: the command runs as a plain
// process group of the host user, in Spec.Dir, with exactly the Spec's
// environment and a private HOME and TMPDIR under the run's state dir.
//
// It isolates NOTHING else. The command can read every file and reach every
// address the host user can; read-only paths are not enforced; a process
// that calls setsid leaves the group and survives Kill; loopback forwards
// and the egress proxy listen on the HOST's loopback, so two concurrent runs
// with the same ports conflict and AllowHosts is advisory (the proxy is only
// used by clients that honour HTTP_PROXY). Limits are applied with prlimit
// right after start. Choose it only by explicit configuration.
package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nightshift/nightshift/sandbox"
)

// Config configures the process driver. The zero value is ready to use.
type Config struct {
	// Path is PATH when the Spec sets none. Empty means
	// /usr/local/bin:/usr/bin:/bin.
	Path string
}

// Driver runs commands as plain process groups.
type Driver struct{ cfg Config }

var _ sandbox.Driver = (*Driver)(nil)

// New returns a process driver.
func New(cfg Config) *Driver {
	if cfg.Path == "" {
		cfg.Path = "/usr/local/bin:/usr/bin:/bin"
	}
	return &Driver{cfg: cfg}
}

// Name returns "process".
func (d *Driver) Name() string { return "process" }

// Start starts the command in a new process group.
func (d *Driver) Start(ctx context.Context, l *sandbox.Launch) (sandbox.Process, error) {
	if l.Spec.DirReadOnly {
		// A plain process of the host user can write wherever it may.
		return nil, sandbox.ErrReadOnlyUnsupported
	}
	state, err := l.StateDir()
	if err != nil {
		return nil, err
	}
	home := filepath.Join(state, "home")
	tmp := filepath.Join(state, "tmp")
	bin := filepath.Join(state, "bin")
	for _, dir := range []string{home, tmp, bin} {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return nil, err
		}
	}
	if l.Spec.Home != "" {
		home = l.Spec.Home
	}
	path := d.cfg.Path
	if len(l.Spec.Tools) > 0 {
		for name, target := range l.Spec.Tools {
			if err := os.Symlink(target, filepath.Join(bin, name)); err != nil {
				return nil, err
			}
		}
		path = bin + ":" + path
	}
	env := l.Environ(path, home, tmp)
	argv := l.Spec.Command
	if len(l.Listeners) > 0 {
		socks, err := l.Sockets()
		if err != nil {
			return nil, err
		}
		argv = sandbox.HelperCommand(l.HelperBinary, socks, argv)
	}
	name, err := lookPath(argv[0], env)
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:        name,
		Args:        argv,
		Env:         env,
		Dir:         l.Spec.Dir,
		Stdin:       l.Stdin,
		Stdout:      l.Stdout,
		Stderr:      l.Stderr,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, pgid: cmd.Process.Pid}
	lim := l.Spec.Limits
	for _, r := range []struct {
		res int
		val int64
	}{{unix.RLIMIT_NPROC, int64(lim.Processes)}, {unix.RLIMIT_DATA, lim.MemoryBytes}} {
		if r.val > 0 {
			rl := unix.Rlimit{Cur: uint64(r.val), Max: uint64(r.val)}
			if err := unix.Prlimit(p.pgid, r.res, &rl, nil); err != nil {
				l.Logger.Warn("process driver prlimit", "err", err)
			}
		}
	}
	return p, nil
}

// lookPath finds argv0 on the PATH of env, the command's environment.
func lookPath(argv0 string, env []string) (string, error) {
	if filepath.Base(argv0) != argv0 {
		return argv0, nil
	}
	path := ""
	for _, kv := range env {
		if v, ok := cutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, argv0)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q: %w", argv0, exec.ErrNotFound)
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):], true
	}
	return "", false
}

type proc struct {
	cmd  *exec.Cmd
	pgid int
	once sync.Once
}

func (p *proc) Wait() (sandbox.Exit, error) {
	err := p.cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return sandbox.Exit{}, err
	}
	ws, _ := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return sandbox.ExitFromWaitStatus(ws), nil
}

// Kill kills the process group. Processes that called setsid escape it:
// this driver is not a sandbox.
func (p *proc) Kill() {
	syscall.Kill(-p.pgid, syscall.SIGKILL)
}

func (p *proc) Close() error { return nil }
