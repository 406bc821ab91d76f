package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/ingress/api"
	"github.com/nightshift/nightshift/orchestrator"
)

const tokenYAML = `
sandbox: {driver: process}
identity: {smtp_listen: "127.0.0.1:0"}
api: {tokens: ["adm1n-token"], read_only_tokens: ["r3ad-token"]}
agents:
  fail: {command: ["sh", "-c", "echo about to fail; exit 3"]}
repos:
  - match: "*"
    test: "true"
    timeout: 2m
`

// clientCLI runs a client command with extra environment.
func clientCLI(t *testing.T, env []string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), append([]string{"nightshift"}, args...), append(baseEnv(t), env...), strings.NewReader(""), &out, &errb)
	return out.String(), errb.String(), err
}

func TestCLITokensAndJSON(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, tokenYAML)
	origin := newOrigin(t)
	srv := "--server=" + s.URL

	// No token, a wrong one: one clear sentence, exit code 1.
	for _, env := range [][]string{nil, {"NIGHTSHIFT_TOKEN=wrong"}} {
		_, _, err := clientCLI(t, env, "tasks", "ls", srv)
		if err == nil || !strings.Contains(err.Error(), "the server refused the token") {
			t.Fatalf("env %v: %v", env, err)
		}
		if code := exitCode(err, io.Discard); code != 1 {
			t.Fatalf("exit code %d", code)
		}
	}
	// A read-only token reads but may not act.
	ro := []string{"NIGHTSHIFT_TOKEN=r3ad-token"}
	if _, _, err := clientCLI(t, ro, "tasks", "ls", srv); err != nil {
		t.Fatalf("read-only ls: %v", err)
	}
	_, _, err := clientCLI(t, ro, "dispatch", "--repo", origin, srv, "do it")
	if err == nil || !strings.Contains(err.Error(), "this token is read-only") {
		t.Fatalf("read-only dispatch: %v", err)
	}
	// The admin token, from the flag, with --json everywhere.
	adm := "--token=adm1n-token"
	out, _, err := clientCLI(t, nil, "dispatch", "--repo", origin, "--agent", "fail", "--json", srv, adm, "break it")
	if err != nil {
		t.Fatalf("dispatch: %v", err)
	}
	var created api.CreateResponse
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.ID == "" {
		t.Fatalf("dispatch --json: %q %v", out, err)
	}
	out, _, err = clientCLI(t, nil, "tasks", "logs", created.ID, "-f", "--json", srv, adm)
	if err == nil || !strings.Contains(err.Error(), "failed") {
		t.Fatalf("logs -f of a failing task: %v", err)
	}
	states := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev struct {
			Event string          `json:"event"`
			Data  json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("logs -f --json line %q: %v", line, err)
		}
		if ev.Event == "state" {
			states++
		}
	}
	if states < 3 {
		t.Fatalf("%d state events in:\n%s", states, out)
	}
	for _, args := range [][]string{{"tasks", "ls"}, {"tasks", "show", created.ID}, {"tasks", "logs", created.ID}, {"tasks", "diff", created.ID}} {
		out, _, err := clientCLI(t, nil, append(args, "--json", srv, adm)...)
		if err != nil || !json.Valid([]byte(out)) {
			t.Errorf("%v --json: %v %q", args, err, out)
		}
	}
	out, _, err = clientCLI(t, nil, "tasks", "retry", created.ID, "--json", srv, adm)
	if err != nil || !json.Valid([]byte(out)) || !strings.Contains(out, `"accepted"`) {
		t.Fatalf("retry --json: %v %q", err, out)
	}
	_, _, err = clientCLI(t, nil, "tasks", "show", "nope", srv, adm)
	if err == nil || err.Error() != "no task nope" {
		t.Fatalf("unknown task: %v", err)
	}
}

// TestOpenAPIRoutesAreServed sends each documented operation to the real
// server: none may fall through to "no such route" or 405.
func TestOpenAPIRoutesAreServed(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, tokenYAML)
	origin := newOrigin(t)
	out, _, err := clientCLI(t, nil, "dispatch", "--repo", origin, "--agent", "fail", "--json", "--server="+s.URL, "--token=adm1n-token", "x")
	if err != nil {
		t.Fatal(err)
	}
	var created api.CreateResponse
	json.Unmarshal([]byte(out), &created)
	s.waitStateAuth(t, created.ID, "adm1n-token", orchestrator.StateFailed)

	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	resp, err := http.Get(s.URL + "/api/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if len(doc.Paths) < 10 {
		t.Fatalf("%d paths documented", len(doc.Paths))
	}
	n := 0
	for path, ops := range doc.Paths {
		for method := range ops {
			if method == "parameters" {
				continue
			}
			n++
			u := s.URL + strings.ReplaceAll(path, "{id}", created.ID)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			req, _ := http.NewRequestWithContext(ctx, strings.ToUpper(method), u, strings.NewReader("{}"))
			req.Header.Set("Authorization", "Bearer adm1n-token")
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				cancel()
				t.Fatalf("%s %s: %v", method, path, err)
			}
			b := make([]byte, 512)
			k, _ := io.ReadFull(resp.Body, b)
			resp.Body.Close()
			cancel()
			if resp.StatusCode == 405 || (resp.StatusCode == 404 && strings.Contains(string(b[:k]), "no such route")) {
				t.Errorf("%s %s is documented but not served: %d %s", method, path, resp.StatusCode, b[:k])
			}
		}
	}
	t.Logf("%d documented operations answered", n)
}

func (s *testServer) waitStateAuth(t *testing.T, id, token string, states ...orchestrator.State) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest("GET", s.URL+"/api/v1/tasks/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var task orchestrator.Task
			json.NewDecoder(resp.Body).Decode(&task)
			resp.Body.Close()
			for _, st := range states {
				if task.State == st {
					return
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("task %s never reached %v", id, states)
}

// TestCLIQueueFull fills the queue (one worker busy, one task waiting,
// max_queued 1) and checks the next dispatch is refused with the position
// and when to retry.
func TestCLIQueueFull(t *testing.T) {
	t.Parallel()
	yaml, gates := gatedYAML(t)
	yaml = strings.Replace(yaml, "worker: {concurrency: 4}", "worker: {concurrency: 1}", 1) + "api: {max_queued: 1}\n"
	s := startTestServer(t, yaml)
	origin := newOrigin(t)
	first := s.dispatch(t, origin, "gated", "one")
	s.waitState(t, first, 30*time.Second, orchestrator.StateRunning)
	second := s.dispatch(t, origin, "gated", "two")
	if got := s.task(t, second); got.State != orchestrator.StateQueued || got.Position != 1 {
		t.Fatalf("second task %s position %d", got.State, got.Position)
	}
	_, _, err := clientCLI(t, nil, "dispatch", "--repo", origin, "--agent", "gated", "--server="+s.URL, "three")
	if err == nil || !strings.Contains(err.Error(), "the queue is full") || !strings.Contains(err.Error(), "retry in 30s") {
		t.Fatalf("dispatch over the limit: %v", err)
	}
	if code := exitCode(err, io.Discard); code != 1 {
		t.Fatalf("exit code %d", code)
	}
	req, _ := http.NewRequest("POST", s.URL+"/api/v1/tasks", strings.NewReader(`{"repo":"`+origin+`","prompt":"x"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var qf api.QueueFull
	json.NewDecoder(resp.Body).Decode(&qf)
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "30" || qf.Position != 2 {
		t.Fatalf("429: %d %q %+v", resp.StatusCode, resp.Header.Get("Retry-After"), qf)
	}
	// Filters and pages from the CLI.
	out, _, err := clientCLI(t, nil, "tasks", "ls", "--source", "api", "--state", "queued", "--json", "--server="+s.URL)
	if err != nil || !strings.Contains(out, second) || strings.Contains(out, first) {
		t.Fatalf("ls --source api --state queued: %v\n%s", err, out)
	}
	out, errOut, err := clientCLI(t, nil, "tasks", "ls", "--limit", "1", "--server="+s.URL)
	if err != nil || !strings.Contains(out, second) || !strings.Contains(errOut, "--before "+second) {
		t.Fatalf("ls --limit 1: %v\n%s\n%s", err, out, errOut)
	}
	out, _, err = clientCLI(t, nil, "tasks", "ls", "--limit", "1", "--before", second, "--server="+s.URL)
	if err != nil || !strings.Contains(out, first) {
		t.Fatalf("ls --before: %v\n%s", err, out)
	}
	openGate(t, gates, first)
	openGate(t, gates, second)
	s.waitState(t, second, 30*time.Second, orchestrator.StateReview)
}
