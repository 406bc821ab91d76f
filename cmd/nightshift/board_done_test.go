package main

import (
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nightshift/nightshift/orchestrator"
)

// TestBoardDoneColumnInBrowser: a question (an agent that changes nothing
// and answers) reaches done live on the board, in the Done column, and its
// page shows the answer.
func TestBoardDoneColumnInBrowser(t *testing.T) {
	t.Parallel()
	const answer = "The -x flag traces each command."
	s := startTestServer(t, `
sandbox: {driver: process}
identity: {smtp_listen: "127.0.0.1:0"}
agents:
  answer: {command: ["sh", "-c", 'echo "`+answer+`"']}
repos:
  - match: "*"
    test: "true"
`)
	origin := newOrigin(t)
	board := boardURL(t, s)
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(board+"/")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "board ready", `document.body.dataset.ready === "true"`)
	id := s.dispatch(t, origin, "answer", "What does the -x flag do?")
	waitJS(t, ctx, "card in Done", cardIn("done", id)+` && `+cardIn("done", id)+`.dataset.state === "done"`)
	if n := evalJS[string](t, ctx, `document.getElementById("n-done").textContent`); n != "1" {
		t.Errorf("done count %q", n)
	}
	if task := s.waitState(t, id, 30*time.Second, orchestrator.StateDone); task.Answer != answer {
		t.Fatalf("answer %q", task.Answer)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(board+"/tasks/"+id)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the answer on the task page", `document.body.dataset.ready === "true" && document.getElementById("state").dataset.state === "done" && `+
		`!!document.getElementById("answer") && document.getElementById("answer").innerText.includes(`+strconv.Quote(answer)+`)`)
}
