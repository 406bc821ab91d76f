package notify

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store remembers, per task and channel, the remote message Nightshift
// posted and what it said last: in a replicated JetStream bucket shared by
// every scheduler (NewKVStore), or in one process's SQLite (NewStore).
type Store struct {
	db  *sql.DB
	kv  *kvState
	now func() time.Time

	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

// NewStore migrates the report_state table in db (component "notify") and
// returns a Store. now may be nil (time.Now).
func NewStore(ctx context.Context, db *sql.DB, now func() time.Time) (*Store, error) {
	if err := orchestrator.Migrate(ctx, db, "notify", migrations); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &Store{db: db, now: now, locks: map[string]*keyLock{}}, nil
}

// Record is what was last reported for a task on one channel.
type Record struct {
	TaskID  string
	Channel string
	// RemoteID identifies the remote message (comment id, channel/ts); ""
	// while a post is pending.
	RemoteID string
	// State is the task state last reported.
	State string
	// Digest is a hash of the text last sent.
	Digest string
	// ReportedAt is the task's UpdatedAt of the last report.
	ReportedAt time.Time
}

// Get returns the record of taskID on channel; ok is false when none.
func (s *Store) Get(ctx context.Context, taskID, channel string) (Record, bool, error) {
	if s.kv != nil {
		e, _, err := s.kvGet(ctx, taskID, channel)
		return e.record(taskID, channel), err == nil && e.exists, err
	}
	r := Record{TaskID: taskID, Channel: channel}
	var at string
	err := s.db.QueryRowContext(ctx, `SELECT remote_id, last_state, digest, reported_at FROM report_state WHERE task_id=? AND channel=?`,
		taskID, channel).Scan(&r.RemoteID, &r.State, &r.Digest, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("notify: read report state: %w", err)
	}
	r.ReportedAt, _ = time.Parse(time.RFC3339Nano, at)
	return r, true, nil
}

// Put stores r.
func (s *Store) Put(ctx context.Context, r Record) error {
	if s.kv != nil {
		return s.kvPut(ctx, r)
	}
	at := ""
	if !r.ReportedAt.IsZero() {
		at = r.ReportedAt.UTC().Format(time.RFC3339Nano)
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO report_state(task_id, channel, remote_id, last_state, digest, reported_at, updated_at)
		VALUES(?,?,?,?,?,?,?) ON CONFLICT(task_id, channel) DO UPDATE SET remote_id=excluded.remote_id,
		last_state=excluded.last_state, digest=excluded.digest, reported_at=excluded.reported_at, updated_at=excluded.updated_at`,
		r.TaskID, r.Channel, r.RemoteID, r.State, r.Digest, at, s.now().UTC().Format(time.RFC3339Nano))
	if err != nil {
		return fmt.Errorf("notify: store report state: %w", err)
	}
	return nil
}

// lock serializes reports of one task on one channel within this process.
func (s *Store) lock(key string) func() {
	s.mu.Lock()
	l, ok := s.locks[key]
	if !ok {
		l = &keyLock{}
		s.locks[key] = l
	}
	l.refs++
	s.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.locks, key)
		}
		s.mu.Unlock()
	}
}

// Message is one report to make: the task's state and the text that shows it.
type Message struct {
	TaskID  string
	Channel string
	State   string
	// Text is what decides whether anything changed (hashed); it need not
	// be the exact payload.
	Text string
	// At is the task's UpdatedAt; reports older than the last one are dropped.
	At time.Time
}

// Remote is how a reporter talks to its service.
type Remote struct {
	// Create posts the message and returns its remote id.
	Create func(ctx context.Context) (string, error)
	// Update edits the message with remote id.
	Update func(ctx context.Context, remoteID string) error
	// Find looks for a message posted before a crash kept its id from being
	// stored; "" when there is none. Optional.
	Find func(ctx context.Context) (string, error)
}

// Sync makes the remote message of m.TaskID on m.Channel show m: it posts
// it once, then updates it in place, skipping reports that change nothing
// or are older than the last one. It reports whether anything was sent.
func (s *Store) Sync(ctx context.Context, m Message, remote Remote) (bool, error) {
	unlock := s.lock(m.TaskID + "\x00" + m.Channel)
	defer unlock()
	if s.kv != nil {
		return s.kvSync(ctx, m, remote)
	}
	rec, ok, err := s.Get(ctx, m.TaskID, m.Channel)
	if err != nil {
		return false, err
	}
	sum := sha256.Sum256([]byte(m.Text))
	digest := hex.EncodeToString(sum[:16])
	if ok && rec.RemoteID != "" && (rec.Digest == digest || (!m.At.IsZero() && m.At.Before(rec.ReportedAt))) {
		return false, nil
	}
	id := rec.RemoteID
	if ok && id == "" && remote.Find != nil {
		// A post was pending: it may have gone out before a crash.
		if id, err = remote.Find(ctx); err != nil {
			return false, err
		}
	}
	if id == "" {
		if !ok {
			if err := s.Put(ctx, Record{TaskID: m.TaskID, Channel: m.Channel}); err != nil {
				return false, err
			}
		}
		if id, err = remote.Create(ctx); err != nil {
			return false, err
		}
	} else if err := remote.Update(ctx, id); err != nil {
		return false, err
	}
	return true, s.Put(ctx, Record{TaskID: m.TaskID, Channel: m.Channel, RemoteID: id, State: m.State, Digest: digest, ReportedAt: m.At})
}
