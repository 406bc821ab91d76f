package notify

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/vault/natsstore"
)

// ReportsBucket is the key-value bucket that holds the reporters' memory
// when it is shared (NewKVStore).
const ReportsBucket = "NIGHTSHIFT_REPORTS"

// DefaultClaimTTL is how long a Sync in progress keeps others (another
// scheduler) from reporting the same task on the same channel; a claim
// older than that is taken to belong to a crashed process.
const DefaultClaimTTL = 2 * time.Minute

type kvState struct {
	kv     jetstream.KeyValue
	holder string
	ttl    time.Duration
}

// kvEntry is one record as stored in the bucket. A claim says which
// process is posting or editing the remote message right now.
type kvEntry struct {
	RemoteID   string    `json:"remote_id,omitempty"`
	State      string    `json:"state,omitempty"`
	Digest     string    `json:"digest,omitempty"`
	ReportedAt time.Time `json:"reported_at,omitzero"`
	Claim      string    `json:"claim,omitempty"`
	ClaimUntil time.Time `json:"claim_until,omitzero"`
	UpdatedAt  time.Time `json:"updated_at,omitzero"`

	exists bool
}

func (e kvEntry) record(taskID, channel string) Record {
	return Record{TaskID: taskID, Channel: channel, RemoteID: e.RemoteID, State: e.State, Digest: e.Digest, ReportedAt: e.ReportedAt}
}

// KVConfig configures NewKVStore.
type KVConfig struct {
	// Replicas of the bucket; 0 means 1. Use the cluster's nats.replicas.
	Replicas int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ClaimTTL bounds how long a crashed process's claim blocks others;
	// zero means DefaultClaimTTL.
	ClaimTTL time.Duration
	// TTL drops records not updated for this long; zero means 90 days.
	TTL time.Duration
}

// NewKVStore returns a Store over the replicated bucket ReportsBucket
// (created when missing), shared by every scheduler: each Sync of a task on
// a channel holds a revision-checked claim on its record while it talks to
// the remote service, so two schedulers (or a scheduler that took over from
// a dead one) never post two messages for one task.
func NewKVStore(ctx context.Context, js jetstream.JetStream, cfg KVConfig) (*Store, error) {
	if js == nil {
		return nil, errors.New("notify: nil JetStream")
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ClaimTTL <= 0 {
		cfg.ClaimTTL = DefaultClaimTTL
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 90 * 24 * time.Hour
	}
	kv, err := js.KeyValue(ctx, ReportsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: ReportsBucket, History: 1, TTL: cfg.TTL,
			Storage: jetstream.FileStorage, Replicas: cfg.Replicas, Description: "nightshift reporters: the remote message of each task and channel"})
		if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			kv, err = js.KeyValue(ctx, ReportsBucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("notify: bucket %s: %w", ReportsBucket, err)
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	return &Store{kv: &kvState{kv: kv, holder: hex.EncodeToString(id[:]), ttl: cfg.ClaimTTL}, now: cfg.Now, locks: map[string]*keyLock{}}, nil
}

func kvKey(taskID, channel string) string {
	sum := sha256.Sum256([]byte(taskID + "\x00" + channel))
	return "r." + hex.EncodeToString(sum[:16])
}

func (s *Store) kvGet(ctx context.Context, taskID, channel string) (kvEntry, uint64, error) {
	e, err := s.kv.kv.Get(ctx, kvKey(taskID, channel))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return kvEntry{}, 0, nil
	}
	if err != nil {
		return kvEntry{}, 0, fmt.Errorf("notify: read report state: %w", err)
	}
	var x kvEntry
	if err := json.Unmarshal(e.Value(), &x); err != nil {
		return kvEntry{}, 0, fmt.Errorf("notify: decode report state: %w", err)
	}
	x.exists = true
	return x, e.Revision(), nil
}

// kvWrite stores e at rev (0: create); it reports a lost race as ok=false.
func (s *Store) kvWrite(ctx context.Context, taskID, channel string, e kvEntry, rev uint64) (bool, error) {
	e.UpdatedAt = s.now().UTC()
	data, err := json.Marshal(e)
	if err != nil {
		return false, err
	}
	if rev == 0 {
		_, err = s.kv.kv.Create(ctx, kvKey(taskID, channel), data)
	} else {
		_, err = s.kv.kv.Update(ctx, kvKey(taskID, channel), data, rev)
	}
	if err == nil {
		return true, nil
	}
	if natsstore.IsConflict(err) {
		return false, nil
	}
	return false, fmt.Errorf("notify: store report state: %w", err)
}

func (s *Store) kvPut(ctx context.Context, r Record) error {
	for {
		cur, rev, err := s.kvGet(ctx, r.TaskID, r.Channel)
		if err != nil {
			return err
		}
		e := kvEntry{RemoteID: r.RemoteID, State: r.State, Digest: r.Digest, ReportedAt: r.ReportedAt, Claim: cur.Claim, ClaimUntil: cur.ClaimUntil}
		if ok, err := s.kvWrite(ctx, r.TaskID, r.Channel, e, rev); ok || err != nil {
			return err
		}
	}
}

// kvSync is Sync over the shared bucket. It claims the record (one
// revision-checked write), talks to the remote service, then stores the
// outcome and drops the claim (a second write checked against the claim's
// revision). A live claim of another process is waited out: that process
// is reporting an earlier change of the same task, and this one must go out
// after it.
func (s *Store) kvSync(ctx context.Context, m Message, remote Remote) (bool, error) {
	sum := sha256.Sum256([]byte(m.Text))
	digest := hex.EncodeToString(sum[:16])
	var cur kvEntry
	var rev uint64
	for attempt := 0; ; attempt++ {
		var err error
		cur, rev, err = s.kvGet(ctx, m.TaskID, m.Channel)
		if err != nil {
			return false, err
		}
		now := s.now()
		if cur.Claim != "" && cur.Claim != s.kv.holder && now.Before(cur.ClaimUntil) {
			// Another scheduler is reporting this task here right now.
			select {
			case <-ctx.Done():
				return false, ctx.Err()
			case <-time.After(time.Duration(20+mrand.IntN(40)) * time.Millisecond):
			}
			continue
		}
		if cur.exists && cur.RemoteID != "" && (cur.Digest == digest || (!m.At.IsZero() && m.At.Before(cur.ReportedAt))) {
			return false, nil
		}
		claimed := cur
		claimed.Claim, claimed.ClaimUntil = s.kv.holder, now.Add(s.kv.ttl)
		ok, err := s.kvWrite(ctx, m.TaskID, m.Channel, claimed, rev)
		if err != nil {
			return false, err
		}
		if ok {
			break
		}
	}
	// The claim is ours: cur is the record as it stood when we took it.
	release := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		for {
			e, r, err := s.kvGet(rctx, m.TaskID, m.Channel)
			if err != nil || e.Claim != s.kv.holder {
				return
			}
			e.Claim, e.ClaimUntil = "", time.Time{}
			if ok, err := s.kvWrite(rctx, m.TaskID, m.Channel, e, r); ok || err != nil {
				return
			}
		}
	}
	id := cur.RemoteID
	var err error
	if cur.exists && id == "" && remote.Find != nil {
		// A post was pending: it may have gone out before a crash.
		if id, err = remote.Find(ctx); err != nil {
			release()
			return false, err
		}
	}
	if id == "" {
		id, err = remote.Create(ctx)
	} else {
		err = remote.Update(ctx, id)
	}
	if err != nil {
		release()
		return false, err
	}
	done := kvEntry{RemoteID: id, State: m.State, Digest: digest, ReportedAt: m.At}
	for {
		e, r, err := s.kvGet(context.WithoutCancel(ctx), m.TaskID, m.Channel)
		if err != nil {
			return true, err
		}
		if e.Claim != s.kv.holder && e.RemoteID != "" && e.ReportedAt.After(m.At) {
			// Our claim expired and a newer report went out meanwhile.
			return true, nil
		}
		if e.Claim != "" && e.Claim != s.kv.holder {
			done.Claim, done.ClaimUntil = e.Claim, e.ClaimUntil
		}
		ok, err := s.kvWrite(context.WithoutCancel(ctx), m.TaskID, m.Channel, done, r)
		if ok || err != nil {
			return true, err
		}
	}
}

// ImportSQL copies the report state a single-process server kept in db
// (table report_state) into the shared bucket, once per record: records
// already in the bucket are left alone, so it is safe to run at every
// start. It returns how many records it copied.
func (s *Store) ImportSQL(ctx context.Context, db *sql.DB) (int, error) {
	if s.kv == nil {
		return 0, errors.New("notify: ImportSQL needs a store made by NewKVStore")
	}
	var exists int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'report_state'`).Scan(&exists); err != nil || exists == 0 {
		return 0, err
	}
	rows, err := db.QueryContext(ctx, `SELECT task_id, channel, remote_id, last_state, digest, reported_at FROM report_state WHERE remote_id <> ''`)
	if err != nil {
		return 0, fmt.Errorf("notify: import report state: %w", err)
	}
	var recs []Record
	for rows.Next() {
		var r Record
		var at string
		if err := rows.Scan(&r.TaskID, &r.Channel, &r.RemoteID, &r.State, &r.Digest, &at); err != nil {
			rows.Close()
			return 0, err
		}
		r.ReportedAt, _ = time.Parse(time.RFC3339Nano, at)
		recs = append(recs, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	n := 0
	for _, r := range recs {
		ok, err := s.kvWrite(ctx, r.TaskID, r.Channel, kvEntry{RemoteID: r.RemoteID, State: r.State, Digest: r.Digest, ReportedAt: r.ReportedAt}, 0)
		if err != nil {
			return n, err
		}
		if ok {
			n++
		}
	}
	return n, nil
}
