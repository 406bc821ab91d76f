package main

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nightshift/nightshift/orchestrator"
)

// TestBoardLoginInBrowser logs in on the board by pasting a token, then
// acts through the session cookie and its CSRF token (cancel from the task
// page), and checks a read-only login cannot act.
func TestBoardLoginInBrowser(t *testing.T) {
	t.Parallel()
	yaml, _ := gatedYAML(t)
	yaml += "api: {tokens: [\"adm1n-token\"], read_only_tokens: [\"r3ad-token\"]}\n"
	s := startTestServer(t, yaml)
	origin := newOrigin(t)
	ctx := browser(t)

	out, _, err := clientCLI(t, []string{"NIGHTSHIFT_TOKEN=adm1n-token"}, "dispatch", "--repo", origin, "--agent", "gated", "--json", "--server="+s.URL, "wait for me")
	if err != nil {
		t.Fatalf("dispatch: %v %s", err, out)
	}
	id := strings.Split(strings.Split(out, `"id": "`)[1], `"`)[0]
	s.waitStateAuth(t, id, "adm1n-token", orchestrator.StateRunning)

	login := func(token string) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(s.URL+"/tasks/"+id)); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "login page", `location.pathname === "/login" && !!document.querySelector("label[for=token]")`)
		if err := chromedp.Do(ctx,
			chromedp.SendKeys(chromedp.CSS("#token"), token),
			chromedp.Click(chromedp.CSS(`form.login-form button[type=submit]`))); err != nil {
			t.Fatal(err)
		}
	}

	// A wrong token: an error on the login page.
	login("nope")
	waitJS(t, ctx, "login error", `!!document.querySelector('[role=alert]') && document.querySelector('[role=alert]').innerText.includes("not valid")`)

	// Read-only: the task page shows, the actions are disabled.
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#token"), "r3ad-token"), chromedp.Click(chromedp.CSS(`form.login-form button[type=submit]`))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "read-only task page", `location.pathname === "/login"`+` ? false : document.body.dataset.ready === "true"`)
	waitJS(t, ctx, "read-only actions disabled", `document.getElementById("btn-cancel").disabled && document.getElementById("who").innerText.includes("read-only")`)
	if cookies := evalJS[string](t, ctx, `document.cookie`); strings.Contains(cookies, "nightshift_session") {
		t.Fatal("the session cookie is readable from JavaScript")
	}
	// Log out, log in as admin, cancel through the cookie + CSRF token.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`form[action="/logout"] button`))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "logged out", `location.pathname === "/login"`)
	login("adm1n-token")
	waitJS(t, ctx, "admin task page", `location.pathname === "/tasks/`+id+`" && document.body.dataset.ready === "true" && document.getElementById("state").dataset.state === "running"`)
	waitJS(t, ctx, "cancel enabled", `!document.getElementById("btn-cancel").disabled`)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#btn-cancel"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "cancel requested", `document.getElementById("action-status").innerText.includes("requested")`)
	waitJS(t, ctx, "cancelled", `document.getElementById("state").dataset.state === "cancelled"`)
	// A follow-up message goes through the same way.
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#followup-text"), "try again, gently"), chromedp.Click(chromedp.CSS("#btn-send"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "follow-up sent", `document.getElementById("action-status").innerText.includes("Follow-up requested")`)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		out, _, _ := clientCLI(t, []string{"NIGHTSHIFT_TOKEN=adm1n-token"}, "tasks", "show", id, "--json", "--server="+s.URL)
		if strings.Contains(out, `"run": 2`) {
			t.Logf("second run started")
			// Stop it, so the server shuts down at once.
			clientCLI(t, []string{"NIGHTSHIFT_TOKEN=adm1n-token"}, "tasks", "cancel", id, "--server="+s.URL)
			s.waitStateAuth(t, id, "adm1n-token", orchestrator.StateCancelled)
			t.Logf("second run cancelled")
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the follow-up sent from the board did not start a new run")
}
