package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/vault/natsstore"
)

// CreateResult says what CreateFromEvent did.
type CreateResult struct {
	Task Task
	// Created is false when a task already existed for the idempotency key.
	Created bool
	// FollowUp is set when the event became a follow-up message of an
	// existing task on the same target.
	FollowUp bool
}

// follower is the goroutine keeping a Store's index up to date.
type follower struct {
	once    sync.Once
	mu      sync.Mutex
	applied uint64        // last records-stream sequence applied
	changed chan struct{} // closed and replaced on every advance
	err     error
}

// Follow keeps the index up to date with the records bucket until ctx ends:
// it first applies every record's latest revision (rebuilding an index
// that is missing or behind), then every new revision as it is written.
// A second call while the first runs does nothing.
func (s *Store) Follow(ctx context.Context, recs *Records) {
	s.follow.once.Do(func() {
		s.follow.mu.Lock()
		s.follow.changed = make(chan struct{})
		s.follow.mu.Unlock()
		go s.runFollow(ctx, recs)
	})
}

func (s *Store) runFollow(ctx context.Context, recs *Records) {
	for ctx.Err() == nil {
		err := s.followOnce(ctx, recs)
		if ctx.Err() != nil {
			return
		}
		s.follow.mu.Lock()
		s.follow.err = err
		s.follow.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (s *Store) followOnce(ctx context.Context, recs *Records) error {
	cons, err := recs.bus.js.OrderedConsumer(ctx, "KV_"+RecordsBucket, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy, FilterSubjects: []string{"$KV." + RecordsBucket + ".>"}})
	if err != nil {
		return fmt.Errorf("follow task records: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			return err
		}
		md, err := msg.Metadata()
		if err != nil {
			continue
		}
		if strings.HasPrefix(msg.Subject(), "$KV."+RecordsBucket+".t.") && msg.Headers().Get("KV-Operation") == "" {
			var rec Record
			if json.Unmarshal(msg.Data(), &rec) == nil && rec.Task.ID != "" {
				for attempt := 0; ; attempt++ {
					err := s.index(ctx, rec, md.Sequence.Stream)
					if err == nil {
						break
					}
					if ctx.Err() != nil {
						return err
					}
					if attempt == 0 {
						recs.log.Warn("index task record; retrying", "task_id", rec.Task.ID, "err", err)
					}
					time.Sleep(min(time.Duration(attempt+1)*100*time.Millisecond, 2*time.Second))
				}
			}
		}
		s.advance(md.Sequence.Stream)
	}
}

func (s *Store) advance(seq uint64) {
	s.follow.mu.Lock()
	defer s.follow.mu.Unlock()
	if seq > s.follow.applied {
		s.follow.applied = seq
		close(s.follow.changed)
		s.follow.changed = make(chan struct{})
	}
}

// CatchUp waits (up to d) until the index holds every record revision
// written before the call, so that a list right after a write sees it.
func (s *Store) CatchUp(ctx context.Context, recs *Records, d time.Duration) error {
	s.follow.mu.Lock()
	following := s.follow.changed != nil
	s.follow.mu.Unlock()
	if !following {
		return nil // not following: nothing to wait for
	}
	info, err := recs.stream.Info(ctx)
	if err != nil {
		return err
	}
	want := info.State.LastSeq
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		s.follow.mu.Lock()
		applied, ch := s.follow.applied, s.follow.changed
		s.follow.mu.Unlock()
		if applied >= want {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("task index behind the records (at %d of %d)", applied, want)
		}
	}
}

// index writes rec (read at records-stream sequence seq) into the index
// unless the index already holds a newer revision of it.
func (s *Store) index(ctx context.Context, rec Record, seq uint64) error {
	t := rec.Task
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var have int64 = -1
	err = tx.QueryRowContext(ctx, `SELECT rev FROM tasks WHERE id=?`, t.ID).Scan(&have)
	if err != nil && !errors.Is(err, errNoRows) {
		return err
	}
	if have >= int64(seq) {
		return nil
	}
	evJSON, _ := json.Marshal(Event{Target: t.Target, Actor: t.Actor})
	t.Position = 0
	full, _ := json.Marshal(t)
	key := t.IdempotencyKey
	if key == "" {
		key = "task:" + t.ID
	}
	var dupKey int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM tasks WHERE idempotency_key=? AND id<>?`, key, t.ID).Scan(&dupKey); err != nil {
		return err
	}
	if dupKey > 0 {
		key += "#" + t.ID
	}
	prKey := prKeyOf(t.Repo, t.PRURL)
	_, err = tx.ExecContext(ctx, `INSERT INTO tasks(id, idempotency_key, state, run, repo, base, base_commit, branch, agent, prompt,
		source, kind, target_key, event_json, identity_id, identity_name, identity_email, identity_phone, commit_sha, pr_url, review,
		error, reason, session_id, input_tokens, output_tokens, cost_usd, diff_files, diff_added, diff_deleted, created_at, updated_at,
		answer, question, pr_key, rev, task_json)
		VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT(id) DO UPDATE SET state=excluded.state, run=excluded.run, base_commit=excluded.base_commit,
		agent=excluded.agent, identity_id=excluded.identity_id, identity_name=excluded.identity_name,
		identity_email=excluded.identity_email, identity_phone=excluded.identity_phone, commit_sha=excluded.commit_sha,
		pr_url=excluded.pr_url, review=excluded.review, error=excluded.error, reason=excluded.reason,
		session_id=excluded.session_id, input_tokens=excluded.input_tokens, output_tokens=excluded.output_tokens,
		cost_usd=excluded.cost_usd, diff_files=excluded.diff_files, diff_added=excluded.diff_added,
		diff_deleted=excluded.diff_deleted, updated_at=excluded.updated_at, answer=excluded.answer,
		question=excluded.question, pr_key=excluded.pr_key, rev=excluded.rev, task_json=excluded.task_json`,
		t.ID, key, t.State, t.Run, t.Repo, t.Base, t.BaseCommit, t.Branch, t.Agent, t.Prompt,
		t.Source, t.Kind, t.TargetKey, string(evJSON), t.Identity.ID, t.Identity.Name, t.Identity.Email, t.Identity.Phone,
		t.Commit, t.PRURL, t.Review, t.Error, t.Reason, t.SessionID, t.Usage.InputTokens, t.Usage.OutputTokens, t.Usage.CostUSD,
		t.Diff.Files, t.Diff.Added, t.Diff.Deleted, ts(t.CreatedAt), ts(t.UpdatedAt), t.Answer, t.Question, prKey, int64(seq), string(full))
	if err != nil {
		return fmt.Errorf("index task %s: %w", t.ID, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM task_transitions WHERE task_id=?`, t.ID); err != nil {
		return err
	}
	for _, tr := range rec.Transitions {
		if _, err := tx.ExecContext(ctx, `INSERT INTO task_transitions(task_id, run, from_state, to_state, reason, at) VALUES(?,?,?,?,?,?)`,
			t.ID, tr.Run, tr.From, tr.To, tr.Reason, ts(tr.At)); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// MigrateToRecords carries the tasks this node's database stored before
// the records bucket existed (rows never written from a record) into the
// bucket, once: each becomes a record with its transitions and pending
// follow-ups, found again by its pull request and target. A task the
// bucket already holds is left alone, so every node may run it.
func (s *Store) MigrateToRecords(ctx context.Context, recs *Records) (int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+taskColumns+` FROM tasks WHERE rev=0`)
	if err != nil {
		return 0, err
	}
	var old []Task
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			rows.Close()
			return 0, err
		}
		old = append(old, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	n := 0
	for _, t := range old {
		if _, _, err := recs.Get(ctx, t.ID); err == nil {
			continue
		} else if !errors.Is(err, ErrNotFound) {
			return n, err
		}
		trs, err := s.Transitions(ctx, t.ID)
		if err != nil {
			return n, err
		}
		rec := Record{Task: t, Transitions: trs}
		// The record is created once: pending follow-ups that could not be
		// read now would be lost for good, so the migration stops instead.
		if rec.Messages, err = s.pendingMessages(ctx, t.ID); err != nil {
			return n, fmt.Errorf("migrate task %s: %w", t.ID, err)
		}
		for _, m := range rec.Messages {
			rec.NextMsg = max(rec.NextMsg, m.ID)
		}
		data, err := json.Marshal(rec)
		if err != nil {
			return n, err
		}
		if _, err := recs.kv.Create(ctx, taskKey(t.ID), data); err != nil && !natsstore.IsConflict(err) {
			return n, fmt.Errorf("migrate task %s: %w", t.ID, err)
		}
		recs.indexPR(ctx, t)
		if t.TargetKey != "" && !closedForFollowUps(t.State) {
			_, _ = recs.kv.Create(ctx, targetKey(t.Repo, t.TargetKey), []byte(t.ID))
		}
		n++
	}
	return n, nil
}

// pendingMessages returns the follow-ups of task id the SQLite store holds
// unconsumed (tasks stored before the records bucket), oldest first.
func (s *Store) pendingMessages(ctx context.Context, id string) ([]Message, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, text, actor, created_at FROM task_messages WHERE task_id=? AND consumed=0 ORDER BY id`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Message
	for rows.Next() {
		var m Message
		var at string
		if err := rows.Scan(&m.ID, &m.Text, &m.Actor, &at); err != nil {
			return nil, err
		}
		m.CreatedAt = parseTS(at)
		out = append(out, m)
	}
	return out, rows.Err()
}
