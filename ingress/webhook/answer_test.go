package webhook

import (
	"testing"

	"github.com/nightshift/nightshift/orchestrator"
)

func TestSlackAnswerNormalization(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, payload string
		task, text    string // empty task: ignored
		ignored       bool
	}{
		{name: "reply box", payload: `{"type":"block_actions","trigger_id":"t1","user":{"id":"U1","username":"alice"},
			"actions":[{"type":"plain_text_input","block_id":"answer:T123","action_id":"answer","value":"  port 8080 ","action_ts":"1.2"}]}`,
			task: "T123", text: "port 8080"},
		{name: "prefixed action id", payload: `{"type":"block_actions","actions":[{"block_id":"answer:T9","action_id":"nightshift_answer","value":"yes","action_ts":"3"}]}`,
			task: "T9", text: "yes"},
		{name: "empty answer", payload: `{"type":"block_actions","actions":[{"block_id":"answer:T9","action_id":"answer","value":"  "}]}`, ignored: true},
		{name: "no task", payload: `{"type":"block_actions","actions":[{"block_id":"answer:","action_id":"answer","value":"x"}]}`, ignored: true},
		{name: "other block", payload: `{"type":"block_actions","actions":[{"block_id":"other","action_id":"answer","value":"x"}]}`, ignored: true},
	} {
		n, _, err := normalizeSlackInteraction([]byte(tc.payload))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.ignored {
			if n.ev != nil {
				t.Errorf("%s: got event %+v", tc.name, n.ev)
			}
			continue
		}
		ev := n.ev
		if ev == nil || ev.Kind != orchestrator.KindTaskAnswer || ev.Target.Type != "task" || ev.Target.ID != tc.task ||
			ev.Instruction != tc.text || ev.IdempotencyKey == "" {
			t.Errorf("%s: event %+v (ignore %q)", tc.name, ev, n.ignore)
		}
	}
}
