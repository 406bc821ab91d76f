package sandboxtest

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// EscapeTool is the name under which the escape suite binds the test
// binary into the sandbox as the probe.
const EscapeTool = "nsescape"

// Probe results.
const (
	Escaped     = "escaped"
	Blocked     = "blocked"
	Unsupported = "unsupported" // the check cannot run here at all; Detail names the missing capability
)

// ProbeResult is one check's outcome, printed by the probe as a JSON line.
type ProbeResult struct {
	Check  string `json:"check"`
	Result string `json:"result"`
	Detail string `json:"detail,omitempty"`
}

// Replace is a check that renames Dir away (or deletes it), recreates it
// and writes File (relative to Dir) in the new one.
type Replace struct {
	Check string `json:"check"`
	Dir   string `json:"dir"`
	File  string `json:"file"`
}

// Tunnel is a network check: through $HTTPS_PROXY when set (CONNECT to
// Target), else a direct connection to Direct; escaped when the response
// carries the canary.
type Tunnel struct {
	Target string `json:"target"`
	Direct string `json:"direct"`
}

// ProbeConfig tells the probe what to attempt. Paths are host paths.
type ProbeConfig struct {
	Canary       string            `json:"canary"`
	ReadFiles    map[string]string `json:"read_files"`    // check -> file whose content contains Canary
	Readable     map[string]string `json:"readable"`      // check -> file that must not be readable (e.g. /etc/shadow)
	ListDirs     map[string]string `json:"list_dirs"`     // check -> dir holding a file named after Canary
	WriteFiles   map[string]string `json:"write_files"`   // check -> file to create or append to
	ReplaceDirs  []Replace         `json:"replace_dirs"`  // directories to move away and recreate, in order
	EnvVar       string            `json:"env_var"`       // host environment variable holding Canary
	HostHTTP     string            `json:"host_http"`     // host loopback HTTP server answering Canary
	HostTCP      string            `json:"host_tcp"`      // host loopback TCP listener writing Canary
	HostAbstract string            `json:"host_abstract"` // host abstract unix socket writing Canary
	Tunnels      map[string]Tunnel `json:"tunnels"`
	HostPid      int               `json:"host_pid"` // a host process whose environment holds Canary
	ForkBomb     int               `json:"fork_bomb"`
	MemoryBomb   int64             `json:"memory_bomb"`
	Daemon       string            `json:"daemon"` // sleep argument of a setsid daemon to leave behind
	Sleep        string            `json:"sleep"`  // path of sleep(1)
}

// EncodeProbeConfig returns the probe's single argument.
func EncodeProbeConfig(c ProbeConfig) string {
	b, _ := json.Marshal(c)
	return base64.StdEncoding.EncodeToString(b)
}

func escapeProbe(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "nsescape: want one argument")
		return 2
	}
	b, err := base64.StdEncoding.DecodeString(args[0])
	var c ProbeConfig
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nsescape:", err)
		return 2
	}
	enc := json.NewEncoder(os.Stdout)
	report := func(check string, escaped bool, detail string) {
		r := Blocked
		if escaped {
			r = Escaped
		}
		enc.Encode(ProbeResult{check, r, detail})
	}
	unsupported := func(check, capability string) { enc.Encode(ProbeResult{check, Unsupported, capability}) }
	has := func(b []byte) bool { return c.Canary != "" && strings.Contains(string(b), c.Canary) }

	if c.MemoryBomb > 0 {
		// Fault every page in with one syscall: a per-byte loop would be
		// slow under the race detector.
		mem, err := unix.Mmap(-1, 0, int(c.MemoryBomb), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err == nil {
			if err = unix.Madvise(mem, 23 /* MADV_POPULATE_WRITE */); err == unix.EINVAL {
				for i := 0; i < len(mem); i += 4096 {
					mem[i] = 1
				}
				err = nil
			}
		}
		report("memory_bomb", err == nil, fmt.Sprintf("allocated %d bytes: %s", c.MemoryBomb, errText(err)))
		if err != nil {
			return 1
		}
		return 0
	}

	for check, path := range c.ReadFiles {
		b, err := os.ReadFile(path)
		report(check, has(b), errText(err))
	}
	for check, path := range c.Readable {
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			report(check, len(b) > 0, "read")
		case isControl() && os.IsPermission(err):
			unsupported(check, "root (the unsandboxed control cannot read "+path+")")
		default:
			report(check, false, err.Error())
		}
	}
	for check, dir := range c.ListDirs {
		ents, err := os.ReadDir(dir)
		found := false
		for _, e := range ents {
			found = found || strings.Contains(e.Name(), c.Canary)
		}
		report(check, found, errText(err))
	}
	for check, path := range c.WriteFiles {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o755)
		if err == nil {
			_, err = f.WriteString("#!/bin/sh\n# " + c.Canary + "\n")
			f.Close()
		}
		// The test decides from the host side; this is the probe's view.
		report(check, err == nil, errText(err))
	}
	for _, r := range c.ReplaceDirs {
		check := r.Check
		err := os.Rename(r.Dir, r.Dir+"-moved")
		if err != nil {
			err = os.RemoveAll(r.Dir) // or delete it outright
		}
		if err == nil {
			f := filepath.Join(r.Dir, r.File)
			if err = os.MkdirAll(filepath.Dir(f), 0o755); err == nil {
				err = os.WriteFile(f, []byte("#!/bin/sh\n# "+c.Canary+"\n"), 0o755)
			}
		}
		report(check, err == nil, errText(err))
	}
	if c.EnvVar != "" {
		found := strings.Contains(strings.Join(os.Environ(), "\n"), c.Canary)
		where := "own environment"
		if !found {
			ents, _ := os.ReadDir("/proc")
			for _, e := range ents {
				if b, err := os.ReadFile("/proc/" + e.Name() + "/environ"); err == nil && has(b) {
					found, where = true, "/proc/"+e.Name()+"/environ"
					break
				}
			}
		}
		report("host_environment", found, where)
	}
	if c.HostPid > 0 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", c.HostPid))
		report("host_proc_environ", has(b), errText(err))
		err = syscall.Kill(c.HostPid, 0)
		report("signal_host_process", err == nil, errText(err))
		if err := ptraceSeize(c.HostPid); err == unix.EPERM && isControl() && os.Geteuid() != 0 {
			unsupported("ptrace_host_process", "root (the unsandboxed control may not ptrace a non-child: yama ptrace_scope)")
		} else {
			report("ptrace_host_process", err == nil, errText(err))
		}
	}
	if c.HostHTTP != "" {
		cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
		resp, err := cl.Get("http://" + c.HostHTTP + "/")
		var b []byte
		if err == nil {
			b, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		report("host_loopback_http", has(b), errText(err))
	}
	if c.HostTCP != "" {
		b, err := readFrom("tcp", c.HostTCP)
		report("host_loopback_port_ip_literal", has(b), errText(err))
	}
	if c.HostAbstract != "" {
		b, err := readFrom("unix", "@"+c.HostAbstract)
		report("host_abstract_unix_socket", has(b), errText(err))
	}
	for check, tn := range c.Tunnels {
		var body string
		var err error
		if p := os.Getenv("HTTPS_PROXY"); p != "" {
			var status string
			status, body, err = ConnectVia(p, tn.Target)
			if err == nil && body == "" {
				err = errors.New(status)
			}
		} else {
			var b []byte
			b, err = httpGet(tn.Direct)
			body = string(b)
		}
		report(check, strings.Contains(body, c.Canary), errText(err))
	}
	procChecks(report, unsupported)
	inheritedFDs(report)
	seccompChecks(report, unsupported, c)
	if c.ForkBomb > 0 {
		n, err := forkBomb(c.Sleep, c.ForkBomb)
		report("fork_bomb", n >= c.ForkBomb, fmt.Sprintf("started %d of %d: %s", n, c.ForkBomb, errText(err)))
	}
	if c.Daemon != "" {
		cmd := exec.Command(c.Sleep, c.Daemon)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		err := cmd.Start()
		if err == nil {
			cmd.Process.Release()
		}
		// The test decides from the host side after the run.
		report("setsid_daemon", err == nil, errText(err))
	}
	return 0
}

func readFrom(network, addr string) ([]byte, error) {
	c, err := net.DialTimeout(network, addr, 3*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return io.ReadAll(c)
}

func httpGet(addr string) ([]byte, error) {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// ptraceSeize attaches to pid without stopping it; the probe's exit detaches.
func ptraceSeize(pid int) error {
	runtime.LockOSThread() // the tracer is this thread; never unlocked, the thread dies with the probe
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SEIZE, uintptr(pid), 0, 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func seccompChecks(report func(string, bool, string), unsupported func(string, string), c ProbeConfig) {
	errno := func(e unix.Errno) string {
		if e == 0 {
			return ""
		}
		return e.Error()
	}
	// ptrace a child of our own.
	if c.Sleep != "" {
		child := exec.Command(c.Sleep, "30")
		if err := child.Start(); err == nil {
			err := ptraceSeize(child.Process.Pid)
			report("ptrace_own_child", err == nil, fmt.Sprint(err))
			child.Process.Kill()
			child.Wait()
		}
	}
	// process_vm_readv on ourselves.
	src := []byte("probe")
	dst := make([]byte, len(src))
	local := unix.Iovec{Base: &dst[0], Len: uint64(len(dst))}
	remote := unix.RemoteIovec{Base: uintptr(unsafe.Pointer(&src[0])), Len: len(src)}
	_, err := unix.ProcessVMReadv(os.Getpid(), []unix.Iovec{local}, []unix.RemoteIovec{remote}, 0)
	report("process_vm_readv", err == nil && string(dst) == "probe", fmt.Sprint(err))

	// io_uring_setup(1, &params)
	params := make([]byte, 120)
	fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params[0])), 0)
	switch {
	case e == 0:
		unix.Close(int(fd))
		report("io_uring", true, "")
	case e == unix.ENOSYS && isControl():
		unsupported("io_uring", "io_uring (kernel built without it)")
	case e == unix.EPERM && isControl() && ioUringDisabled():
		unsupported("io_uring", "io_uring (disabled by kernel.io_uring_disabled)")
	default:
		report("io_uring", false, errno(e))
	}
	for _, s := range []struct {
		check  string
		family int
		typ    int
	}{{"socket_netlink", unix.AF_NETLINK, unix.SOCK_RAW}, {"socket_packet", unix.AF_PACKET, unix.SOCK_RAW}} {
		fd, err := unix.Socket(s.family, s.typ|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
		}
		if err == unix.EPERM && isControl() && os.Geteuid() != 0 {
			unsupported(s.check, "CAP_NET_RAW (the unsandboxed control is not root)")
			continue
		}
		report(s.check, err == nil, fmt.Sprint(err))
	}
	// A nested user namespace, in a child (Go cannot unshare a user
	// namespace in a multithreaded process).
	if c.Sleep != "" {
		cmd := exec.Command(c.Sleep, "0")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER}
		err := cmd.Run()
		report("nested_user_namespace", err == nil, fmt.Sprint(err))
	}
}

// isControl reports whether the probe runs unsandboxed, as the positive control.
func isControl() bool { return os.Getenv("NSESCAPE_CONTROL") == "1" }

func ioUringDisabled() bool {
	b, _ := os.ReadFile("/proc/sys/kernel/io_uring_disabled")
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n != 0
}

func forkBomb(sleep string, n int) (int, error) {
	var procs []*os.Process
	defer func() {
		for _, p := range procs {
			p.Kill()
			p.Wait()
		}
	}()
	for i := range n {
		p, err := os.StartProcess(sleep, []string{sleep, "30"}, &os.ProcAttr{})
		if err != nil {
			return i, err
		}
		procs = append(procs, p)
	}
	return n, nil
}

// procChecks probe the kernel interfaces in /proc and the host uid. Every
// write is harmless: a value is written back unchanged, or a file is only
// opened for writing.
func procChecks(report func(string, bool, string), unsupported func(string, string)) {
	notRoot := isControl() && os.Geteuid() != 0
	// Host root inside shows as owning what host root owns: /usr. (The
	// uid_map inside shows the intermediate namespace bubblewrap makes for
	// /dev/pts, "1000 0 1", whatever the host uid; the test reads it from
	// the host.)
	var st unix.Stat_t
	if err := unix.Stat("/usr", &st); err != nil {
		report("host_uid_root", false, err.Error())
	} else if notRoot {
		unsupported("host_uid_root", "root (the unsandboxed control is not uid 0)")
	} else {
		report("host_uid_root", int(st.Uid) == os.Geteuid(), fmt.Sprintf("/usr owned by uid %d, we are %d", st.Uid, os.Geteuid()))
	}
	// Write the current value back: the positive control as root changes nothing.
	const fileMax = "/proc/sys/fs/file-max"
	if b, err := os.ReadFile(fileMax); err != nil {
		report("proc_sys_write", false, err.Error())
	} else {
		err := os.WriteFile(fileMax, b, 0)
		if notRoot && os.IsPermission(err) {
			unsupported("proc_sys_write", "root (the unsandboxed control may not write sysctls)")
		} else {
			report("proc_sys_write", err == nil, errText(err))
		}
	}
	for check, path := range map[string]string{
		"proc_core_pattern_writable":  "/proc/sys/kernel/core_pattern",
		"proc_sysrq_trigger_writable": "/proc/sysrq-trigger",
	} {
		// Opened for writing, closed unwritten.
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err == nil {
			f.Close()
		}
		switch {
		case isControl() && os.IsNotExist(err):
			unsupported(check, path+" (not in this kernel)")
		case notRoot && os.IsPermission(err):
			unsupported(check, "root (the unsandboxed control may not open "+path+" for writing)")
		default:
			report(check, err == nil, errText(err))
		}
	}
	// Kernel state that Docker masks too.
	b, err := os.ReadFile("/proc/timer_list")
	switch {
	case isControl() && os.IsNotExist(err):
		unsupported("read_proc_timer_list", "/proc/timer_list (not in this kernel)")
	case notRoot && os.IsPermission(err):
		unsupported("read_proc_timer_list", "root (the unsandboxed control may not read /proc/timer_list here)")
	default:
		report("read_proc_timer_list", len(b) > 0, errText(err))
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// inheritedFDs reports descriptors beyond stdio that the probe did not
// open itself: a directory or file of the host left open by the service
// (or whoever started it) would let the command reach past its mounts.
// The positive control inherits one.
func inheritedFDs(report func(string, bool, string)) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		report("inherited_fd", false, err.Error())
		return
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	var found []string
	for _, n := range names {
		fd, _ := strconv.Atoi(n)
		if fd <= 2 || uintptr(fd) == d.Fd() {
			continue
		}
		target, _ := os.Readlink("/proc/self/fd/" + n)
		if strings.HasPrefix(target, "anon_inode:") { // the Go runtime's own epoll and eventfd
			continue
		}
		found = append(found, n+" -> "+target)
	}
	report("inherited_fd", len(found) > 0, strings.Join(found, ", ")+errText(err))
}
