package agent_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nightshift/nightshift/orchestrator/agent"
)

// Lines as Claude Code 2.1 writes them in its plan permission mode
// (trimmed from a recorded run).
const (
	planWrite    = `{"type":"user","message":{"role":"user","content":[{"tool_use_id":"t1","type":"tool_result","content":"File created successfully"}]},"parent_tool_use_id":null,"session_id":"s","tool_use_result":{"type":"create","filePath":"/home/agent/.claude/plans/p.md","content":"# Plan\n\n1. A\n","originalFile":null}}`
	planEdit     = `{"type":"user","message":{"role":"user","content":[{"tool_use_id":"t2","type":"tool_result","content":"updated"}]},"parent_tool_use_id":null,"session_id":"s","tool_use_result":{"filePath":"/home/agent/.claude/plans/p.md","oldString":"1. A","newString":"1. A\n2. B","originalFile":"# Plan\n\n1. A\n","replaceAll":false}}`
	planEditAll  = `{"type":"user","message":{"role":"user","content":[{"tool_use_id":"t2","type":"tool_result","content":"updated"}]},"parent_tool_use_id":null,"session_id":"s","tool_use_result":{"filePath":"/home/agent/.claude/plans/p.md","oldString":"x","newString":"y","originalFile":"x x\n","replaceAll":true}}`
	otherWrite   = `{"type":"user","message":{"role":"user","content":[{"tool_use_id":"t3","type":"tool_result","content":"ok"}]},"parent_tool_use_id":null,"session_id":"s","tool_use_result":{"type":"create","filePath":"/work/README.md","content":"not a plan"}}`
	subWrite     = `{"type":"user","message":{"role":"user","content":[{"tool_use_id":"t4","type":"tool_result","content":"ok"}]},"parent_tool_use_id":"t0","session_id":"s","tool_use_result":{"type":"create","filePath":"/home/agent/.claude/plans/p-agent.md","content":"a subagent's"}}`
	deniedWrite  = `{"type":"user","message":{"role":"user","content":[{"type":"tool_result","content":"Cannot write while in plan mode.","is_error":true,"tool_use_id":"t5"}]},"parent_tool_use_id":null,"session_id":"s","tool_use_result":"Error: Cannot write while in plan mode."}`
	denied       = `{"type":"system","subtype":"permission_denied","tool_name":"Write","tool_use_id":"t5","message":"Cannot write while in plan mode.","session_id":"s"}`
	exitWithPlan = `{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t6","name":"ExitPlanMode","input":{"plan":"the plan passed to ExitPlanMode"}}]},"parent_tool_use_id":null,"session_id":"s"}`
	exitEmpty    = `{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t7","name":"ExitPlanMode","input":{}}]},"parent_tool_use_id":null,"session_id":"s"}`
	planResult   = `{"type":"result","subtype":"success","session_id":"s","result":"The plan is ready."}`
)

// TestClaudeParserPlan: the plan is the latest of the plan file's content
// (after each successful Write or Edit of it by the main agent) and a plan
// passed to ExitPlanMode; refused writes, other files and subagents' files
// are not plans, and a system event with a string message is not logged raw.
func TestClaudeParserPlan(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		lines []string
		want  string
	}{
		{"written", []string{planWrite, planResult}, "# Plan\n\n1. A\n"},
		{"written then edited", []string{planWrite, planEdit, exitEmpty, planResult}, "# Plan\n\n1. A\n2. B\n"},
		{"edited on resume (replace all)", []string{planEditAll, planResult}, "y y\n"},
		{"passed to ExitPlanMode", []string{planWrite, exitWithPlan, planResult}, "the plan passed to ExitPlanMode"},
		{"file revised after ExitPlanMode", []string{exitWithPlan, planEdit, planResult}, "# Plan\n\n1. A\n2. B\n"},
		{"other file", []string{otherWrite, planResult}, ""},
		{"subagent", []string{subWrite, planResult}, ""},
		{"refused", []string{denied, deniedWrite, planResult}, ""},
	} {
		a, _ := agent.New("claude", nil)
		var lines []agent.Line
		p := a.NewParser(func(l agent.Line) { lines = append(lines, l) })
		for _, l := range tc.lines {
			p.Write([]byte(l + "\n"))
		}
		o := p.Outcome(0)
		if o.Plan != tc.want || o.Err != nil || o.Summary != "The plan is ready." {
			t.Errorf("%s: plan %q (err %v, summary %q), want %q", tc.name, o.Plan, o.Err, o.Summary, tc.want)
		}
		for _, l := range lines {
			if l.Kind == agent.KindText {
				t.Errorf("%s: raw line logged: %q", tc.name, l.Text)
			}
		}
	}
}

// FuzzParsers: no stream makes a parser panic, and the outcome is the same
// however the stream is split into writes.
func FuzzParsers(f *testing.F) {
	for _, l := range []string{planWrite, planEdit, planEditAll, denied, exitWithPlan, planResult} {
		f.Add("claude", []byte(l+"\n"), uint8(3))
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "*.stdout"))
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil {
			f.Add("claude", b, uint8(7))
			f.Add("codex", b, uint8(11))
		}
	}
	f.Fuzz(func(t *testing.T, kind string, stream []byte, chunk uint8) {
		if kind != "claude" && kind != "codex" {
			kind = "claude"
		}
		a, err := agent.New(kind, nil)
		if err != nil {
			t.Fatal(err)
		}
		whole := a.NewParser(func(agent.Line) {})
		whole.Write(stream)
		want := whole.Outcome(0)
		split := a.NewParser(func(agent.Line) {})
		n := int(chunk)%64 + 1
		for b := stream; len(b) > 0; b = b[min(n, len(b)):] {
			split.Write(b[:min(n, len(b))])
		}
		got := split.Outcome(0)
		if got.Plan != want.Plan || got.Summary != want.Summary || got.Question != want.Question || got.SessionID != want.SessionID {
			t.Fatalf("split into %d-byte writes: %+v, whole: %+v", n, got, want)
		}
	})
}
