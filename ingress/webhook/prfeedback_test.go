package webhook

import (
	"context"
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
