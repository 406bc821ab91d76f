package orchestrator

import (
	"errors"
	"fmt"
)

// StepError is a failed step with a machine-readable reason.
type StepError struct {
	Reason string // e.g. agent_failed, tests_failed, push_rejected, timed_out
	Err    error
}

func (e *StepError) Error() string { return e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

func stepErr(reason string, format string, args ...any) error {
	return &StepError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

func failure(err error) (reason, text string) {
	var se *StepError
	if errors.As(err, &se) {
		return se.Reason, se.Error()
	}
	return "error", err.Error()
}
