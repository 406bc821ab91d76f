package automation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/vault/natsstore"
)

// Bucket names.
const (
	// DefinitionsBucket holds one key per automation (a.<name>); its
	// history is the automation's versions.
	DefinitionsBucket = "NIGHTSHIFT_AUTOMATIONS"
	// StateBucket holds each automation's guard-rail state (state.<name>),
	// kept as long as the automation exists.
	StateBucket = "NIGHTSHIFT_AUTOSTATE"
	// RunsBucket holds the timeline: runs (run.<name>.<run id>), the task
	// index (task.<task id>) and inbox read marks (read.<principal
	// digest>.<run id>). Each key expires Config.RunRetention (90 days)
	// after its last write.
	RunsBucket = "NIGHTSHIFT_AUTORUNS"
	// TicksBucket holds the claims of schedule ticks (tick.<name>.<unix>).
	TicksBucket = "NIGHTSHIFT_AUTOTICKS"

	// versions kept per automation.
	versions = 64
)

// Errors.
var (
	ErrNotFound = errors.New("automation: not found")
	ErrPaused   = errors.New("automation: paused")
	ErrDisabled = errors.New("automation: disabled")
	// ErrNoRepo refuses a manual run of an automation that takes its
	// repository from the event.
	ErrNoRepo = errors.New("automation: no repository to run on")
)

// Record is one stored version of an automation.
type Record struct {
	Definition config.Automation `json:"definition"`
	// Enabled is the switch; a paused automation is enabled but waits
	// for a resume (State.Paused).
	Enabled bool `json:"enabled"`
	// Origin is config (seeded from nightshift.yaml) or api.
	Origin string `json:"origin"`
	// ConfigHash is the digest of the config entry last seeded.
	ConfigHash string    `json:"config_hash,omitempty"`
	UpdatedAt  time.Time `json:"updated_at"`
	UpdatedBy  string    `json:"updated_by,omitempty"`
	// Version counts the automation's versions: 1 when created, one more
	// at every change (an edit, a seed of a changed config entry, enable,
	// disable).
	Version uint64 `json:"version"`
}

// State is an automation's guard-rail state, changed only by one
// revision-checked update at a time.
type State struct {
	Paused       bool   `json:"paused,omitempty"`
	PausedReason string `json:"paused_reason,omitempty"`
	// Failures counts consecutive failed runs; a success or a resume
	// clears it.
	Failures int `json:"failures"`
	// Active lists the runs that have not finished.
	Active []string `json:"active,omitempty"`
	// Day (YYYY-MM-DD in the automation's zone) and the cost of its runs.
	Day        string  `json:"day,omitempty"`
	DayCostUSD float64 `json:"day_cost_usd"`
	// LastTick is the latest schedule tick claimed (Unix seconds).
	LastTick int64 `json:"last_tick,omitempty"`
}

// Run statuses in the timeline.
const (
	RunPending   = "pending"   // being started
	RunStarted   = "started"   // its event is published; the task runs
	RunRefused   = "refused"   // the trigger may not start it (Reason says why)
	RunSkipped   = "skipped"   // paused, over budget or busy (Reason says why)
	RunSucceeded = "succeeded" // the task ended done or in review
	RunFailed    = "failed"
	RunCancelled = "cancelled"
	RunPaused    = "paused" // not a run: the automation paused itself here
)

// Run is one entry of an automation's timeline.
type Run struct {
	ID         string    `json:"id"`
	Automation string    `json:"automation"`
	Trigger    string    `json:"trigger"` // schedule, event, manual
	Tick       time.Time `json:"tick,omitzero"`
	EventID    string    `json:"event_id,omitempty"`
	EventKind  string    `json:"event_kind,omitempty"`
	Actor      string    `json:"actor,omitempty"`
	Repo       string    `json:"repo,omitempty"`
	Status     string    `json:"status"`
	Reason     string    `json:"reason,omitempty"`
	TaskID     string    `json:"task_id,omitempty"`
	TaskState  string    `json:"task_state,omitempty"`
	CostUSD    float64   `json:"cost_usd"`
	Mode       string    `json:"mode,omitempty"`
	Inbox      bool      `json:"inbox,omitempty"`
	At         time.Time `json:"at"`
	UpdatedAt  time.Time `json:"updated_at"`
	// Read is set in inbox listings: the caller has read the run.
	Read bool `json:"read,omitempty"`
}

// Final reports whether the run has ended.
func (r Run) Final() bool {
	switch r.Status {
	case RunPending, RunStarted:
		return false
	}
	return true
}

// DefaultRunRetention is how long a run stays on the timeline and in the
// inbox after its last change.
const DefaultRunRetention = 90 * 24 * time.Hour

// kvs are the buckets.
type kvs struct {
	defs, state, runs, ticks jetstream.KeyValue
}

func openBuckets(ctx context.Context, js jetstream.JetStream, replicas int, retention time.Duration) (kvs, error) {
	if replicas < 1 {
		replicas = 1
	}
	var k kvs
	var err error
	for _, b := range []struct {
		kv  *jetstream.KeyValue
		cfg jetstream.KeyValueConfig
	}{
		{&k.defs, defsConfig(replicas)},
		{&k.state, jetstream.KeyValueConfig{Bucket: StateBucket, Replicas: replicas,
			Description: "Nightshift automation guard rails"}},
		{&k.runs, jetstream.KeyValueConfig{Bucket: RunsBucket, Replicas: replicas, TTL: retention,
			Description: "Nightshift automation runs, their task index and inbox marks"}},
		{&k.ticks, jetstream.KeyValueConfig{Bucket: TicksBucket, Replicas: replicas, TTL: 7 * 24 * time.Hour,
			Description: "Nightshift schedule tick claims"}},
	} {
		if *b.kv, err = js.CreateOrUpdateKeyValue(ctx, b.cfg); err != nil {
			return kvs{}, fmt.Errorf("create bucket %s: %w", b.cfg.Bucket, err)
		}
	}
	if err := moveRuns(ctx, k); err != nil {
		return kvs{}, err
	}
	return k, nil
}

func defsConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: DefinitionsBucket, History: versions, Replicas: max(replicas, 1),
		Description: "Nightshift automations, one key per automation; history = versions"}
}

// moveRuns moves the runs, task index and read marks that engines before
// the runs bucket kept in the state bucket (where nothing expired them)
// into the runs bucket, once: a key the runs bucket already holds is not
// overwritten, and each moved key is purged from the state bucket.
func moveRuns(ctx context.Context, k kvs) error {
	lister, err := k.state.ListKeysFiltered(ctx, "run.>", "task.>", "read.>")
	if err != nil {
		return fmt.Errorf("list runs to move: %w", err)
	}
	var keys []string
	for key := range lister.Keys() {
		keys = append(keys, key)
	}
	for _, key := range keys {
		v, err := k.state.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("move %s: %w", key, err)
		}
		if _, err := k.runs.Create(ctx, key, v.Value()); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("move %s: %w", key, err)
		}
		if err := k.state.Purge(ctx, key, jetstream.LastRevision(v.Revision())); err != nil && !natsstore.IsConflict(err) {
			return fmt.Errorf("move %s: %w", key, err)
		}
	}
	return nil
}

func defKey(name string) string           { return "a." + name }
func stateKey(name string) string         { return "state." + name }
func runKey(name, id string) string       { return "run." + name + "." + id }
func taskKey(id string) string            { return "task." + id }
func tickKey(name string, t int64) string { return fmt.Sprintf("tick.%s.%d", name, t) }

func getJSON[T any](ctx context.Context, kv jetstream.KeyValue, key string) (T, uint64, error) {
	var v T
	e, err := kv.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return v, 0, ErrNotFound
		}
		return v, 0, err
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return v, 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return v, e.Revision(), nil
}

// update applies fn to the value at key in one revision-checked write,
// retrying on a concurrent change. A missing key starts from the zero
// value. fn returning errSkip writes nothing.
func update[T any](ctx context.Context, kv jetstream.KeyValue, key string, fn func(*T) error) (T, error) {
	for range 100 {
		v, rev, err := getJSON[T](ctx, kv, key)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return v, err
		}
		if err := fn(&v); err != nil {
			return v, err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return v, err
		}
		if rev == 0 {
			_, err = kv.Create(ctx, key, b)
		} else {
			_, err = kv.Update(ctx, key, b, rev)
		}
		if err == nil {
			return v, nil
		}
		if !natsstore.IsConflict(err) {
			return v, err
		}
	}
	var zero T
	return zero, fmt.Errorf("update %s: too much contention", key)
}

var errSkip = errors.New("automation: nothing to write")

// listRuns returns the runs stored under prefix (run.<name>. or run.),
// newest first, at most limit.
func listRuns(ctx context.Context, kv jetstream.KeyValue, filter string, limit int) ([]Run, error) {
	lister, err := kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, err
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	// Run ids start with the zero-padded start time: sort by it.
	sort.Slice(keys, func(i, j int) bool { return lastToken(keys[i]) > lastToken(keys[j]) })
	if limit > 0 && len(keys) > limit {
		keys = keys[:limit]
	}
	out := make([]Run, 0, len(keys))
	for _, k := range keys {
		r, _, err := getJSON[Run](ctx, kv, k)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func lastToken(k string) string { return k[strings.LastIndexByte(k, '.')+1:] }
