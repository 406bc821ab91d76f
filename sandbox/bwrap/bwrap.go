// Package bwrap is the default sandbox driver on Linux: every command runs
// under bubblewrap with an allow-list profile.
//
// Profile: all namespaces unshared (user, mount, pid, net, ipc, uts,
// cgroup); nothing of the host is visible unless mounted: the system
// directories read-only (/usr and the merged-usr links; not /opt, /home,
// /root, /var or /srv), a private read-only /etc built when the driver is
// created (a synthetic passwd, group and hosts plus copies of a short list
// of world-readable entries: CA certificates, the linker cache,
// alternatives, timezone; never shadow or /etc/ssl/private), the task's
// Dir read-write at the same path with ReadOnlyInDir paths re-bound
// read-only and their parent directories pinned, Spec.ReadOnly paths
// read-only, a private tmpfs $HOME (/home/agent) and /tmp, a fresh /proc
// and a minimal /dev; the root is then remounted read-only. The command
// runs as uid/gid 1000 inside the user namespace, with no capabilities, in
// a new session (no TIOCSTI), with --die-with-parent, nested user
// namespaces disabled (--disable-userns and seccomp), an explicit
// environment (bubblewrap itself is started with an empty one), and a
// seccomp filter (see sandbox/internal/seccomp).
//
// Network: the sandbox has its own network namespace with only loopback.
// The egress proxy and Spec.Forwards appear on loopback ports inside: as
// root, the driver opens those listeners inside the sandbox's network
// namespace from the host process (setns on a locked thread), so no extra
// process runs in the sandbox; otherwise (or with Config.UseHelper) the
// Manager's helper, bound at /run/nightshift/helper, listens inside and
// bridges to host unix sockets bound under /run/nightshift/sock. Tools are
// bound read-only under /run/nightshift/bin, first on PATH.
//
// Limits and kill: bubblewrap starts blocked (--block-fd) until the driver
// has put the sandbox's init process into a cgroup (v2 when delegated, v1
// when writable; pooled and reused) with memory and pids limits, or, with
// no cgroup, set RLIMIT_DATA and RLIMIT_NPROC on it with prlimit. Kill
// SIGKILLs the sandbox's pid-namespace init through a pidfd (the kernel
// then kills every process in the namespace, including those that called
// setsid), then sweeps the cgroup; Close waits until that init is gone.
// RLIMIT_NPROC does not bind processes whose host uid is root, so a root
// host without a writable cgroup cannot cap the process count; Mode
// reports which path is in use.
//
// Privileges: as root, bubblewrap needs no setuid bit; the sandbox uid 1000
// maps to host uid 0 but holds no capability in the host's user namespace
// and sees only what is mounted. As a non-root user, bubblewrap needs
// unprivileged user namespaces (kernel.unprivileged_userns_clone=1 on
// Debian kernels, kernel.apparmor_restrict_unprivileged_userns=0 or an
// AppArmor profile for bwrap on Ubuntu 24.04+, user.max_user_namespaces >
// 0); Available reports when they are missing.
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

// defaultEtc lists the /etc entries copied into the sandbox's /etc. Only
// world-readable files are copied; /etc/ssl/private and the like never are.
var defaultEtc = []string{
	"/etc/alternatives", "/etc/ca-certificates.conf", "/etc/ssl/certs", "/etc/ssl/openssl.cnf",
	"/etc/pki/tls/certs", "/etc/pki/ca-trust/extracted", "/etc/crypto-policies",
	"/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/mime.types",
	"/etc/nsswitch.conf", "/etc/os-release", "/etc/protocols", "/etc/services", "/etc/timezone",
	"/etc/debian_version", "/etc/inputrc", "/etc/magic",
}

// Config configures the bwrap driver. Every field is optional.
type Config struct {
	// Bwrap is the bubblewrap executable. Empty means "bwrap" on the PATH
	// of this process.
	Bwrap string
	// SystemPaths are bound read-only (or recreated as the same symlink)
	// when they exist on the host. Nil means /usr, /bin, /sbin, /lib,
	// /lib32, /lib64 and /libx32. Add /opt or others explicitly.
	SystemPaths []string
	// Etc lists host /etc entries copied (world-readable files only,
	// symlinks kept) into the sandbox's read-only /etc when the driver is
	// created, next to a synthetic passwd, group and hosts. Nil means a
	// short list: CA certificates, the dynamic linker cache, alternatives,
	// timezone, nsswitch, os-release, protocols and services.
	Etc []string
	// UseHelper forces the in-sandbox helper to bridge loopback ports even
	// when this process could listen inside the sandbox's network
	// namespace itself (root only), which is faster.
	UseHelper bool
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
	cfg       Config
	bwrap     string
	filter    []byte
	cg        *cgroup.Hierarchy
	etc       string // host dir bound at /etc
	empty     string // empty host dir for missing ReadOnlyInDir paths
	emptyFile string // empty host file for missing ReadOnlyInDir paths
	inNetns   bool   // listen inside the sandbox's network namespace instead of running the helper
	cgWhy     error
	systems   []mount
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
	p, err := lookBwrap(cfg.Bwrap)
	if err != nil {
		return nil, err
	}
	d.bwrap = p
	if cfg.Path == "" {
		cfg.Path = ToolDir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	if cfg.SystemPaths == nil {
		cfg.SystemPaths = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}
	}
	if cfg.Etc == nil {
		cfg.Etc = defaultEtc
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
	if d.etc, err = buildEtc(cfg.Etc); err != nil {
		return nil, err
	}
	d.empty, d.emptyFile = filepath.Join(d.etc, ".empty"), filepath.Join(d.etc, ".empty-file")
	if err := errors.Join(os.WriteFile(d.emptyFile, nil, 0o444), os.Mkdir(d.empty, 0o555)); err != nil {
		os.RemoveAll(d.etc)
		return nil, err
	}
	d.inNetns = !cfg.UseHelper && os.Geteuid() == 0
	return d, nil
}

// Close removes the driver's copy of /etc. Sandboxes must not be started
// afterwards.
func (d *Driver) Close() error {
	os.Chmod(d.empty, 0o755)
	return errors.Join(d.cg.Close(), os.RemoveAll(d.etc))
}

// buildEtc creates the sandbox's /etc: a synthetic passwd, group and hosts
// plus copies of the listed host entries.
func buildEtc(entries []string) (string, error) {
	sweepEtc()
	dir, err := os.MkdirTemp("", etcPrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	files := map[string]string{
		"passwd": fmt.Sprintf("root:x:0:0:root:/root:/usr/sbin/nologin\nagent:x:%d:%d:agent:%s:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n", uid, gid, Home),
		"group":  fmt.Sprintf("root:x:0:\nagent:x:%d:\nnogroup:x:65534:\n", gid),
		"hosts":  "127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost ip6-loopback\n",
	}
	for _, e := range entries {
		rel, ok := strings.CutPrefix(filepath.Clean(e), "/etc/")
		if !ok || files[rel] != "" {
			continue
		}
		if err := copyTree(e, filepath.Join(dir, rel)); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("bwrap: copy %s: %w", e, err)
		}
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			os.RemoveAll(dir)
			return "", err
		}
	}
	return dir, nil
}

const etcPrefix = "nightshift-bwrap-etc-"

// sweepEtc removes /etc copies left by drivers of processes that are gone
// without calling Close.
func sweepEtc() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), etcPrefix+"*"))
	for _, m := range matches {
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(m), etcPrefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		var st syscall.Stat_t
		if syscall.Lstat(m, &st) != nil || int(st.Uid) != os.Geteuid() || st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			continue
		}
		os.Chmod(filepath.Join(m, ".empty"), 0o755)
		os.RemoveAll(m)
	}
}

// copyTree copies src to dst: world-readable regular files, directories and
// symlinks (verbatim). Anything else, and missing sources, are skipped.
func copyTree(src, dst string) error {
	fi, err := os.Lstat(src)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	case fi.IsDir():
		if fi.Mode().Perm()&0o005 != 0o005 {
			return nil
		}
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		ents, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := copyTree(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
				return err
			}
		}
		return nil
	case fi.Mode().IsRegular() && fi.Mode().Perm()&0o004 != 0 && fi.Size() <= 16<<20:
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	}
	return nil
}

func lookBwrap(name string) (string, error) {
	if name == "" {
		name = "bwrap"
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%w: bwrap: bubblewrap not found (install the bubblewrap package): %v", sandbox.ErrUnavailable, err)
	}
	return p, nil
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
	bw, err := lookBwrap(cfg.Bwrap)
	if err != nil {
		return err
	}
	if _, err := seccomp.Filter(); err != nil {
		return fmt.Errorf("%w: bwrap: %v", sandbox.ErrUnavailable, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	args := []string{"--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup",
		"--disable-userns", "--uid", "1000", "--gid", "1000", "--die-with-parent", "--new-session",
		"--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--", "true"}
	cmd := exec.CommandContext(ctx, bw, args...)
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
func (d *Driver) args(l *sandbox.Launch) ([]string, []string, error) {
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
	a = append(a, "--ro-bind", d.etc, "/etc")
	a = append(a, "--tmpfs", "/tmp", "--dir", "/home")
	if s.Home != "" {
		a = append(a, "--bind", s.Home, Home)
	} else {
		a = append(a, "--tmpfs", Home)
	}

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
	// Each directory between Dir and a read-only path is bound onto itself
	// first: a mount point cannot be renamed or removed, so the command
	// cannot move .git away and put a writable .git/hooks in its place.
	// Missing ancestors are created on the host for the same reason.
	pinned := map[string]bool{}
	var ros []string
	for _, rel := range s.ReadOnlyInDir {
		src, err := inDir(s.Dir, rel)
		if err != nil {
			return nil, nil, err
		}
		dst := filepath.Join(s.Dir, rel)
		var ancestors []string
		for p := filepath.Dir(dst); p != s.Dir && strings.HasPrefix(p, s.Dir+"/"); p = filepath.Dir(p) {
			ancestors = append([]string{p}, ancestors...)
		}
		for _, p := range ancestors {
			if pinned[p] {
				continue
			}
			if err := os.Mkdir(p, 0o755); err != nil && !os.IsExist(err) {
				return nil, nil, fmt.Errorf("read-only path %q: %w", rel, err)
			}
			if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
				return nil, nil, fmt.Errorf("read-only path %q: %s is not a directory", rel, p)
			}
			pinned[p] = true
			a = append(a, "--bind", p, p)
		}
		if src == "" {
			// Missing: an empty read-only file or directory in its place,
			// so that it cannot be created (the mount point appears on the
			// host as an empty file or directory).
			empty := d.emptyFile
			if strings.HasSuffix(rel, "/") || filepath.Base(dst) == "hooks" {
				empty = d.empty
			}
			ros = append(ros, "--ro-bind", empty, dst)
		} else {
			ros = append(ros, "--ro-bind", src, src)
		}
	}
	a = append(a, ros...)

	command := s.Command
	if len(l.Listeners) > 0 && !d.inNetns {
		socks, err := l.Sockets()
		if err != nil {
			return nil, nil, err
		}
		a = append(a, "--ro-bind", l.HelperBinary, helperPath)
		inside := make([]sandbox.Listener, len(socks))
		for i, ln := range socks {
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
	args, command, err := d.args(l)
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
		g, err := d.cg.Acquire(lim.MemoryBytes, lim.Processes)
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
	if d.inNetns && len(l.Listeners) > 0 {
		lns, err := listenInNetns(fmt.Sprintf("/proc/%d/ns/net", p.init), l.Listeners)
		if err != nil {
			return fail(fmt.Errorf("listen in sandbox: %w", err))
		}
		for i, ln := range lns {
			go l.Listeners[i].Serve(ln)
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
	return p.group.Release()
}
