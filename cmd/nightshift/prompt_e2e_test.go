package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
)

// TestLargePromptReachesTheAgentIntact sends a 600 KiB prompt (far over the
// kernel's 128 KiB limit on one environment string) through the API to a
// command agent in the real bubblewrap sandbox: it arrives whole on stdin
// and in $NIGHTSHIFT_PROMPT_FILE, and $NIGHTSHIFT_PROMPT is left unset. A
// prompt over the API's limit is refused with 413.
func TestLargePromptReachesTheAgentIntact(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("bwrap"); err != nil {
		t.Skip("bubblewrap not installed (scripts/test installs it)")
	}
	s := startTestServer(t, `
identity: {smtp_listen: "127.0.0.1:0"}
agents:
  big:
    command: ["sh", "-c", "sha256sum < \"$NIGHTSHIFT_PROMPT_FILE\" | cut -d' ' -f1 > file.sha; sha256sum | cut -d' ' -f1 > stdin.sha; echo \"${NIGHTSHIFT_PROMPT-unset}\" | head -c 16 > env.txt"]
repos:
  - match: "*"
`)
	origin := newOrigin(t)
	var b strings.Builder
	for i := 0; b.Len() < 600<<10; i++ {
		fmt.Fprintf(&b, "line %d of a very long prompt: \"quotes\", $dollars, `ticks` and ünïcödé\n", i)
	}
	prompt := strings.TrimSpace(b.String())
	post := func(prompt string) *http.Response {
		body, _ := json.Marshal(map[string]string{"repo": origin, "prompt": prompt, "agent": "big"})
		resp, err := http.Post(s.URL+"/api/v1/tasks", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := post(prompt)
	var created struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || created.ID == "" {
		t.Fatalf("dispatch of a 600 KiB prompt: %d", resp.StatusCode)
	}
	task := s.waitState(t, created.ID, 90*time.Second, orchestrator.StateReview, orchestrator.StateFailed)
	if task.State != orchestrator.StateReview {
		out, _ := s.cli(t, "tasks", "logs", created.ID)
		t.Fatalf("task failed: %s\n%s", task.Error, out)
	}
	ref := "nightshift/" + created.ID
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	if got := gitRun(t, origin, "show", ref+":file.sha"); got != sum(prompt) {
		t.Errorf("prompt file sha256 %s, want %s", got, sum(prompt))
	}
	if got := gitRun(t, origin, "show", ref+":stdin.sha"); got != sum(prompt+"\n") {
		t.Errorf("stdin sha256 %s, want %s", got, sum(prompt+"\n"))
	}
	if got := gitRun(t, origin, "show", ref+":env.txt"); got != "unset" {
		t.Errorf("$NIGHTSHIFT_PROMPT = %q..., want it unset for a large prompt", got)
	}

	resp = post(strings.Repeat("x", 1<<20+1))
	var e struct{ Error string }
	json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(e.Error, "limit") {
		t.Fatalf("a prompt over 1 MiB: %d %q, want 413 with the limit", resp.StatusCode, e.Error)
	}
}
