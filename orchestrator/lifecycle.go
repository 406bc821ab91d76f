package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// A task owns the pull request its runs opened (or pushed to) until the pull
// request is merged or closed: feedback on it (reviews, review comments,
// comments, CI failures) becomes follow-up runs of the same task on the same
// branch, a merge moves the task to done and a close to cancelled.

// prOwner returns the task that owns the pull request (or the Nightshift
// branch) ev is about; ok is false when no task does.
func (s *Scheduler) prOwner(ctx context.Context, ev *Event) (Task, bool, error) {
	tg := ev.Target
	var t Task
	var err error
	switch {
	case tg.Type == "pull_request" && tg.Number != 0:
		t, err = s.recs.TaskByPR(ctx, ev.Repo, tg.Number)
	case strings.HasPrefix(tg.Branch, "nightshift/"):
		t, err = s.recs.Task(ctx, strings.TrimPrefix(tg.Branch, "nightshift/"))
		if err == nil && PRKey(t.Repo, 0) != PRKey(ev.Repo, 0) {
			err = ErrNotFound
		}
	default:
		return Task{}, false, nil
	}
	if errors.Is(err, ErrNotFound) {
		return Task{}, false, nil
	}
	return t, err == nil, err
}

// routeToOwner makes a comment or CI failure on a pull request a task owns
// a follow-up of that task. handled is false when no open task owns it (the
// event then creates or follows up a task the usual way).
func (s *Scheduler) routeToOwner(ctx context.Context, ev *Event) (handled bool, err error) {
	t, ok, err := s.prOwner(ctx, ev)
	if err != nil || !ok {
		return false, err
	}
	switch t.State {
	case StateDone, StateCancelled:
		return false, nil
	}
	return true, s.followUpOwner(ctx, t, ev)
}

func (s *Scheduler) followUpOwner(ctx context.Context, t Task, ev *Event) error {
	added, _, err := s.recs.AddFollowUpEvent(ctx, t.ID, ev)
	if err != nil {
		return fmt.Errorf("store follow-up of task %s: %w", t.ID, err)
	}
	if !added {
		s.cfg.Metrics.event(ev, "duplicate")
		return nil
	}
	s.cfg.Metrics.event(ev, "follow_up")
	s.log.Info("follow-up on the task's pull request", "task_id", t.ID, "delivery_id", ev.DeliveryID, "kind", ev.Kind)
	return nil
}

// ignore acknowledges an event that starts no work, saying why.
func (s *Scheduler) ignore(ev *Event, reason string) error {
	s.cfg.Metrics.event(ev, "ignored")
	s.log.Info("event ignored", "delivery_id", ev.DeliveryID, "kind", ev.Kind, "repo", ev.Repo, "reason", reason)
	return nil
}

// applyPR handles feedback on, and the end of, a task's pull request.
func (s *Scheduler) applyPR(ctx context.Context, ev *Event) error {
	t, ok, err := s.prOwner(ctx, ev)
	if err != nil {
		return err
	}
	if !ok {
		return s.ignore(ev, fmt.Sprintf("no task owns pull request #%d", ev.Target.Number))
	}
	if ev.Kind == KindPRFeedback {
		switch t.State {
		case StateDone, StateCancelled:
			return s.ignore(ev, fmt.Sprintf("task %s owning pull request #%d is %s", t.ID, ev.Target.Number, t.State))
		}
		return s.followUpOwner(ctx, t, ev)
	}
	to, reason := StateDone, "merged"
	if ev.Kind == KindPRClosed {
		to, reason = StateCancelled, "pull request closed"
	}
	switch {
	case t.State == StateReview:
		_, changed, err := s.recs.Move(ctx, t.ID, []State{StateReview}, to, reason, Patch{Reason: &reason})
		if err != nil || !changed {
			return err
		}
		s.cfg.Metrics.event(ev, "transition")
		return nil
	case t.State == StateDone, t.State == StateFailed, t.State == StateCancelled:
		return s.ignore(ev, fmt.Sprintf("task %s owning pull request #%d is already %s", t.ID, ev.Target.Number, t.State))
	default:
		// A follow-up is queued or running on a pull request that is gone:
		// stop it.
		s.cfg.Metrics.event(ev, "control")
		return s.cancel(ctx, t.ID)
	}
}
