package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/sandbox"
)

// A run's services (MCP and the model gateway) are served to its sandbox on
// listeners of their own: a unix socket per service in a 0700 directory per
// run (the sandbox reaches it through a forwarded loopback port), or, with
// DirectNetwork, a loopback TCP port per service. Each listener serves one
// handler and accepts only the run's task's tokens, so a sandbox reaches
// neither the API, the webhooks, the metrics nor another task's services.

// maxSocketPath keeps socket names below the kernel's sun_path limit (108
// bytes on Linux, 104 elsewhere).
const maxSocketPath = 100

// runServices are the listeners of one run.
type runServices struct {
	dir     string // per-run socket directory; "" with DirectNetwork
	mu      sync.Mutex
	servers []*runServer
}

type runServer struct {
	srv  *http.Server
	done chan struct{}
}

// close stops the run's servers (dropping open connections) and removes
// its socket directory.
func (s *runServices) close() {
	s.mu.Lock()
	servers := s.servers
	s.servers = nil
	s.mu.Unlock()
	for _, rs := range servers {
		rs.close()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

func (rs *runServer) close() {
	rs.srv.Close()
	<-rs.done
}

// serveRunService serves h for one run under name ("mcp", "gateway") and
// returns the URL the sandbox uses and, unless the network is direct, the
// forward that makes it reachable on port inside the sandbox. The returned
// stop func stops this one server early (it is also stopped by
// runServices.close).
func (w *Worker) serveRunService(r *run, name string, port int, h http.Handler) (url string, fwd *sandbox.Forward, stop func(), err error) {
	var ln net.Listener
	if w.cfg.DirectNetwork {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", nil, nil, fmt.Errorf("listen for the run's %s: %w", name, err)
		}
		url = "http://" + ln.Addr().String()
	} else {
		dir, err := w.runServiceDir(r)
		if err != nil {
			return "", nil, nil, err
		}
		sock := filepath.Join(dir, name+".sock")
		ln, err = net.Listen("unix", sock)
		if err != nil {
			return "", nil, nil, fmt.Errorf("listen for the run's %s: %w", name, err)
		}
		url = fmt.Sprintf("http://127.0.0.1:%d", port)
		fwd = &sandbox.Forward{Port: port, Target: "unix:" + sock}
	}
	rs := &runServer{done: make(chan struct{}), srv: &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(w.log.Handler(), slog.LevelDebug)}}
	go func() {
		defer close(rs.done)
		rs.srv.Serve(ln)
	}()
	r.services.mu.Lock()
	r.services.servers = append(r.services.servers, rs)
	r.services.mu.Unlock()
	return url, fwd, rs.close, nil
}

// runServiceDir creates the run's private socket directory on first use:
// <ServiceDir>/<task>-<run>, or a private temporary directory when that
// name is too long for a socket path or no ServiceDir is configured.
func (w *Worker) runServiceDir(r *run) (string, error) {
	if r.services.dir != "" {
		return r.services.dir, nil
	}
	name := fmt.Sprintf("%s-%d", r.item.TaskID, r.item.Run)
	if w.cfg.ServiceDir != "" && filepath.IsLocal(name) && !strings.ContainsRune(name, '/') &&
		len(filepath.Join(w.cfg.ServiceDir, name, "gateway.sock")) <= maxSocketPath {
		if err := os.MkdirAll(w.cfg.ServiceDir, 0o700); err != nil {
			return "", fmt.Errorf("create the run service directory: %w", err)
		}
		dir := filepath.Join(w.cfg.ServiceDir, name)
		os.RemoveAll(dir) // a crashed attempt's sockets
		if err := os.Mkdir(dir, 0o700); err != nil {
			return "", fmt.Errorf("create the run service directory: %w", err)
		}
		r.services.dir = dir
		return dir, nil
	}
	dir, err := os.MkdirTemp("", "nightshift-run-")
	if err != nil {
		return "", fmt.Errorf("create the run service directory: %w", err)
	}
	r.services.dir = dir
	return dir, nil
}

// taskMCP serves mcp at /mcp (and nothing else) to holders of taskID's
// tokens only: a valid token of another task is refused with 401 like an
// unknown one.
func taskMCP(mcp http.Handler, ids Identities, taskID string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/mcp" || r.URL.RawPath != "" {
			http.NotFound(w, r)
			return
		}
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		tok = strings.TrimSpace(tok)
		if !strings.EqualFold(scheme, "Bearer") || tok == "" {
			refuse(w, "missing bearer token")
			return
		}
		_, sc, err := ids.Authenticate(r.Context(), tok)
		switch {
		case errors.Is(err, identity.ErrUnauthorized):
			refuse(w, "invalid or revoked token")
			return
		case err != nil:
			http.Error(w, "authentication unavailable", http.StatusServiceUnavailable)
			return
		case sc.TaskID != taskID:
			refuse(w, "this endpoint serves another task")
			return
		}
		mcp.ServeHTTP(w, r)
	})
}

func refuse(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="nightshift"`)
	http.Error(w, msg, http.StatusUnauthorized)
}

// tokenTTL is how long a run's MCP token lives: long enough for the setup,
// agent and test steps to each use the repository's timeout, plus a margin.
// The worker revokes it when the run ends; the expiry is the backstop for a
// worker that died first.
func (w *Worker) tokenTTL(timeout time.Duration) time.Duration {
	if timeout <= 0 {
		timeout = 30 * time.Minute
	}
	return 3*timeout + w.cfg.TokenMargin
}

// agentTokenTTL is how long a run's gateway token lives: the agent step's
// timeout plus a margin. It is unregistered when the agent step ends.
func (w *Worker) agentTokenTTL(timeout time.Duration) time.Duration {
	if timeout <= 0 {
		timeout = 30 * time.Minute
	}
	return timeout + w.cfg.TokenMargin
}

// revokeRunTokens revokes the run's MCP token, whatever the run's outcome.
func (w *Worker) revokeRunTokens(ctx context.Context, r *run) {
	if r.mcpToken == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := w.identities.RevokeToken(ctx, r.mcpToken); err != nil {
		r.rep.log.Warn("revoke the run's MCP token", "err", err)
	}
}

// tokenRedactor removes the tokens a run hands its agent (MCP, gateway)
// from everything the task emits. Tokens are added as the run issues them;
// it is safe for concurrent use.
type tokenRedactor struct {
	newRedactor func(map[string]string) Redactor
	mu          sync.RWMutex
	list        []Redactor
}

// add starts redacting value as [REDACTED:name].
func (t *tokenRedactor) add(name, value string) {
	var r Redactor
	if t.newRedactor != nil {
		r = t.newRedactor(map[string]string{name: value})
	} else {
		r = replacer{strings.NewReplacer(value, "[REDACTED:"+name+"]")}
	}
	t.mu.Lock()
	t.list = append(t.list, r)
	t.mu.Unlock()
}

func (t *tokenRedactor) String(s string) string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, r := range t.list {
		s = r.String(s)
	}
	return s
}

// replacer is a Redactor over a strings.Replacer.
type replacer struct{ r *strings.Replacer }

func (r replacer) String(s string) string { return r.r.Replace(s) }
