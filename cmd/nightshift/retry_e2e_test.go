package main

import (
	"strings"
	"testing"
	"time"
)

// TestRetryKeepsFollowUpCommits: a retry is a new run from the task's
// current branch, so the commit a follow-up added survives it; with
// --from-base the branch starts over from the base, and the CLI and the
// task log say so.
func TestRetryKeepsFollowUpCommits(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, processConfig+`
agents:
  note:
    command: ["sh", "-c", "printf '%s\n' \"$NIGHTSHIFT_PROMPT\" >> NOTES.md"]
repos:
  - match: "*"
`)
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "note", "first")
	c1 := s.waitRunReview(t, id, 1, 60*time.Second).Commit
	if out, err := s.cli(t, "tasks", "message", id, "second"); err != nil {
		t.Fatalf("message: %v: %s", err, out)
	}
	c2 := s.waitRunReview(t, id, 2, 60*time.Second).Commit
	ref := "nightshift/" + id
	notes := func() string { return gitRun(t, origin, "show", ref+":NOTES.md") }
	if got := notes(); got != "first\nsecond" {
		t.Fatalf("after the follow-up NOTES.md = %q", got)
	}

	if out, err := s.cli(t, "tasks", "retry", id); err != nil {
		t.Fatalf("retry: %v: %s", err, out)
	}
	c3 := s.waitRunReview(t, id, 3, 60*time.Second).Commit
	if n := gitRun(t, origin, "rev-list", "--count", "main.."+ref); n != "3" {
		t.Fatalf("%s commits on the branch after the retry, want 3 (first run, follow-up, retry)", n)
	}
	for _, c := range []string{c1, c2} {
		if _, err := gitTry(origin, "merge-base", "--is-ancestor", c, c3); err != nil {
			t.Fatalf("commit %s is no longer on the branch after the retry", c)
		}
	}
	if got := notes(); got != "first\nsecond\nfirst" {
		t.Fatalf("after the retry NOTES.md = %q, want the follow-up's line kept", got)
	}

	out, err := s.cli(t, "tasks", "retry", "--from-base", id)
	if err != nil || !strings.Contains(out, "from the base branch") {
		t.Fatalf("retry --from-base: %v: %s", err, out)
	}
	s.waitRunReview(t, id, 4, 60*time.Second)
	if n := gitRun(t, origin, "rev-list", "--count", "main.."+ref); n != "1" {
		t.Fatalf("%s commits on the branch after retry --from-base, want 1", n)
	}
	if got := notes(); got != "first" {
		t.Fatalf("after retry --from-base NOTES.md = %q", got)
	}
	logs, _ := s.cli(t, "tasks", "logs", id)
	if !strings.Contains(logs, "retry from base: starting over from") {
		t.Fatalf("the log does not say the retry started from the base:\n%s", logs)
	}
}
