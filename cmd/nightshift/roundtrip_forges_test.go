package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/github/githubtest"
)

// TestRoundTripSecondGitHubHost: a GitHub Enterprise host in forges:
// beside the github: block. A comment signed with its own secret on
// /hooks/github becomes a task on its repository (not github.com's twin of
// the same name); the work is pushed there with its token, one draft pull
// request opens there, and the reaction and the progress comment land
// there, while the github: block's GitHub sees nothing.
func TestRoundTripSecondGitHubHost(t *testing.T) {
	requireRoundTrip(t)
	t.Parallel()
	w := newRTWorld(t)
	ghe := githubtest.New(t, githubtest.Options{Token: "ghe-token", BotLogin: "nightshift-ghe"})
	ghe.CreateRepo(rtOwner, rtName, map[string]string{"README.md": "# Hello from GHE\n"})
	tokenFile := filepath.Join(w.dir, "ghe.token")
	if err := os.WriteFile(tokenFile, []byte("ghe-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	const secret = "ghe-webhook-secret"
	yaml := w.yaml(w.agent(t, "")) + fmt.Sprintf(`forges:
  - kind: github
    api_url: %q
    token: "${file:%s}"
    webhook_secrets: [%q]
    bot_login: nightshift-ghe
`, ghe.APIURL, tokenFile, secret)
	s := startTestServer(t, yaml)

	p := w.commentPayload(t, "@nightshift add a greeting on the enterprise host")
	post := func(delivery, key string) int {
		code, _ := postGitHubSigned(t, s, key, "issue_comment", delivery, p)
		return code
	}
	if code := post("d-ghe", "not-a-secret"); code != http.StatusUnauthorized {
		t.Fatalf("unsigned delivery: %d", code)
	}
	if code := post("d-ghe", secret); code != http.StatusAccepted {
		t.Fatalf("delivery: %d", code)
	}
	if code := post("d-ghe", secret); code != http.StatusOK {
		t.Fatalf("redelivery: %d", code)
	}
	id := s.onlyTask(t)
	task := s.waitState(t, id, 90*time.Second, orchestrator.StateReview, orchestrator.StateFailed)
	if task.State != orchestrator.StateReview {
		t.Fatalf("task %s: %s %s\n%s", task.State, task.Reason, task.Error, s.stderr.String())
	}
	if want := ghe.CloneURL(rtOwner, rtName); task.Repo != want {
		t.Fatalf("task repo %s, want %s", task.Repo, want)
	}
	prs := ghe.PullRequests(rtOwner, rtName)
	if len(prs) != 1 || !prs[0].GetDraft() || prs[0].GetHTMLURL() != task.PRURL || prs[0].GetHead().GetSHA() != task.Commit {
		t.Fatalf("%d pull requests on the enterprise host (task pr_url %s)", len(prs), task.PRURL)
	}
	waitFor(t, 20*time.Second, "the final progress comment on the enterprise host", func() bool {
		var ours []string
		for _, c := range ghe.Comments(rtOwner, rtName, 1) {
			if strings.Contains(c.GetBody(), "<!-- nightshift:task:"+id) {
				ours = append(ours, c.GetBody())
			}
		}
		return len(ours) == 1 && strings.Contains(ours[0], "ready for review") && strings.Contains(ours[0], task.PRURL)
	}, func() string { return s.stderr.String() })
	if r := ghe.Reactions(); len(r) != 1 || !strings.HasSuffix(r[0], ":eyes") {
		t.Fatalf("reactions on the enterprise host: %v", r)
	}
	if n := len(w.gh.PullRequests(rtOwner, rtName)) + len(w.gh.Comments(rtOwner, rtName, 1)) + len(w.gh.Reactions()); n != 0 {
		t.Fatalf("the github: block's GitHub got %d pull requests, comments or reactions", n)
	}
	if v := ghe.Violations(); len(v) > 0 {
		t.Fatalf("requests refused by the enterprise host:\n%s", strings.Join(v, "\n"))
	}
}
