package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
)

const rtQuestion = "Which greeting should I add: hello or bonjour?"

// askingAgent is the round-trip agent with a first turn that asks: the
// first run of each task calls ask_human through ravi (the MCP endpoint)
// and ends its turn; the run the answer starts appends its prompt (the
// answer) to WORK.md like any run.
func (w *rtWorld) askingAgent(t *testing.T) string {
	t.Helper()
	mark := filepath.Join(w.dir, "asked.")
	return w.agent(t, `if [ ! -f "`+mark+`$NIGHTSHIFT_TASK_ID" ]; then
  touch "`+mark+`$NIGHTSHIFT_TASK_ID"
  ravi ask "`+rtQuestion+`" > "`+mark+`$NIGHTSHIFT_TASK_ID" || exit 3
  exit 0
fi`)
}

// askedTask starts a task with an @nightshift comment and waits until its
// agent's question is recorded.
func askedTask(t *testing.T, w *rtWorld, s *testServer) orchestrator.Task {
	t.Helper()
	p := w.commentPayload(t, "@nightshift add a greeting to the README")
	if code, out := postGitHub(t, s, "issue_comment", "d-ask", p); code != http.StatusAccepted {
		t.Fatalf("trigger: %d %v", code, out)
	}
	id := s.onlyTask(t)
	task := s.waitState(t, id, 90*time.Second, orchestrator.StateNeedsInput, orchestrator.StateFailed, orchestrator.StateReview)
	if task.State != orchestrator.StateNeedsInput || task.Question != rtQuestion || task.Run != 1 {
		t.Fatalf("after the question: state %s question %q run %d (%s %s)\n%s", task.State, task.Question, task.Run,
			task.Reason, task.Error, s.stderr.String())
	}
	if got := w.gh.RevParse(rtOwner, rtName, "refs/heads/nightshift/"+id); got != "" {
		t.Fatalf("a run that asked pushed its branch (%s)", got)
	}
	if out, err := s.cli(t, "tasks", "show", id); err != nil || !strings.Contains(out, "question:") || !strings.Contains(out, rtQuestion) {
		t.Fatalf("tasks show: %v\n%s", err, out)
	}
	return task
}

// answerComment is an issue comment on issue #1 with its own id.
func (w *rtWorld) answerComment(t *testing.T, id int64, login, association, body string) map[string]any {
	p := w.commentPayload(t, body)
	c := p["comment"].(map[string]any)
	c["id"] = id
	c["author_association"] = association
	c["user"].(map[string]any)["login"] = login
	return p
}

// TestRoundTripQuestionAnsweredOnGitHub: the agent asks through ravi
// (ask_human); the task waits in needs_input with the question on the task
// and in a new comment on the issue; a reply from someone without write
// access is ignored; the first reply from a collaborator (no trigger word)
// resumes the task with the reply as the agent's prompt, and the task ends
// in review with the answer's work pushed.
func TestRoundTripQuestionAnsweredOnGitHub(t *testing.T) {
	requireRoundTrip(t)
	t.Parallel()
	w := newRTWorld(t)
	s := startTestServer(t, w.yaml(w.askingAgent(t)))
	task := askedTask(t, w, s)
	id := task.ID

	var asked string
	waitFor(t, 20*time.Second, "the question comment", func() bool {
		for _, c := range w.gh.Comments(rtOwner, rtName, 1) {
			if strings.Contains(c.GetBody(), "<!-- nightshift:question:"+id+" -->") {
				asked = c.GetBody()
				return true
			}
		}
		return false
	}, s.stderr.String)
	if !strings.Contains(asked, rtQuestion) {
		t.Fatalf("question comment lacks the question:\n%s", asked)
	}
	waitFor(t, 20*time.Second, "the progress comment to show the question", func() bool {
		cs := w.progressComments(1)
		return len(cs) == 1 && strings.Contains(cs[0], "needs input") && strings.Contains(cs[0], rtQuestion)
	}, func() string { return strings.Join(w.progressComments(1), "\n---\n") })
	comments := len(w.gh.Comments(rtOwner, rtName, 1))

	// Someone without write access answers: ignored, no reply, no run.
	code, out := postGitHub(t, s, "issue_comment", "d-answer-mallory", w.answerComment(t, 777001, "mallory", "NONE", "say nothing"))
	if code != http.StatusOK || out["status"] != "ignored" || !strings.Contains(out["reason"], "not an answer") {
		t.Fatalf("unauthorized answer: %d %v", code, out)
	}
	if tk := s.task(t, id); tk.State != orchestrator.StateNeedsInput || tk.Run != 1 {
		t.Fatalf("after the unauthorized answer: %s run %d", tk.State, tk.Run)
	}

	// A collaborator answers without mentioning Nightshift.
	code, out = postGitHub(t, s, "issue_comment", "d-answer-owner", w.answerComment(t, 777002, rtOwner, "OWNER", "bonjour, in French please"))
	if code != http.StatusAccepted {
		t.Fatalf("answer: %d %v", code, out)
	}
	waitFor(t, 90*time.Second, "the answered run in review", func() bool {
		tk := s.task(t, id)
		return tk.Run == 2 && (tk.State == orchestrator.StateReview || tk.State == orchestrator.StateFailed)
	}, s.stderr.String)
	task = s.task(t, id)
	if task.State != orchestrator.StateReview || task.Question != "" {
		t.Fatalf("answered task: %s question %q (%s %s)", task.State, task.Question, task.Reason, task.Error)
	}
	work := w.gh.Git(rtOwner, rtName, "show", "nightshift/"+id+":WORK.md")
	if !strings.Contains(work, "bonjour, in French please") || strings.Contains(work, "say nothing") {
		t.Fatalf("the answer did not reach the agent (or the unauthorized one did):\n%s", work)
	}
	// The agent was told to end its turn.
	if b, err := os.ReadFile(filepath.Join(w.dir, "asked."+id)); err != nil || !strings.Contains(string(b), "end your turn") {
		t.Fatalf("ravi ask printed %q (%v)", b, err)
	}
	if n := len(s.tasks(t)); n != 1 {
		t.Fatalf("%d tasks: an answer must not start a task", n)
	}
	// The only comments added since the question: none by Nightshift but
	// the progress comment edits (the refused answer got no reply).
	for _, c := range w.gh.Comments(rtOwner, rtName, 1)[comments:] {
		if strings.Contains(c.GetBody(), "did not start") {
			t.Fatalf("an ignored answer was replied to: %s", c.GetBody())
		}
	}
}

// postSlackAnswer types text into a task message's reply box: the signed
// block_actions interaction Slack sends for an input block with
// dispatch_action.
func postSlackAnswer(t *testing.T, s *testServer, blockID, text string) (int, map[string]string) {
	t.Helper()
	return postSlackInteraction(t, s, map[string]any{"type": "block_actions", "trigger_id": "trig.answer." + strconv.FormatInt(time.Now().UnixNano(), 10),
		"user": map[string]string{"id": "U123", "username": "alice"},
		"actions": []map[string]string{{"type": "plain_text_input", "block_id": blockID, "action_id": "answer", "value": text,
			"action_ts": strconv.FormatInt(time.Now().UnixNano(), 10)}}})
}

// TestRoundTripQuestionAnsweredInSlack: the question is posted in the
// thread of the task's Slack message with a reply box; what is typed there
// (a signed interaction) resumes the agent with it and the task ends in
// review.
func TestRoundTripQuestionAnsweredInSlack(t *testing.T) {
	requireRoundTrip(t)
	t.Parallel()
	w := newRTWorld(t)
	s := startTestServer(t, w.yaml(w.askingAgent(t)))
	id := askedTask(t, w, s).ID

	var parent, reply string
	waitFor(t, 20*time.Second, "the question in the task's Slack thread", func() bool {
		parent, reply = "", ""
		for _, m := range w.slack.Messages() {
			switch {
			case m.ThreadTS == "" && strings.Contains(m.Metadata, id):
				parent = m.TS
			case m.ThreadTS != "" && strings.Contains(m.Text, rtQuestion):
				reply = m.ThreadTS + " " + m.Blocks
			}
		}
		return parent != "" && reply != ""
	}, s.stderr.String)
	if !strings.HasPrefix(reply, parent+" ") || !strings.Contains(reply, `"block_id":"answer:`+id+`"`) ||
		!strings.Contains(reply, `"dispatch_action":true`) || !strings.Contains(reply, `"action_id":"answer"`) {
		t.Fatalf("question reply (parent %s): %s", parent, reply)
	}

	// A reply box of another task answers nothing here.
	if code, out := postSlackAnswer(t, s, "answer:", "stray"); code != http.StatusOK || out["status"] != "ignored" {
		t.Fatalf("answer without a task: %d %v", code, out)
	}
	if code, out := postSlackAnswer(t, s, "answer:"+id, "bonjour from Slack"); code != http.StatusOK || out["status"] != "accepted" {
		t.Fatalf("answer: %d %v", code, out)
	}
	waitFor(t, 90*time.Second, "the answered run in review", func() bool {
		tk := s.task(t, id)
		return tk.Run == 2 && (tk.State == orchestrator.StateReview || tk.State == orchestrator.StateFailed)
	}, s.stderr.String)
	if tk := s.task(t, id); tk.State != orchestrator.StateReview {
		t.Fatalf("answered task: %s (%s %s)", tk.State, tk.Reason, tk.Error)
	}
	if work := w.gh.Git(rtOwner, rtName, "show", "nightshift/"+id+":WORK.md"); !strings.Contains(work, "bonjour from Slack") {
		t.Fatalf("the answer did not reach the agent:\n%s", work)
	}
	// The reply box is gone: a second answer would be ignored.
	waitFor(t, 20*time.Second, "the answered question without its reply box", func() bool {
		return slackThreadReply(w, parent, "Answered") != "" && !strings.Contains(slackThreadReply(w, parent, "Answered"), "dispatch_action")
	}, func() string { return fmt.Sprint(w.slack.Messages()) })
}

// slackThreadReply returns the blocks of the reply in parent's thread whose
// text contains s, or "".
func slackThreadReply(w *rtWorld, parent, s string) string {
	for _, m := range w.slack.Messages() {
		if m.ThreadTS == parent && strings.Contains(m.Text, s) {
			return m.Blocks + " "
		}
	}
	return ""
}

// TestRoundTripQuestionUnanswered: past worker.answer_timeout a task still
// waiting for an answer is cancelled with reason no_answer.
func TestRoundTripQuestionUnanswered(t *testing.T) {
	requireRoundTrip(t)
	t.Parallel()
	w := newRTWorld(t)
	s := startTestServer(t, w.yaml(w.askingAgent(t))+"worker: {answer_timeout: 2s}\n")
	id := askedTask(t, w, s).ID
	task := s.waitState(t, id, 30*time.Second, orchestrator.StateCancelled)
	if task.Reason != "no_answer" || !strings.Contains(task.Error, "no answer") || task.Question != "" {
		t.Fatalf("unanswered task: reason %q error %q question %q", task.Reason, task.Error, task.Question)
	}
	waitFor(t, 20*time.Second, "the Slack question closed", func() bool {
		for _, m := range w.slack.Messages() {
			if m.ThreadTS != "" && strings.Contains(m.Text, "The question is closed: the task is cancelled") && !strings.Contains(m.Blocks, "dispatch_action") {
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprint(w.slack.Messages()) })
}

// postLinear signs payload like Linear and posts it to /hooks/linear.
func postLinear(t *testing.T, s *testServer, delivery string, payload map[string]any) int {
	t.Helper()
	payload["webhookTimestamp"] = time.Now().UnixMilli()
	body, _ := json.Marshal(payload)
	mac := hmac.New(sha256.New, []byte(rtLinearSecret))
	mac.Write(body)
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/hooks/linear", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Linear-Delivery", delivery)
	req.Header.Set("Linear-Signature", hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func linearFixture(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(rtFixtures, "zulip-linear", name))
	if err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRoundTripQuestionAnsweredOnLinear: a task from a Linear ticket asks;
// the question shows in the task's Linear comment, and a plain comment on
// the ticket (no mention) is the answer that resumes the agent.
func TestRoundTripQuestionAnsweredOnLinear(t *testing.T) {
	requireRoundTrip(t)
	t.Parallel()
	w := newRTWorld(t)
	s := startTestServer(t, w.yaml(w.askingAgent(t)))
	issue := linearFixture(t, "issue_create_simple.json")
	issue["data"].(map[string]any)["labels"] = []map[string]string{{"id": "lbl-1", "name": "nightshift"}}
	if code := postLinear(t, s, "lin-ask", issue); code != http.StatusAccepted {
		t.Fatalf("ticket: %d", code)
	}
	id := s.onlyTask(t)
	task := s.waitState(t, id, 90*time.Second, orchestrator.StateNeedsInput, orchestrator.StateReview, orchestrator.StateFailed)
	if task.State != orchestrator.StateNeedsInput || task.Question != rtQuestion {
		t.Fatalf("after the question: %s %q (%s)", task.State, task.Question, task.Error)
	}
	waitFor(t, 20*time.Second, "the question in the Linear comment", func() bool {
		cs := w.linear.Comments()
		return len(cs) == 1 && strings.Contains(cs[0].Body, rtQuestion)
	}, func() string { return strings.Join(w.linear.Ops(), ",") + "\n" + s.stderr.String() })

	answer := linearFixture(t, "comment_create.json")
	answer["url"] = "https://linear.app/webhooks/issue/WEB-43#comment-answer"
	answer["data"].(map[string]any)["body"] = "bonjour from Linear"
	if code := postLinear(t, s, "lin-answer", answer); code != http.StatusAccepted {
		t.Fatalf("answer: %d", code)
	}
	waitFor(t, 90*time.Second, "the answered run in review", func() bool {
		tk := s.task(t, id)
		return tk.Run == 2 && (tk.State == orchestrator.StateReview || tk.State == orchestrator.StateFailed)
	}, s.stderr.String)
	if tk := s.task(t, id); tk.State != orchestrator.StateReview {
		t.Fatalf("answered task: %s (%s %s)", tk.State, tk.Reason, tk.Error)
	}
	if work := w.gh.Git(rtOwner, rtName, "show", "nightshift/"+id+":WORK.md"); !strings.Contains(work, "bonjour from Linear") {
		t.Fatalf("the answer did not reach the agent:\n%s", work)
	}
}
