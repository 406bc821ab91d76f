package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BusConfig configures the streams. Zero values mean the documented defaults.
type BusConfig struct {
	// Replicas of each stream (1 on a single server). Default 1.
	Replicas int
	// EventMaxAge keeps events for re-normalization and audit. Default 30 days.
	EventMaxAge time.Duration
	// TaskMaxAge keeps task states, logs and diffs. Default 30 days.
	TaskMaxAge time.Duration
	// Duplicates is JetStream's deduplication window for work and task
	// streams. Default 2 minutes.
	Duplicates time.Duration
	// DeliveryWindow is how long the events stream remembers a delivery id
	// (Nats-Msg-Id): a webhook redelivered within it is answered as a
	// duplicate. Default 72 hours, longer than GitHub's redelivery horizon.
	DeliveryWindow time.Duration
	// LogAckTimeout bounds how long a log line may wait for its PubAck
	// before it counts as lost. Default 30 seconds.
	LogAckTimeout time.Duration
	// Logger receives NewBus's waits for NATS. Optional.
	Logger *slog.Logger
}

// DefaultDeliveryWindow is BusConfig.DeliveryWindow's default.
const DefaultDeliveryWindow = 72 * time.Hour

// ErrDuplicate is returned by Publish for an event whose delivery id the
// events stream has already stored.
var ErrDuplicate = errors.New("orchestrator: duplicate delivery")

// EventsStreamConfig is the events stream as NewBus creates it; tests and
// benchmarks that need the stream without a Bus use it too.
func EventsStreamConfig(cfg BusConfig) jetstream.StreamConfig {
	cfg = cfg.withDefaults()
	return jetstream.StreamConfig{Name: EventsStream, Subjects: []string{eventsPrefix + ">"}, Retention: jetstream.LimitsPolicy,
		MaxAge: cfg.EventMaxAge, Duplicates: cfg.DeliveryWindow, Storage: jetstream.FileStorage, Replicas: cfg.Replicas}
}

func (c BusConfig) withDefaults() BusConfig {
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.EventMaxAge == 0 {
		c.EventMaxAge = 30 * 24 * time.Hour
	}
	if c.TaskMaxAge == 0 {
		c.TaskMaxAge = 30 * 24 * time.Hour
	}
	if c.Duplicates == 0 {
		c.Duplicates = 2 * time.Minute
	}
	if c.DeliveryWindow == 0 {
		c.DeliveryWindow = DefaultDeliveryWindow
	}
	if c.LogAckTimeout == 0 {
		c.LogAckTimeout = 30 * time.Second
	}
	return c
}

// Bus is Nightshift's view of NATS: the streams events, work and task
// updates travel on. Every publish waits for the JetStream PubAck, so a
// returned nil means the message is stored.
type Bus struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	cancel jetstream.KeyValue
	// records is the task-state authority (records.go).
	records *Records
	// The log publishers' (logs.go): the count of lines NATS did not
	// store, and where losses are reported.
	logAckTimeout time.Duration
	logLost       atomic.Uint64
	log           *slog.Logger
}

// NewBus creates or updates the streams and buckets on nc's server. Until
// they exist it keeps trying, with backoff, until ctx ends: a role started
// before its NATS server, or at the same moment as a fresh cluster (whose
// JetStream meta leader takes seconds to elect), waits instead of failing.
// Each wait is logged once per backoff step, saying what it waits for. A
// configuration the server refuses for good (replicas above 1 on a server
// that is not clustered, subjects another stream owns) fails at once.
func NewBus(ctx context.Context, nc *nats.Conn, cfg BusConfig) (*Bus, error) {
	cfg = cfg.withDefaults()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncTimeout(cfg.LogAckTimeout))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wait := busRetryMin
	for attempt := 1; ; attempt++ {
		var kv jetstream.KeyValue
		err := errBusNotConnected
		if nc.IsConnected() { // else the connection retries on its own
			// A quick question first: a cluster without a meta leader yet
			// leaves requests unanswered, and stream creation would wait
			// out its whole timeout.
			actx, cancel := context.WithTimeout(ctx, time.Second)
			_, err = js.AccountInfo(actx)
			cancel()
			if err == nil {
				// A loaded cluster may take long to create replicated
				// streams: each attempt waits longer than the last.
				actx, cancel := context.WithTimeout(ctx, min(time.Duration(attempt)*busAttemptTimeout, 6*busAttemptTimeout))
				kv, err = ensureBus(actx, js, cfg)
				cancel()
			}
		}
		if err == nil {
			if attempt > 1 {
				log.Info("NATS JetStream ready", "attempts", attempt)
			}
			b := &Bus{nc: nc, js: js, cancel: kv, logAckTimeout: cfg.LogAckTimeout, log: log}
			if err = b.openRecords(ctx, cfg); err == nil {
				return b, nil
			}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("gave up waiting for NATS JetStream: %w", err)
		}
		if permanentBusError(err) {
			return nil, err
		}
		what := "NATS JetStream"
		if !nc.IsConnected() {
			what = "a NATS server at " + strings.Join(nc.Servers(), ",")
		}
		log.Warn("waiting for "+what, "err", err, "attempt", attempt, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("gave up waiting for %s: %w", what, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, busRetryMax)
		wait += time.Duration(rand.Int64N(int64(wait / 4))) // apart from processes started together
	}
}

// Backoff of NewBus between attempts, and the bound of one attempt.
var (
	busRetryMin       = 250 * time.Millisecond
	busRetryMax       = 5 * time.Second
	busAttemptTimeout = 5 * time.Second
	busCallTimeout    = 2 * time.Second
)

var errBusNotConnected = errors.New("not connected")

// ensureBus creates or updates the streams and the cancel bucket once.
func ensureBus(ctx context.Context, js jetstream.JetStream, cfg BusConfig) (jetstream.KeyValue, error) {
	streams := []jetstream.StreamConfig{
		EventsStreamConfig(cfg),
		{Name: WorkStream, Subjects: []string{workPrefix + ">"}, Retention: jetstream.WorkQueuePolicy,
			Duplicates: cfg.Duplicates},
		{Name: TasksStream, Subjects: []string{"nightshift.tasks.>"}, Retention: jetstream.LimitsPolicy,
			MaxAge: cfg.TaskMaxAge, Duplicates: cfg.Duplicates, MaxMsgSize: 4 << 20},
	}
	for _, sc := range streams {
		sc.Storage = jetstream.FileStorage
		sc.Replicas = cfg.Replicas
		err := answered(ctx, func(ctx context.Context) error { _, err := js.CreateOrUpdateStream(ctx, sc); return err })
		if err != nil {
			return nil, fmt.Errorf("create stream %s: %w", sc.Name, err)
		}
	}
	var kv jetstream.KeyValue
	err := answered(ctx, func(ctx context.Context) (err error) {
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: CancelBucket, TTL: 30 * 24 * time.Hour,
			Storage: jetstream.FileStorage, Replicas: cfg.Replicas})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", CancelBucket, err)
	}
	err = answered(ctx, func(ctx context.Context) error {
		_, err := js.CreateOrUpdateKeyValue(ctx, recordsConfig(cfg))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", RecordsBucket, err)
	}
	return kv, nil
}

// answered runs one create-or-update of a stream or bucket, asking again
// when no answer comes within busCallTimeout: on a cluster, processes that
// create the same stream at the same moment each propose it and JetStream
// answers only one of them; asked again, once the stream exists, it
// answers at once. The pause between asks is jittered, so processes that
// started together drift apart.
func answered(ctx context.Context, f func(context.Context) error) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, busCallTimeout)
		err := f(cctx)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(rand.Int64N(int64(300 * time.Millisecond)))):
		}
	}
}

// openRecords opens the task-state authority over the records bucket
// ensureBus created.
func (b *Bus) openRecords(ctx context.Context, cfg BusConfig) error {
	kv, err := b.js.KeyValue(ctx, RecordsBucket)
	if err != nil {
		return fmt.Errorf("open bucket %s: %w", RecordsBucket, err)
	}
	st, err := b.js.Stream(ctx, "KV_"+RecordsBucket)
	if err != nil {
		return fmt.Errorf("open bucket %s: %w", RecordsBucket, err)
	}
	b.records = &Records{kv: kv, stream: st, bus: b, now: time.Now, log: b.log}
	return nil
}

// permanentBusError reports whether the server refused the streams'
// configuration itself, which no amount of waiting changes.
func permanentBusError(err error) bool {
	var api *jetstream.APIError
	if !errors.As(err, &api) {
		return false
	}
	switch api.ErrorCode {
	case 10074, // replicas > 1 not supported in non-clustered mode
		10065, // subjects overlap with an existing stream
		10052, // invalid stream configuration
		10061: // replicas configuration can not be updated
		return true
	}
	return false
}

// JetStream returns the JetStream handle (ingress keeps its own buckets).
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// Ping checks the server answers and JetStream is enabled.
func (b *Bus) Ping(ctx context.Context) error {
	if !b.nc.IsConnected() {
		return errors.New("orchestrator: nats not connected")
	}
	_, err := b.js.AccountInfo(ctx)
	return err
}

// Publish stores ev on its event subject with Nats-Msg-Id = ev.DeliveryID,
// returning after the PubAck. A delivery the stream already holds (within
// its DeliveryWindow) is not stored again: Publish returns ErrDuplicate.
func (b *Bus) Publish(ctx context.Context, ev *Event) error {
	return PublishEvent(ctx, b.js, ev)
}

// PublishEvent is Bus.Publish over a bare JetStream handle.
func PublishEvent(ctx context.Context, js jetstream.JetStream, ev *Event) error {
	if ev.DeliveryID == "" {
		return errors.New("orchestrator: event without delivery id")
	}
	data, err := ev.Encode()
	if err != nil {
		return fmt.Errorf("encode event %s: %w", ev.ID, err)
	}
	ack, err := js.Publish(ctx, EventSubject(ev.Source, ev.Kind), data, jetstream.WithMsgID(ev.DeliveryID))
	if err != nil {
		return fmt.Errorf("publish event %s: %w", ev.DeliveryID, err)
	}
	if ack.Duplicate {
		return ErrDuplicate
	}
	return nil
}

// WorkItem is one run of a task as a worker receives it: everything the
// worker needs, so it never reads the scheduler's database.
type WorkItem struct {
	TaskID    string    `json:"task_id"`
	Run       int       `json:"run"`
	Repo      string    `json:"repo"`
	Base      string    `json:"base"`
	Branch    string    `json:"branch"`
	Agent     string    `json:"agent"`
	Prompt    string    `json:"prompt"`
	SessionID string    `json:"session_id,omitempty"`
	FollowUp  bool      `json:"follow_up,omitempty"`
	Messages  []Message `json:"messages,omitempty"`
	Source    Source    `json:"source"`
	Kind      string    `json:"kind"`
	Target    Target    `json:"target"`
	Actor     Actor     `json:"actor"`
	// Retry marks a new run of the task's prompt after an earlier run: it
	// starts from the task's pushed branch (keeping its commits) unless
	// FromBase, and falls back to the base when nothing was pushed.
	Retry bool `json:"retry,omitempty"`
	// FromBase starts a retry from the task's base, replacing its branch.
	FromBase bool `json:"from_base,omitempty"`
	// PRURL is the pull request the task owns, when it has one.
	PRURL string `json:"pr_url,omitempty"`
	// Commit is the task's last pushed commit: a run that ends on it
	// changed nothing.
	Commit string `json:"commit,omitempty"`
	// Mode is the run's mode: change, plan (read-only, proposes a plan)
	// or answer (read-only, answers). "" is change.
	Mode string `json:"mode,omitempty"`
	// Plan is the approved plan a change run carries out.
	Plan string `json:"plan,omitempty"`
	// BudgetTokens and BudgetCostUSD bound the run's model usage on top
	// of the repository's budget (an automation's per-run budget).
	BudgetTokens  int64   `json:"budget_tokens,omitempty"`
	BudgetCostUSD float64 `json:"budget_cost_usd,omitempty"`
}

func (b *Bus) publishWork(ctx context.Context, w WorkItem) error {
	data, err := json.Marshal(w)
	if err != nil {
		return err
	}
	_, err = b.js.Publish(ctx, WorkSubject(w.TaskID), data, jetstream.WithMsgID(w.TaskID+"."+strconv.Itoa(w.Run)))
	if err != nil {
		return fmt.Errorf("publish work for task %s: %w", w.TaskID, err)
	}
	return nil
}

// StateReport is a state change of a task as published on its state subject.
type StateReport struct {
	TaskID string `json:"task_id"`
	Run    int    `json:"run"`
	// Attempt is the delivery attempt of the run (1 unless redelivered).
	Attempt int       `json:"attempt,omitempty"`
	Seq     int       `json:"seq"`
	State   State     `json:"state"`
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
	// Recorded is set when the publisher already stored the transition.
	Recorded bool  `json:"recorded,omitempty"`
	Patch    Patch `json:"patch"`
	// Task is the stored task after the change, when Recorded.
	Task *Task `json:"task,omitempty"`
}

func (b *Bus) publishState(ctx context.Context, r StateReport) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	id := fmt.Sprintf("%s.%d.%d.%d.%s", r.TaskID, r.Run, r.Attempt, r.Seq, r.State)
	if _, err := b.js.Publish(ctx, StateSubject(r.TaskID), data, jetstream.WithMsgID(id)); err != nil {
		return fmt.Errorf("publish state of task %s: %w", r.TaskID, err)
	}
	return nil
}

// LogLine is one line of a task's log.
type LogLine struct {
	TaskID string    `json:"task_id"`
	Run    int       `json:"run"`
	At     time.Time `json:"at"`
	// Stream is agent, tool, test, setup or system.
	Stream string `json:"stream"`
	Text   string `json:"text"`
}

// DiffReport carries a task's diff against its base.
type DiffReport struct {
	TaskID string   `json:"task_id"`
	Run    int      `json:"run"`
	Stat   DiffStat `json:"stat"`
	Patch  string   `json:"patch"`
}

func (b *Bus) publishDiff(ctx context.Context, d DiffReport) error {
	data, err := json.Marshal(d)
	if err != nil {
		return err
	}
	_, err = b.js.Publish(ctx, DiffSubject(d.TaskID), data, jetstream.WithMsgID(fmt.Sprintf("%s.%d.diff", d.TaskID, d.Run)))
	return err
}

// LastDiff returns the newest diff published for task id (an empty one
// when none was).
func (b *Bus) LastDiff(ctx context.Context, id string) (DiffReport, error) {
	st, err := b.js.Stream(ctx, TasksStream)
	if err != nil {
		return DiffReport{}, err
	}
	m, err := st.GetLastMsgForSubject(ctx, DiffSubject(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return DiffReport{TaskID: id}, nil
	}
	if err != nil {
		return DiffReport{}, fmt.Errorf("read diff of task %s: %w", id, err)
	}
	var d DiffReport
	if err := json.Unmarshal(m.Data, &d); err != nil {
		return DiffReport{}, fmt.Errorf("decode diff of task %s: %w", id, err)
	}
	return d, nil
}

// lastStateSeq returns the Seq of the newest state report published for
// task id (0 when none was).
func (b *Bus) lastStateSeq(ctx context.Context, id string) (int, error) {
	st, err := b.js.Stream(ctx, TasksStream)
	if err != nil {
		return 0, err
	}
	m, err := st.GetLastMsgForSubject(ctx, StateSubject(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var r StateReport
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return 0, nil
	}
	return r.Seq, nil
}

// MarkCancelled records that task id is cancelled, so a worker that picks it
// up later does not start it, and tells a worker running it to stop.
func (b *Bus) MarkCancelled(ctx context.Context, id string, run int) error {
	if _, err := b.cancel.Put(ctx, id, []byte(strconv.Itoa(run))); err != nil {
		return fmt.Errorf("mark task %s cancelled: %w", id, err)
	}
	return b.nc.Publish(ControlSubject(id), []byte("cancel"))
}

// Cancelled reports whether run of task id was cancelled.
func (b *Bus) Cancelled(ctx context.Context, id string, run int) (bool, error) {
	e, err := b.cancel.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	r, _ := strconv.Atoi(string(e.Value()))
	return r >= run, nil
}
