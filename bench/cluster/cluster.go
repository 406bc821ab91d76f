// Package cluster runs Nightshift the way an operator deploys it on several
// hosts, as real processes on loopback: nats-server nodes (built from the
// module's own nats-server dependency) forming a JetStream cluster, and
// `nightshift serve --role ingress|scheduler|worker` processes, each with
// its own data dir and config, talking only through NATS. It can kill -9,
// freeze (SIGSTOP), resume and restart any of them, fill a worker's disk,
// and read each process's CPU time from /proc.
//
// The chaos suite (Chaos) and the stale-worker test in cmd/nightshift, and
// `go run ./bench chaos|dispatch`, are built on it. Functions take a
// testing.TB; a program gets one from Main.
//
// Processes bind only 127.0.0.1. Everything is Linux-only (/proc, signals,
// tmpfs for a full disk).
package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Nightshift builds the nightshift binary once per process (test run or
// bench run) and returns its path.
func Nightshift(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nightshift-cluster-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "nightshift")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/nightshift/nightshift/cmd/nightshift")
		cmd.Dir = ModuleRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build nightshift: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// ModuleRoot is the directory of Nightshift's go.mod (tests and `go run
// ./bench` both run inside the module).
func ModuleRoot(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			rootErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		mod := strings.TrimSpace(string(out))
		if mod == "" || mod == os.DevNull {
			rootErr = errors.New("cluster: not inside the nightshift module (go env GOMOD is empty)")
			return
		}
		rootDir = filepath.Dir(mod)
	})
	if rootErr != nil {
		t.Fatal(rootErr)
	}
	return rootDir
}

var natsMu sync.Mutex

// NATSServer builds nats-server from the version go.mod requires and caches
// the binary in os.TempDir() under that version, so later runs reuse it.
func NATSServer(t testing.TB) string {
	t.Helper()
	natsMu.Lock()
	defer natsMu.Unlock()
	root := ModuleRoot(t)
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/nats-io/nats-server/v2")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list nats-server version: %v", err)
	}
	version := strings.TrimSpace(string(out))
	path := filepath.Join(os.TempDir(), "nightshift-nats-server-"+version, "nats-server")
	if fi, err := os.Stat(path); err == nil && fi.Mode()&0o111 != 0 {
		return path
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	// Build next to the final path and rename, so a concurrent run never
	// executes a half-written binary.
	tmp := path + ".tmp" + strconv.Itoa(os.Getpid())
	build := exec.Command("go", "build", "-o", tmp, "github.com/nats-io/nats-server/v2")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build nats-server %s: %v\n%s", version, err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Proc is one child process that can be killed, frozen and restarted
// with the same arguments, ports and directories.
type Proc struct {
	Name string
	Dir  string // its own directory (config, log)
	Log  string // stdout and stderr, appended over restarts

	bin  string
	args []string
	env  []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *Proc) start(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(p.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s start %s\n", time.Now().Format(time.RFC3339Nano), p.Name)
	cmd := exec.Command(p.bin, p.args...)
	cmd.Dir = p.Dir
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so a kill reaches the agents it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.Name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
}

// PID is the process id of the running process (0 when stopped).
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	select {
	case <-p.done:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

// Kill sends SIGKILL to the process and everything it started (as a
// machine crash would) and waits for it to exit.
func (p *Proc) Kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	kids := Descendants(cmd.Process.Pid)
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Process.Kill()
	for _, k := range kids {
		syscall.Kill(k, syscall.SIGKILL)
	}
	<-done
}

// Term sends SIGTERM and waits up to timeout for a clean exit, then kills.
func (p *Proc) Term(timeout time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		p.mu.Lock()
		p.cmd = nil
		p.mu.Unlock()
		if !cmd.ProcessState.Success() {
			return fmt.Errorf("%s exited %v after SIGTERM", p.Name, cmd.ProcessState)
		}
		return nil
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s did not exit within %s of SIGTERM", p.Name, timeout)
	}
}

// Freeze stops the process (SIGSTOP) without touching its children: a
// worker that stops heartbeating while its agent keeps going.
func (p *Proc) Freeze() {
	if pid := p.PID(); pid != 0 {
		syscall.Kill(pid, syscall.SIGSTOP)
	}
}

// Thaw resumes a frozen process (SIGCONT).
func (p *Proc) Thaw() {
	if pid := p.PID(); pid != 0 {
		syscall.Kill(pid, syscall.SIGCONT)
	}
}

// Exited reports whether the process has exited (or was never started).
func (p *Proc) Exited() bool { return p.PID() == 0 }

// Tail returns the last n bytes of the process's log.
func (p *Proc) Tail(n int) string {
	b, _ := os.ReadFile(p.Log)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// CPU is the user+system CPU time the process itself has used (not its
// children), from /proc/<pid>/stat.
func (p *Proc) CPU() time.Duration {
	pid := p.PID()
	if pid == 0 {
		return 0
	}
	return ProcCPU(pid)
}

// ProcCPU reads utime+stime of pid (USER_HZ is 100 on Linux).
func ProcCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	// After the command: state(0) ppid(1) ... utime(11) stime(12).
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * (time.Second / 100)
}

// Parent is pid's parent process id (0 when unknown).
func Parent(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// Descendants lists every live process below pid.
func Descendants(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		children[Parent(n)] = append(children[Parent(n)], n)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// IsAncestor reports whether anc is pid or one of its ancestors.
func IsAncestor(anc, pid int) bool {
	for i := 0; pid > 1 && i < 64; i++ {
		if pid == anc {
			return true
		}
		pid = Parent(pid)
	}
	return false
}

// NATSNode is one nats-server process.
type NATSNode struct {
	*Proc
	Port, ClusterPort int
	URL               string
}

// NATS is a JetStream cluster (or one server) of nats-server processes.
type NATS struct {
	Nodes []*NATSNode
	// URL lists every node, comma-separated (nats.Connect and --nats take it).
	URL string
}

// StartNATS starts n nats-server processes under dir (n = 1: a single
// JetStream server; n ≥ 3: a cluster) and waits for JetStream to answer
// (a meta leader is elected). They are killed when the test ends.
func StartNATS(t testing.TB, dir string, n int) *NATS {
	t.Helper()
	bin := NATSServer(t)
	c := &NATS{}
	var routes []string
	for i := range n {
		node := &NATSNode{Port: FreePort(t), ClusterPort: FreePort(t)}
		node.URL = fmt.Sprintf("nats://127.0.0.1:%d", node.Port)
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", node.ClusterPort))
		name := fmt.Sprintf("n%d", i+1)
		ndir := filepath.Join(dir, "nats-"+name)
		if err := os.MkdirAll(ndir, 0o700); err != nil {
			t.Fatal(err)
		}
		node.Proc = &Proc{Name: "nats-" + name, Dir: ndir, Log: filepath.Join(ndir, "nats.log"), bin: bin,
			args: []string{"-c", filepath.Join(ndir, "nats.conf")}, env: []string{"PATH=" + os.Getenv("PATH")}}
		c.Nodes = append(c.Nodes, node)
	}
	var urls []string
	for i, node := range c.Nodes {
		conf := fmt.Sprintf("server_name: n%d\nlisten: \"127.0.0.1:%d\"\nmax_payload: 8MB\n"+
			"jetstream {\n  store_dir: %q\n  max_memory_store: 256MB\n  max_file_store: 4GB\n}\n",
			i+1, node.Port, filepath.Join(node.Dir, "js"))
		if n > 1 {
			conf += fmt.Sprintf("cluster {\n  name: nightshift\n  listen: \"127.0.0.1:%d\"\n  routes: [%s]\n}\n",
				node.ClusterPort, strings.Join(routes, ", "))
		}
		if err := os.WriteFile(filepath.Join(node.Dir, "nats.conf"), []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		node.start(t)
		urls = append(urls, node.URL)
	}
	c.URL = strings.Join(urls, ",")
	t.Cleanup(func() {
		for _, node := range c.Nodes {
			node.Kill()
		}
	})
	for _, node := range c.Nodes {
		c.WaitNode(t, node, 60*time.Second)
	}
	return c
}

// WaitNode waits until node answers JetStream requests.
func (c *NATS) WaitNode(t testing.TB, node *NATSNode, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if node.Exited() {
			t.Fatalf("%s exited:\n%s", node.Name, node.Tail(4000))
		}
		last = jsReady(node.URL)
		if last == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: JetStream not ready after %s: %v\n%s", node.Name, timeout, last, node.Tail(4000))
}

func jsReady(url string) error {
	nc, err := nats.Connect(url, nats.Timeout(2*time.Second), nats.MaxReconnects(0))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

// Restart starts a killed node again with the same config and store, and
// waits for it to answer JetStream requests.
func (c *NATS) Restart(t testing.TB, node *NATSNode) {
	t.Helper()
	node.start(t)
	c.WaitNode(t, node, 60*time.Second)
}

// Role is one `nightshift serve --role R` process with its own data dir
// and config.
type Role struct {
	*Proc
	Role    string
	DataDir string
	Config  string
	// URL is its HTTP base (stable over restarts: the port is kept).
	URL string
	API *API
}

// RoleOptions configure StartRole.
type RoleOptions struct {
	// Name of the process (default the role).
	Name string
	// Role: ingress, scheduler, worker or all.
	Role string
	// NATS URL (comma-separated list); "" runs embedded NATS.
	NATS string
	// Config is the nightshift.yaml content.
	Config string
	// AckWait is passed as --ack-wait when set.
	AckWait time.Duration
	// DataDir overrides <dir>/data (e.g. a size-capped mount).
	DataDir string
	// Env is appended to the process environment.
	Env []string
}

// VaultKey is the vault key every process of a cluster shares (sealed
// records travel between hosts; the key is configuration).
var VaultKey = strings.Repeat("ab", 32)

// StartRole starts a serve process under dir and waits for it to listen.
// It is killed when the test ends.
func StartRole(t testing.TB, dir string, o RoleOptions) *Role {
	t.Helper()
	if o.Name == "" {
		o.Name = o.Role
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	r := &Role{Role: o.Role, DataDir: o.DataDir, Config: filepath.Join(dir, "nightshift.yaml")}
	if r.DataDir == "" {
		r.DataDir = filepath.Join(dir, "data")
	}
	if err := os.WriteFile(r.Config, []byte(o.Config), 0o600); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(dir, "home")
	os.MkdirAll(home, 0o700)
	port := FreePort(t)
	r.URL = fmt.Sprintf("http://127.0.0.1:%d", port)
	args := []string{"serve", "--role", o.Role, "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--data-dir", r.DataDir, "--config", r.Config}
	if o.NATS != "" {
		args = append(args, "--nats", o.NATS)
	}
	if o.AckWait > 0 {
		args = append(args, "--ack-wait", o.AckWait.String())
	}
	env := append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "NIGHTSHIFT_VAULT_KEY=" + VaultKey}, o.Env...)
	r.Proc = &Proc{Name: o.Name, Dir: dir, Log: filepath.Join(dir, "serve.log"), bin: Nightshift(t), args: args, env: env}
	r.API = &API{Base: r.URL}
	r.Start(t)
	t.Cleanup(r.Kill)
	return r
}

// Start (re)starts the process and waits until it serves HTTP.
func (r *Role) Start(t testing.TB) {
	t.Helper()
	os.Remove(filepath.Join(r.DataDir, "serve.addr"))
	r.start(t)
	r.WaitListening(t, 90*time.Second)
}

// WaitListening waits for serve.addr (written once the listener is up).
func (r *Role) WaitListening(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(filepath.Join(r.DataDir, "serve.addr"))
		if err == nil && strings.TrimSpace(string(b)) == r.URL {
			return
		}
		if r.Exited() {
			t.Fatalf("%s exited during start:\n%s", r.Name, r.Tail(6000))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not start within %s:\n%s", r.Name, timeout, r.Tail(6000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// LogLines returns the lines of the process's log that contain substr.
func (p *Proc) LogLines(substr string) []string {
	f, err := os.Open(p.Log)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			out = append(out, sc.Text())
		}
	}
	return out
}

// Eventually polls cond every 100 ms until it reports true, failing the
// test after timeout with what and cond's last description.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, desc := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, desc)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
