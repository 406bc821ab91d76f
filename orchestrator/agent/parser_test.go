package agent_test

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/orchestrator/agent"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json from the parsers' output")

// golden is what a parser made of one recorded stream.
type golden struct {
	Lines     []agent.Line `json:"lines"`
	SessionID string       `json:"session_id"`
	Usage     agent.Usage  `json:"usage"`
	Summary   string       `json:"summary"`
	Err       string       `json:"err,omitempty"`
}

// TestParsersGolden feeds stdout recorded from the real CLIs (go test -run
// ... -args -record) through the parsers in odd-sized chunks and compares
// with the golden files.
func TestParsersGolden(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		kind, file string
		exit       int
	}{
		{"claude", "TestClaudeEditsTestsAndCallsMCP", 0},
		{"claude", "TestRefusalEndsAgent_claude", 1},
		{"claude", "TestBudgetStopsRun", -1},
		{"codex", "TestCodexEditsTestsAndCallsMCP", 0},
		{"codex", "TestRefusalEndsAgent_codex", 1},
	} {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			raw, err := os.ReadFile(filepath.Join("testdata", tc.file+".stdout"))
			if err != nil {
				t.Fatal(err)
			}
			a, err := agent.New(tc.kind, nil)
			if err != nil {
				t.Fatal(err)
			}
			var g golden
			p := a.NewParser(func(l agent.Line) { g.Lines = append(g.Lines, l) })
			for i, b := 0, raw; len(b) > 0; i++ {
				n := min(len(b), 1+i*7%61)
				if _, err := p.Write(b[:n]); err != nil {
					t.Fatal(err)
				}
				b = b[n:]
			}
			o := p.Outcome(tc.exit)
			g.SessionID, g.Usage, g.Summary = o.SessionID, o.Usage, o.Summary
			if o.Err != nil {
				g.Err = o.Err.Error()
				if !errors.Is(o.Err, agent.ErrAgentFailed) {
					t.Errorf("err %v does not wrap ErrAgentFailed", o.Err)
				}
			}
			got, _ := json.MarshalIndent(g, "", "  ")
			path := filepath.Join("testdata", tc.file+".golden.json")
			if *update {
				if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -args -update)", err)
			}
			if strings.TrimSpace(string(want)) != strings.TrimSpace(string(got)) {
				t.Errorf("parser output differs from %s:\n%s", path, got)
			}
		})
	}
}

func TestParserEdgeCases(t *testing.T) {
	t.Parallel()
	parse := func(kind, stream string, exit int) ([]agent.Line, agent.Outcome) {
		a, _ := agent.New(kind, nil)
		var lines []agent.Line
		p := a.NewParser(func(l agent.Line) { lines = append(lines, l) })
		_, _ = p.Write([]byte(stream))
		return lines, p.Outcome(exit)
	}
	// Claude: no result event means failure even with exit 0; non-JSON
	// lines are kept as text; a trailing line without newline is parsed.
	lines, o := parse("claude", "not json\n{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s1\",\"model\":\"m\",\"mcp_servers\":[{\"name\":\"nightshift\",\"status\":\"failed\"}]}", 0)
	if o.Err == nil || o.SessionID != "s1" || len(lines) != 3 || lines[0] != (agent.Line{Kind: agent.KindText, Text: "not json"}) || lines[1].Kind != agent.KindError {
		t.Errorf("claude: %+v %+v", lines, o)
	}
	// Claude: an error result.
	_, o = parse("claude", `{"type":"result","subtype":"error_max_turns","is_error":true,"session_id":"s2","result":"","usage":{"input_tokens":5,"cache_read_input_tokens":7,"output_tokens":2},"total_cost_usd":0.5}`+"\n", 1)
	if o.Err == nil || !strings.Contains(o.Err.Error(), "error_max_turns") || o.Usage != (agent.Usage{InputTokens: 12, OutputTokens: 2, CostUSD: 0.5}) {
		t.Errorf("claude error result: %+v", o)
	}
	// Codex: usage sums over turns; a non-zero exit fails even after a turn completed.
	_, o = parse("codex", `{"type":"thread.started","thread_id":"t"}
{"type":"turn.completed","usage":{"input_tokens":10,"cached_input_tokens":4,"output_tokens":3}}
{"type":"turn.completed","usage":{"input_tokens":20,"output_tokens":5}}
`, 2)
	if o.Err == nil || o.SessionID != "t" || o.Usage != (agent.Usage{InputTokens: 30, OutputTokens: 8}) {
		t.Errorf("codex: %+v", o)
	}
	// Codex: no completed turn is a failure.
	if _, o = parse("codex", `{"type":"thread.started","thread_id":"t"}`, 0); o.Err == nil {
		t.Errorf("codex without turn.completed: %+v", o)
	}
}
