package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// KindTaskAnswer is an answer to the question a task waits on (an
// authorized comment, a Slack reply box): like task.message, but only the
// first one counts: a task no longer in needs_input ignores it.
const KindTaskAnswer = "task.answer"

// MaxQuestion bounds the length of a question an agent may ask.
const MaxQuestion = 4000

// Question is what an agent asked a human (MCP ask_human), as recorded on
// the task stream.
type Question struct {
	TaskID   string    `json:"task_id"`
	Question string    `json:"question"`
	At       time.Time `json:"at"`
}

// QuestionSubject returns the subject on which task id's questions are
// recorded.
func QuestionSubject(id string) string { return "nightshift.tasks." + id + ".question" }

// Ask records a question of task id's agent on the task stream. The worker
// running the task reads it when the agent exits and moves the task to
// needs_input instead of publishing its work.
func (b *Bus) Ask(ctx context.Context, taskID, question string) error {
	question = strings.TrimSpace(question)
	if taskID == "" {
		return errors.New("orchestrator: a question needs a task")
	}
	if question == "" {
		return errors.New("orchestrator: empty question")
	}
	if len(question) > MaxQuestion {
		return fmt.Errorf("orchestrator: question longer than %d bytes", MaxQuestion)
	}
	data, err := json.Marshal(Question{TaskID: taskID, Question: question, At: time.Now().UTC()})
	if err != nil {
		return err
	}
	if _, err := b.js.Publish(ctx, QuestionSubject(taskID), data); err != nil {
		return fmt.Errorf("record question of task %s: %w", taskID, err)
	}
	return nil
}

// lastQuestion returns the latest question recorded for task id and its
// stream sequence (0 when there is none).
func (b *Bus) lastQuestion(ctx context.Context, taskID string) (Question, uint64, error) {
	st, err := b.js.Stream(ctx, TasksStream)
	if err != nil {
		return Question{}, 0, err
	}
	m, err := st.GetLastMsgForSubject(ctx, QuestionSubject(taskID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Question{}, 0, nil
	}
	if err != nil {
		return Question{}, 0, err
	}
	var q Question
	if err := json.Unmarshal(m.Data, &q); err != nil {
		return Question{}, m.Sequence, nil
	}
	return q, m.Sequence, nil
}

// WaitingTask returns the task on repo's target (Target.Key) that waits
// for an answer, or ErrNotFound.
func (s *Store) WaitingTask(ctx context.Context, repo string, target Target) (Task, error) {
	key := target.Key()
	if key == "" {
		return Task{}, ErrNotFound
	}
	return getTask(ctx, s.db, `repo=? AND target_key=? AND state=? ORDER BY updated_at DESC LIMIT 1`, repo, key, StateNeedsInput)
}

// answer resumes the task ev answers when it still waits for an answer.
func (s *Scheduler) answer(ctx context.Context, ev *Event) error {
	_, _, err := s.recs.update(ctx, ev.Target.ID, func(rec *Record) error {
		if rec.Task.State != StateNeedsInput {
			s.log.Info("answer ignored: the task is not waiting for one", "task_id", rec.Task.ID, "state", rec.Task.State, "actor", ev.Actor.Login)
			return errUnchanged
		}
		rec.NextMsg++
		rec.Messages = append(rec.Messages, Message{ID: rec.NextMsg, Text: ev.Instruction, Actor: ev.Actor.Login, CreatedAt: s.cfg.Clock().UTC()})
		return s.recs.wakeLocked(rec)
	})
	return err
}

// expireQuestions ends the tasks that have waited for an answer longer
// than the scheduler's AnswerTimeout: they are cancelled with reason
// no_answer.
func (s *Scheduler) expireQuestions(ctx context.Context) {
	if s.cfg.AnswerTimeout <= 0 || s.store == nil {
		return
	}
	ts, err := s.store.List(ctx, Filter{States: []State{StateNeedsInput}, Limit: 500})
	if err != nil {
		s.log.Warn("list tasks waiting for an answer", "err", err)
		return
	}
	now := s.cfg.Clock()
	for _, t := range ts {
		if now.Sub(t.UpdatedAt) < s.cfg.AnswerTimeout {
			continue
		}
		msg := fmt.Sprintf("no answer to the agent's question within %s", s.cfg.AnswerTimeout)
		reason := "no_answer"
		_, _, err := s.recs.update(ctx, t.ID, func(rec *Record) error {
			// Decided on the record, not the index: an answer may have
			// arrived meanwhile.
			if rec.Task.State != StateNeedsInput || now.Sub(rec.Task.UpdatedAt) < s.cfg.AnswerTimeout {
				return errUnchanged
			}
			applyPatch(&rec.Task, Patch{Error: &msg, Reason: &reason})
			return s.recs.transition(rec, StateCancelled, reason)
		})
		if err != nil {
			s.log.Warn("end unanswered task", "task_id", t.ID, "err", err)
		}
	}
}

// runAnswerTimeouts checks for unanswered questions until ctx is done, every
// AnswerTimeout/4 (at least every second, at most every minute).
func (s *Scheduler) runAnswerTimeouts(ctx context.Context) {
	if s.cfg.AnswerTimeout <= 0 {
		return
	}
	every := min(max(s.cfg.AnswerTimeout/4, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.expireQuestions(ctx)
		}
	}
}
