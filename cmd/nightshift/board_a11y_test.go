package main

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/nightshift/nightshift/ingress/api"
	"github.com/nightshift/nightshift/orchestrator"
)

// axeSource returns axe-core (npm install -g axe-core@4.14.1).
func axeSource(t *testing.T) string {
	t.Helper()
	var dirs []string
	if out, err := exec.Command("npm", "root", "-g").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	dirs = append(dirs, "/usr/lib/node_modules", "/usr/local/lib/node_modules")
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(d, "axe-core", "axe.min.js")); err == nil {
			return string(b)
		}
	}
	t.Skip("accessibility audit skipped: axe-core is not installed (npm install -g axe-core@4.14.1)")
	return ""
}

type axeViolation struct {
	ID     string `json:"id"`
	Impact string `json:"impact"`
	Help   string `json:"help"`
	Nodes  []struct {
		Target  []any  `json:"target"`
		Summary string `json:"failureSummary"`
	} `json:"nodes"`
}

func runAxe(t *testing.T, axe, page string, run func(expr string) ([]axeViolation, error)) {
	t.Helper()
	v, err := run(axe + `;
axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}, resultTypes: ["violations"]})
  .then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => ({target: n.target, failureSummary: n.failureSummary}))})))`)
	if err != nil {
		t.Fatalf("axe on %s: %v", page, err)
	}
	for _, x := range v {
		var where []string
		for _, n := range x.Nodes {
			where = append(where, strings.Join(anyStrings(n.Target), " ")+": "+strings.Join(strings.Fields(n.Summary), " "))
		}
		t.Errorf("%s: %s (%s): %s\n  %s", page, x.ID, x.Impact, x.Help, strings.Join(where, "\n  "))
	}
}

func anyStrings(v []any) []string {
	var out []string
	for _, x := range v {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// TestBoardAccessibility audits the board, a task page (both diff layouts)
// and the login page with axe-core (WCAG 2.1 A and AA, and best practices) in Chromium, in
// the light and the dark color scheme.
func TestBoardAccessibility(t *testing.T) {
	t.Parallel()
	axe := axeSource(t)
	yaml, gates := gatedYAML(t)
	s := startTestServer(t, yaml)
	origin := newOrigin(t)
	failed := s.dispatch(t, origin, "fail", "break it")
	id := s.dispatch(t, origin, "gated", "Add a greeting program")
	openGate(t, gates, id)
	running := s.dispatch(t, origin, "gated", "Keep going")
	s.waitState(t, id, 60*time.Second, orchestrator.StateReview)
	s.waitState(t, failed, 60*time.Second, orchestrator.StateFailed)
	s.waitState(t, running, 60*time.Second, orchestrator.StateRunning)

	login := httptest.NewServer(boardHandler(api.New(nil, nil, api.Config{AdminTokens: []string{"x"}}), nil, nil, nil))
	defer login.Close()

	ctx := browser(t)
	run := func(expr string) ([]axeViolation, error) {
		return chromedp.Run(ctx, chromedp.Evaluate[[]axeViolation](expr, chromedp.EvalAwaitPromise))
	}
	for _, scheme := range []string{"light", "dark"} {
		if err := chromedp.Do(ctx, emulateColorScheme(scheme)); err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(ctx, chromedp.Navigate(s.URL+"/")); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "board", `document.body.dataset.ready === "true" && document.querySelectorAll(".card").length === 3`)
		runAxe(t, axe, "board ("+scheme+")", run)

		if err := chromedp.Do(ctx, chromedp.Navigate(s.URL+"/tasks/"+id)); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "task page", `document.body.dataset.ready === "true" && document.querySelectorAll("#diff table.unified").length === 2`)
		runAxe(t, axe, "task page, unified ("+scheme+")", run)
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`label[for=layout-split]`))); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "split", `document.querySelectorAll("#diff table.split").length === 2`)
		runAxe(t, axe, "task page, side by side ("+scheme+")", run)

		if err := chromedp.Do(ctx, chromedp.Navigate(s.URL+"/tasks/"+failed)); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "failed task page", `document.body.dataset.ready === "true" && document.getElementById("state").dataset.state === "failed"`)
		runAxe(t, axe, "failed task page ("+scheme+")", run)

		if err := chromedp.Do(ctx, chromedp.Navigate(login.URL+"/login")); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "login page", `!!document.getElementById("token")`)
		runAxe(t, axe, "login page ("+scheme+")", run)
	}
	openGate(t, gates, running)
}

// emulateColorScheme makes prefers-color-scheme report scheme.
func emulateColorScheme(scheme string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}})
		return chromedp.Void{}, err
	}
}
