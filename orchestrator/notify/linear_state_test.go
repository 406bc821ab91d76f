package notify

import (
	"testing"

	"github.com/nightshift/nightshift/orchestrator"
)

func TestTicketState(t *testing.T) {
	t.Parallel()
	cases := []struct {
		state orchestrator.State
		pr    string
		want  string
	}{
		{orchestrator.StateQueued, "", ""},
		{orchestrator.StateProvisioning, "", "started"},
		{orchestrator.StateRunning, "https://github.com/o/r/pull/1", "started"},
		{orchestrator.StatePushing, "", "started"},
		{orchestrator.StateReview, "https://github.com/o/r/pull/1", "review"},
		{orchestrator.StateReview, "", ""}, // a pushed branch without a pull request
		{orchestrator.StateDone, "https://github.com/o/r/pull/1", "completed"},
		{orchestrator.StateDone, "", "completed"}, // an answered question
		{orchestrator.StateFailed, "", ""},
		{orchestrator.StateCancelled, "https://github.com/o/r/pull/1", ""},
		{orchestrator.StateNeedsInput, "", ""},
	}
	for _, c := range cases {
		if got := ticketState(orchestrator.Task{State: c.state, PRURL: c.pr}); got != c.want {
			t.Errorf("%s (pr %q): %q, want %q", c.state, c.pr, got, c.want)
		}
	}
}
