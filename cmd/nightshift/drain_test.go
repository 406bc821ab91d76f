package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
)

// drainAgent's first run waits for the test to say SIGTERM has arrived,
// then calls the model gateway (whose key is a ${vault:} secret) and
// outlives the drain; the second run (the redelivery) calls it again and
// finishes.
const drainAgent = `
mark=%[1]s
call() { curl -s -o /dev/null -w '%%{http_code}' --max-time 20 -X POST -H "X-Api-Key: $ANTHROPIC_API_KEY" -H 'Content-Type: application/json' -d '{"model":"claude-sonnet-4-5"}' "$ANTHROPIC_BASE_URL/v1/messages/count_tokens"; }
if [ -e $mark.first ]; then
  echo "second run: gateway $(call)" >> NOTES.md
else
  touch $mark.first
  echo $$ > $mark.pid
  while [ ! -e $mark.term ]; do sleep 0.1; done
  call > $mark.gateway
  sleep 1000
fi
`

// TestSIGTERMHandsRunsBack sends SIGTERM while a run is in its agent: new
// work is refused (503) and /readyz says shutting down, but the run's
// gateway still resolves its vault-held key and answers; the run outlives
// worker.drain_timeout, so it is handed back, not failed, and the server
// exits 0. Started again on the same data dir, the server gets the same run
// redelivered and it completes.
func TestSIGTERMHandsRunsBack(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	key := "sk-ant-drain-" + orchestrator.NewID()
	var calls atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-Key") != key {
			http.Error(w, `{"error":"bad key"}`, http.StatusUnauthorized)
			return
		}
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"input_tokens":1}`))
	}))
	t.Cleanup(up.Close)

	bin := nightshiftBinary(t)
	dir := t.TempDir()
	mark := filepath.Join(dir, "agent")
	yaml := fmt.Sprintf(`
sandbox: {driver: process}
identity: {smtp_listen: "127.0.0.1:0"}
worker: {drain_timeout: 3s}
models:
  anthropic: {base_url: %q, api_key: "${vault:ANTHROPIC_API_KEY}"}
agents:
  slow:
    command: ["sh", "-c", %s]
`, up.URL, jsonString(fmt.Sprintf(drainAgent, mark)))
	if err := os.WriteFile(filepath.Join(dir, "nightshift.yaml"), []byte(withTempRepos(t, yaml)), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"nightshift", "vault", "set", "ANTHROPIC_API_KEY", "--data-dir", data},
		baseEnv(t), strings.NewReader(key), &out, &errb); err != nil {
		t.Fatalf("vault set: %v %s", err, errb.String())
	}
	origin := newOrigin(t)
	cmd, s := startProcess(t, bin, dir)
	id := s.dispatch(t, origin, "slow", "call the gateway")
	readPID(t, mark+".pid", 60*time.Second)

	cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	haWaitReady(t, s.URL, 503, 5*time.Second, "a draining server")
	if code, checks := haReadyz(t, s.URL); checks["shutdown"] != "shutting down" {
		t.Fatalf("/readyz while draining: %d %v", code, checks)
	}
	body, _ := json.Marshal(map[string]string{"repo": origin, "prompt": "more work", "agent": "slow"})
	resp, err := http.Post(s.URL+"/api/v1/tasks", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST /api/v1/tasks while draining: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("POST /api/v1/tasks while draining: %d (Retry-After %q), want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp, err := http.Post(s.URL+"/mcp", "application/json", strings.NewReader(`{}`)); err != nil {
		t.Fatalf("/mcp while draining: %v", err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/mcp without a token while draining: %d, want 401 (still served)", resp.StatusCode)
	}

	os.WriteFile(mark+".term", nil, 0o600) // the agent calls the gateway now
	deadline := time.Now().Add(20 * time.Second)
	var gw []byte
	for time.Now().Before(deadline) {
		if gw, _ = os.ReadFile(mark + ".gateway"); len(gw) > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if string(gw) != "200" {
		log, _ := os.ReadFile(filepath.Join(dir, "serve.log"))
		t.Fatalf("the gateway answered %q after SIGTERM, want 200\n%s", gw, log)
	}
	select {
	case err := <-exited:
		if err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "serve.log"))
			t.Fatalf("exit after SIGTERM: %v\n%s", err, log)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not exit within 30s of SIGTERM (drain_timeout 3s)")
	}

	_, s2 := startProcess(t, bin, dir)
	task := s2.waitState(t, id, 60*time.Second, orchestrator.StateReview, orchestrator.StateFailed)
	if task.State != orchestrator.StateReview || task.Run != 1 {
		log, _ := os.ReadFile(filepath.Join(dir, "serve.log"))
		t.Fatalf("after the restart: state %s run %d error %q, want review in run 1\n%s", task.State, task.Run, task.Error, log)
	}
	trs, _ := s2.cli(t, "tasks", "logs", id)
	if strings.Contains(trs, "==> failed") {
		t.Fatalf("the handed-back run was recorded failed:\n%s", trs)
	}
	if got := gitRun(t, origin, "show", "nightshift/"+id+":NOTES.md"); got != "second run: gateway 200" {
		t.Fatalf("NOTES.md = %q", got)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d calls reached the model provider, want 2", n)
	}
}
