package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nightshift/nightshift/orchestrator"
)

// TestBoardQuestionInBrowser: a task whose agent asks (ravi ask, the MCP
// ask_human tool) fills the board's Needs input column; its page shows the
// question and an answer box, and the answer typed there resumes the agent,
// which puts it in its change, and the card moves to Review.
func TestBoardQuestionInBrowser(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := filepath.Join(dir, "asker.sh")
	body := `#!/bin/sh
if [ ! -e "` + dir + `/asked.$NIGHTSHIFT_TASK_ID" ]; then
  touch "` + dir + `/asked.$NIGHTSHIFT_TASK_ID"
  ravi ask "Which port should the server listen on?" || exit 3
  exit 0
fi
printf '%s\n' "$NIGHTSHIFT_PROMPT" > ANSWER.txt
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	s := startTestServer(t, `
sandbox: {driver: process}
identity: {smtp_listen: "127.0.0.1:0"}
agents:
  asker: {command: ["sh", "`+script+`"]}
repos:
  - match: "*"
    timeout: 2m
`)
	origin := newOrigin(t)
	board := boardURL(t, s)
	ctx := browser(t)

	if err := chromedp.Do(ctx, chromedp.Navigate(board+"/")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "board ready", `document.body.dataset.ready === "true"`)
	id := s.dispatch(t, origin, "asker", "Start a web server")
	waitJS(t, ctx, "card in Needs input", cardIn("needs_input", id))
	waitJS(t, ctx, "Needs input count", `document.getElementById("n-needs_input").textContent === "1"`)

	if err := chromedp.Do(ctx, chromedp.Navigate(board+"/tasks/"+id)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "question shown", `document.body.dataset.ready === "true" && !document.getElementById("question-box").hidden &&
		document.getElementById("question").textContent === "Which port should the server listen on?"`)
	if err := chromedp.Do(ctx, chromedp.SendKeys(`#answer-text`, "port 8080"), chromedp.Click(`#btn-answer`)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "answered task in review", `document.getElementById("state").dataset.state === "review"`)
	waitJS(t, ctx, "question box hidden", `document.getElementById("question-box").hidden`)
	task := s.waitState(t, id, 60*time.Second, orchestrator.StateReview)
	if task.Run != 2 || task.Question != "" {
		t.Fatalf("answered task: run %d question %q", task.Run, task.Question)
	}
	if got := gitRun(t, "", "--git-dir", origin, "show", "nightshift/"+id+":ANSWER.txt"); !strings.Contains(got, "port 8080") {
		t.Fatalf("ANSWER.txt = %q", got)
	}
}
