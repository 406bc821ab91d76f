package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/orchestrator/github/githubtest"
)

// TestGitHubTokenStoredAfterStartIsUsed: github.token is a ${vault:}
// reference whose secret is stored only after serve started. Until then a
// comment's permission check cannot be made (503, naming it); once
// `nightshift vault set` stored it, the next delivery's permission check
// and the reply to the refused comment carry it, without a restart.
func TestGitHubTokenStoredAfterStartIsUsed(t *testing.T) {
	t.Parallel()
	const token = "ghp-stored-after-start"
	fake := githubtest.New(t, githubtest.Options{Token: token})
	fake.CreateRepo(rtOwner, rtName, map[string]string{"README.md": "# Hello World\n"})
	w := &rtWorld{gh: fake, dir: t.TempDir()}
	s := startTestServer(t, fmt.Sprintf(`
sandbox: {driver: process}
identity: {smtp_listen: "127.0.0.1:0"}
github:
  webhook_secrets: [%q]
  token: "${vault:GH_TOKEN}"
  api_url: %q
  reply_on_refusal: true
`, rtWebhookSecret, fake.APIURL))

	p := w.commentPayload(t, "@nightshift delete everything")
	c := p["comment"].(map[string]any)
	c["author_association"] = "NONE"
	c["user"].(map[string]any)["login"] = "mallory"
	code, out := postGitHub(t, s, "issue_comment", "d-before", p)
	if code != http.StatusServiceUnavailable || !strings.Contains(out["error"], "permission") {
		t.Fatalf("delivery before the token is stored: %d %v, want 503 naming the permission check", code, out)
	}

	s.vaultSet(t, "GH_TOKEN", "", token+"\n")

	code, out = postGitHub(t, s, "issue_comment", "d-after", p)
	if code != http.StatusOK || out["status"] != "ignored" || !strings.Contains(out["reason"], "write is required") {
		t.Fatalf("delivery after the token is stored: %d %v", code, out)
	}
	cs := fake.Comments(rtOwner, rtName, 1)
	if len(cs) != 1 || !strings.HasPrefix(cs[0].GetBody(), "@mallory Nightshift did not start") {
		t.Fatalf("replies: %+v", cs)
	}
	// The only refused calls are the ones made before the token existed.
	for _, v := range fake.Violations() {
		if !strings.Contains(v, "/collaborators/mallory/permission") {
			t.Errorf("GitHub refused a call made after the token was stored: %s", v)
		}
	}
}
