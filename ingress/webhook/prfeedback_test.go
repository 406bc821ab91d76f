package webhook

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/orchestrator"
)

// TestPullRequestCommentAnswersWaitingTaskFirst: a comment without the
// trigger on a pull request answers the task waiting there for an answer;
// only when none waits is it feedback for the task owning the pull request.
func TestPullRequestCommentAnswersWaitingTaskFirst(t *testing.T) {
	t.Parallel()
	api, _ := fakeGitHubAPI(t)
	waiting := ""
	hs := newHarness(t, func(c *Config) {
		c.GitHub.APIURL = api.URL
		c.Waiting = func(_ context.Context, _ string, tg orchestrator.Target) (string, error) {
			if waiting == "" || tg.Type != "pull_request" || tg.Number != 3 {
				return "", orchestrator.ErrNotFound
			}
			return waiting, nil
		}
	})
	comment := func(id int) []byte {
		return editJSON(t, readFixture(t, "go-playground-webhooks/issue_comment.created.on-pr.slash-build.json"), func(m map[string]any) {
			obj(m, "comment")["body"] = "Use the v2 route."
			obj(m, "comment")["id"] = id
			obj(m, "comment", "user")["login"] = "writer"
		})
	}
	for _, c := range []struct {
		waiting, kind string // kind "": an answer to the waiting task
	}{{"", orchestrator.KindPRFeedback}, {"T1", ""}} {
		waiting = c.waiting
		got := hs.do(githubRequest("issue_comment", "d-"+c.waiting, comment(10+len(c.waiting)), testGitHubSecret))
		ev, _ := hs.lastEvent()
		// The answer's kind belongs to the questions' code: what matters is
		// that it goes to the waiting task, not to the pull request's owner.
		answered := ev != nil && ev.Kind != orchestrator.KindPRFeedback && ev.Target.Type == "task" && ev.Target.ID == c.waiting
		if got.Status != 202 || ev == nil || (c.kind != "" && ev.Kind != c.kind) || (c.waiting != "" && !answered) {
			var kind, target string
			if ev != nil {
				kind, target = ev.Kind, ev.Target.ID
			}
			t.Fatalf("waiting %q: %d %v, event %s on %q; want kind %s", c.waiting, got.Status, got.Body, kind, target, c.kind)
		}
	}
}

// TestReviewFollowUpsAreCapped: review feedback on a pull request counts
// attempts per head commit like CI fixes (several comments on one head are
// one attempt); past the cap it is refused, and CI attempts count apart.
func TestReviewFollowUpsAreCapped(t *testing.T) {
	t.Parallel()
	api, _ := fakeGitHubAPI(t)
	hs := newHarness(t, func(c *Config) { c.GitHub.APIURL = api.URL; c.AttemptCap = 2 })
	review := func(id int, sha string) []byte {
		return editJSON(t, readFixture(t, "octokit-webhooks/pull_request_review_comment.created.json"), func(m map[string]any) {
			obj(m, "comment")["id"] = id
			obj(m, "comment", "user")["login"] = "writer"
			obj(m, "pull_request", "head")["sha"] = sha
		})
	}
	for i, c := range []struct {
		sha    string
		status int
	}{{"aaa", 202}, {"aaa", 202}, {"bbb", 202}, {"ccc", 200}} {
		got := hs.do(githubRequest("pull_request_review_comment", "d-cap-"+strconv.Itoa(i), review(100+i, c.sha), testGitHubSecret))
		if got.Status != c.status {
			t.Fatalf("review comment %d on %s: %d %v, want %d", i, c.sha, got.Status, got.Body, c.status)
		}
		if c.status == 200 && !strings.Contains(got.Body["reason"], "review follow-up 3") {
			t.Fatalf("refusal reason %q", got.Body["reason"])
		}
	}
	// CI failures on the same pull request have their own count.
	ci := editJSON(t, readFixture(t, "octokit-webhooks/check_run.completed.1.json"), func(m map[string]any) {
		obj(m, "check_run")["conclusion"] = "failure"
	})
	if got := hs.do(githubRequest("check_run", "d-cap-ci", ci, testGitHubSecret)); got.Status != 202 {
		t.Fatalf("CI failure after the review cap: %d %v", got.Status, got.Body)
	}
}
