// Package notifytest runs fake Slack and Linear APIs for tests: httptest
// servers that speak the Slack Web API methods (chat.postMessage,
// chat.update, conversations.history; form-encoded requests, {"ok":...}
// JSON answers, bearer token checked) and Linear's GraphQL endpoint
// (commentCreate, commentUpdate, issue comments; Authorization checked).
package notifytest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// SlackMessage is a message in the fake Slack.
type SlackMessage struct {
	Channel  string
	TS       string
	Text     string
	Blocks   string // JSON
	Metadata string // JSON
	Updates  int
	// ThreadTS is the parent message of a thread reply.
	ThreadTS string
}

// Slack is a fake Slack Web API.
type Slack struct {
	*httptest.Server
	// APIURL is the Web API base to configure (URL + "/api/").
	APIURL string
	// ChannelID is what channel names resolve to.
	ChannelID string

	token    string
	mu       sync.Mutex
	seq      int
	messages []*SlackMessage
	calls    []string
}

// NewSlack starts a fake Slack that accepts token.
func NewSlack(t testing.TB, token string) *Slack {
	s := &Slack{token: token, ChannelID: "C0NIGHTSHIFT"}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	s.APIURL = s.URL + "/api/"
	t.Cleanup(s.Close)
	return s
}

func slackJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (s *Slack) serve(w http.ResponseWriter, r *http.Request) {
	method := strings.TrimPrefix(r.URL.Path, "/api/")
	s.mu.Lock()
	s.calls = append(s.calls, method)
	s.mu.Unlock()
	if err := r.ParseForm(); err != nil {
		slackJSON(w, map[string]any{"ok": false, "error": "invalid_form_data"})
		return
	}
	// Slack takes the token as a bearer header or a form field.
	if r.Header.Get("Authorization") != "Bearer "+s.token && r.Form.Get("token") != s.token {
		slackJSON(w, map[string]any{"ok": false, "error": "invalid_auth"})
		return
	}
	ch := r.Form.Get("channel")
	if strings.HasPrefix(ch, "#") || ch == "" {
		ch = s.ChannelID
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch method {
	case "chat.postMessage":
		if r.Form.Get("text") == "" && r.Form.Get("blocks") == "" {
			slackJSON(w, map[string]any{"ok": false, "error": "no_text"})
			return
		}
		s.seq++
		m := &SlackMessage{Channel: ch, TS: fmt.Sprintf("%d.%06d", time.Now().Unix(), s.seq), Text: r.Form.Get("text"),
			Blocks: r.Form.Get("blocks"), Metadata: r.Form.Get("metadata"), ThreadTS: r.Form.Get("thread_ts")}
		s.messages = append(s.messages, m)
		slackJSON(w, map[string]any{"ok": true, "channel": m.Channel, "ts": m.TS,
			"message": map[string]any{"type": "message", "text": m.Text, "ts": m.TS}})
	case "chat.update":
		for _, m := range s.messages {
			if m.Channel == ch && m.TS == r.Form.Get("ts") {
				m.Text, m.Blocks = r.Form.Get("text"), r.Form.Get("blocks")
				m.Updates++
				slackJSON(w, map[string]any{"ok": true, "channel": m.Channel, "ts": m.TS, "text": m.Text})
				return
			}
		}
		slackJSON(w, map[string]any{"ok": false, "error": "message_not_found"})
	case "conversations.history":
		var out []map[string]any
		for i := len(s.messages) - 1; i >= 0; i-- {
			m := s.messages[i]
			if m.Channel != ch || m.TS < r.Form.Get("oldest") {
				continue
			}
			msg := map[string]any{"type": "message", "ts": m.TS, "text": m.Text}
			if m.Metadata != "" && (r.Form.Get("include_all_metadata") == "true" || r.Form.Get("include_all_metadata") == "1") {
				msg["metadata"] = json.RawMessage(m.Metadata)
			}
			out = append(out, msg)
		}
		slackJSON(w, map[string]any{"ok": true, "messages": out, "has_more": false})
	default:
		slackJSON(w, map[string]any{"ok": false, "error": "unknown_method"})
	}
}

// Messages returns copies of the messages posted.
func (s *Slack) Messages() []SlackMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []SlackMessage
	for _, m := range s.messages {
		out = append(out, *m)
	}
	return out
}

// Calls returns the Web API methods called, in order.
func (s *Slack) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// LinearComment is a comment in the fake Linear.
type LinearComment struct {
	ID      string
	IssueID string
	Body    string
	Updates int
}

// Linear is a fake Linear GraphQL API.
type Linear struct {
	*httptest.Server
	// APIURL is the GraphQL endpoint (URL + "/graphql").
	APIURL string

	key      string
	mu       sync.Mutex
	comments []*LinearComment
	ops      []string
	// states is each issue's workflow state id; history the names it
	// was moved to by issueUpdate.
	states  map[string]string
	history map[string][]string
}

// LinearStates is the fake team's workflow, as Linear creates it for a new
// team: id, name, type.
var LinearStates = [][3]string{
	{"st-backlog", "Backlog", "backlog"}, {"st-todo", "Todo", "unstarted"}, {"st-progress", "In Progress", "started"},
	{"st-review", "In Review", "started"}, {"st-done", "Done", "completed"}, {"st-canceled", "Canceled", "canceled"},
}

// StateHistory returns the names of the workflow states issue ref (an
// identifier or id) was moved to, in order.
func (l *Linear) StateHistory(ref string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.history[IssueUUID(ref)]...)
}

// NewLinear starts a fake Linear accepting key in Authorization.
func NewLinear(t testing.TB, key string) *Linear {
	l := &Linear{key: key, states: map[string]string{}, history: map[string][]string{}}
	l.Server = httptest.NewServer(http.HandlerFunc(l.serve))
	l.APIURL = l.URL + "/graphql"
	t.Cleanup(l.Close)
	return l
}

func gqlError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]any{{"message": msg}}})
}

func (l *Linear) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/graphql" {
		gqlError(w, 404, "not found")
		return
	}
	if r.Header.Get("Authorization") != l.key {
		gqlError(w, 400, "Authentication required, not authenticated")
		return
	}
	var req struct {
		Query     string
		Variables map[string]json.RawMessage
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		gqlError(w, 400, "bad request")
		return
	}
	var input struct{ IssueID, Body, StateID string }
	json.Unmarshal(req.Variables["input"], &input)
	var id string
	json.Unmarshal(req.Variables["id"], &id)
	l.mu.Lock()
	defer l.mu.Unlock()
	var data any
	switch {
	case strings.Contains(req.Query, "commentCreate("):
		l.ops = append(l.ops, "commentCreate")
		if input.IssueID == "" || input.Body == "" {
			gqlError(w, 200, "Argument Validation Error")
			return
		}
		c := &LinearComment{ID: fmt.Sprintf("c0mment-%04d", len(l.comments)+1), IssueID: input.IssueID, Body: input.Body}
		if !strings.HasPrefix(c.IssueID, "uuid-") {
			gqlError(w, 200, "Entity not found: Issue - issueId must be the issue's id")
			return
		}
		l.comments = append(l.comments, c)
		data = map[string]any{"commentCreate": map[string]any{"success": true, "comment": map[string]any{"id": c.ID}}}
	case strings.Contains(req.Query, "commentUpdate("):
		l.ops = append(l.ops, "commentUpdate")
		for _, c := range l.comments {
			if c.ID == id {
				c.Body = input.Body
				c.Updates++
				data = map[string]any{"commentUpdate": map[string]any{"success": true}}
			}
		}
		if data == nil {
			gqlError(w, 200, "Entity not found: Comment")
			return
		}
	case strings.Contains(req.Query, "issueUpdate("):
		l.ops = append(l.ops, "issueUpdate")
		if !strings.HasPrefix(id, "uuid-") {
			gqlError(w, 200, "Entity not found: Issue")
			return
		}
		name := ""
		for _, st := range LinearStates {
			if st[0] == input.StateID {
				name = st[1]
			}
		}
		if name == "" {
			gqlError(w, 200, "Argument Validation Error: stateId")
			return
		}
		l.states[id] = input.StateID
		l.history[id] = append(l.history[id], name)
		data = map[string]any{"issueUpdate": map[string]any{"success": true, "issue": map[string]any{"id": id}}}
	case strings.Contains(req.Query, "issue("):
		l.ops = append(l.ops, "issue")
		nodes := []map[string]any{}
		for _, c := range l.comments {
			if c.IssueID == IssueUUID(id) {
				nodes = append(nodes, map[string]any{"id": c.ID, "body": c.Body})
			}
		}
		var states []map[string]any
		for _, st := range LinearStates {
			states = append(states, map[string]any{"id": st[0], "name": st[1], "type": st[2]})
		}
		cur := l.states[IssueUUID(id)]
		if cur == "" {
			cur = "st-todo"
		}
		data = map[string]any{"issue": map[string]any{"id": IssueUUID(id), "comments": map[string]any{"nodes": nodes},
			"state": map[string]any{"id": cur}, "team": map[string]any{"id": "team-1", "states": map[string]any{"nodes": states}}}}
	default:
		gqlError(w, 400, "unsupported operation")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"data": data})
}

// IssueUUID is the fake's issue id for an identifier (ENG-12 → uuid-ENG-12);
// ids pass through.
func IssueUUID(ref string) string {
	if strings.HasPrefix(ref, "uuid-") {
		return ref
	}
	return "uuid-" + ref
}

// Comments returns copies of the comments created.
func (l *Linear) Comments() []LinearComment {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []LinearComment
	for _, c := range l.comments {
		out = append(out, *c)
	}
	return out
}

// Ops returns the GraphQL operations served, in order.
func (l *Linear) Ops() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ops)
}
