package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestFollowUpBuildsOnAPersonsCommit: a person pushes to the task's branch
// between runs; the follow-up run starts from their commit and its fenced
// push lands on top of it (the fence refuses only branches moved by no one
// the run could see).
func TestFollowUpBuildsOnAPersonsCommit(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, processConfig+`
agents:
  echo:
    command: ["sh", "-c", "echo \"$NIGHTSHIFT_PROMPT\" >> NOTES.md"]
`)
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "echo", "first line")
	s.waitState(t, id, 60*time.Second, "review")
	ref := "nightshift/" + id
	// A person's commit on the task's branch.
	work := filepath.Join(t.TempDir(), "person")
	gitRun(t, "", "clone", "-q", "-b", ref, origin, work)
	os.WriteFile(filepath.Join(work, "HUMAN.md"), []byte("by hand\n"), 0o644)
	gitRun(t, work, "add", ".")
	gitRun(t, work, "-c", "user.name=Person", "-c", "user.email=p@example.test", "commit", "-q", "-m", "a person's fix")
	gitRun(t, work, "push", "-q", "origin", ref)
	human := gitRun(t, work, "rev-parse", "HEAD")

	if out, err := s.cli(t, "tasks", "message", id, "second line"); err != nil {
		t.Fatalf("message: %v\n%s", err, out)
	}
	task := s.waitRunReview(t, id, 2, 60*time.Second)
	if parent := gitRun(t, origin, "rev-parse", ref+"^"); parent != human {
		t.Fatalf("the follow-up's commit does not build on the person's: parent %s, want %s", parent, human)
	}
	if got := gitRun(t, origin, "rev-parse", ref); got != task.Commit {
		t.Fatalf("branch at %s, task records %s", got, task.Commit)
	}
	if got := gitRun(t, origin, "show", ref+":HUMAN.md"); got != "by hand" {
		t.Fatalf("HUMAN.md = %q", got)
	}
}
