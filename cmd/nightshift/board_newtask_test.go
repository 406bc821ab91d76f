package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/nightshift/nightshift/orchestrator"
)

// TestBoardNewTaskInBrowser starts a task from the board's New task form,
// logged in with a session (so the POST carries the session's CSRF token):
// a task the API refuses shows the server's reason next to the form, and a
// valid one is created, shows up on the board and runs to review.
func TestBoardNewTaskInBrowser(t *testing.T) {
	t.Parallel()
	yaml, gates := gatedYAML(t)
	yaml += "api: {tokens: [\"adm1n-token\"]}\n"
	s := startTestServer(t, yaml)
	origin := newOrigin(t)
	ctx := browser(t)

	if err := chromedp.Do(ctx, chromedp.Navigate(s.URL+"/")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "login page", `location.pathname === "/login" && !!document.querySelector("#token")`)
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#token"), "adm1n-token"), chromedp.Click(chromedp.CSS(`form.login-form button[type=submit]`))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "board ready", `location.pathname === "/" && document.body.dataset.ready === "true"`)
	if !evalJS[bool](t, ctx, `!document.getElementById("new-task").hidden`) {
		t.Fatal("an admin does not see the New task form")
	}

	// Refused by the API: the reason shows inline and nothing is created.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#new-task summary")),
		chromedp.SendKeys(chromedp.CSS("#nt-repo"), origin),
		chromedp.SendKeys(chromedp.CSS("#nt-agent"), "nope"),
		chromedp.SendKeys(chromedp.CSS("#nt-prompt"), "Add a greeting program"),
		chromedp.Click(chromedp.CSS("#nt-submit"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "inline error", `!document.getElementById("nt-error").hidden && document.getElementById("nt-error").innerText.includes('unknown agent "nope"')`)
	// The open form, with its error showing, passes the same audit as the
	// rest of the board.
	t.Run("accessibility", func(t *testing.T) {
		axe := axeSource(t)
		runAxe(t, axe, "board with the New task form open", func(expr string) ([]axeViolation, error) {
			return chromedp.Run(ctx, chromedp.Evaluate[[]axeViolation](expr, chromedp.EvalAwaitPromise))
		})
	})
	var list struct{ Tasks []orchestrator.Task }
	s.getAuth(t, "/api/v1/tasks", "adm1n-token", &list)
	if len(list.Tasks) != 0 {
		t.Fatalf("a refused task was created (%d tasks)", len(list.Tasks))
	}

	// Accepted: the status links the new task, whose card runs to review.
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS("#nt-agent"), "gated"),
		chromedp.SetValue(chromedp.CSS("#nt-branch"), "main"),
		chromedp.Click(chromedp.CSS("#nt-submit"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "task created", `!!document.querySelector("#nt-status a[data-task-id]") && document.getElementById("nt-error").hidden`)
	id := evalJS[string](t, ctx, `document.querySelector("#nt-status a[data-task-id]").dataset.taskId`)
	waitJS(t, ctx, "card in Running", cardIn("running", id))
	openGate(t, gates, id)
	waitJS(t, ctx, "card in Review", cardIn("review", id))
	s.waitStateAuth(t, id, "adm1n-token", orchestrator.StateReview)
	var task orchestrator.Task
	s.getAuth(t, "/api/v1/tasks/"+id, "adm1n-token", &task)
	if task.Repo != origin || task.Agent != "gated" || task.Prompt != "Add a greeting program" || task.Base != "main" || task.Source != orchestrator.SourceAPI {
		t.Fatalf("task from the board: repo %q agent %q prompt %q base %q source %q", task.Repo, task.Agent, task.Prompt, task.Base, task.Source)
	}
	if got := gitRun(t, origin, "show", "nightshift/"+id+":hello.go"); !strings.Contains(got, "hello, night shift") {
		t.Fatalf("the board's task pushed no change: %q", got)
	}
}

// getAuth GETs an API path with a bearer token and decodes the answer.
func (s *testServer) getAuth(t *testing.T, path, token string, v any) {
	t.Helper()
	req, _ := http.NewRequest("GET", s.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}
