package main

import (
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
)

// TestSecretInABinaryFileIsNeverPushed: the rendered patch shows a binary
// file only as "Binary files differ", so a secret inside one escaped the
// patch check; the push scan reads every object it would send, so the task
// fails with secret_in_diff and nothing is pushed. Fails on the old code
// (the branch was pushed).
func TestSecretInABinaryFileIsNeverPushed(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, processConfig+`
agents:
  leaky:
    command: ["sh", "-c", "printf '\\000\\001\\002' > blob.bin; ravi secrets get DEPLOY_TOKEN >> blob.bin; echo fine > NOTES.md"]
`)
	secret := "tok-" + orchestrator.NewID()
	s.vaultSet(t, "DEPLOY_TOKEN", "agents", secret)
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "leaky", "store the token")
	task := s.waitState(t, id, 60*time.Second, orchestrator.StateFailed, orchestrator.StateReview)
	logs, _ := s.cli(t, "tasks", "logs", id)
	if task.State != orchestrator.StateFailed || task.Reason != "secret_in_diff" || !strings.Contains(task.Error, "DEPLOY_TOKEN") {
		t.Fatalf("state %s reason %q error %q\n%s", task.State, task.Reason, task.Error, logs)
	}
	assertNotPushed(t, origin, id, "a binary file carrying a secret was pushed")
	for _, text := range []string{logs, task.Error} {
		if strings.Contains(text, secret) {
			t.Fatalf("the secret leaked:\n%s", text)
		}
	}
}
