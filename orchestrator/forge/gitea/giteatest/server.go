// Package giteatest runs a real Gitea server (release Version, built once
// from the Go module proxy by scripts/gitea and cached) on a loopback port
// for tests, with an admin account, an admin token and helpers that drive
// it through its API v1 the way people do: users, repositories,
// collaborators, webhooks, issues, comments, commit statuses, merges.
//
// The server is a child process in its own process group. It is killed by
// Close, and by the kernel when the test process dies (a parent-death
// signal on a thread kept alive for that purpose), so no Gitea outlives
// its test binary. Its webhooks may reach loopback listeners
// ([security] ALLOWED_HOST_LIST = loopback).
package giteatest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"sync"
	"syscall"
	"time"
)

// AdminPassword is the password of the admin account and of every user
// CreateUser makes.
const AdminPassword = "nightshift-Passw0rd!"

// Server is a running Gitea.
type Server struct {
	// URL is the web and git root, http://127.0.0.1:PORT/ (trailing slash).
	URL string
	// APIURL is URL + "api/v1/".
	APIURL string
	// Admin is the admin login; its password is AdminPassword.
	Admin string
	// AdminToken is a token of Admin with every scope; Do uses it.
	AdminToken string
	// Dir is the work path (app.ini, SQLite database, repositories, logs).
	Dir string

	client *http.Client
	stop   chan struct{}
	exited chan struct{}
	waitMu sync.Mutex
	out    *bytes.Buffer // the process's stdout and stderr
	closed bool

	runnerMu sync.Mutex
	runner   *Runner
}

// Start starts a Gitea in a new temporary work path and returns once its
// API answers, with the admin account and token made. Close removes it.
func Start(ctx context.Context) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	src := filepath.Join(filepath.Dir(bin), "src")
	dir, err := os.MkdirTemp("", "nightshift-gitea-run-")
	if err != nil {
		return nil, fmt.Errorf("giteatest: %w", err)
	}
	s := &Server{Dir: dir, Admin: "nsadmin", client: &http.Client{Timeout: 60 * time.Second}, out: &bytes.Buffer{}}
	fail := func(err error) (*Server, error) {
		s.Close()
		return nil, err
	}
	// Without the bindata tag Gitea reads these from its work path.
	for _, d := range []string{"options", "templates", "public"} {
		if err := os.Symlink(filepath.Join(src, d), filepath.Join(dir, d)); err != nil {
			return fail(fmt.Errorf("giteatest: link %s: %w", d, err))
		}
	}
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return fail(err)
		}
		if err := s.writeConfig(port); err != nil {
			return fail(err)
		}
		if attempt == 0 {
			// Migrate the database and make the admin before the web
			// server starts, so the first request finds them.
			if out, err := s.cli(ctx, bin, "migrate"); err != nil {
				return fail(fmt.Errorf("giteatest: gitea migrate: %w\n%s%s", err, out, s.logTail()))
			}
			if out, err := s.cli(ctx, bin, "admin", "user", "create", "--admin", "--username", s.Admin,
				"--password", AdminPassword, "--email", s.Admin+"@example.test", "--must-change-password=false"); err != nil {
				return fail(fmt.Errorf("giteatest: gitea admin user create: %w\n%s%s", err, out, s.logTail()))
			}
		}
		if err := s.startWeb(bin); err != nil {
			return fail(err)
		}
		err = s.waitReady(ctx)
		if err == nil {
			break
		}
		s.kill()
		if attempt >= 2 || ctx.Err() != nil || !strings.Contains(s.output(), "address already in use") {
			return fail(fmt.Errorf("giteatest: gitea did not start: %w\n%s%s", err, tail(s.output(), 4000), s.logTail()))
		}
	}
	tok, err := s.CreateToken(ctx, s.Admin, "nightshift-test-admin", "all")
	if err != nil {
		return fail(err)
	}
	s.AdminToken = tok
	return s, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("giteatest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeConfig writes app.ini for HTTP on port.
func (s *Server) writeConfig(port int) error {
	s.URL = fmt.Sprintf("http://127.0.0.1:%d/", port)
	s.APIURL = s.URL + "api/v1/"
	secret := func() string {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		return hex.EncodeToString(b)
	}
	dir := s.Dir
	ini := fmt.Sprintf(`APP_NAME = nightshift-test
RUN_MODE = prod
WORK_PATH = %[1]s
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = %[2]d
ROOT_URL = %[3]s
DOMAIN = 127.0.0.1
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false
APP_DATA_PATH = %[1]s/data

[database]
DB_TYPE = sqlite3
PATH = %[1]s/data/gitea.db
SQLITE_JOURNAL_MODE = WAL

[repository]
ROOT = %[1]s/repos
DEFAULT_BRANCH = main

[security]
INSTALL_LOCK = true
SECRET_KEY = %[4]s
INTERNAL_TOKEN = %[5]s
; Gitea's webhooks may reach listeners on this machine (tests only).
ALLOWED_HOST_LIST = loopback

[oauth2]
ENABLED = false

[service]
DISABLE_REGISTRATION = true
ENABLE_NOTIFY_MAIL = false
DEFAULT_ALLOW_CREATE_ORGANIZATION = true

[mailer]
ENABLED = false

[webhook]
DELIVER_TIMEOUT = 20

[queue]
TYPE = channel

[indexer]
ISSUE_INDEXER_TYPE = db
REPO_INDEXER_ENABLED = false

[cron]
ENABLED = false

[cron.update_checker]
ENABLED = false

[actions]
ENABLED = true

[session]
PROVIDER = memory

[cache]
ADAPTER = memory

[log]
MODE = file
LEVEL = Info
ROOT_PATH = %[1]s/log
`, dir, port, s.URL, secret(), secret())
	if err := os.MkdirAll(filepath.Join(dir, "custom", "conf"), 0o755); err != nil {
		return fmt.Errorf("giteatest: %w", err)
	}
	if err := os.WriteFile(s.configPath(), []byte(ini), 0o600); err != nil {
		return fmt.Errorf("giteatest: write app.ini: %w", err)
	}
	return nil
}

func (s *Server) configPath() string { return filepath.Join(s.Dir, "custom", "conf", "app.ini") }

func (s *Server) env() []string {
	env := []string{"HOME=" + filepath.Join(s.Dir, "home"), "GITEA_WORK_DIR=" + s.Dir, "USER=" + currentUser(),
		"PATH=" + os.Getenv("PATH")}
	if tmp := os.Getenv("TMPDIR"); tmp != "" {
		env = append(env, "TMPDIR="+tmp)
	}
	return env
}

func currentUser() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	if os.Geteuid() == 0 {
		return "root"
	}
	return strconv.Itoa(os.Geteuid())
}

// cli runs one gitea sub-command against the work path.
func (s *Server) cli(ctx context.Context, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	args = append([]string{"--work-path", s.Dir, "--config", s.configPath()}, args...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = s.Dir
	cmd.Env = s.env()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// startWeb starts "gitea web" on a thread that stays alive as long as the
// server, so the parent-death signal (which the kernel ties to the thread
// that forked) fires only when the test process dies.
func (s *Server) startWeb(bin string) error {
	s.stop = make(chan struct{})
	s.exited = make(chan struct{})
	s.out.Reset()
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		cmd := exec.Command(bin, "--work-path", s.Dir, "--config", s.configPath(), "web")
		cmd.Dir = s.Dir
		cmd.Env = s.env()
		w := &lockedWriter{mu: &s.waitMu, b: s.out}
		cmd.Stdout, cmd.Stderr = w, w
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("giteatest: start gitea web: %w", err)
			close(s.exited)
			return
		}
		started <- nil
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-s.stop:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-done
			}
		case <-done:
		}
		close(s.exited)
	}()
	return <-started
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() > 1<<20 {
		w.b.Reset()
	}
	return w.b.Write(p)
}

func (s *Server) output() string {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	return s.out.String()
}

// waitReady polls the version endpoint until it answers 200.
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.APIURL+"version", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
			return errors.New("gitea web exited")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *Server) kill() {
	if s.stop == nil {
		return
	}
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.exited
}

// Close stops Gitea and removes its work path.
func (s *Server) Close() error {
	if s == nil || s.closed {
		return nil
	}
	s.closed = true
	s.kill()
	return os.RemoveAll(s.Dir)
}

// Log returns the end of Gitea's own log (for test failure messages).
func (s *Server) Log() string { return s.logTail() }

func (s *Server) logTail() string {
	b, err := os.ReadFile(filepath.Join(s.Dir, "log", "gitea.log"))
	if err != nil {
		return ""
	}
	return "\n--- gitea.log (end)\n" + tail(string(b), 4000)
}

// APIError is a non-2xx answer of the Gitea API.
type APIError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("giteatest: %s %s: %d %s", e.Method, e.Path, e.Status, tail(e.Body, 500))
}

// Do calls the API at path (relative to APIURL) as the admin, or as the
// user sudo when it is not empty (Gitea's Sudo header, admins only). in is
// sent as JSON when not nil; a 2xx JSON answer is decoded into out when it
// is not nil. A non-2xx answer is an *APIError.
func (s *Server) Do(ctx context.Context, method, path, sudo string, in, out any) error {
	return s.do(ctx, method, path, func(r *http.Request) {
		r.Header.Set("Authorization", "token "+s.AdminToken)
		if sudo != "" {
			r.Header.Set("Sudo", sudo)
		}
	}, in, out)
}

func (s *Server) do(ctx context.Context, method, path string, auth func(*http.Request), in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.APIURL+strings.TrimPrefix(path, "/"), body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	auth(req)
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("giteatest: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return fmt.Errorf("giteatest: %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return &APIError{Method: method, Path: path, Status: resp.StatusCode, Body: string(data)}
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("giteatest: %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}
