package github_test

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/github"
	"github.com/nightshift/nightshift/orchestrator/github/githubtest"
	"github.com/nightshift/nightshift/orchestrator/notify"
)

func newStore(t *testing.T) *notify.Store {
	t.Helper()
	db, err := orchestrator.OpenDB(filepath.Join(t.TempDir(), "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := notify.NewStore(context.Background(), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestReporterOneCommentUpdatedInPlace(t *testing.T) {
	t.Parallel()
	fake := githubtest.New(t, githubtest.Options{AppID: appID})
	repo := fake.CreateRepo("acme", "app", map[string]string{"README.md": "hi\n"})
	trigger := fake.AddComment("acme", "app", 3, "octocat", "@nightshift fix it")
	c := newApp(t, fake, func(cfg *github.Config) {
		cfg.Redact = func(s string) string { return strings.ReplaceAll(s, "hunter2", "[REDACTED]") }
	})
	store := newStore(t)
	rp, err := github.NewReporter(c, store)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t0 := time.Now()
	id := "trep000000000001"
	mk := func(st orchestrator.State, d time.Duration) orchestrator.Task {
		return orchestrator.Task{ID: id, State: st, Repo: repo, Source: orchestrator.SourceGitHub, Kind: orchestrator.KindComment,
			Run: 1, UpdatedAt: t0.Add(d), CreatedAt: t0,
			Target: orchestrator.Target{Type: "issue", Number: 3, CommentID: trigger.GetID(), URL: "https://github.com/acme/app/issues/3#issuecomment-1"}}
	}
	for _, tk := range []orchestrator.Task{mk(orchestrator.StateQueued, 0), mk(orchestrator.StateQueued, 0), mk(orchestrator.StateProvisioning, time.Second),
		mk(orchestrator.StateRunning, 2*time.Second), mk(orchestrator.StateRunning, 2*time.Second)} {
		if err := rp.Notify(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	mine := func() []string {
		var out []string
		for _, c := range fake.Comments("acme", "app", 3) {
			if c.GetID() != trigger.GetID() {
				out = append(out, c.GetBody())
			}
		}
		return out
	}
	if got := mine(); len(got) != 1 || !strings.Contains(got[0], "working") || !strings.Contains(got[0], github.Marker(id)) {
		t.Fatalf("progress comments: %q", got)
	}
	if r := fake.Reactions(); len(r) != 1 || r[0] != "acme/app:"+strconv.FormatInt(trigger.GetID(), 10)+":eyes" {
		t.Fatalf("reactions: %v", r)
	}
	if n := fake.Count("PATCH", "/issues/comments/"); n != 2 {
		t.Fatalf("%d comment updates, want 2 (provisioning, running)", n)
	}
	// A crash lost the comment id: the marker finds the comment again.
	store.Put(ctx, notify.Record{TaskID: id, Channel: "github.comment"})
	failed := mk(orchestrator.StateFailed, 3*time.Second)
	failed.Error = "tests failed with hunter2"
	if err := rp.Notify(ctx, failed); err != nil {
		t.Fatal(err)
	}
	review := mk(orchestrator.StateReview, 4*time.Second)
	review.Run, review.PRURL, review.Diff = 2, fake.URL+"/acme/app/pull/4", orchestrator.DiffStat{Files: 2, Added: 3, Deleted: 1}
	if err := rp.Notify(ctx, review); err != nil {
		t.Fatal(err)
	}
	got := mine()
	if len(got) != 1 || !strings.Contains(got[0], "ready for review") || !strings.Contains(got[0], "/acme/app/pull/4") || !strings.Contains(got[0], "run 2") {
		t.Fatalf("final comment: %q", got)
	}
	if n := fake.Count("PATCH", "/issues/comments/"); n != 4 {
		t.Fatalf("%d comment updates, want 4", n)
	}
	// Tasks not from a GitHub issue are left alone.
	other := mk(orchestrator.StateQueued, 0)
	other.ID, other.Source = "trep000000000002", orchestrator.SourceSlack
	if err := rp.Notify(ctx, other); err != nil || len(mine()) != 1 {
		t.Fatalf("slack task commented: %v", err)
	}
	// Refusals are answered briefly, mentioning the author.
	ev := &orchestrator.Event{ID: "ev1", Repo: repo, Target: orchestrator.Target{Type: "issue", Number: 3}, Actor: orchestrator.Actor{Login: "mallory"}}
	if err := rp.Reply(ctx, ev, "Nightshift did not start: mallory has read permission; hunter2"); err != nil {
		t.Fatal(err)
	}
	got = mine()
	if len(got) != 2 || got[1] != "@mallory Nightshift did not start: mallory has read permission; [REDACTED]" {
		t.Fatalf("reply: %q", got)
	}
	// A review comment on a pull request gets its reaction through the pulls API.
	rc := mk(orchestrator.StateQueued, 0)
	rc.ID, rc.Target = "trep000000000003", orchestrator.Target{Type: "pull_request", Number: 3, CommentID: 77, URL: "https://github.com/acme/app/pull/3#discussion_r77"}
	if err := rp.Notify(ctx, rc); err != nil {
		t.Fatal(err)
	}
	if n := fake.Count("POST", "/pulls/comments/77/reactions"); n != 1 {
		t.Fatalf("%d review comment reactions", n)
	}
	noViolations(t, fake)
	for _, m := range fake.Minted() {
		if m.Permissions["issues"] != "write" && m.Permissions["pull_requests"] != "write" {
			t.Errorf("reporter token with %v", m.Permissions)
		}
	}
}
