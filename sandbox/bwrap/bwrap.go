// Package bwrap is the default sandbox driver on Linux: every command runs
// under bubblewrap with an allow-list profile.
//
// Profile: all namespaces unshared (user, mount, pid, net, ipc, uts,
// cgroup); nothing of the host is visible unless mounted: the system
// directories read-only (/usr and the merged-usr links, a short list of
// /etc entries, never /etc/shadow or the host's /home, /root, /var), a
// synthetic /etc/passwd, /etc/group and /etc/hosts, the task's Dir
// read-write at the same path with ReadOnlyInDir paths re-bound read-only,
// Spec.ReadOnly paths read-only, a private tmpfs $HOME (/home/agent) and
// /tmp, a fresh /proc and a minimal /dev; the root is then remounted
// read-only. The command runs as uid/gid 1000 inside the user namespace,
// with no capabilities, in a new session (no TIOCSTI), with --die-with-parent,
// nested user namespaces disabled, an explicit environment (bwrap itself is
// started with an empty one), and a seccomp filter (see
// sandbox/internal/seccomp).
//
// Network: the sandbox has its own network namespace with only loopback.
// Spec.Forwards and the egress proxy are host unix sockets bound under
// /run/nightshift/sock; the Manager's helper (the HelperBinary, bound at
// /run/nightshift/helper) listens on the loopback ports inside and bridges
// to them. Tools are bound read-only under /run/nightshift/bin, first on PATH.
//
// Limits and kill: bubblewrap starts blocked (--block-fd) until the driver
// has put the sandbox's init process into a fresh cgroup (v2 when delegated,
// v1 when writable) with memory and pids limits, or, with no cgroup, set
// RLIMIT_DATA and RLIMIT_NPROC on it with prlimit. Kill SIGKILLs the
// sandbox's pid-namespace init (the kernel then kills every process in the
// namespace, including those that called setsid) and the cgroup. Note that
// RLIMIT_NPROC does not bind processes whose host uid is root: run
// Nightshift as root only where a cgroup is available (Mode reports which
// path is in use).
//
// Privileges: as root, bubblewrap needs no setuid bit; the sandbox uid 1000
// maps to host uid 0 but holds no capability in the host's user namespace
// and sees only what is mounted. As a non-root user, bubblewrap needs
// unprivileged user namespaces (kernel.unprivileged_userns_clone=1 on
// Debian kernels, kernel.apparmor_restrict_unprivileged_userns=0 or an
// AppArmor profile for bwrap on Ubuntu 24.04+); Available reports when
// they are missing.
package bwrap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nightshift/nightshift/sandbox"
	"github.com/nightshift/nightshift/sandbox/internal/cgroup"
	"github.com/nightshift/nightshift/sandbox/internal/seccomp"
)

// Paths inside the sandbox.
const (
	Home       = "/home/agent"
	RunDir     = "/run/nightshift"
	ToolDir    = RunDir + "/bin"
	helperPath = RunDir + "/helper"
	sockDir    = RunDir + "/sock"
	uid        = 1000
	gid        = 1000
)

// DefaultEtc lists the /etc entries bound read-only when they exist.
var defaultEtc = []string{
	"/etc/alternatives", "/etc/ca-certificates", "/etc/ca-certificates.conf", "/etc/crypto-policies",
	"/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/mime.types",
	"/etc/nsswitch.conf", "/etc/os-release", "/etc/pki", "/etc/protocols", "/etc/services",
	"/etc/ssl", "/etc/timezone", "/etc/debian_version", "/etc/inputrc", "/etc/magic", "/etc/java-17-openjdk",
}

// Config configures the bwrap driver. Every field is optional.
type Config struct {
	// Bwrap is the bubblewrap executable. Empty means "bwrap" on the PATH
	// of this process.
	Bwrap string
	// SystemPaths are bound read-only (or recreated as the same symlink)
	// when they exist on the host. Nil means /usr, /bin, /sbin, /lib,
	// /lib32, /lib64, /libx32, /opt plus a short list of /etc entries.
	SystemPaths []string
	// Path is PATH when the Spec sets none. Empty means
	// /run/nightshift/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin.
	Path string
	// CgroupParent is a delegated cgroup v2 directory to create sandbox
	// cgroups under. Empty means detect: a cgroup v2 subtree where this
	// process may create one, else writable cgroup v1 memory and pids
	// hierarchies, else prlimit.
	CgroupParent string
	// DisableCgroups forces the prlimit path.
	DisableCgroups bool
}

// Driver runs commands under bubblewrap.
type Driver struct {
	cfg     Config
	bwrap   string
	filter  []byte
	cg      *cgroup.Hierarchy
	cgWhy   error
	systems []mount
}

var _ sandbox.Driver = (*Driver)(nil)

type mount struct {
	src, dst string
	symlink  string // non-empty: recreate as a symlink with this target
}

// New returns a bwrap driver. It does not run bubblewrap; call Available
// to check that it works on this host.
func New(cfg Config) (*Driver, error) {
	d := &Driver{cfg: cfg}
	if cfg.Bwrap == "" {
		cfg.Bwrap = "bwrap"
	}
	p, err := exec.LookPath(cfg.Bwrap)
	if err != nil {
		return nil, fmt.Errorf("%w: bwrap: bubblewrap not found (install the bubblewrap package): %v", sandbox.ErrUnavailable, err)
	}
	d.bwrap = p
	if cfg.Path == "" {
		cfg.Path = ToolDir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	if cfg.SystemPaths == nil {
		cfg.SystemPaths = append([]string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt"}, defaultEtc...)
	}
	d.cfg = cfg
	prog, err := seccomp.Filter()
	if err != nil {
		return nil, fmt.Errorf("%w: bwrap: %v", sandbox.ErrUnavailable, err)
	}
	d.filter = prog.Bytes()
	for _, p := range cfg.SystemPaths {
		fi, err := os.Lstat(p)
		if err != nil {
			continue
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(p)
			if err != nil {
				continue
			}
			d.systems = append(d.systems, mount{dst: p, symlink: target})
			continue
		}
		d.systems = append(d.systems, mount{src: p, dst: p})
	}
	if !cfg.DisableCgroups {
		d.cg, d.cgWhy = cgroup.Detect(cfg.CgroupParent)
		if cfg.CgroupParent != "" && d.cgWhy != nil {
			return nil, d.cgWhy
		}
	}
	return d, nil
}

// Name returns "bwrap".
func (d *Driver) Name() string { return "bwrap" }

// Mode says how limits are enforced: "cgroup2", "cgroup1" or "prlimit",
// with the reason cgroups were not used.
func (d *Driver) Mode() string {
	if d.cg == nil {
		if d.cgWhy != nil {
			return cgroup.ModeNone + " (" + d.cgWhy.Error() + ")"
		}
		return cgroup.ModeNone
	}
	return d.cg.Mode()
}

// Available checks that bubblewrap exists and can create the sandbox's
// namespaces here; the error says what is missing. serve calls it before
// accepting work unless the unsafe process driver was chosen explicitly.
func Available(ctx context.Context) error {
	return AvailableWith(ctx, Config{})
}

// AvailableWith is Available for a specific Config.
func AvailableWith(ctx context.Context, cfg Config) error {
	d, err := New(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	args := []string{"--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup",
		"--disable-userns", "--uid", "1000", "--gid", "1000", "--die-with-parent", "--new-session",
		"--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--", "true"}
	cmd := exec.CommandContext(ctx, d.bwrap, args...)
	cmd.Env = []string{}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		hint := ""
		if os.Geteuid() != 0 {
			hint = " (unprivileged user namespaces may be disabled: check kernel.unprivileged_userns_clone, user.max_user_namespaces and kernel.apparmor_restrict_unprivileged_userns)"
		}
		return fmt.Errorf("%w: bwrap: cannot create a sandbox: %v: %s%s", sandbox.ErrUnavailable, err, strings.TrimSpace(stderr.String()), hint)
	}
	return nil
}

// args builds the bubblewrap command line for l. It writes the synthetic
// /etc files into l.StateDir.
func (d *Driver) args(l *sandbox.Launch, emptyDir string) ([]string, []string, error) {
	s := &l.Spec
	a := []string{
		"--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup",
		"--disable-userns", "--uid", strconv.Itoa(uid), "--gid", strconv.Itoa(gid),
		"--die-with-parent", "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox",
		"--proc", "/proc", "--dev", "/dev",
	}
	for _, m := range d.systems {
		if m.symlink != "" {
			a = append(a, "--symlink", m.symlink, m.dst)
		} else {
			a = append(a, "--ro-bind", m.src, m.dst)
		}
	}
	etc := map[string]string{
		"passwd": fmt.Sprintf("root:x:0:0:root:/root:/usr/sbin/nologin\nagent:x:%d:%d:agent:%s:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n", uid, gid, Home),
		"group":  fmt.Sprintf("root:x:0:\nagent:x:%d:\nnogroup:x:65534:\n", gid),
		"hosts":  "127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost ip6-loopback\n",
	}
	for _, name := range []string{"passwd", "group", "hosts"} {
		p := filepath.Join(l.StateDir, "etc-"+name)
		if err := os.WriteFile(p, []byte(etc[name]), 0o644); err != nil {
			return nil, nil, err
		}
		a = append(a, "--ro-bind", p, "/etc/"+name)
	}
	a = append(a, "--tmpfs", "/tmp", "--dir", "/home", "--tmpfs", Home)

	// Host binds, parents before children so that none hides another.
	type bind struct {
		path string
		rw   bool
	}
	binds := []bind{{s.Dir, true}}
	for _, p := range s.ReadOnly {
		if _, err := os.Stat(p); err != nil {
			return nil, nil, fmt.Errorf("read-only path: %w", err)
		}
		binds = append(binds, bind{filepath.Clean(p), false})
	}
	sort.SliceStable(binds, func(i, j int) bool {
		return strings.Count(binds[i].path, "/") < strings.Count(binds[j].path, "/")
	})
	for _, b := range binds {
		if b.rw {
			a = append(a, "--bind", b.path, b.path)
		} else {
			a = append(a, "--ro-bind", b.path, b.path)
		}
	}
	for _, rel := range s.ReadOnlyInDir {
		src, err := inDir(s.Dir, rel)
		if err != nil {
			return nil, nil, err
		}
		if src == "" { // missing: an empty read-only dir, so it cannot be created
			a = append(a, "--ro-bind", emptyDir, filepath.Join(s.Dir, rel))
		} else {
			a = append(a, "--ro-bind", src, src)
		}
	}

	command := s.Command
	if len(l.Listeners) > 0 {
		a = append(a, "--ro-bind", l.HelperBinary, helperPath)
		inside := make([]sandbox.Listener, len(l.Listeners))
		for i, ln := range l.Listeners {
			p := sockDir + "/" + strconv.Itoa(i)
			a = append(a, "--ro-bind", ln.Socket, p)
			inside[i] = sandbox.Listener{Port: ln.Port, Socket: p}
		}
		command = sandbox.HelperCommand(helperPath, inside, command)
	}
	names := make([]string, 0, len(s.Tools))
	for n := range s.Tools {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, err := os.Stat(s.Tools[n]); err != nil {
			return nil, nil, fmt.Errorf("tool %s: %w", n, err)
		}
		a = append(a, "--ro-bind", s.Tools[n], ToolDir+"/"+n)
	}
	a = append(a, "--remount-ro", "/", "--chdir", s.Dir)
	for _, kv := range l.Environ(d.cfg.Path, Home, "/tmp") {
		k, v, _ := strings.Cut(kv, "=")
		a = append(a, "--setenv", k, v)
	}
	return a, command, nil
}

// inDir resolves rel under dir without following symlinks out of it. It
// returns "" when the path does not exist.
func inDir(dir, rel string) (string, error) {
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, rel)
	if _, err := os.Lstat(p); os.IsNotExist(err) {
		// A missing parent may still be a symlink pointing out.
		parent := filepath.Dir(p)
		for parent != dir && len(parent) > len(dir) {
			if fi, err := os.Lstat(parent); err == nil && fi.Mode()&os.ModeSymlink != 0 {
				return "", fmt.Errorf("read-only path %q: %s is a symlink", rel, parent)
			}
			parent = filepath.Dir(parent)
		}
		return "", nil
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", err
	}
	if real != filepath.Join(realDir, rel) {
		return "", fmt.Errorf("read-only path %q resolves to %s, outside or through a symlink", rel, real)
	}
	return p, nil
}

// Start starts bubblewrap blocked, puts the sandbox in its cgroup (or sets
// rlimits), then lets it run.
func (d *Driver) Start(ctx context.Context, l *sandbox.Launch) (sandbox.Process, error) {
	emptyDir := filepath.Join(l.StateDir, "empty")
	if len(l.Spec.ReadOnlyInDir) > 0 {
		if err := os.Mkdir(emptyDir, 0o555); err != nil {
			return nil, err
		}
	}
	args, command, err := d.args(l, emptyDir)
	if err != nil {
		return nil, err
	}
	// fds: 3 seccomp, 4 info, 5 block
	secR, secW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer secR.Close()
	infoR, infoW, err := os.Pipe()
	if err != nil {
		secW.Close()
		return nil, err
	}
	defer infoR.Close()
	blockR, blockW, err := os.Pipe()
	if err != nil {
		secW.Close()
		infoW.Close()
		return nil, err
	}
	defer blockW.Close()
	argv := append([]string{"bwrap"}, args...)
	argv = append(argv, "--seccomp", "3", "--info-fd", "4", "--block-fd", "5", "--")
	argv = append(argv, command...)
	cmd := &exec.Cmd{
		Path:        d.bwrap,
		Args:        argv,
		Env:         []string{},
		Stdin:       l.Stdin,
		Stdout:      l.Stdout,
		Stderr:      l.Stderr,
		ExtraFiles:  []*os.File{secR, infoW, blockR},
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	// The filter is far below the pipe buffer, so writing it first cannot block.
	if _, err := secW.Write(d.filter); err != nil {
		secW.Close()
		infoW.Close()
		blockR.Close()
		return nil, err
	}
	secW.Close()
	err = cmd.Start()
	infoW.Close()
	blockR.Close()
	if err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), pidfd: -1}
	fail := func(err error) (sandbox.Process, error) {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		p.release()
		return nil, err
	}
	var info struct {
		ChildPid int `json:"child-pid"`
	}
	if err := json.NewDecoder(infoR).Decode(&info); err != nil || info.ChildPid <= 0 {
		return fail(fmt.Errorf("bwrap did not start (see the command's stderr): %v", err))
	}
	p.init = info.ChildPid
	// A pidfd names this exact process even after it exits, so a late Kill
	// cannot hit a reused pid, and it becomes readable only once the
	// namespace's init has exited, which is after the kernel killed every
	// other process in the namespace.
	if p.pidfd, err = unix.PidfdOpen(p.init, 0); err != nil {
		return fail(fmt.Errorf("pidfd_open: %w", err))
	}
	lim := l.Spec.Limits
	if d.cg != nil {
		name := "sb-" + sanitize(l.Spec.ID) + "-" + filepath.Base(l.StateDir)
		g, err := d.cg.New(name, lim.MemoryBytes, lim.Processes)
		if err != nil {
			return fail(fmt.Errorf("create cgroup: %w", err))
		}
		p.group = g
		if err := g.Add(p.init); err != nil {
			return fail(fmt.Errorf("join cgroup: %w", err))
		}
	} else {
		for _, r := range []struct {
			res int
			val int64
		}{{unix.RLIMIT_NPROC, int64(lim.Processes)}, {unix.RLIMIT_DATA, lim.MemoryBytes}} {
			if r.val <= 0 {
				continue
			}
			rl := unix.Rlimit{Cur: uint64(r.val), Max: uint64(r.val)}
			if err := unix.Prlimit(p.init, r.res, &rl, nil); err != nil {
				return fail(fmt.Errorf("prlimit: %w", err))
			}
		}
	}
	if _, err := blockW.Write([]byte{1}); err != nil {
		return fail(fmt.Errorf("release sandbox: %w", err))
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) > 40 {
		b = b[:40]
	}
	return string(b)
}

type proc struct {
	cmd     *exec.Cmd
	init    int // host pid of the sandbox's pid-namespace init
	pidfd   int // pidfd of init
	group   *cgroup.Group
	done    chan struct{}
	waitErr error
}

func (p *proc) Wait() (sandbox.Exit, error) {
	<-p.done
	var ee *exec.ExitError
	if p.waitErr != nil && !errors.As(p.waitErr, &ee) {
		return sandbox.Exit{}, p.waitErr
	}
	ws, _ := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	ex := sandbox.ExitFromWaitStatus(ws)
	if p.group != nil {
		ex.OOMKilled = p.group.OOMKilled()
	}
	return ex, nil
}

// Kill SIGKILLs the namespace's init, which makes the kernel kill every
// process in the pid namespace (setsid or not), then bwrap and the cgroup.
func (p *proc) Kill() {
	unix.PidfdSendSignal(p.pidfd, unix.SIGKILL, nil, 0)
	select {
	case <-p.done:
	default:
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	if p.group != nil {
		p.group.Kill()
	}
}

// Close waits until the namespace is gone and removes the cgroup.
func (p *proc) Close() error {
	<-p.done
	var err error
	if p.pidfd >= 0 {
		fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
		deadline := time.Now().Add(10 * time.Second)
		for {
			n, perr := unix.Poll(fds, int(time.Until(deadline).Milliseconds()))
			if perr == unix.EINTR {
				continue
			}
			if n == 0 || perr != nil {
				err = fmt.Errorf("bwrap: sandbox init %d did not exit: %v", p.init, perr)
			}
			break
		}
	}
	return errors.Join(err, p.release())
}

func (p *proc) release() error {
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
	if p.group == nil {
		return nil
	}
	return p.group.Close()
}
