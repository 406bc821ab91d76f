// Package forgetest is the conformance suite every forge.Driver runs: change
// requests are opened once and found again by branch, the progress comment
// is created once and then edited in place, a reaction is idempotent, only
// writers may trigger, failing CI of a branch is read with its log, and the
// repository's template ends up in the change request body.
//
// A driver's test provides a Harness over the forge it talks to (a real
// server, or an httptest server speaking the forge's documented REST wire
// format) and calls Run:
//
//	func TestConformance(t *testing.T) {
//		forgetest.Run(t, func(t *testing.T) forgetest.Harness { return newHarness(t) })
//	}
package forgetest

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator/forge"
)

// Comment is a comment as the forge holds it.
type Comment struct {
	ID   int64
	Body string
}

// Harness adapts one forge to the suite. Everything except Driver acts on
// the forge directly (as its administrator or another user), never through
// the driver, so the suite reads back what the forge really holds.
type Harness interface {
	// Driver returns the driver under test, acting as Nightshift.
	Driver() forge.Driver
	// CreateRepo creates a repository named name (the owner is the
	// harness's choice) whose default branch main has one commit holding
	// files. The driver must be able to push to it and comment on it.
	CreateRepo(t *testing.T, name string, files map[string]string) forge.Repo
	// TemplatePath is where a change request template lives on this forge
	// (.github/pull_request_template.md, .gitlab/merge_request_templates/Default.md, ...).
	TemplatePath() string
	// Push adds a commit with files on branch (created from main when
	// missing) and returns its SHA.
	Push(t *testing.T, r forge.Repo, branch string, files map[string]string) string
	// CreateIssue opens an issue and returns its number.
	CreateIssue(t *testing.T, r forge.Repo, title string) int
	// AddComment adds a comment by another user (not Nightshift) to a thread.
	AddComment(t *testing.T, th forge.Thread, body string) forge.CommentRef
	// SetAccess makes login a user with access a on r (AccessNone: a user
	// with no role on r). The harness maps a to the forge's nearest role.
	SetAccess(t *testing.T, r forge.Repo, login string, a forge.Access)
	// FailCI makes commit sha of r fail CI in the forge's own way (a check
	// run, a pipeline job, a commit status) under name, whose log ends with
	// logTail. It returns whether the forge keeps a log the driver can
	// read for that failure.
	FailCI(t *testing.T, r forge.Repo, sha, name, logTail string) (hasLog bool)
	// ChangeRequests returns every change request of r, in any state.
	ChangeRequests(t *testing.T, r forge.Repo) []forge.ChangeRequest
	// Comments returns the comments of a thread, oldest first.
	Comments(t *testing.T, th forge.Thread) []Comment
	// Reactions returns the reactions on a comment (one name per reaction,
	// so a duplicate shows twice).
	Reactions(t *testing.T, c forge.CommentRef) []string
}

// Run runs the suite. newHarness is called once per case, which may share
// a forge server between calls (repository names are unique per case).
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Run("RepoOfCloneURL", func(t *testing.T) {
		h := newHarness(t)
		d := h.Driver()
		r := h.CreateRepo(t, "conform-repoof", nil)
		u := d.CloneURL(r)
		got, ok := d.RepoOf(u)
		if !ok || !got.Same(r) || !strings.EqualFold(got.Host, d.Host()) {
			t.Fatalf("RepoOf(CloneURL(%+v) = %q) = %+v, %v", r, u, got, ok)
		}
		if _, ok := d.RepoOf("/srv/git/" + r.Name); ok {
			t.Fatal("RepoOf took a local path")
		}
		if _, ok := d.RepoOf("https://elsewhere.invalid/" + r.FullName() + ".git"); ok {
			t.Fatal("RepoOf took another host")
		}
		if b, err := d.DefaultBranch(ctx(t), r); err != nil || b != "main" {
			t.Fatalf("DefaultBranch = %q, %v; want main", b, err)
		}
		auth, err := d.PushAuth(ctx(t), r)
		if err != nil {
			t.Fatalf("PushAuth: %v", err)
		}
		// The credentials fetch over the clone URL, as the worker's git does.
		cmd := exec.CommandContext(ctx(t), "git", "-c", "http.extraHeader=Authorization: Basic "+
			base64.StdEncoding.EncodeToString([]byte(auth.Username+":"+auth.Password)), "ls-remote", "--heads", u)
		cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1")
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "refs/heads/main") {
			t.Fatalf("git ls-remote %s with PushAuth: %v\n%s", u, err, out)
		}
	})

	t.Run("OpenTwiceIsOne", func(t *testing.T) {
		h := newHarness(t)
		d := h.Driver()
		r := h.CreateRepo(t, "conform-open", map[string]string{"README.md": "hello\n"})
		h.Push(t, r, "nightshift/open1", map[string]string{"a.txt": "a\n"})
		req := forge.NewChangeRequest{Head: forge.Branch{Repo: r, Name: "nightshift/open1"}, Base: "main",
			Title: "Add a", Body: "body one\n\n" + forge.Marker("open1"), Draft: true}
		cr, err := d.OpenChangeRequest(ctx(t), r, req)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		if cr.Number <= 0 || cr.URL == "" || cr.State != forge.StateOpen || cr.Head.Name != "nightshift/open1" || cr.Base != "main" {
			t.Fatalf("opened %+v", cr)
		}
		if !cr.Draft {
			t.Fatalf("asked for a draft, got %+v", cr)
		}
		_, err = d.OpenChangeRequest(ctx(t), r, req)
		if !errors.Is(err, forge.ErrConflict) {
			t.Fatalf("second open: err = %v, want ErrConflict", err)
		}
		if got := h.ChangeRequests(t, r); len(got) != 1 {
			t.Fatalf("forge holds %d change requests, want 1: %+v", len(got), got)
		}
		title := "Add a, edited"
		ed, err := d.EditChangeRequest(ctx(t), r, cr.Number, forge.ChangeEdit{Title: title, Body: "body two"})
		if err != nil || ed.Number != cr.Number {
			t.Fatalf("edit: %+v %v", ed, err)
		}
		got := h.ChangeRequests(t, r)
		if len(got) != 1 || !strings.Contains(got[0].Title, title) || !strings.Contains(got[0].Body, "body two") {
			t.Fatalf("after edit the forge holds %+v", got)
		}
	})

	t.Run("FindByBranch", func(t *testing.T) {
		h := newHarness(t)
		d := h.Driver()
		r := h.CreateRepo(t, "conform-find", nil)
		sha := h.Push(t, r, "nightshift/find1", map[string]string{"b.txt": "b\n"})
		h.Push(t, r, "nightshift/other", map[string]string{"c.txt": "c\n"})
		head := forge.Branch{Repo: r, Name: "nightshift/find1"}
		if found, err := d.FindChangeRequests(ctx(t), r, head, true); err != nil || len(found) != 0 {
			t.Fatalf("before open: %+v %v", found, err)
		}
		cr, err := d.OpenChangeRequest(ctx(t), r, forge.NewChangeRequest{Head: head, Base: "main", Title: "Find me", Body: "x"})
		if err != nil {
			t.Fatal(err)
		}
		for _, all := range []bool{false, true} {
			found, err := d.FindChangeRequests(ctx(t), r, head, all)
			if err != nil || len(found) != 1 || found[0].Number != cr.Number || found[0].State != forge.StateOpen {
				t.Fatalf("find (all=%v): %+v %v", all, found, err)
			}
		}
		if found, err := d.FindChangeRequests(ctx(t), r, forge.Branch{Repo: r, Name: "nightshift/other"}, true); err != nil || len(found) != 0 {
			t.Fatalf("another branch found %+v %v", found, err)
		}
		got, err := d.ChangeRequest(ctx(t), r, cr.Number)
		if err != nil || got.Number != cr.Number || got.Head.Name != head.Name || !got.Head.Repo.Same(r) || got.HeadRef == "" {
			t.Fatalf("get #%d: %+v %v", cr.Number, got, err)
		}
		if got.HeadSHA != "" && got.HeadSHA != sha {
			t.Fatalf("head sha %s, pushed %s", got.HeadSHA, sha)
		}
		if _, err := d.ChangeRequest(ctx(t), r, cr.Number+1000); !errors.Is(err, forge.ErrNotFound) {
			t.Fatalf("missing change request: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("ProgressCommentEditedInPlace", func(t *testing.T) {
		h := newHarness(t)
		d := h.Driver()
		r := h.CreateRepo(t, "conform-comment", nil)
		th := forge.Thread{Repo: r, Kind: forge.ThreadIssue, Number: h.CreateIssue(t, r, "Fix the thing")}
		h.AddComment(t, th, "@nightshift fix it")
		mark := forge.Marker("comment1")
		if id, err := d.FindComment(ctx(t), th, mark); err != nil || id != 0 {
			t.Fatalf("find before create: %d %v", id, err)
		}
		id, err := d.Comment(ctx(t), th, "queued\n"+mark)
		if err != nil || id == 0 {
			t.Fatalf("comment: %d %v", id, err)
		}
		found, err := d.FindComment(ctx(t), th, mark)
		if err != nil || found != id {
			t.Fatalf("find: %d %v, want %d", found, err, id)
		}
		if err := d.EditComment(ctx(t), th, id, "running\n"+mark); err != nil {
			t.Fatalf("edit: %v", err)
		}
		if err := d.EditComment(ctx(t), th, id, "done\n"+mark); err != nil {
			t.Fatalf("edit: %v", err)
		}
		ours := 0
		for _, c := range h.Comments(t, th) {
			if strings.Contains(c.Body, mark) {
				ours++
				if c.ID != id || !strings.HasPrefix(c.Body, "done") {
					t.Fatalf("progress comment %+v", c)
				}
			}
		}
		if ours != 1 {
			t.Fatalf("%d progress comments, want 1: %+v", ours, h.Comments(t, th))
		}
		if id, err := d.FindComment(ctx(t), th, forge.Marker("nobody")); err != nil || id != 0 {
			t.Fatalf("find another marker: %d %v", id, err)
		}
		// A change request's thread works the same.
		h.Push(t, r, "nightshift/comment1", map[string]string{"d.txt": "d\n"})
		cr, err := d.OpenChangeRequest(ctx(t), r, forge.NewChangeRequest{Head: forge.Branch{Repo: r, Name: "nightshift/comment1"}, Base: "main", Title: "D", Body: "d"})
		if err != nil {
			t.Fatal(err)
		}
		cth := forge.Thread{Repo: r, Kind: forge.ThreadChange, Number: cr.Number}
		cid, err := d.Comment(ctx(t), cth, "on the change\n"+mark)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.EditComment(ctx(t), cth, cid, "edited on the change\n"+mark); err != nil {
			t.Fatal(err)
		}
		if cs := h.Comments(t, cth); len(cs) != 1 || !strings.HasPrefix(cs[0].Body, "edited") {
			t.Fatalf("change request comments %+v", cs)
		}
	})

	t.Run("ReactionIdempotent", func(t *testing.T) {
		h := newHarness(t)
		d := h.Driver()
		r := h.CreateRepo(t, "conform-react", nil)
		th := forge.Thread{Repo: r, Kind: forge.ThreadIssue, Number: h.CreateIssue(t, r, "React")}
		c := h.AddComment(t, th, "@nightshift look")
		for range 2 {
			if err := d.React(ctx(t), c, forge.ReactionEyes); err != nil {
				t.Fatalf("react: %v", err)
			}
		}
		if got := h.Reactions(t, c); !slices.Equal(got, []string{forge.ReactionEyes}) {
			t.Fatalf("reactions %v, want [eyes]", got)
		}
	})

	t.Run("Permission", func(t *testing.T) {
		h := newHarness(t)
		d := h.Driver()
		r := h.CreateRepo(t, "conform-perm", nil)
		for _, c := range []struct {
			login string
			set   forge.Access
			may   bool
		}{
			{"conform-admin", forge.AccessAdmin, true},
			{"conform-writer", forge.AccessWrite, true},
			{"conform-reader", forge.AccessRead, false},
			{"conform-stranger", forge.AccessNone, false},
		} {
			h.SetAccess(t, r, c.login, c.set)
			a, err := d.Permission(ctx(t), r, c.login)
			if err != nil {
				t.Fatalf("permission of %s: %v", c.login, err)
			}
			if a.CanTrigger() != c.may {
				t.Fatalf("%s (set %s) has %s: CanTrigger = %v, want %v", c.login, c.set, a, a.CanTrigger(), c.may)
			}
		}
		// A login with no role: none, or read on a public repository
		// (GitHub), but never an error and never a trigger.
		if a, err := d.Permission(ctx(t), r, "conform-nobody-at-all"); err != nil || a.CanTrigger() {
			t.Fatalf("unknown login: %s %v, want no trigger", a, err)
		}
	})

	t.Run("CIFailureOfBranch", func(t *testing.T) {
		h := newHarness(t)
		d := h.Driver()
		r := h.CreateRepo(t, "conform-ci", nil)
		sha := h.Push(t, r, "feature/ci", map[string]string{"e.txt": "e\n"})
		hasLog := h.FailCI(t, r, sha, "unit-tests", "--- FAIL: TestConform (0.00s)\nFAIL conform/pkg")
		for _, ref := range []string{sha, "feature/ci"} {
			fs, err := d.CIFailures(ctx(t), r, forge.CIQuery{Ref: ref, Prefer: "unit-tests", MaxLogs: 3, LogBytes: 4096})
			if err != nil {
				t.Fatalf("CI failures of %s: %v", ref, err)
			}
			if len(fs) == 0 || fs[0].Name != "unit-tests" || fs[0].Conclusion == "" {
				t.Fatalf("CI failures of %s: %+v", ref, fs)
			}
			if hasLog && !strings.Contains(fs[0].Log, "FAIL: TestConform") {
				t.Fatalf("CI failure log of %s: %q", ref, fs[0].Log)
			}
		}
		clean := h.Push(t, r, "feature/clean", map[string]string{"f.txt": "f\n"})
		if fs, err := d.CIFailures(ctx(t), r, forge.CIQuery{Ref: clean, MaxLogs: 3, LogBytes: 4096}); err != nil || len(fs) != 0 {
			t.Fatalf("clean commit: %+v %v", fs, err)
		}
	})

	t.Run("Template", func(t *testing.T) {
		h := newHarness(t)
		d := h.Driver()
		tpl := "## Checklist\n- [ ] tests pass (conform-template)"
		r := h.CreateRepo(t, "conform-tpl", map[string]string{h.TemplatePath(): tpl + "\n"})
		got, err := d.Template(ctx(t), r, "")
		if err != nil || got != tpl {
			t.Fatalf("template = %q, %v; want %q", got, err, tpl)
		}
		sha := h.Push(t, r, "nightshift/tpl", map[string]string{"g.txt": "g\n"})
		if got, err := d.Template(ctx(t), r, sha); err != nil || got != tpl {
			t.Fatalf("template at %s = %q, %v", sha, got, err)
		}
		bare := h.CreateRepo(t, "conform-notpl", nil)
		if got, err := d.Template(ctx(t), bare, ""); err != nil || got != "" {
			t.Fatalf("no template: %q, %v", got, err)
		}
	})

	runPolicy(t, newHarness)
}

// ctx returns a context bounded for one suite step.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}
