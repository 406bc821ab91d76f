package main

// The operational side of serve: the data-dir lock, connecting to an
// external NATS that may not be up yet, readiness probes and the drain gate
// that stops new work while running tasks finish.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator"
)

// dataDirLockFile is held (flock) by the serve process that owns a data dir.
const dataDirLockFile = "serve.lock"

// lockHolder is what the lock file says about its holder.
type lockHolder struct {
	PID   int       `json:"pid"`
	Host  string    `json:"host"`
	Since time.Time `json:"since"`
}

// errDataDirBusy is a data dir another live process holds.
type errDataDirBusy struct {
	dir    string
	holder *lockHolder
}

func (e *errDataDirBusy) Error() string {
	who := "another nightshift serve"
	if h := e.holder; h != nil {
		who = fmt.Sprintf("nightshift serve pid %d on host %s since %s", h.PID, h.Host, h.Since.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("data dir %s is held by %s; stop that process or give this one its own --data-dir", e.dir, who)
}

// lockDataDir takes the data dir for this process: an exclusive flock on
// <dir>/serve.lock, which the kernel releases when the process dies, so a
// lock left by a crashed server is simply taken over. The file records the
// holder's pid, host and start time for the refusal message. The returned
// file must stay open while the server runs; closing it releases the lock.
func lockDataDir(dir string, now time.Time) (*os.File, error) {
	path := filepath.Join(dir, dataDirLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock data dir: flock %s: %w", path, err)
		}
		// The holder writes its record right after locking: give it a
		// moment when the file is still empty.
		var h *lockHolder
		for range 10 {
			var rec lockHolder
			if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &rec) == nil && rec.PID > 0 {
				h = &rec
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		return nil, &errDataDirBusy{dir: dir, holder: h}
	}
	host, _ := os.Hostname()
	rec, _ := json.Marshal(lockHolder{PID: os.Getpid(), Host: host, Since: now.UTC()})
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt(append(rec, '\n'), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock data dir: write %s: %w", path, err)
	}
	return f, nil
}

// connectNATS connects to the external servers in url (a comma-separated
// list), without failing when none answers yet: the connection keeps
// retrying in the background (RetryOnFailedConnect) and NewBus waits for
// JetStream. Disconnects and reconnects are logged.
func connectNATS(url, name string, logger *slog.Logger) (*nats.Conn, error) {
	var servers []string
	for _, u := range strings.Split(url, ",") {
		if u = strings.TrimSpace(u); u != "" {
			servers = append(servers, u)
		}
	}
	if len(servers) == 0 {
		return nil, fmt.Errorf("nats.url %q names no server", url)
	}
	log := logger.With("component", "nats")
	nc, err := nats.Connect(strings.Join(servers, ","), nats.Name(name),
		nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second), nats.ReconnectJitter(500*time.Millisecond, time.Second),
		nats.ConnectHandler(func(nc *nats.Conn) { log.Info("connected to NATS", "server", nc.ConnectedUrlRedacted()) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("reconnected to NATS", "server", nc.ConnectedUrlRedacted()) }))
	if err != nil {
		return nil, fmt.Errorf("nats.url %q: %w", url, err)
	}
	if !nc.IsConnected() {
		log.Warn("no NATS server answers yet; waiting for one", "servers", strings.Join(servers, ","))
	}
	return nc, nil
}

// diskProbe tells whether the data dir takes writes: it creates, writes,
// fsyncs and removes a small file, at most once per interval (the result
// is kept in between), so a full or read-only disk makes /readyz say so.
type diskProbe struct {
	dir      string
	interval time.Duration

	mu  sync.Mutex
	at  time.Time
	err error
}

func newDiskProbe(dir string) *diskProbe { return &diskProbe{dir: dir, interval: 2 * time.Second} }

func (p *diskProbe) Check(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.at.IsZero() && time.Since(p.at) < p.interval {
		return p.err
	}
	p.err, p.at = probeWrite(p.dir), time.Now()
	return p.err
}

func probeWrite(dir string) error {
	f, err := os.CreateTemp(dir, ".ready-probe-*")
	if err != nil {
		return fmt.Errorf("cannot write the data dir: %w", err)
	}
	name := f.Name()
	defer os.Remove(name)
	_, err = f.Write(make([]byte, 4096))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Remove(name)
	}
	if err != nil {
		return fmt.Errorf("cannot write the data dir: %w", err)
	}
	return nil
}

// drainGate turns away new work once the server is stopping: webhooks and
// API writes answer 503 with Retry-After, so senders and load balancers go
// elsewhere, while reads, /mcp, health checks and metrics are still served
// until the workers have drained.
type drainGate struct{ draining atomic.Bool }

func (g *drainGate) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.draining.Load() && takesWork(r) {
			w.Header().Set("Retry-After", "10")
			writeJSONError(w, http.StatusServiceUnavailable, "shutting down: this server takes no new work; retry in a moment (another server, or this one after its restart)")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// check is the readiness check of the gate.
func (g *drainGate) check(context.Context) error {
	if g.draining.Load() {
		return errors.New("shutting down")
	}
	return nil
}

// takesWork reports whether r could start work: a webhook or an API write.
func takesWork(r *http.Request) bool {
	p := r.URL.Path
	if strings.HasPrefix(p, "/hooks/") {
		return true
	}
	if strings.HasPrefix(p, "/api/v1/") {
		return r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodOptions
	}
	return false
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// readyChecks are the checks /readyz runs: each a name and a function.
type readyChecks map[string]func(context.Context) error

func (c readyChecks) run(ctx context.Context) map[string]error {
	out := make(map[string]error, len(c))
	for name, f := range c {
		out[name] = f(ctx)
	}
	return out
}

// lockDataDir takes the data dir for s until it closes.
func (s *server) lockDataDir(dir string) error {
	f, err := lockDataDir(dir, time.Now())
	if err != nil {
		return err
	}
	s.closers = append(s.closers, func() { f.Close() })
	return nil
}

// readyChecks are what /readyz checks for role: NATS everywhere, the
// SQLite file where it is read, and the data dir's disk where tasks run;
// and, once stopping, that the server is shutting down.
func (s *server) readyChecks(role string, disk *diskProbe, bus *orchestrator.Bus, store *orchestrator.Store) readyChecks {
	checks := readyChecks{"nats": bus.Ping, "shutdown": s.gate.check}
	if role == "all" || role == "ingress" || role == "scheduler" {
		checks["sqlite"] = store.Ping
	}
	if role == "all" || role == "worker" {
		checks["disk"] = disk.Check
	}
	return checks
}

// registerBusMetrics exports the bus's own counters.
func registerBusMetrics(reg prometheus.Registerer, bus *orchestrator.Bus) {
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "nightshift_log_lines_lost_total",
		Help: "Task log lines NATS did not store (refused or not acknowledged in time)."},
		func() float64 { return float64(bus.LogLinesLost()) }))
}

// startServerWaiting starts the server, starting over while NATS does not
// answer in time: on a cluster that is still forming, or when several
// processes create the same streams and buckets at the same moment (and
// JetStream answers only one of them), a start can time out in any
// component that keeps state in JetStream. Each try is closed whole before
// the next; other errors end the start at once, and so does any error with
// the embedded server, which has no cluster to wait for.
func startServerWaiting(ctx context.Context, a *app, cfg *config.Config, o serveOptions, logger *slog.Logger) (*server, error) {
	if cfg.NATS.URL == "" {
		return startServer(ctx, a, cfg, o, logger)
	}
	wait := time.Second
	for attempt := 1; ; attempt++ {
		s, err := startServer(ctx, a, cfg, o, logger)
		if err == nil || ctx.Err() != nil || !natsTimedOut(err) {
			return s, err
		}
		logger.Warn("NATS did not answer while starting; starting over", "err", err, "attempt", attempt, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}

// natsTimedOut reports whether err is NATS not answering in time.
func natsTimedOut(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse)
}

// frontHandler is what the listener serves: while the server starts (it
// may wait long for NATS), liveness answers and everything else says it is
// starting; then the real routes.
type frontHandler struct{ h atomic.Pointer[http.Handler] }

func (f *frontHandler) set(h http.Handler) { f.h.Store(&h) }

func (f *frontHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := f.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	switch r.URL.Path {
	case "/healthz":
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}` + "\n"))
	case "/readyz":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"checks":{"startup":"starting (see the log for what it waits for)"},"status":"not ready"}` + "\n"))
	default:
		// The request was not looked at: a client may send it again.
		w.Header().Set("Retry-After", "5")
		w.Header().Set(startingHeader, "1")
		writeJSONError(w, http.StatusServiceUnavailable, "starting: try again in a moment")
	}
}

// serveEarly serves the listener from the start, through s.front, so a
// server waiting for NATS answers liveness probes and says it is not ready.
func (s *server) serveEarly(logger *slog.Logger) {
	s.http = &http.Server{Handler: &s.front, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	srv, ln, errc := s.http, s.ln, s.errc
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			select {
			case errc <- fmt.Errorf("http: %w", err):
			default:
			}
		}
	}()
	s.closers = append(s.closers, func() { srv.Close() })
}

// startingHeader marks the 503 of a server still starting: nothing was
// done with the request, so the CLI sends it again (for up to a minute).
const startingHeader = "Nightshift-Starting"
