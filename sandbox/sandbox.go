package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nightshift/nightshift/sandbox/internal/egress"
)

// Errors returned by Manager.Run and the drivers.
var (
	// ErrInvalidSpec reports a Spec that cannot be run; the wrapping error names the field.
	ErrInvalidSpec = errors.New("sandbox: invalid spec")
	// ErrUnavailable reports a driver that cannot run on this host.
	ErrUnavailable = errors.New("sandbox: driver unavailable")
	// ErrReadOnlyUnsupported reports a driver that cannot bind Dir
	// read-only (Spec.DirReadOnly).
	ErrReadOnlyUnsupported = errors.New("sandbox: this driver cannot make the working directory read-only")
)

// Reasons a sandboxed command ended, as reported in Result.Reason. A normal
// exit is "exit N" (see ExitReason); a command killed by a signal it did not
// get from the Manager reports "exit 128+signal".
const (
	ReasonTimedOut    = "timed_out"    // Spec.Timeout elapsed; the whole tree was killed
	ReasonOOMKilled   = "oom_killed"   // the memory limit was hit and the kernel killed a process
	ReasonKilled      = "killed"       // the context was cancelled; the whole tree was killed
	ReasonOutputLimit = "output_limit" // stdout+stderr exceeded Limits.OutputBytes; the tree was killed
)

// ExitReason returns the Reason of a command that exited with code n.
func ExitReason(n int) string { return "exit " + strconv.Itoa(n) }

// Forward makes a host address the orchestrator owns reachable inside the
// sandbox as 127.0.0.1:Port.
type Forward struct {
	Port   int    // TCP port on the sandbox's loopback
	Target string // "tcp:127.0.0.1:8080" or "unix:/path/to.sock"
}

// Limits bounds the resources of one sandbox. Zero fields take the Manager's
// Config.DefaultLimits.
type Limits struct {
	MemoryBytes int64 // memory of the whole tree (cgroup) or data segment per process (prlimit)
	Processes   int   // processes (tasks) in the tree (cgroup) or per uid (prlimit)
	OutputBytes int64 // stdout plus stderr; beyond it the tree is killed (ReasonOutputLimit)
}

// Spec describes one sandboxed command.
type Spec struct {
	ID  string // unique per run, e.g. task id + step; used in names and logs
	Dir string // absolute host dir bound read-write and used as working directory (same path inside)
	// DirReadOnly binds Dir read-only instead (a plan run looks, it does
	// not touch). A driver that cannot enforce it refuses the spec with
	// ErrReadOnlyUnsupported.
	DirReadOnly bool
	ReadOnly    []string // extra absolute host paths bound read-only at the same path
	// ReadOnlyInDir lists paths relative to Dir re-bound read-only (e.g.
	// ".git/hooks", ".git/config"). They must not lead out of Dir through a
	// symlink. The directories between Dir and each path are pinned (bound
	// onto themselves) so they cannot be renamed or removed to swap the
	// path. A missing path is bound as an empty read-only file, or
	// directory when it ends in "/" or is named "hooks", so it cannot be
	// created either; the mount point then appears on the host as an empty
	// file or directory.
	ReadOnlyInDir []string
	Command       []string          // argv; Command[0] is looked up on the sandbox PATH
	Env           map[string]string // the complete environment; PATH, HOME, TMPDIR and LANG are set if absent
	Stdin         io.Reader         // nil: empty input
	Stdout        io.Writer         // nil: discarded
	Stderr        io.Writer         // nil: discarded
	Timeout       time.Duration     // 0: Config.DefaultTimeout
	// AllowHosts is the egress allowlist: exact names or "*.suffix", each
	// optionally with ":port". An entry without a port allows ports 443
	// and 80 only; "name:port" allows exactly that port. Empty: no network
	// at all.
	AllowHosts []string
	Forwards   []Forward         // loopback ports inside forwarded to host addresses
	Tools      map[string]string // name on PATH inside -> host executable (bound read-only)
	Limits     Limits            // zero fields: Config.DefaultLimits
	// Home, when set, is an absolute host directory bound read-write as the
	// command's $HOME, so state kept there (an agent's session store)
	// survives from one run to the next. Empty: a fresh private $HOME.
	Home string
	// Log, when set, receives proxy decisions and sandbox events for the
	// task log. When nil they are written as lines to Stderr.
	Log func(msg string, attrs ...any)
}

// Result is how a sandboxed command ended.
type Result struct {
	ExitCode int           // exit code of the command; -1 when the Manager killed it
	Reason   string        // "exit N", "timed_out", "oom_killed", "killed" or "output_limit"
	Duration time.Duration // wall-clock time from start to the end of the whole tree
}

// OK reports whether the command exited with code 0.
func (r Result) OK() bool { return r.Reason == ExitReason(0) }

// Config configures a Manager. Every field is optional.
type Config struct {
	// DefaultTimeout applies when Spec.Timeout is 0. Zero means 30 minutes.
	DefaultTimeout time.Duration
	// DefaultLimits fills zero Spec.Limits fields. Zero fields mean
	// 4 GiB memory, 1024 processes and 64 MiB of output.
	DefaultLimits Limits
	// StateDir holds per-run sockets and files (see Launch.StateDir); a
	// relative path is made absolute. Empty means
	// $TMPDIR/nightshift-sandbox (created 0700). When it is too long for
	// unix socket names, sockets go to a private directory under $TMPDIR.
	StateDir string
	// HelperBinary is the host executable bound into the sandbox to run the
	// loopback forwarder; it must call Reexec first thing in main. Empty
	// means os.Executable().
	HelperBinary string
	// ProxyPort is the loopback port inside the sandbox where the egress
	// proxy is reachable (HTTP_PROXY). Zero means 3128.
	ProxyPort int
	// LookupIPFunc resolves names for the egress proxy. Nil means
	// net.DefaultResolver.LookupNetIP. Tests inject a map.
	LookupIPFunc func(ctx context.Context, host string) ([]netip.Addr, error)
	// DialFunc dials upstreams for the egress proxy. Nil means a net.Dialer.
	DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)
	// EgressDeny lists the address ranges the proxy refuses to connect to.
	// Nil means DefaultEgressDeny (loopback, private, link-local, metadata,
	// multicast, unspecified). FOR TESTS ONLY: a narrower list lets a test
	// reach an upstream on loopback.
	EgressDeny []netip.Prefix
}

// DefaultEgressDeny returns the address ranges the egress proxy refuses by default.
func DefaultEgressDeny() []netip.Prefix { return egress.DefaultDeny() }

func (c Config) withDefaults() (Config, error) {
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = 30 * time.Minute
	}
	if c.DefaultLimits.MemoryBytes == 0 {
		c.DefaultLimits.MemoryBytes = 4 << 30
	}
	if c.DefaultLimits.Processes == 0 {
		c.DefaultLimits.Processes = 1024
	}
	if c.DefaultLimits.OutputBytes == 0 {
		c.DefaultLimits.OutputBytes = 64 << 20
	}
	if c.StateDir == "" {
		c.StateDir = filepath.Join(os.TempDir(), "nightshift-sandbox")
	}
	if abs, err := filepath.Abs(c.StateDir); err == nil {
		c.StateDir = abs
	}
	if c.HelperBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return c, fmt.Errorf("sandbox: config HelperBinary: %w", err)
		}
		c.HelperBinary = exe
	}
	if c.ProxyPort == 0 {
		c.ProxyPort = 3128
	}
	if c.EgressDeny == nil {
		c.EgressDeny = egress.DefaultDeny()
	}
	return c, nil
}

func (c Config) validate() error {
	switch {
	case c.DefaultTimeout < 0:
		return errors.New("sandbox: config DefaultTimeout must not be negative")
	case c.DefaultLimits.MemoryBytes < 0 || c.DefaultLimits.Processes < 0 || c.DefaultLimits.OutputBytes < 0:
		return errors.New("sandbox: config DefaultLimits must not be negative")
	case !filepath.IsAbs(c.StateDir):
		return fmt.Errorf("sandbox: config StateDir %q must be absolute", c.StateDir)
	case c.ProxyPort < 1 || c.ProxyPort > 65535:
		return fmt.Errorf("sandbox: config ProxyPort %d out of range", c.ProxyPort)
	}
	return nil
}

// Manager runs commands in sandboxes through one Driver. It is safe for
// concurrent use.
type Manager struct {
	d   Driver
	cfg Config
	log *slog.Logger
}

// NewManager returns a Manager over d. A nil logger discards.
func NewManager(d Driver, cfg Config, logger *slog.Logger) (*Manager, error) {
	if d == nil {
		return nil, errors.New("sandbox: nil driver")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("sandbox: create state dir: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{d: d, cfg: cfg, log: logger.With("sandbox_driver", d.Name())}
	if md, ok := d.(interface{ Mode() string }); ok {
		m.log.Info("sandbox driver ready", "limits", md.Mode())
	}
	return m, nil
}

// DriverName returns the name of the Manager's driver ("bwrap", "process").
func (m *Manager) DriverName() string { return m.d.Name() }

// Run runs spec.Command and blocks until it and every process it started
// are gone. Cancelling ctx kills the whole tree (Reason "killed"). The error
// is non-nil only when the command could not be started; how it ended is
// in the Result.
func (m *Manager) Run(ctx context.Context, spec Spec) (Result, error) {
	l, err := m.launch(spec)
	if err != nil {
		return Result{}, err
	}
	log := m.log.With("sandbox_id", spec.ID)
	l.Logger = log
	l.res = &runResources{parent: m.cfg.StateDir}
	defer l.res.release()

	out := newOutput(spec.Stdout, spec.Stderr, l.Spec.Limits.OutputBytes)
	eventLog := spec.Log
	if eventLog == nil {
		eventLog = out.logLine
	}
	m.startNetwork(l, eventLog)

	stdio, err := newStdio(spec.Stdin, out)
	if err != nil {
		return Result{}, err
	}
	defer stdio.closeParent()
	l.Stdin, l.Stdout, l.Stderr = stdio.childIn, stdio.childOut, stdio.childErr

	start := time.Now()
	p, err := m.d.Start(ctx, l)
	stdio.closeChild()
	if err != nil {
		return Result{}, fmt.Errorf("sandbox: start %s: %w", spec.ID, err)
	}
	var why atomic.Value // string: the Manager's reason for killing
	var killMu sync.Mutex
	closed := false
	kill := func(reason string) {
		why.CompareAndSwap(nil, reason)
		killMu.Lock()
		defer killMu.Unlock()
		if !closed {
			p.Kill()
		}
	}
	out.onLimit = func() { kill(ReasonOutputLimit) }
	stdio.startCopy()
	timer := time.AfterFunc(l.Spec.Timeout, func() { kill(ReasonTimedOut) })
	done := make(chan struct{})
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case <-ctx.Done():
			kill(ReasonKilled)
		case <-done:
		}
	}()

	exit, waitErr := p.Wait()
	close(done)
	timer.Stop()
	<-watcherDone
	p.Kill() // the main process is gone: sweep whatever it left behind
	stdio.waitCopy(5 * time.Second)
	killMu.Lock() // a late timer or output-limit kill must not race Close
	closed = true
	killMu.Unlock()
	if err := p.Close(); err != nil {
		log.Warn("sandbox cleanup", "err", err)
	}
	res := Result{Duration: time.Since(start), ExitCode: exit.Code}
	switch r, _ := why.Load().(string); {
	case r != "":
		res.Reason, res.ExitCode = r, -1
	case exit.OOMKilled:
		res.Reason, res.ExitCode = ReasonOOMKilled, -1
	case waitErr != nil:
		log.Warn("sandbox wait", "err", waitErr)
		res.Reason, res.ExitCode = ReasonKilled, -1
	default:
		res.Reason = ExitReason(exit.Code)
	}
	log.Debug("sandbox done", "reason", res.Reason, "duration", res.Duration)
	return res, nil
}

// launch validates spec and applies defaults.
func (m *Manager) launch(spec Spec) (*Launch, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, args...))
	}
	if spec.ID == "" {
		return nil, bad("ID is empty")
	}
	if len(spec.Command) == 0 || spec.Command[0] == "" {
		return nil, bad("Command is empty")
	}
	if !filepath.IsAbs(spec.Dir) {
		return nil, bad("Dir %q is not absolute", spec.Dir)
	}
	if fi, err := os.Stat(spec.Dir); err != nil || !fi.IsDir() {
		return nil, bad("Dir %q is not a directory", spec.Dir)
	}
	for _, p := range spec.ReadOnly {
		if !filepath.IsAbs(p) {
			return nil, bad("ReadOnly path %q is not absolute", p)
		}
	}
	if spec.Home != "" {
		if fi, err := os.Stat(spec.Home); !filepath.IsAbs(spec.Home) || err != nil || !fi.IsDir() {
			return nil, bad("Home %q is not an absolute directory", spec.Home)
		}
	}
	for _, p := range spec.ReadOnlyInDir {
		if p == "" || filepath.IsAbs(p) || !filepath.IsLocal(p) {
			return nil, bad("ReadOnlyInDir path %q must be relative and inside Dir", p)
		}
	}
	if spec.Timeout < 0 {
		return nil, bad("Timeout is negative")
	}
	for _, h := range spec.AllowHosts {
		if err := egress.ValidPattern(h); err != nil {
			return nil, bad("AllowHosts: %v", err)
		}
	}
	ports := map[int]bool{}
	if len(spec.AllowHosts) > 0 {
		ports[m.cfg.ProxyPort] = true
	}
	for _, f := range spec.Forwards {
		if f.Port < 1 || f.Port > 65535 || ports[f.Port] {
			return nil, bad("Forwards port %d out of range or used twice (the proxy uses %d)", f.Port, m.cfg.ProxyPort)
		}
		ports[f.Port] = true
		if _, _, err := parseTarget(f.Target); err != nil {
			return nil, bad("Forwards target: %v", err)
		}
	}
	for name, path := range spec.Tools {
		if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
			return nil, bad("Tools name %q", name)
		}
		if !filepath.IsAbs(path) {
			return nil, bad("Tools %q path %q is not absolute", name, path)
		}
	}
	for k := range spec.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, bad("Env key %q", k)
		}
	}
	if spec.Timeout == 0 {
		spec.Timeout = m.cfg.DefaultTimeout
	}
	if spec.Limits.MemoryBytes == 0 {
		spec.Limits.MemoryBytes = m.cfg.DefaultLimits.MemoryBytes
	}
	if spec.Limits.Processes == 0 {
		spec.Limits.Processes = m.cfg.DefaultLimits.Processes
	}
	if spec.Limits.OutputBytes == 0 {
		spec.Limits.OutputBytes = m.cfg.DefaultLimits.OutputBytes
	}
	env := make(map[string]string, len(spec.Env)+8)
	for k, v := range spec.Env {
		env[k] = v
	}
	if _, ok := env["LANG"]; !ok {
		env["LANG"] = "C.UTF-8"
	}
	spec.Env = env
	return &Launch{Spec: spec, HelperBinary: m.cfg.HelperBinary}, nil
}

// startNetwork creates the egress proxy and forward relays of a run; the
// driver decides where they listen (Launch.Listeners).
func (m *Manager) startNetwork(l *Launch, logf func(string, ...any)) {
	spec := &l.Spec
	if len(spec.AllowHosts) > 0 {
		p := egress.New(egress.Config{
			Allow:    spec.AllowHosts,
			Deny:     m.cfg.EgressDeny,
			LookupIP: m.cfg.LookupIPFunc,
			Dial:     m.cfg.DialFunc,
			Log:      logf,
		})
		l.res.closers = append(l.res.closers, p)
		l.Listeners = append(l.Listeners, Listener{Port: m.cfg.ProxyPort, Serve: func(ln net.Listener) { p.Serve(ln) }})
		proxy := "http://127.0.0.1:" + strconv.Itoa(m.cfg.ProxyPort)
		for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
			spec.Env[k] = proxy
		}
		for _, k := range []string{"NO_PROXY", "no_proxy"} {
			if _, ok := spec.Env[k]; !ok {
				spec.Env[k] = "localhost,127.0.0.1,::1"
			}
		}
	}
	for _, f := range spec.Forwards {
		network, addr, _ := parseTarget(f.Target)
		r := egress.NewRelay(network, addr)
		l.res.closers = append(l.res.closers, r)
		l.Listeners = append(l.Listeners, Listener{Port: f.Port, Serve: r.Serve})
	}
}

func parseTarget(t string) (network, addr string, err error) {
	network, addr, ok := strings.Cut(t, ":")
	switch {
	case !ok || addr == "":
	case network == "tcp":
		if _, _, err := net.SplitHostPort(addr); err == nil {
			return network, addr, nil
		}
	case network == "unix":
		if filepath.IsAbs(addr) {
			return network, addr, nil
		}
	}
	return "", "", fmt.Errorf("target %q: want tcp:HOST:PORT or unix:/ABS/PATH", t)
}

// output fans the command's stdout and stderr into the Spec's writers,
// serialized, up to a byte cap.
type output struct {
	mu       sync.Mutex
	stdout   io.Writer
	stderr   io.Writer
	same     bool
	left     int64
	exceeded bool
	onLimit  func()
}

func newOutput(stdout, stderr io.Writer, max int64) *output {
	return &output{stdout: stdout, stderr: stderr, same: sameWriter(stdout, stderr), left: max}
}

func sameWriter(a, b io.Writer) (same bool) {
	defer func() { recover() }() // uncomparable dynamic types
	return a != nil && a == b
}

func (o *output) write(w io.Writer, p []byte) {
	o.mu.Lock()
	n := int64(len(p))
	fire := false
	if n > o.left {
		n = o.left
		if !o.exceeded {
			o.exceeded, fire = true, true
		}
	}
	o.left -= n
	if w != nil && n > 0 {
		w.Write(p[:n])
	}
	o.mu.Unlock()
	if fire && o.onLimit != nil {
		o.onLimit()
	}
}

// logLine writes a sandbox event to stderr when the Spec has no Log func.
func (o *output) logLine(msg string, attrs ...any) {
	var b strings.Builder
	b.WriteString("nightshift-sandbox: ")
	b.WriteString(msg)
	for i := 0; i+1 < len(attrs); i += 2 {
		fmt.Fprintf(&b, " %v=%v", attrs[i], attrs[i+1])
	}
	b.WriteByte('\n')
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stderr != nil {
		io.WriteString(o.stderr, b.String())
	}
}

type stdio struct {
	out                         *output
	childIn, childOut, childErr *os.File
	parentIn                    *os.File // write end feeding childIn
	parentOut, parentErr        *os.File // read ends
	stdin                       io.Reader
	borrowedIn                  bool
	copies                      sync.WaitGroup
}

func newStdio(in io.Reader, out *output) (*stdio, error) {
	s := &stdio{out: out, stdin: in}
	var err error
	fail := func(e error) (*stdio, error) {
		s.closeChild()
		s.closeParent()
		return nil, fmt.Errorf("sandbox: stdio: %w", e)
	}
	switch f, ok := in.(*os.File); {
	case in == nil:
		if s.childIn, err = os.Open(os.DevNull); err != nil {
			return fail(err)
		}
	case ok:
		s.childIn, s.stdin, s.borrowedIn = f, nil, true // not ours to close
	default:
		if s.childIn, s.parentIn, err = os.Pipe(); err != nil {
			return fail(err)
		}
	}
	if s.parentOut, s.childOut, err = os.Pipe(); err != nil {
		return fail(err)
	}
	if out.same {
		s.childErr = s.childOut
	} else if s.parentErr, s.childErr, err = os.Pipe(); err != nil {
		return fail(err)
	}
	return s, nil
}

// closeChild closes the parent's copies of the child's ends.
func (s *stdio) closeChild() {
	for _, f := range []*os.File{s.childIn, s.childOut, s.childErr} {
		if f != nil && !(f == s.childIn && s.borrowedIn) {
			f.Close()
		}
	}
}

func (s *stdio) startCopy() {
	if s.parentIn != nil && s.stdin != nil {
		go func() {
			io.Copy(s.parentIn, s.stdin)
			s.parentIn.Close()
		}()
	}
	pump := func(r *os.File, w func() io.Writer) {
		defer s.copies.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				s.out.write(w(), buf[:n])
			}
			if err != nil {
				return
			}
		}
	}
	s.copies.Add(1)
	go pump(s.parentOut, func() io.Writer { return s.out.stdout })
	if s.parentErr != nil {
		s.copies.Add(1)
		go pump(s.parentErr, func() io.Writer { return s.out.stderr })
	}
}

// waitCopy waits until the output pipes hit EOF; a stray process still
// holding them open is cut off after grace.
func (s *stdio) waitCopy(grace time.Duration) {
	done := make(chan struct{})
	go func() { s.copies.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		s.parentOut.Close()
		if s.parentErr != nil {
			s.parentErr.Close()
		}
		<-done
	}
}

// closeParent closes the parent's ends. The stdin copier, if blocked reading
// Spec.Stdin, ends at its next read.
func (s *stdio) closeParent() {
	for _, f := range []*os.File{s.parentIn, s.parentOut, s.parentErr} {
		if f != nil {
			f.Close()
		}
	}
}
