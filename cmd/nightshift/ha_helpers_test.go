package main

// Helpers for the tests of serve's operations (data-dir lock, waiting for
// NATS, readiness, drain): nats-server processes (bench/cluster's binary)
// and serve processes, both started without waiting for them to be ready.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/bench/cluster"
)

// haNATSD is a nats-server process.
type haNATSD struct {
	cmd  *exec.Cmd
	conf string
	log  string
}

// haStartNATSD runs nats-server with the config file conf (logging next
// to it); it does not wait for the server to accept connections.
func haStartNATSD(t *testing.T, conf string) *haNATSD {
	t.Helper()
	n := &haNATSD{conf: conf, log: strings.TrimSuffix(conf, ".conf") + ".log"}
	n.start(t)
	return n
}

func (n *haNATSD) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(cluster.NATSServer(t), "-c", n.conf)
	logf, err := os.OpenFile(n.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.cmd = cmd
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

func (n *haNATSD) stop() {
	n.cmd.Process.Kill()
	n.cmd.Wait()
}

// haNATSConf writes a nats-server config: JetStream on client port port,
// and with cluster ports a member of cluster "nightshift" routing to the
// others.
func haNATSConf(t *testing.T, dir, name string, port, clusterPort int, routes []int) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %s\nlisten: 127.0.0.1:%d\njetstream { store_dir: %q }\n", name, port, filepath.Join(dir, name))
	if clusterPort != 0 {
		fmt.Fprintf(&b, "cluster {\n  name: nightshift\n  listen: 127.0.0.1:%d\n  routes: [\n", clusterPort)
		for _, r := range routes {
			fmt.Fprintf(&b, "    nats://127.0.0.1:%d\n", r)
		}
		b.WriteString("  ]\n}\n")
	}
	path := filepath.Join(dir, name+".conf")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// haServe is a serve process started without waiting for it.
type haServe struct {
	cmd  *exec.Cmd
	dir  string // holds nightshift.yaml, serve.log and data/
	data string
	log  string
	done chan error
	// listen is the base URL when the test chose the port (--listen).
	listen string
}

// haSpawn starts `nightshift serve` on dir (its nightshift.yaml, data
// dir dir/data) and returns at once.
func haSpawn(t *testing.T, bin, dir string, extra ...string) *haServe {
	t.Helper()
	s := &haServe{dir: dir, data: filepath.Join(dir, "data"), log: filepath.Join(dir, "serve.log"), done: make(chan error, 1)}
	os.Remove(filepath.Join(s.data, "serve.addr"))
	s.cmd = exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", s.data,
		"--config", filepath.Join(dir, "nightshift.yaml"), "--ack-wait", "3s"}, extra...)...)
	s.cmd.Env = baseEnv(t)
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.done
		s.done <- nil
	})
	return s
}

func (s *haServe) logText() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

// exited returns the process's exit error once it has exited.
func (s *haServe) exited(within time.Duration) (exited bool, err error) {
	select {
	case err := <-s.done:
		s.done <- err
		return true, err
	case <-time.After(within):
		return false, nil
	}
}

// url waits until the server has written serve.addr and returns it.
func (s *haServe) url(t *testing.T, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if b, err := os.ReadFile(filepath.Join(s.data, "serve.addr")); err == nil && len(b) > 0 {
			return strings.TrimSpace(string(b))
		}
		if done, err := s.exited(0); done {
			t.Fatalf("serve in %s exited (%v):\n%s", s.dir, err, s.logText())
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve in %s not up after %s:\n%s", s.dir, timeout, s.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// haReadyz returns /readyz's status code and its checks.
func haReadyz(t *testing.T, base string) (int, map[string]string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(base + "/readyz")
	if err != nil {
		return 0, map[string]string{"get": err.Error()}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r struct{ Checks map[string]string }
	json.Unmarshal(body, &r)
	return resp.StatusCode, r.Checks
}

// haWaitReady polls /readyz until it answers code, failing after timeout.
func haWaitReady(t *testing.T, base string, code int, timeout time.Duration, what string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, checks := haReadyz(t, base)
		if got == code {
			return checks
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /readyz answered %d %v for %s, want %d", what, got, checks, timeout, code)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
