package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nightshift/nightshift/ingress/api"
	"github.com/nightshift/nightshift/orchestrator"
)

var screenshots = flag.Bool("screenshots", false, "write docs/screenshots/board.png and task.png from the browser tests")

const chromiumPath = "/usr/bin/chromium"

// browser starts a headless Chromium for the test and returns a tab context.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("browser test skipped: %s is not installed (apt-get install -y chromium)", chromiumPath)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("disable-client-side-phishing-detection", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter,AutofillServerCommunication"),
		// Nothing but loopback resolves: the browser cannot reach out.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1500, 950),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 150*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // start the browser now
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// boardURL returns where the board of s is served. Until serve wires
// ingress.Routes.Board, it serves the board in front of s through a proxy.
func boardURL(t *testing.T, s *testServer) string {
	t.Helper()
	resp, err := http.Get(s.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		return s.URL
	}
	target, _ := url.Parse(s.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1
	mux := http.NewServeMux()
	mux.Handle("/api/", proxy)
	mux.Handle("/", boardHandler(api.New(nil, nil, api.Config{}), nil, nil, nil))
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts.URL
}

// waitJS waits until the JavaScript expression is truthy. It survives
// navigations (a poll does not): it polls again in the new page.
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(60 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		_, err = chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(time.Until(deadline))))
		if err == nil {
			t.Logf("%s: %s", what, time.Since(start).Round(time.Millisecond))
			return
		}
		if ctx.Err() != nil {
			break
		}
		// The page navigated under the poll: wait for the new document.
		chromedp.Do(ctx, chromedp.WaitReady(chromedp.CSS("body")))
	}
	body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 3000) : ""`))
	t.Fatalf("%s: %v\npage text:\n%s", what, err, body)
}

func evalJS[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

func cardIn(col, id string) string {
	return fmt.Sprintf(`document.querySelector('#col-%s li.card[data-task-id="%s"]')`, col, id)
}

func saveScreenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if !*screenshots {
		return
	}
	chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0); document.activeElement && document.activeElement.blur(); document.querySelectorAll(".flash").forEach(n => n.classList.remove("flash"))`))
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := filepath.Join("..", "..", "docs", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", filepath.Join(dir, name), len(png))
}

// gatedYAML configures agents for the browser tests: gated waits until the
// test creates <gates>/<task id>, then changes two files.
func gatedYAML(t *testing.T) (yaml, gates string) {
	dir := t.TempDir()
	gates = filepath.Join(dir, "gates")
	os.MkdirAll(gates, 0o755)
	script := filepath.Join(dir, "gated.sh")
	body := `#!/bin/sh
echo "waiting for the test to open the gate"
while [ ! -e "` + gates + `/$NIGHTSHIFT_TASK_ID" ]; do sleep 0.05; done
echo "writing hello.go"
cat > hello.go <<'EOF'
package main

import "fmt"

// main greets the night shift.
func main() {
	n := 42
	fmt.Println("hello, night shift", n) // a comment
}
EOF
printf '# Demo project\n\nA note from the night shift.\n' > README.md
echo "done"
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	yaml = `
sandbox: {driver: process}
identity: {smtp_listen: "127.0.0.1:0"}
worker: {concurrency: 4}
agents:
  gated: {command: ["sh", "` + script + `"]}
  fail: {command: ["sh", "-c", "echo about to fail; exit 3"]}
repos:
  - match: "*"
    test: "echo tests pass"
    timeout: 2m
`
	return yaml, gates
}

func openGate(t *testing.T, gates, id string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(gates, id), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBoardLiveInBrowser drives the board in headless Chromium: a card
// moves from Running to Review without a reload, the task page shows the
// log and renders the diff in both layouts, and cancelling a running task
// from its page puts its card in the Failed column as cancelled.
func TestBoardLiveInBrowser(t *testing.T) {
	t.Parallel()
	yaml, gates := gatedYAML(t)
	yaml, smtpAddr := withSMTP(t, yaml)
	s := startTestServer(t, yaml)
	origin := newOrigin(t)
	board := boardURL(t, s)
	ctx := browser(t) // closed first: its event streams end before the servers stop

	// A finished task and a failed one, for a board with some history.
	failed := s.dispatch(t, origin, "fail", "try something that breaks")
	s.waitState(t, failed, 60*time.Second, orchestrator.StateFailed)

	if err := chromedp.Do(ctx, chromedp.Navigate(board+"/")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "board ready", `document.body.dataset.ready === "true"`)
	evalJS[bool](t, ctx, `(window.__noReload = true)`)
	waitJS(t, ctx, "failed card from the snapshot", cardIn("failed", failed))

	id := s.dispatch(t, origin, "gated", "Add a greeting program\nand update the README")
	waitJS(t, ctx, "card in Running", cardIn("running", id))
	if st := evalJS[string](t, ctx, cardIn("running", id)+`.dataset.state`); st != "running" && st != "provisioning" {
		t.Fatalf("card state %q", st)
	}
	// A second task waits on its gate too: it will be cancelled.
	doomed := s.dispatch(t, origin, "gated", "Refactor everything")
	waitJS(t, ctx, "second card in Running", cardIn("running", doomed))

	// The agent signs up somewhere: a code arrives in its inbox.
	running := s.waitState(t, id, 30*time.Second, orchestrator.StateRunning)
	mailTo(t, smtpAddr, running.Identity.Email, "Your verification code", "Your code is 482913. It expires in 10 minutes.")
	openGate(t, gates, id)
	waitJS(t, ctx, "card moved to Review", cardIn("review", id))
	if !evalJS[bool](t, ctx, `window.__noReload === true`) {
		t.Fatal("the board reloaded")
	}
	// The card fills in as the recorder catches up with the stream.
	for _, want := range []string{"API", "gated", "agent-", "Add a greeting program"} {
		waitJS(t, ctx, "card shows "+want, cardIn("review", id)+`.innerText.includes(`+strconv.Quote(want)+`)`)
	}
	if evalJS[bool](t, ctx, cardIn("review", id)+`.innerText.includes("and update the README")`) {
		t.Error("card shows more than the prompt's first line")
	}
	if n := evalJS[string](t, ctx, `document.getElementById("n-review").textContent`); n != "1" {
		t.Errorf("review count %q", n)
	}
	saveScreenshot(t, ctx, "board.png")

	// The task page: log, details and the diff in both layouts.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#col-review li.card[data-task-id="`+id+`"] h3 a`))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "task page ready", `location.pathname === "/tasks/`+id+`" && document.body.dataset.ready === "true"`)
	waitJS(t, ctx, "state badge", `document.getElementById("state").dataset.state === "review"`)
	waitJS(t, ctx, "live log", `document.getElementById("log").innerText.includes("writing hello.go")`)
	waitJS(t, ctx, "diff rendered", `document.querySelectorAll("#diff section.file").length === 2`)
	files := evalJS[string](t, ctx, `document.getElementById("files").innerText`)
	if !strings.Contains(files, "hello.go") || !strings.Contains(files, "README.md") {
		t.Fatalf("file list: %q", files)
	}
	if !evalJS[bool](t, ctx, `!!document.querySelector('#diff table.unified tr.add .t-kw')`) {
		t.Error("no highlighted keyword in the added Go code")
	}
	if !evalJS[bool](t, ctx, `!!document.querySelector('#diff table.unified tr.del')`) {
		t.Error("no deleted line shown for README.md")
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`label[for=layout-split]`))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "side-by-side diff", `document.querySelectorAll("#diff table.split").length === 2`)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`label[for=layout-unified]`))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "unified diff again", `document.querySelectorAll("#diff table.unified").length === 2`)
	for _, want := range []string{"Identity", "@agents.localhost", "Branch", "nightshift/" + id} {
		waitJS(t, ctx, "details show "+want, `document.getElementById("details").innerText.includes(`+strconv.Quote(want)+`)`)
	}
	if !evalJS[bool](t, ctx, `document.getElementById("btn-cancel").disabled === false && document.getElementById("btn-retry").disabled === false`) {
		t.Error("cancel and retry should be enabled on a task in review")
	}
	waitJS(t, ctx, "inbox", `document.getElementById("inbox").innerText.includes("482913")`)
	saveScreenshot(t, ctx, "task.png")

	// Cancel the other running task from its page.
	if err := chromedp.Do(ctx, chromedp.Navigate(board+"/tasks/"+doomed)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "doomed task page", `document.body.dataset.ready === "true" && document.getElementById("state").dataset.state === "running"`)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#btn-cancel`))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "cancelled badge", `document.getElementById("state").dataset.state === "cancelled"`)
	if err := chromedp.Do(ctx, chromedp.Navigate(board+"/")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "cancelled card in Failed", cardIn("failed", doomed)+` && `+cardIn("failed", doomed)+`.dataset.state === "cancelled"`)
	// The board follows the task stream; the store records it a moment
	// later, and must end up agreeing.
	s.waitState(t, doomed, 30*time.Second, orchestrator.StateCancelled)
}
