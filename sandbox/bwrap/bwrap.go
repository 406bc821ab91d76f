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
// (with /proc/sys and /proc/sysrq-trigger read-only, and, where others
// could read or write them, /proc/irq, /proc/bus and /proc/fs read-only and
// /proc/kcore, /proc/keys, /proc/timer_list and other kernel state hidden,
// like Docker's readonly and masked paths) and a
// minimal /dev; the root is then remounted read-only. The command
// runs as uid/gid 1000 inside the user namespace, with no capabilities, in
// a new session (no TIOCSTI), with --die-with-parent, nested user
// namespaces disabled (--disable-userns and seccomp), an explicit
// environment (bubblewrap itself is started with an empty one), and a
// seccomp filter (see sandbox/internal/seccomp). Every option, the
// environment included, reaches bubblewrap through a memory file
// (--args), so no token or prompt shows on a host command line. No
// descriptor of this process reaches the command: before each start,
// every descriptor from 3 up is marked close-on-exec (close_range), those
// this process inherited included.
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
// Mode reports which path is in use.
//
// Privileges: the command is never host root. As root, the driver starts
// bubblewrap itself as an unprivileged host uid/gid from Config.UID/GID
// (default 1900000000 + 0..63, one per concurrently running sandbox, the
// one owning the sandbox's Dir first), so the command's uid 1000 maps to
// it. Before each run, Dir and Home are made that uid's, entry by entry
// (see own: one fstatat per entry, a chown only where the host wrote as
// root or the uid changed), because the host writes the git index and
// objects there as root between runs. Bind sources that uid cannot reach
// by path (a 0700 data directory) are staged in a private mount namespace
// (see stage.go); limits are set from root (cgroup) or as the sandbox's
// uid (prlimit: a root service may lack CAP_SYS_RESOURCE), and the
// loopback listeners are still created from root inside the sandbox's
// network namespace. As a non-root user, bubblewrap runs as that user and
// the command maps to it; bind sources are passed as descriptors
// (--bind-fd). Either way bubblewrap needs unprivileged user namespaces
// (kernel.unprivileged_userns_clone=1 on Debian kernels,
// kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile
// for bwrap on Ubuntu 24.04+, user.max_user_namespaces > 0); Available
// reports when they are missing.
package bwrap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
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
	insideUID  = 1000
	insideGID  = 1000
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
	// UID is the first host uid sandboxes run as when this process is
	// root: bubblewrap itself is started as that uid (and GID), so the
	// command's uid 1000 inside maps to it, never to host root. It must
	// not be 0 nor this process's uid. Zero means DefaultUID. When this
	// process is not root, UID, GID and UIDs are ignored: bubblewrap runs
	// as this process's uid and the command maps to it.
	UID int
	// GID is the first host gid, as UID. Zero means DefaultGID.
	GID int
	// UIDs is how many consecutive host uids and gids, from UID and GID,
	// the driver hands out: one per concurrently running sandbox, so that
	// sandboxes are apart by uid too (per-uid limits and kernel objects).
	// A sandbox takes the uid that already owns its Dir (so sandboxes on
	// the same Dir share one, and a Dir needs re-owning only when it
	// changes hands). With more sandboxes running than UIDs, some share a
	// uid. Zero means DefaultUIDs; 1 runs every sandbox as UID.
	UIDs int
}

func (c Config) withIDDefaults() Config {
	if c.UID == 0 {
		c.UID = DefaultUID
	}
	if c.GID == 0 {
		c.GID = DefaultGID
	}
	if c.UIDs == 0 {
		c.UIDs = DefaultUIDs
	}
	return c
}

// validateIDs checks UID, GID and UIDs, after withIDDefaults.
func (c Config) validateIDs() error {
	if c.UIDs < 1 {
		return fmt.Errorf("bwrap: config UIDs %d must be positive", c.UIDs)
	}
	return errors.Join(validIDs("UID", c.UID, c.UIDs, os.Geteuid()), validIDs("GID", c.GID, c.UIDs, os.Getegid()))
}

// DefaultSystemPaths returns the host directories bound read-only into
// every sandbox when Config.SystemPaths is nil: a command resolves inside
// only when its real path is under one of them.
func DefaultSystemPaths() []string {
	return []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}
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
	ids       *idPool // host ids of sandboxes; nil when not root
	stage     *stager // staging namespace for bind sources; nil when not root
	procRO    []string
	procMask  []procPath
}

// procPath is a /proc entry hidden under an empty file or directory.
type procPath struct {
	path string
	dir  bool
}

// Kernel interfaces in /proc that the sandbox gets read-only, and those it
// does not get at all (hidden under an empty read-only file or directory),
// when they exist on the host: Docker's readonly and masked paths.
//
// The agent is never host root (see Config.UID), so the kernel already
// refuses it what only root may read or write. Every bind costs bubblewrap
// a parse of the mount table, so an entry is bound only when it matters:
// /proc/sys and /proc/sysrq-trigger always (defence in depth for the
// kernel's knobs); the other read-only trees when something in them is
// writable by others; a masked path when others may read it.
var (
	procReadOnly = []string{"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs"}
	procMasked   = []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/timer_stats",
		"/proc/sched_debug", "/proc/latency_stats", "/proc/acpi", "/proc/asound", "/proc/scsi"}
)

// procAlwaysReadOnly are bound read-only whatever their modes.
var procAlwaysReadOnly = map[string]bool{"/proc/sys": true, "/proc/sysrq-trigger": true}

// writableByOthers reports whether p, or anything beneath it (up to a few
// thousand entries; more counts as yes), may be written by a user that
// owns none of it.
func writableByOthers(p string) bool {
	n, found := 0, false
	filepath.WalkDir(p, func(_ string, e fs.DirEntry, err error) error {
		if n++; n > 4096 {
			found = true
		}
		if err != nil || found {
			return filepath.SkipAll
		}
		if fi, err := e.Info(); err == nil && e.Type()&fs.ModeSymlink == 0 && fi.Mode().Perm()&0o002 != 0 {
			found = true
		}
		return nil
	})
	return found
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
		cfg.SystemPaths = DefaultSystemPaths()
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
	if os.Geteuid() == 0 {
		c := cfg.withIDDefaults()
		if err := c.validateIDs(); err != nil {
			d.Close()
			return nil, err
		}
		d.ids = newIDPool(c.UID, c.GID, c.UIDs)
		// Not under d.etc: /etc is bound recursively into sandboxes.
		dir := d.etc + "-stage"
		if err := os.Mkdir(dir, 0o711); err != nil {
			d.Close()
			return nil, err
		}
		if d.stage, err = newStager(dir); err != nil {
			d.Close()
			return nil, err
		}
	}
	for _, p := range procReadOnly {
		if _, err := os.Lstat(p); err == nil && (procAlwaysReadOnly[p] || writableByOthers(p)) {
			d.procRO = append(d.procRO, p)
		}
	}
	for _, p := range procMasked {
		if fi, err := os.Lstat(p); err == nil && fi.Mode().Perm()&0o004 != 0 {
			d.procMask = append(d.procMask, procPath{p, fi.IsDir()})
		}
	}
	return d, nil
}

// Close removes the driver's copy of /etc. Sandboxes must not be started
// afterwards.
func (d *Driver) Close() error {
	os.Chmod(d.empty, 0o755)
	os.Remove(d.etc + "-stage") // empty on the host; the tmpfs lives in the staging namespace
	return errors.Join(d.cg.Close(), d.stage.close(), os.RemoveAll(d.etc))
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
		"passwd": fmt.Sprintf("root:x:0:0:root:/root:/usr/sbin/nologin\nagent:x:%d:%d:agent:%s:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n", insideUID, insideGID, Home),
		"group":  fmt.Sprintf("root:x:0:\nagent:x:%d:\nnogroup:x:65534:\n", insideGID),
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
	cmd.Dir = "/"
	as := ""
	if os.Geteuid() == 0 {
		// Check what Start does: bubblewrap as the first sandbox uid.
		c := cfg.withIDDefaults()
		if err := c.validateIDs(); err != nil {
			return err
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(c.UID), Gid: uint32(c.GID), Groups: []uint32{}}}
		as = fmt.Sprintf(" as uid %d", c.UID)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		hint := " (unprivileged user namespaces may be disabled: check kernel.unprivileged_userns_clone, user.max_user_namespaces and kernel.apparmor_restrict_unprivileged_userns)"
		return fmt.Errorf("%w: bwrap: cannot create a sandbox%s: %v: %s%s", sandbox.ErrUnavailable, as, err, strings.TrimSpace(stderr.String()), hint)
	}
	return nil
}

// First descriptor numbers in bubblewrap: 3 seccomp, 4 info, 5 block,
// 6 the options (--args), then one per bind source.
const (
	fdSeccomp = 3
	fdInfo    = 4
	fdBlock   = 5
	fdArgs    = 6
	fdBinds   = 7
)

// args builds the bubblewrap options for l. Host bind sources are
// placeholders in the options, resolved by a bindSet (see stage.go):
// bubblewrap may run as an unprivileged uid that cannot reach them by
// path (a 0700 data directory). uid and gid (-1: unchanged) own the
// helper's sockets.
func (d *Driver) args(l *sandbox.Launch, bs *bindSet, uid, gid int) ([]string, []string, error) {
	s := &l.Spec
	a := []string{
		"--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup",
		"--disable-userns", "--uid", strconv.Itoa(insideUID), "--gid", strconv.Itoa(insideGID),
		"--die-with-parent", "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox",
		"--proc", "/proc", "--dev", "/dev",
	}
	bind := func(rw bool, r bindReq) {
		op := "--ro-bind"
		if rw {
			op = "--bind"
		}
		a = append(a, op, bs.add(r), r.dst)
	}
	// Kernel interfaces in /proc: read-only or hidden, like Docker's
	// readonly and masked paths. /proc is world-readable: by path.
	for _, p := range d.procRO {
		a = append(a, "--ro-bind", p, p)
	}
	for _, m := range d.procMask {
		src := d.emptyFile
		if m.dir {
			src = d.empty
		}
		a = append(a, "--ro-bind", src, m.path)
	}
	// System directories and the driver's /etc are world-readable: by path.
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
		bind(true, bindReq{path: s.Home, dst: Home})
	} else {
		a = append(a, "--tmpfs", Home)
	}

	// Host binds, parents before children so that none hides another.
	type hostBind struct {
		path string
		rw   bool
	}
	hostBinds := []hostBind{{s.Dir, !s.DirReadOnly}}
	for _, p := range s.ReadOnly {
		if _, err := os.Stat(p); err != nil {
			return nil, nil, fmt.Errorf("read-only path: %w", err)
		}
		hostBinds = append(hostBinds, hostBind{filepath.Clean(p), false})
	}
	sort.SliceStable(hostBinds, func(i, j int) bool {
		return strings.Count(hostBinds[i].path, "/") < strings.Count(hostBinds[j].path, "/")
	})
	for _, hb := range hostBinds {
		bind(hb.rw, bindReq{path: hb.path, dst: hb.path})
	}
	// Each directory between Dir and a read-only path is bound onto itself
	// first: a mount point cannot be renamed or removed, so the command
	// cannot move .git away and put a writable .git/hooks in its place.
	// Missing ancestors are created on the host for the same reason. All
	// of them are opened beneath Dir without following any symlink.
	pinned := map[string]bool{}
	var ros []bindReq
	inDir := s.ReadOnlyInDir
	if s.DirReadOnly {
		inDir = nil // all of Dir is read-only already
	}
	for _, rel := range inDir {
		clean := filepath.Clean(rel)
		parts := strings.Split(clean, "/")
		for i := 1; i < len(parts); i++ {
			anc := strings.Join(parts[:i], "/")
			if !pinned[anc] {
				pinned[anc] = true
				bind(true, bindReq{dir: s.Dir, rel: anc, mkdir: true, dst: filepath.Join(s.Dir, anc)})
			}
		}
		// Missing: an empty read-only file or directory in its place, so
		// that it cannot be created (the mount point appears on the host
		// as an empty file or directory).
		empty := d.emptyFile
		if strings.HasSuffix(rel, "/") || filepath.Base(clean) == "hooks" {
			empty = d.empty
		}
		ros = append(ros, bindReq{dir: s.Dir, rel: clean, empty: empty, dst: filepath.Join(s.Dir, clean)})
	}
	for _, r := range ros {
		bind(false, r)
	}

	command := s.Command
	if len(l.Listeners) > 0 && !d.inNetns {
		socks, err := l.Sockets()
		if err != nil {
			return nil, nil, err
		}
		bind(false, bindReq{path: l.HelperBinary, dst: helperPath})
		inside := make([]sandbox.Listener, len(socks))
		for i, ln := range socks {
			// connect(2) needs write permission on the socket: the
			// helper runs as the sandbox's host uid.
			if uid >= 0 {
				if err := os.Chown(ln.Socket, uid, gid); err != nil {
					return nil, nil, err
				}
			}
			p := sockDir + "/" + strconv.Itoa(i)
			bind(false, bindReq{path: ln.Socket, dst: p})
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
		bind(false, bindReq{path: s.Tools[n], dst: ToolDir + "/" + n})
	}
	a = append(a, "--remount-ro", "/", "--chdir", s.Dir)
	for _, kv := range l.Environ(d.cfg.Path, Home, "/tmp") {
		k, v, _ := strings.Cut(kv, "=")
		a = append(a, "--setenv", k, v)
	}
	return a, command, nil
}

// argsFile returns a sealed-off memory file holding opts NUL-separated, for
// bubblewrap's --args: nothing of them (the environment: tokens, prompts)
// appears on bubblewrap's command line, which every host user can read.
func argsFile(opts []string) (*os.File, error) {
	fd, err := unix.MemfdCreate("bwrap-args", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "bwrap-args")
	var buf bytes.Buffer
	for _, o := range opts {
		if strings.IndexByte(o, 0) >= 0 {
			f.Close()
			return nil, errors.New("bwrap: NUL byte in an option")
		}
		buf.WriteString(o)
		buf.WriteByte(0)
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Start starts bubblewrap blocked, puts the sandbox in its cgroup (or sets
// rlimits), then lets it run. As root, bubblewrap runs as one of the
// driver's unprivileged host uids, after Dir and Home were made its own.
func (d *Driver) Start(ctx context.Context, l *sandbox.Launch) (sp sandbox.Process, err error) {
	slot, uid, gid := -1, -1, -1
	alone := true
	var cred *syscall.Credential
	if d.ids != nil {
		slot, alone = d.ids.acquire(l.Spec.Dir)
		defer func() {
			if err != nil {
				d.ids.release(slot, l.Spec.Dir)
			}
		}()
		uid, gid = d.ids.ids(slot)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	}
	var bs bindSet
	defer bs.close()
	opts, command, err := d.args(l, &bs, uid, gid)
	if err != nil {
		return nil, err
	}
	// Dir and Home are walked only when no other sandbox on Dir lives: its
	// processes could rename entries under the walk (a hard link to a file
	// outside Dir in place of a checked name), and they already run as the
	// uid that owns Dir.
	if cred != nil && alone {
		for _, dir := range []string{l.Spec.Dir, l.Spec.Home} {
			if dir == "" {
				continue
			}
			if err := own(dir, uid, gid); err != nil {
				return nil, fmt.Errorf("hand the sandbox its directories: %w", err)
			}
		}
	}
	opts = append(opts, "--seccomp", strconv.Itoa(fdSeccomp), "--info-fd", strconv.Itoa(fdInfo), "--block-fd", strconv.Itoa(fdBlock))
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
	defer infoW.Close()
	blockR, blockW, err := os.Pipe()
	if err != nil {
		secW.Close()
		return nil, err
	}
	defer blockW.Close()
	defer blockR.Close()
	// The filter is far below the pipe buffer, so writing it first cannot block.
	_, err = secW.Write(d.filter)
	secW.Close()
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:        d.bwrap,
		Args:        append([]string{"bwrap", "--args", strconv.Itoa(fdArgs), "--"}, command...),
		Env:         []string{},
		Dir:         "/",
		Stdin:       l.Stdin,
		Stdout:      l.Stdout,
		Stderr:      l.Stderr,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Credential: cred},
	}
	launch := func(opts []string) error {
		argsF, err := argsFile(opts)
		if err != nil {
			return err
		}
		// bubblewrap passes on every descriptor it inherits. This
		// process's own are close-on-exec, but not those it inherited
		// itself or a library opened without O_CLOEXEC: mark them all
		// (ExtraFiles are duplicated for the child regardless).
		if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
			return fmt.Errorf("close_range: %w", err)
		}
		defer argsF.Close()
		cmd.ExtraFiles = append([]*os.File{secR, infoW, blockR, argsF}, bs.files...)
		return cmd.Start()
	}
	exited := func() {}
	if d.stage != nil {
		exited, err = d.stage.start(&bs, opts, uid, gid, launch)
	} else if err = bs.byDescriptor(opts, fdBinds); err == nil {
		err = launch(opts)
	}
	infoW.Close()
	blockR.Close()
	bs.close()
	if err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), pidfd: -1, ids: d.ids, slot: slot, dir: l.Spec.Dir, exited: exited}
	fail := func(err error) (sandbox.Process, error) {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		exited()
		p.slot = -1 // released by Start's deferred func
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
		limits := map[int]uint64{}
		if lim.Processes > 0 {
			limits[unix.RLIMIT_NPROC] = uint64(lim.Processes)
		}
		if lim.MemoryBytes > 0 {
			limits[unix.RLIMIT_DATA] = uint64(lim.MemoryBytes)
		}
		if err := prlimitAs(p.init, uid, gid, limits); err != nil {
			return fail(err)
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
		p.exited()
		close(p.done)
	}()
	return p, nil
}

type proc struct {
	exited  func() // lets the thread that started bubblewrap go
	ids     *idPool
	slot    int    // in ids; -1: none
	dir     string // Spec.Dir, live in ids until released
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
	if p.slot >= 0 {
		p.ids.release(p.slot, p.dir)
		p.slot = -1
	}
	if p.group == nil {
		return nil
	}
	return p.group.Release()
}
