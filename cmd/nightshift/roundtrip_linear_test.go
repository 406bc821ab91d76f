package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/notify/notifytest"
)

// TestRoundTripLinearTicketToPullRequest: a Linear issue labelled
// nightshift (the shared fixture, re-signed and re-stamped) becomes a task
// on linear.repo; the pull request link lands in one Linear comment on the
// ticket, updated in place, and in the Slack message.
func TestRoundTripLinearTicketToPullRequest(t *testing.T) {
	requireRoundTrip(t)
	t.Parallel()
	w := newRTWorld(t)
	s := startTestServer(t, w.yaml(w.agent(t, "")))
	b, err := os.ReadFile(filepath.Join(rtFixtures, "zulip-linear/issue_create_simple.json"))
	if err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	p["webhookTimestamp"] = time.Now().UnixMilli()
	p["data"].(map[string]any)["labels"] = []map[string]string{{"id": "lbl-1", "name": "nightshift"}}
	body, _ := json.Marshal(p)
	mac := hmac.New(sha256.New, []byte(rtLinearSecret))
	mac.Write(body)
	for _, delivery := range []string{"lin-1", "lin-1"} {
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/hooks/linear", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Linear-Delivery", delivery)
		req.Header.Set("Linear-Signature", hex.EncodeToString(mac.Sum(nil)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
			t.Fatalf("linear delivery: %s", resp.Status)
		}
	}
	id := s.onlyTask(t)
	task := s.waitState(t, id, 90*time.Second, orchestrator.StateReview, orchestrator.StateFailed)
	if task.State != orchestrator.StateReview || task.Source != orchestrator.SourceLinear {
		t.Fatalf("task %s from %s: %s", task.State, task.Source, task.Error)
	}
	prs := w.gh.PullRequests(rtOwner, rtName)
	if len(prs) != 1 || prs[0].GetHTMLURL() != task.PRURL || prs[0].GetHead().GetRef() != "nightshift/"+id {
		t.Fatalf("%d pull requests, task pr_url %s", len(prs), task.PRURL)
	}
	if !strings.Contains(prs[0].GetBody(), "https://linear.app/webhooks/issue/WEB-43") {
		t.Errorf("pull request body does not link the ticket:\n%s", prs[0].GetBody())
	}
	waitFor(t, 20*time.Second, "the Linear comment with the pull request", func() bool {
		cs := w.linear.Comments()
		return len(cs) == 1 && cs[0].IssueID == notifytest.IssueUUID("WEB-43") && strings.Contains(cs[0].Body, task.PRURL) && cs[0].Updates > 0
	}, func() string { return strings.Join(w.linear.Ops(), ",") + "\n" + s.stderr.String() })
	waitFor(t, 20*time.Second, "the Slack message", func() bool {
		ms := w.slack.Messages()
		return len(ms) == 1 && strings.Contains(ms[0].Blocks, task.PRURL)
	}, s.stderr.String)
	if cs := w.gh.Comments(rtOwner, rtName, 43); len(cs) != 0 {
		t.Fatalf("a Linear task commented on GitHub issue 43: %v", cs)
	}

	// The ticket follows the task: in progress while it runs, in review
	// with the pull request, done when the pull request is merged.
	history := func() string { return strings.Join(w.linear.StateHistory("WEB-43"), ",") }
	waitFor(t, 20*time.Second, "the ticket in review", func() bool { return history() == "In Progress,In Review" },
		func() string { return history() + "\n" + strings.Join(w.linear.Ops(), ",") + "\n" + s.stderr.String() })
	merged := w.prEvent(t, "octokit-webhooks/pull_request.opened.json", &prs[0], func(p map[string]any) {
		p["action"] = "closed"
		p["pull_request"].(map[string]any)["merged"] = true
	})
	if code, out := postGitHub(t, s, "pull_request", "d-linear-merged", merged); code != http.StatusAccepted {
		t.Fatalf("merge: %d %v", code, out)
	}
	if tk := s.waitState(t, id, 30*time.Second, orchestrator.StateDone, orchestrator.StateCancelled); tk.State != orchestrator.StateDone {
		t.Fatalf("after the merge: %s (%s)", tk.State, tk.Reason)
	}
	waitFor(t, 20*time.Second, "the ticket done and its comment saying merged", func() bool {
		cs := w.linear.Comments()
		return history() == "In Progress,In Review,Done" && len(cs) == 1 && strings.Contains(cs[0].Body, "merged")
	}, func() string { return history() + "\n" + s.stderr.String() })
}
