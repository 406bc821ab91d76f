package webhook

import (
	"bytes"
	"net/http"
	"os"
	"testing"

	"github.com/nightshift/nightshift/orchestrator"
)

const fixtures = "/work/shared/fixtures/webhooks"

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(fixtures + "/" + name)
	if err != nil {
		t.Skipf("fixture %s: %v", name, err)
	}
	return b
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
