package agent_test

import (
	"context"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator/agent"
	"github.com/nightshift/nightshift/orchestrator/agent/modelserver"
)

// TestClaudeAskUserQuestionBecomesQuestion: headless Claude Code cannot
// ask its user; an AskUserQuestion call it ends its turn on is the run's
// question (the task then waits in needs_input like after ask_human). A
// call followed by other tools is not (see the parser test).
func TestClaudeAskUserQuestionBecomesQuestion(t *testing.T) {
	t.Parallel()
	needCLI(t, "claude")
	w := newWorld(t)
	w.ms.Script(
		// Claude Code 2 does not even offer the tool headless ("disabled for
		// this session"); a model that calls it anyway has still asked.
		modelserver.Step{Name: "ask", ToolCalls: []modelserver.ToolCall{{ID: "toolu_ask", Name: "AskUserQuestion", Input: map[string]any{
			"questions": []map[string]any{{"question": "Which color should the button be?", "header": "Color", "multiSelect": false,
				"options": []map[string]any{{"label": "red", "description": "warm"}, {"label": "blue", "description": "cool"}}}}}}}},
		modelserver.Step{Name: "end turn", Check: func(r *modelserver.Request) error {
			_, err := r.Result("toolu_ask")
			return err
		}, Text: "I need to know the color first."},
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := w.runCLI(ctx, "claude", "claude-ask", "make the button nicer", "", false)
	if errs := w.ms.Errors(); len(errs) > 0 {
		t.Fatalf("model server: %v", errs)
	}
	want := "Which color should the button be?\n- red: warm\n- blue: cool"
	if r.outcome.Err != nil || r.outcome.Question != want {
		t.Fatalf("outcome err %v question %q, want %q", r.outcome.Err, r.outcome.Question, want)
	}
}

func TestClaudeParserAskUserQuestion(t *testing.T) {
	t.Parallel()
	ask := `{"type":"assistant","session_id":"s1","message":{"content":[{"type":"tool_use","id":"t1","name":"AskUserQuestion","input":{"questions":[{"question":"Which one?","options":[{"label":"a"},{"label":"b","description":"the other"}]}]}}]}}`
	bash := `{"type":"assistant","session_id":"s1","message":{"content":[{"type":"tool_use","id":"t2","name":"Bash","input":{"command":"ls"}}]}}`
	sub := `{"type":"assistant","session_id":"s1","parent_tool_use_id":"t0","message":{"content":[{"type":"tool_use","id":"t3","name":"Bash","input":{"command":"ls"}}]}}`
	result := `{"type":"result","subtype":"success","session_id":"s1","result":"I need an answer."}`
	failed := `{"type":"result","subtype":"error_max_turns","is_error":true,"session_id":"s1"}`
	for _, tc := range []struct {
		name  string
		lines []string
		want  string
	}{
		{"asked last", []string{ask, result}, "Which one?\n- a\n- b: the other"},
		{"subagent work after the question", []string{ask, sub, result}, "Which one?\n- a\n- b: the other"},
		{"went on working", []string{ask, bash, result}, ""},
		{"run failed", []string{ask, failed}, ""},
		{"no question", []string{bash, result}, ""},
	} {
		a, err := agent.New("claude", nil)
		if err != nil {
			t.Fatal(err)
		}
		p := a.NewParser(func(agent.Line) {})
		for _, l := range tc.lines {
			p.Write([]byte(l + "\n"))
		}
		if got := p.Outcome(0).Question; got != tc.want {
			t.Errorf("%s: question %q, want %q", tc.name, got, tc.want)
		}
	}
}
