package orchestrator

import "fmt"

// State is a task's position in its life cycle.
type State string

// Task states. The happy path is queued → provisioning → running → testing →
// pushing → review → done.
const (
	StateQueued       State = "queued"
	StateProvisioning State = "provisioning"
	StateRunning      State = "running"
	StateTesting      State = "testing"
	StatePushing      State = "pushing"
	StateReview       State = "review"
	StateDone         State = "done"
	StateNeedsInput   State = "needs_input"
	StateFailed       State = "failed"
	StateCancelled    State = "cancelled"
)

// States lists every state in life-cycle order.
var States = []State{StateQueued, StateProvisioning, StateRunning, StateTesting, StatePushing,
	StateReview, StateDone, StateNeedsInput, StateFailed, StateCancelled}

// transitions lists, for each state, the states it may move to.
var transitions = map[State][]State{
	StateQueued: {StateProvisioning, StateCancelled, StateFailed},
	// Active states may go back to provisioning: a task redelivered after a
	// worker crash starts over. Running and testing may end in done (or
	// review on an owned pull request) when a run that changed nothing
	// answered.
	StateProvisioning: {StateRunning, StateFailed, StateCancelled, StateQueued, StateReview},
	StateRunning:      {StateTesting, StateNeedsInput, StateFailed, StateCancelled, StateQueued, StatePushing, StateProvisioning, StateDone},
	StateTesting:      {StatePushing, StateFailed, StateCancelled, StateQueued, StateProvisioning, StateDone, StateReview},
	StatePushing:      {StateReview, StateFailed, StateCancelled, StateQueued, StateProvisioning},
	StateReview:       {StateDone, StateQueued, StateFailed, StateCancelled},
	StateNeedsInput:   {StateQueued, StateCancelled, StateFailed},
	StateFailed:       {StateQueued},
	StateCancelled:    {StateQueued},
	StateDone:         {StateQueued},
}

// Terminal reports whether no work is pending for a task in state s.
func (s State) Terminal() bool {
	return s == StateDone || s == StateFailed || s == StateCancelled || s == StateReview
}

// Resting reports whether no run of a task in state s is queued or in
// progress, so a message to it starts a follow-up run at once.
func (s State) Resting() bool { return s.Terminal() || s == StateNeedsInput }

// CanCancel reports whether a task in state s may be cancelled (cancelling
// a cancelled task is a no-op): any state but done and failed.
func (s State) CanCancel() bool { return s != StateDone && s != StateFailed }

// CanRetry reports whether a task in state s may start its prompt over in a
// new run: once its last run ended (failed, cancelled, done, review).
func (s State) CanRetry() bool { return s.Terminal() }

// Active reports whether a worker may currently be working on the task.
func (s State) Active() bool {
	switch s {
	case StateProvisioning, StateRunning, StateTesting, StatePushing:
		return true
	}
	return false
}

// Valid reports whether s is a known state.
func (s State) Valid() bool { _, ok := transitions[s]; return ok }

// CanTransition reports whether a task may move from s to next. Moving to the
// same state is allowed (it is a no-op).
func (s State) CanTransition(next State) bool {
	if s == next {
		return true
	}
	for _, t := range transitions[s] {
		if t == next {
			return true
		}
	}
	return false
}

// TransitionError reports a move the state machine does not allow.
type TransitionError struct {
	From, To State
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("orchestrator: cannot move task from %s to %s", e.From, e.To)
}
