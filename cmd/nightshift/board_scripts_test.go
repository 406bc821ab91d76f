package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nightshift/nightshift/orchestrator"
)

// TestBoardScriptsInBrowser checks the board's JavaScript in Chromium: how
// triggers are labelled and linked, that task text is never markup, and
// the diff parser and highlighter.
func TestBoardScriptsInBrowser(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, yamlWith("true", "2m"))
	origin := newOrigin(t)
	ctx := browser(t)
	evil := `<img src=x onerror="window.__xss=1"> fix it`
	id := s.dispatch(t, origin, "fail", evil)
	s.waitState(t, id, 60*time.Second, orchestrator.StateFailed)

	if err := chromedp.Do(ctx, chromedp.Navigate(s.URL+"/")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "board ready", `document.body.dataset.ready === "true"`)
	waitJS(t, ctx, "card", cardIn("failed", id))
	if got := evalJS[string](t, ctx, cardIn("failed", id)+`.querySelector(".prompt").textContent`); got != evil {
		t.Fatalf("prompt shown as %q", got)
	}
	if evalJS[bool](t, ctx, `window.__xss === 1 || !!document.querySelector(".card img")`) {
		t.Fatal("a task prompt was rendered as HTML")
	}

	triggers := []struct {
		task      string
		label, to string
	}{
		{`{"source":"github","kind":"comment.command","target":{"type":"issue","number":12,"url":"https://github.com/a/b/issues/12"}}`, "GitHub comment #12", "https://github.com/a/b/issues/12"},
		{`{"source":"github","kind":"ci.failed","target":{"type":"pull_request","number":7,"check":"test","url":"https://github.com/a/b/pull/7"}}`, "CI failure (test) #7", "https://github.com/a/b/pull/7"},
		{`{"source":"github","kind":"issue.labeled","target":{"number":3}}`, "GitHub label #3", ""},
		{`{"source":"linear","kind":"ticket.assigned","target":{"type":"ticket","id":"ENG-12","url":"https://linear.app/x/issue/ENG-12"}}`, "Linear ENG-12", "https://linear.app/x/issue/ENG-12"},
		{`{"source":"slack","kind":"slack.command","target":{}}`, "Slack", ""},
		{`{"source":"api","kind":"task.requested","actor":{"login":"token:ab12cd34"}}`, "API (token:ab12cd34)", ""},
		{`{"source":"github","kind":"comment.command","target":{"number":1,"url":"javascript:alert(1)"}}`, "GitHub comment #1", ""},
	}
	for _, c := range triggers {
		got := evalJS[map[string]string](t, ctx, `NS.trigger(`+c.task+`)`)
		if got["label"] != c.label || got["url"] != c.to {
			t.Errorf("trigger(%s) = %v, want %q %q", c.task, got, c.label, c.to)
		}
	}
	for in, want := range map[string]string{"https://github.com/acme/widgets.git": "acme/widgets", "git@github.com:acme/widgets.git": "acme/widgets", "/srv/repos/widgets": "widgets"} {
		if got := evalJS[string](t, ctx, `NS.repoName(`+jsString(in)+`)`); got != want {
			t.Errorf("repoName(%q) = %q, want %q", in, got, want)
		}
	}

	// Keyboard only: the skip link comes first, Tab reaches the card, Enter opens it.
	if err := chromedp.Do(ctx, chromedp.KeyEvent("\t")); err != nil {
		t.Fatal(err)
	}
	if got := evalJS[string](t, ctx, `document.activeElement.className`); got != "skip" {
		t.Fatalf("first Tab stop %q, want the skip link", got)
	}
	for i := 0; i < 30 && !evalJS[bool](t, ctx, `!!document.activeElement.closest(".card")`); i++ {
		if err := chromedp.Do(ctx, chromedp.KeyEvent("\t")); err != nil {
			t.Fatal(err)
		}
	}
	if !evalJS[bool](t, ctx, `document.activeElement.matches(".card h3 a")`) {
		t.Fatalf("Tab never reached the card link (at %s)", evalJS[string](t, ctx, `document.activeElement.outerHTML.slice(0, 200)`))
	}
	if err := chromedp.Do(ctx, chromedp.KeyEvent("\r")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "Enter opened the task", `location.pathname === "/tasks/`+id+`"`)

	// The diff code lives on the task page.
	if err := chromedp.Do(ctx, chromedp.Navigate(s.URL+"/tasks/"+id)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "task page", `document.body.dataset.ready === "true"`)
	if got := evalJS[string](t, ctx, `document.getElementById("prompt").textContent`); got != evil {
		t.Fatalf("task page prompt %q", got)
	}
	diff := "diff --git a/old.txt b/new.txt\nsimilarity index 90%\nrename from old.txt\nrename to new.txt\n" +
		"--- a/old.txt\n+++ b/new.txt\n@@ -1,2 +1,2 @@\n same\n-gone\n+here\n" +
		"diff --git a/logo.png b/logo.png\nnew file mode 100644\nBinary files /dev/null and b/logo.png differ\n" +
		"diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -10,0 +11,1 @@ def f():\n+    return \"s\" # done\n"
	files := evalJS[[]map[string]any](t, ctx, `Diff.parse(`+jsString(diff)+`).map(f => ({path: f.path, status: f.status, added: f.added, deleted: f.deleted, binary: f.binary, first: f.hunks.length ? f.hunks[0].lines[f.hunks[0].lines.length-1].n : null}))`)
	want := `[{"added":1,"binary":false,"deleted":1,"first":2,"path":"new.txt","status":"renamed"},{"added":0,"binary":true,"deleted":0,"first":null,"path":"logo.png","status":"added"},{"added":1,"binary":false,"deleted":0,"first":11,"path":"x.py","status":"modified"}]`
	if got, _ := json.Marshal(files); string(got) != want {
		t.Errorf("Diff.parse:\n got %s\nwant %s", got, want)
	}
	toks := evalJS[[][]string](t, ctx, `Diff.tokenize('    return "s" # done', Diff.lang("x.py"))`)
	if got, _ := json.Marshal(toks); string(got) != `[["","    "],["t-kw","return"],[""," "],["t-str","\"s\""],[""," "],["t-com","# done"]]` {
		t.Errorf("python tokens %s", got)
	}
	toks = evalJS[[][]string](t, ctx, "Diff.tokenize('func (s *S) Run(ctx context.Context) error { return nil } // x', Diff.lang(\"a/b.go\"))")
	classes := map[string]string{}
	for _, tk := range toks {
		classes[tk[1]] = tk[0]
	}
	for word, cls := range map[string]string{"func": "t-kw", "Run": "t-fn", "error": "t-type", "nil": "t-kw", "// x": "t-com"} {
		if classes[word] != cls {
			t.Errorf("go token %q: class %q, want %q (all: %v)", word, classes[word], cls, toks)
		}
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return strings.ReplaceAll(string(b), "</", `<\/`)
}
