package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/github/githubtest"
	"github.com/nightshift/nightshift/orchestrator/notify/notifytest"
)

// rtFixtures holds the real webhook payloads (the verified copy the webhook
// package keeps of ../shared/fixtures/webhooks, so a fresh checkout has them).
const rtFixtures = "../../ingress/webhook/testdata/fixtures"

const (
	rtAppID         = 4242
	rtWebhookSecret = "whsec-roundtrip"
	rtSlackToken    = "xoxb-roundtrip"
	rtSlackSecret   = "slack-signing-roundtrip"
	rtLinearKey     = "lin_api_roundtrip"
	rtLinearSecret  = "lin-webhook-roundtrip"
	rtOwner         = "Codertocat"
	rtName          = "Hello-World"
)

// requireRoundTrip skips until serve.go wires newRoundTrip.
func requireRoundTrip(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile("serve.go")
	if err != nil || !bytes.Contains(b, []byte("newRoundTrip(")) {
		t.Skip("roundtrip not wired into serve yet")
	}
}

// rtWorld is GitHub, Slack and Linear as httptest servers plus the config
// that points a Nightshift server at them.
type rtWorld struct {
	gh     *githubtest.Server
	slack  *notifytest.Slack
	linear *notifytest.Linear
	dir    string
	envLog string
}

// newRTWorld creates the fakes and the repository Codertocat/Hello-World
// (the fixtures' repository) with a pull request template.
func newRTWorld(t *testing.T) *rtWorld {
	t.Helper()
	w := &rtWorld{gh: githubtest.New(t, githubtest.Options{AppID: rtAppID}), slack: notifytest.NewSlack(t, rtSlackToken),
		linear: notifytest.NewLinear(t, rtLinearKey), dir: t.TempDir()}
	w.gh.CreateRepo(rtOwner, rtName, map[string]string{"README.md": "# Hello World\n",
		".github/pull_request_template.md": "## Checklist\n- [ ] Tests pass\n"})
	w.envLog = filepath.Join(w.dir, "agent-env.log")
	if err := os.WriteFile(filepath.Join(w.dir, "app.pem"), []byte(w.gh.PrivateKeyPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

// agent writes a script agent: it appends its prompt to WORK.md, logs its
// environment outside the worktree and prints a summary. extra runs first.
func (w *rtWorld) agent(t *testing.T, extra string) string {
	t.Helper()
	path := filepath.Join(w.dir, "agent.sh")
	script := "#!/bin/sh\n" + extra + "\nprintf '%s\\n---\\n' \"$NIGHTSHIFT_PROMPT\" >> WORK.md\nenv >> " + w.envLog +
		"\necho working\necho 'Add the requested change'\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// yaml is the server config using the fakes and the agent script.
func (w *rtWorld) yaml(agentPath string) string {
	return fmt.Sprintf(`
sandbox: {driver: process}
identity: {smtp_listen: "127.0.0.1:0"}
public_url: https://nightshift.example.test
github:
  webhook_secrets: [%q]
  app_id: %d
  private_key: "${file:%s}"
  api_url: %q
  reply_on_refusal: true
slack: {bot_token: %q, channel: "#nightshift", api_url: %q, signing_secrets: [%q]}
linear: {api_key: %q, api_url: %q, webhook_secrets: [%q], repo: %q}
agents:
  script: {command: ["sh", %q]}
default_agent: script
repos:
  - match: "*"
    test: "test -f WORK.md"
`, rtWebhookSecret, rtAppID, filepath.Join(w.dir, "app.pem"), w.gh.APIURL, rtSlackToken, w.slack.APIURL, rtSlackSecret,
		rtLinearKey, w.linear.APIURL, rtLinearSecret, w.gh.CloneURL(rtOwner, rtName), agentPath)
}

// fixture loads a shared webhook payload and points its repository at the
// fake GitHub.
func (w *rtWorld) fixture(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(rtFixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	repo := p["repository"].(map[string]any)
	repo["clone_url"] = w.gh.CloneURL(rtOwner, rtName)
	repo["html_url"] = w.gh.URL + "/" + rtOwner + "/" + rtName
	return p
}

// commentPayload is issue_comment.created.json with body as the comment.
func (w *rtWorld) commentPayload(t *testing.T, body string) map[string]any {
	p := w.fixture(t, "octokit-webhooks/issue_comment.created.json")
	p["comment"].(map[string]any)["body"] = body
	return p
}

// postGitHub signs payload like GitHub and posts it to /hooks/github.
func postGitHub(t *testing.T, s *testServer, event, delivery string, payload any) (int, map[string]string) {
	t.Helper()
	return postGitHubSigned(t, s, rtWebhookSecret, event, delivery, payload)
}

// postGitHubSigned is postGitHub with the webhook secret secret.
func postGitHubSigned(t *testing.T, s *testServer, secret, event, delivery string, payload any) (int, map[string]string) {
	t.Helper()
	body, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/hooks/github", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", delivery)
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]string
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// postSlackAction clicks a button of a task message: a signed block_actions
// interaction as Slack sends it.
func postSlackAction(t *testing.T, s *testServer, actionID, value string) (int, map[string]string) {
	t.Helper()
	return postSlackInteraction(t, s, map[string]any{"type": "block_actions", "trigger_id": "trig." + strconv.FormatInt(time.Now().UnixNano(), 10),
		"user":    map[string]string{"id": "U123", "username": "alice"},
		"actions": []map[string]string{{"action_id": actionID, "value": value, "action_ts": strconv.FormatInt(time.Now().UnixNano(), 10)}}})
}

// postSlackInteraction posts payload to the Slack interactions endpoint,
// signed with the round trip's signing secret, and returns the status and
// the JSON reply.
func postSlackInteraction(t *testing.T, s *testServer, payload map[string]any) (int, map[string]string) {
	t.Helper()
	body, _ := json.Marshal(payload)
	form := "payload=" + url.QueryEscape(string(body))
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	mac := hmac.New(sha256.New, []byte(rtSlackSecret))
	mac.Write([]byte("v0:" + ts + ":" + form))
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/hooks/slack/interactions", strings.NewReader(form))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Slack-Request-Timestamp", ts)
	req.Header.Set("X-Slack-Signature", "v0="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]string
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// tasks lists the server's tasks.
func (s *testServer) tasks(t *testing.T) []orchestrator.Task {
	t.Helper()
	out, err := s.cli(t, "tasks", "ls", "--json")
	if err != nil {
		t.Fatalf("tasks ls: %v\n%s", err, out)
	}
	var ts []orchestrator.Task
	if err := json.Unmarshal([]byte(out), &ts); err != nil {
		t.Fatalf("tasks ls output %q: %v", out, err)
	}
	return ts
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool, log func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s\n%s", timeout, what, log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// onlyTask waits for exactly one task and returns its id.
func (s *testServer) onlyTask(t *testing.T) string {
	t.Helper()
	var ts []orchestrator.Task
	waitFor(t, 30*time.Second, "a task", func() bool { ts = s.tasks(t); return len(ts) > 0 }, s.stderr.String)
	if len(ts) != 1 {
		t.Fatalf("%d tasks, want 1: %+v", len(ts), ts)
	}
	return ts[0].ID
}

// progressComments returns Nightshift's comments on issue number (those
// carrying a task marker).
func (w *rtWorld) progressComments(number int) []string {
	var out []string
	for _, c := range w.gh.Comments(rtOwner, rtName, number) {
		if strings.Contains(c.GetBody(), "<!-- nightshift:task:") {
			out = append(out, c.GetBody())
		}
	}
	return out
}
