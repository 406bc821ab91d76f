package forgetest

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/forge"
	"github.com/nightshift/nightshift/orchestrator/notify"
)

// runPolicy runs the cases that go through forge.Publisher and
// forge.Reporter over the harness's driver: what Nightshift does on the
// forge end to end, for every forge alike.
func runPolicy(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Run("PublisherOpensOnceWithTemplate", func(t *testing.T) {
		h := newHarness(t)
		d := h.Driver()
		reg := registry(t, d)
		tpl := "## Checklist (conform-publisher)"
		r := h.CreateRepo(t, "conform-pub", map[string]string{h.TemplatePath(): tpl + "\n"})
		issue := h.CreateIssue(t, r, "Greet better")
		item := workItem(d, r, "tconform00000001", orchestrator.Target{Type: "issue", Number: issue})
		pub := forge.NewPublisher(reg, forge.Options{PublicURL: "https://nightshift.example.test/"})
		plan, err := pub.Plan(ctx(t), item)
		if err != nil {
			t.Fatalf("plan: %v", err)
		}
		if plan.Auth == nil || !plan.Force || plan.Base != "" || plan.PushBranch != "" {
			t.Fatalf("plan for an issue task: %+v", plan)
		}
		sha := h.Push(t, r, item.Branch, map[string]string{"greeting.txt": "hello\n"})
		res := orchestrator.RunResult{Commit: sha, Branch: item.Branch, Summary: "Greet better\n\nSays hello.",
			Diff: orchestrator.DiffStat{Files: 1, Added: 1}, Files: []string{"greeting.txt"}}
		url, err := pub.Open(ctx(t), item, plan, res)
		if err != nil || url == "" {
			t.Fatalf("open: %q %v", url, err)
		}
		res.Summary = "Greet better, run two"
		url2, err := pub.Open(ctx(t), item, plan, res)
		if err != nil || url2 != url {
			t.Fatalf("second open: %q %v, first %q", url2, err, url)
		}
		crs := h.ChangeRequests(t, r)
		if len(crs) != 1 {
			t.Fatalf("forge holds %d change requests, want 1: %+v", len(crs), crs)
		}
		cr := crs[0]
		if !cr.Draft || cr.Head.Name != item.Branch || cr.Base != "main" || !strings.Contains(cr.Title, "run two") {
			t.Fatalf("change request %+v", cr)
		}
		for _, want := range []string{tpl, forge.Marker(item.TaskID), "Closes #", "https://nightshift.example.test/tasks/" + item.TaskID, "`greeting.txt`"} {
			if !strings.Contains(cr.Body, want) {
				t.Errorf("body lacks %q:\n%s", want, cr.Body)
			}
		}
	})

	t.Run("PlanOnChangeRequestPushesItsHead", func(t *testing.T) {
		h := newHarness(t)
		d := h.Driver()
		reg := registry(t, d)
		r := h.CreateRepo(t, "conform-planpr", nil)
		h.Push(t, r, "feature", map[string]string{"wip.txt": "wip\n"})
		cr, err := d.OpenChangeRequest(ctx(t), r, forge.NewChangeRequest{Head: forge.Branch{Repo: r, Name: "feature"}, Base: "main", Title: "WIP", Body: "wip"})
		if err != nil {
			t.Fatal(err)
		}
		item := workItem(d, r, "tconform00000002", orchestrator.Target{Type: "pull_request", Number: cr.Number, CommentID: 1})
		pub := forge.NewPublisher(reg, forge.Options{})
		plan, err := pub.Plan(ctx(t), item)
		if err != nil || plan.Base != "feature" || plan.PushBranch != "feature" || plan.Force {
			t.Fatalf("plan on change request #%d: %+v %v", cr.Number, plan, err)
		}
		url, err := pub.Open(ctx(t), item, plan, orchestrator.RunResult{Branch: "feature", Summary: "More"})
		if err != nil || url != cr.URL {
			t.Fatalf("open on its own change request: %q %v, want %q", url, err, cr.URL)
		}
		if n := len(h.ChangeRequests(t, r)); n != 1 {
			t.Fatalf("%d change requests, want 1", n)
		}
	})

	t.Run("PlanOfCIFailureReadsTheFailure", func(t *testing.T) {
		h := newHarness(t)
		d := h.Driver()
		reg := registry(t, d)
		r := h.CreateRepo(t, "conform-planci", nil)
		sha := h.Push(t, r, "feature/red", map[string]string{"red.txt": "red\n"})
		hasLog := h.FailCI(t, r, sha, "unit-tests", "--- FAIL: TestPlanCI (0.01s)")
		item := workItem(d, r, "tconform00000003", orchestrator.Target{Type: "branch", Branch: "feature/red", HeadSHA: sha, Check: "unit-tests"})
		item.Kind = orchestrator.KindCIFailed
		plan, err := forge.NewPublisher(reg, forge.Options{}).Plan(ctx(t), item)
		if err != nil {
			t.Fatal(err)
		}
		if plan.Base != "feature/red" || !strings.Contains(plan.PromptContext, "unit-tests") {
			t.Fatalf("plan %+v", plan)
		}
		if hasLog && !strings.Contains(plan.PromptContext, "FAIL: TestPlanCI") {
			t.Fatalf("prompt context lacks the log:\n%s", plan.PromptContext)
		}
	})

	t.Run("ReporterOneCommentOneReaction", func(t *testing.T) {
		h := newHarness(t)
		d := h.Driver()
		reg := registry(t, d)
		r := h.CreateRepo(t, "conform-report", nil)
		th := forge.Thread{Repo: r, Kind: forge.ThreadIssue, Number: h.CreateIssue(t, r, "Report here")}
		trigger := h.AddComment(t, th, "@nightshift do it")
		db, err := orchestrator.OpenDB(filepath.Join(t.TempDir(), "notify.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		store, err := notify.NewStore(ctx(t), db, nil)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := forge.NewReporter(reg, store, forge.Options{Redact: func(s string) string { return strings.ReplaceAll(s, "hunter2", "[REDACTED]") }})
		if err != nil {
			t.Fatal(err)
		}
		task := orchestrator.Task{ID: "tconform00000004", Repo: d.CloneURL(r), Source: orchestrator.Source(d.Kind()), Kind: orchestrator.KindComment,
			Target: orchestrator.Target{Type: "issue", Number: th.Number, CommentID: trigger.ID, URL: trigger.URL}, Run: 1}
		at := time.Now()
		for i, st := range []orchestrator.State{orchestrator.StateQueued, orchestrator.StateRunning, orchestrator.StateRunning, orchestrator.StateReview} {
			task.State, task.UpdatedAt = st, at.Add(time.Duration(i)*time.Second)
			if st == orchestrator.StateReview {
				task.PRURL, task.Error = "https://forge.example.test/pr/1", ""
				task.Answer = "the secret hunter2 stays out"
			}
			if err := rep.Notify(ctx(t), task); err != nil {
				t.Fatalf("notify %s: %v", st, err)
			}
		}
		var ours []Comment
		for _, c := range h.Comments(t, th) {
			if strings.Contains(c.Body, forge.Marker(task.ID)) {
				ours = append(ours, c)
			}
		}
		if len(ours) != 1 || !strings.Contains(ours[0].Body, "ready for review") || !strings.Contains(ours[0].Body, "https://forge.example.test/pr/1") {
			t.Fatalf("progress comments %+v", ours)
		}
		if strings.Contains(ours[0].Body, "hunter2") {
			t.Fatalf("progress comment leaks a secret: %s", ours[0].Body)
		}
		if got := h.Reactions(t, trigger); len(got) != 1 || got[0] != forge.ReactionEyes {
			t.Fatalf("reactions on the trigger %v, want [eyes]", got)
		}
		// A refused trigger is answered on its thread, mentioning the author.
		ev := &orchestrator.Event{ID: "evconform", Repo: d.CloneURL(r), Target: orchestrator.Target{Type: "issue", Number: th.Number}, Actor: orchestrator.Actor{Login: "mallory"}}
		if err := rep.Reply(ctx(t), ev, "Nightshift did not start."); err != nil {
			t.Fatalf("reply: %v", err)
		}
		cs := h.Comments(t, th)
		if last := cs[len(cs)-1]; !strings.HasPrefix(last.Body, "@mallory Nightshift did not start.") {
			t.Fatalf("reply comment %q", last.Body)
		}
	})
}

// registry is a registry of the one driver.
func registry(t *testing.T, d forge.Driver) *forge.Registry {
	reg, err := forge.NewRegistry(d)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// workItem is run 1 of a task from the forge's own events on target.
func workItem(d forge.Driver, r forge.Repo, id string, target orchestrator.Target) orchestrator.WorkItem {
	return orchestrator.WorkItem{TaskID: id, Run: 1, Repo: d.CloneURL(r), Base: "main", Branch: "nightshift/" + id,
		Agent: "fixer", Prompt: "greet better", Source: orchestrator.Source(d.Kind()), Kind: orchestrator.KindComment,
		Target: target, Actor: orchestrator.Actor{Login: "alice"}}
}
