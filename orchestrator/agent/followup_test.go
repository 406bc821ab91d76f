package agent_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator/agent"
	"github.com/nightshift/nightshift/orchestrator/agent/modelserver"
	"github.com/nightshift/nightshift/orchestrator/gateway"
)

// TestFollowUpResumes runs an agent twice in the same task: the follow-up
// passes the first run's session id and its model request must carry the
// earlier conversation.
func TestFollowUpResumes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ kind, model string }{{"claude", claudeModel}, {"codex", codexModel}} {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			needCLI(t, tc.kind)
			w := newWorld(t)
			first, second := "Remember the word PINEAPPLE.", "Which word did I ask you to remember?"
			w.ms.Script(
				modelserver.Step{Name: "first", Text: "Noted: PINEAPPLE."},
				modelserver.Step{Name: "follow-up", Check: func(r *modelserver.Request) error {
					for _, s := range []string{first, "Noted: PINEAPPLE.", second} {
						if !r.HasText(s) {
							return fmt.Errorf("resumed request lacks %q; texts %q", s, r.Texts)
						}
					}
					return nil
				}, Text: "The word was PINEAPPLE."},
			)
			a, err := agent.New(tc.kind, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			req, fw := w.request("task-"+tc.kind, first, gateway.Budget{}, gateway.Hooks{})
			req.Model = tc.model
			r1 := w.runSandboxed(ctx, a, req, fw)
			if r1.outcome.Err != nil || r1.outcome.SessionID == "" {
				t.Fatalf("first run: %+v\n%s\n%s", r1.outcome, r1.log(), r1.stderr)
			}
			req, fw = w.request("task-"+tc.kind, second, gateway.Budget{}, gateway.Hooks{})
			req.Model, req.SessionID = tc.model, r1.outcome.SessionID
			r2 := w.runSandboxed(ctx, a, req, fw)
			t.Logf("follow-up log:\n%s\nstderr:\n%s", r2.log(), r2.stderr)
			w.checkScript()
			if r2.outcome.Err != nil || r2.outcome.Summary != "The word was PINEAPPLE." {
				t.Fatalf("follow-up outcome %+v", r2.outcome)
			}
			if r2.outcome.SessionID != r1.outcome.SessionID {
				t.Errorf("follow-up session %q, want %q", r2.outcome.SessionID, r1.outcome.SessionID)
			}
			if u := w.gw.Usage("task-" + tc.kind); u.Requests < 2 {
				t.Errorf("gateway usage over both runs = %+v", u)
			}
			w.checkCanary(r1, r2)
		})
	}
}
