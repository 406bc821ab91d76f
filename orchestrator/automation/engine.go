package automation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator"
)

// Config configures an Engine. Zero values mean the documented defaults.
type Config struct {
	// Replicas of the buckets. Default 1.
	Replicas int
	// TeamMember reports whether GitHub user login belongs to org/team
	// (allow.teams; asked only for GitHub events). Nil: team rules cannot
	// be checked and let nobody through.
	TeamMember func(ctx context.Context, org, team, login string) (bool, error)
	// CanWrite reports whether the actor of a forge event (GitHub, GitLab,
	// Gitea) has write access to the event's repository: an event
	// automation without allow: takes only such actors. Nil: such events
	// are refused unless allow: names their actor.
	CanWrite func(ctx context.Context, ev orchestrator.Event) (bool, error)
	// OnPause hears that an automation paused itself and why (a chat
	// notification). The pause is also a timeline entry, a log line and
	// the nightshift_automation_pauses_total metric.
	OnPause func(ctx context.Context, name, reason string)
	// QueueDelay is how long a matched event waits before it is tried
	// again when the automation's runs are all busy. Default 10s.
	QueueDelay time.Duration
	// RunRetention is how long a run stays on the timeline (and in the
	// inbox) after its last change. Default DefaultRunRetention (90 days).
	RunRetention time.Duration
	// Poll bounds how long the schedule loop sleeps. Default 1s.
	Poll    time.Duration
	Clock   func() time.Time
	Logger  *slog.Logger
	Metrics prometheus.Registerer
}

// Engine stores automations and runs them: it fires schedules, matches
// events, applies the guard rails and follows the runs' tasks. Any number
// of engines may run against the same JetStream (see the package doc).
type Engine struct {
	js  jetstream.JetStream
	kv  kvs
	cfg Config
	log *slog.Logger
	m   *metrics

	mu   sync.Mutex
	defs map[string]*entry
	// fired counts the events this engine published (tests).
	fired atomic.Int64
	// loopStart is when the schedule loop first looked at the clock, in
	// Unix nanoseconds (tests: the catch-up horizon).
	loopStart atomic.Int64
	// afterClaim, when set (tests), runs right after this engine claimed
	// a tick; returning true abandons the tick there, as an engine that
	// stopped between the claim and the publish would.
	afterClaim func(name string, tick time.Time) bool
}

type entry struct {
	rec Record
	c   *Compiled
}

type metrics struct {
	runs   *prometheus.CounterVec
	pauses prometheus.Counter
}

// New opens (creating) the buckets and returns an engine.
func New(ctx context.Context, js jetstream.JetStream, cfg Config) (*Engine, error) {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.QueueDelay <= 0 {
		cfg.QueueDelay = 10 * time.Second
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.RunRetention <= 0 {
		cfg.RunRetention = DefaultRunRetention
	}
	k, err := openBuckets(ctx, js, cfg.Replicas, cfg.RunRetention)
	if err != nil {
		return nil, err
	}
	if err := ensureObservedStream(ctx, js, cfg.Replicas); err != nil {
		return nil, err
	}
	e := &Engine{js: js, kv: k, cfg: cfg, log: cfg.Logger.With("component", "automation"), defs: map[string]*entry{}}
	e.m = &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nightshift_automation_runs_total",
			Help: "Automation timeline entries by automation and status (started, refused, skipped, succeeded, failed, cancelled)."},
			[]string{"automation", "status"}),
		pauses: prometheus.NewCounter(prometheus.CounterOpts{Name: "nightshift_automation_pauses_total",
			Help: "Automations paused after consecutive failed runs."}),
	}
	if cfg.Metrics != nil {
		for _, c := range []prometheus.Collector{e.m.runs, e.m.pauses} {
			if err := cfg.Metrics.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					return nil, err
				}
			}
		}
	}
	return e, nil
}

// Fired returns how many run events this engine published.
func (e *Engine) Fired() int64 { return e.fired.Load() }

// Seed stores the automations of nightshift.yaml: a new one is created
// (enabled unless disabled: true), one whose config entry changed gets a
// new version (keeping its switch), and one seeded from config that the
// config no longer names is deleted. Automations created through the API
// are left alone. An invalid entry fails with its key
// (automations[1].where[0].field).
func (e *Engine) Seed(ctx context.Context, defs []config.Automation) error {
	named := map[string]bool{}
	for i, d := range defs {
		if _, err := Compile(d); err != nil {
			return prefixed(fmt.Sprintf("automations[%d]", i), err)
		}
		named[d.Name] = true
		h := hash(d)
		_, err := e.put(ctx, d.Name, func(r *Record, exists bool) error {
			if exists && r.ConfigHash == h {
				return errSkip
			}
			if !exists {
				r.Enabled = !d.Disabled
			}
			r.Definition, r.Origin, r.ConfigHash, r.UpdatedBy = d, "config", h, "config"
			return nil
		})
		if err != nil && !errors.Is(err, errSkip) {
			return fmt.Errorf("seed automation %s: %w", d.Name, err)
		}
	}
	recs, err := e.List(ctx)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if r.Origin == "config" && !named[r.Definition.Name] {
			if err := e.kv.defs.Delete(ctx, defKey(r.Definition.Name)); err != nil {
				return err
			}
		}
	}
	return nil
}

func prefixed(prefix string, err error) error {
	var ce *config.Error
	if errors.As(err, &ce) {
		return &config.Error{Key: prefix + "." + ce.Key, Msg: ce.Msg}
	}
	return fmt.Errorf("%s: %w", prefix, err)
}

// put changes the record of name in one revision-checked write.
func (e *Engine) put(ctx context.Context, name string, fn func(r *Record, exists bool) error) (Record, error) {
	var out Record
	_, err := update(ctx, e.kv.defs, defKey(name), func(r *Record) error {
		exists := r.Definition.Name != ""
		if err := fn(r, exists); err != nil {
			return err
		}
		r.UpdatedAt = e.cfg.Clock().UTC()
		r.Version++
		out = *r
		return nil
	})
	return out, err
}

// Put stores def as a new version (created enabled), by who.
func (e *Engine) Put(ctx context.Context, def config.Automation, by string) (Record, error) {
	if _, err := Compile(def); err != nil {
		return Record{}, err
	}
	r, err := e.put(ctx, def.Name, func(r *Record, exists bool) error {
		if !exists {
			r.Enabled = !def.Disabled
		}
		r.Definition, r.Origin, r.UpdatedBy = def, "api", by
		return nil
	})
	if err != nil {
		return Record{}, err
	}
	return e.Get(ctx, r.Definition.Name)
}

// Get returns the current version of name.
func (e *Engine) Get(ctx context.Context, name string) (Record, error) {
	r, _, err := getJSON[Record](ctx, e.kv.defs, defKey(name))
	return r, err
}

// History returns the stored versions of name, oldest first.
func (e *Engine) History(ctx context.Context, name string) ([]Record, error) {
	h, err := e.kv.defs.History(ctx, defKey(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, v := range h {
		var r Record
		if v.Operation() != jetstream.KeyValuePut || json.Unmarshal(v.Value(), &r) != nil {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// List returns every automation, by name.
func (e *Engine) List(ctx context.Context) ([]Record, error) {
	lister, err := e.kv.defs.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []Record
	for k := range lister.Keys() {
		r, err := e.Get(ctx, strings.TrimPrefix(k, "a."))
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Record) int { return strings.Compare(a.Definition.Name, b.Definition.Name) })
	return out, nil
}

// State returns the guard-rail state of name.
func (e *Engine) State(ctx context.Context, name string) (State, error) {
	s, _, err := getJSON[State](ctx, e.kv.state, stateKey(name))
	if errors.Is(err, ErrNotFound) {
		return State{}, nil
	}
	return s, err
}

// NextFire returns the next tick of name after now (zero for an event
// automation, or one disabled or paused).
func (e *Engine) NextFire(r Record, st State) time.Time {
	c, err := Compile(r.Definition)
	if err != nil || !r.Enabled || st.Paused {
		return time.Time{}
	}
	return c.Next(e.cfg.Clock())
}

// SetEnabled switches name on or off as a new version. Enabling also
// resumes a paused automation and clears its failure count.
func (e *Engine) SetEnabled(ctx context.Context, name string, on bool, by string) (Record, error) {
	if _, err := e.Get(ctx, name); err != nil {
		return Record{}, err
	}
	if _, err := e.put(ctx, name, func(r *Record, exists bool) error {
		if !exists {
			return ErrNotFound
		}
		r.Enabled, r.UpdatedBy = on, by
		return nil
	}); err != nil {
		return Record{}, err
	}
	if on {
		if _, err := update(ctx, e.kv.state, stateKey(name), func(s *State) error {
			if !s.Paused && s.Failures == 0 {
				return errSkip
			}
			s.Paused, s.PausedReason, s.Failures = false, "", 0
			return nil
		}); err != nil && !errors.Is(err, errSkip) {
			return Record{}, err
		}
	}
	return e.Get(ctx, name)
}

// Runs returns the timeline of name, newest first.
func (e *Engine) Runs(ctx context.Context, name string, limit int) ([]Run, error) {
	if _, err := e.Get(ctx, name); err != nil {
		return nil, err
	}
	return listRuns(ctx, e.kv.runs, "run."+name+".*", limit)
}

// Inbox returns the runs of automations with inbox: true that started a
// task, newest first, each marked Read for principal subject.
func (e *Engine) Inbox(ctx context.Context, subject string, limit int) ([]Run, error) {
	runs, err := listRuns(ctx, e.kv.runs, "run.*.*", 0)
	if err != nil {
		return nil, err
	}
	read := map[string]bool{}
	if lister, err := e.kv.runs.ListKeysFiltered(ctx, "read."+digest(subject)+".*"); err == nil {
		for k := range lister.Keys() {
			read[lastToken(k)] = true
		}
	}
	var out []Run
	for _, r := range runs {
		if !r.Inbox || r.TaskID == "" || r.Status == RunRefused || r.Status == RunSkipped || r.Status == RunPending {
			continue
		}
		r.Read = read[r.ID]
		out = append(out, r)
		if limit > 0 && len(out) == limit {
			break
		}
	}
	return out, nil
}

// MarkRead marks run id read (or unread) for principal subject.
func (e *Engine) MarkRead(ctx context.Context, subject, id string, read bool) error {
	key := "read." + digest(subject) + "." + id
	if !read {
		err := e.kv.runs.Delete(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		return err
	}
	_, err := e.kv.runs.Put(ctx, key, []byte(e.cfg.Clock().UTC().Format(time.RFC3339)))
	return err
}

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

// Run consumes events, fires schedules and follows run outcomes until ctx
// is done.
func (e *Engine) Run(ctx context.Context) error {
	if err := e.watchDefinitions(ctx); err != nil {
		return err
	}
	events, err := e.js.CreateOrUpdateConsumer(ctx, orchestrator.EventsStream, jetstream.ConsumerConfig{
		Durable: "automations", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxDeliver: -1,
		DeliverPolicy: jetstream.DeliverNewPolicy, FilterSubject: "nightshift.events.>", MaxAckPending: 64,
	})
	if err != nil {
		return fmt.Errorf("create automation events consumer: %w", err)
	}
	states, err := e.js.CreateOrUpdateConsumer(ctx, orchestrator.TasksStream, jetstream.ConsumerConfig{
		Durable: "automation-outcomes", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxDeliver: -1,
		DeliverPolicy: jetstream.DeliverNewPolicy, FilterSubject: orchestrator.StatesWildcard, MaxAckPending: 64,
	})
	if err != nil {
		return fmt.Errorf("create automation outcomes consumer: %w", err)
	}
	// Events no built-in trigger took that an automation matched when
	// the webhook received them (see Observer).
	observed, err := e.js.CreateOrUpdateConsumer(ctx, ObservedStream, jetstream.ConsumerConfig{
		Durable: "automations", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxDeliver: -1,
		DeliverPolicy: jetstream.DeliverAllPolicy, FilterSubject: observedPrefix + ">", MaxAckPending: 64,
	})
	if err != nil {
		return fmt.Errorf("create automation observed-events consumer: %w", err)
	}
	var wg sync.WaitGroup
	for _, c := range []struct {
		cons jetstream.Consumer
		fn   func(context.Context, jetstream.Msg)
	}{{events, e.handleEvent}, {observed, e.handleEvent}, {states, e.handleState}} {
		cc, err := c.cons.Consume(func(m jetstream.Msg) { c.fn(context.WithoutCancel(ctx), m) })
		if err != nil {
			return fmt.Errorf("consume: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ctx.Done()
			cc.Drain()
			<-cc.Closed()
		}()
	}
	e.runSchedules(ctx)
	wg.Wait()
	return nil
}

// watchDefinitions keeps e.defs in step with the bucket; it returns once
// the current values are loaded.
func (e *Engine) watchDefinitions(ctx context.Context) error {
	w, err := e.kv.defs.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch automations: %w", err)
	}
	ready := make(chan struct{})
	go func() {
		defer w.Stop()
		loaded := false
		for {
			select {
			case <-ctx.Done():
				return
			case v, ok := <-w.Updates():
				if !ok {
					return
				}
				if v == nil {
					if !loaded {
						loaded = true
						close(ready)
					}
					continue
				}
				e.apply(v)
			}
		}
	}()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *Engine) apply(v jetstream.KeyValueEntry) {
	name := strings.TrimPrefix(v.Key(), "a.")
	e.mu.Lock()
	defer e.mu.Unlock()
	if v.Operation() != jetstream.KeyValuePut {
		delete(e.defs, name)
		return
	}
	var r Record
	if err := json.Unmarshal(v.Value(), &r); err != nil {
		e.log.Error("stored automation unreadable", "automation", name, "err", err)
		return
	}
	c, err := Compile(r.Definition)
	if err != nil {
		e.log.Error("stored automation invalid; not run", "automation", name, "err", err)
		delete(e.defs, name)
		return
	}
	e.defs[name] = &entry{rec: r, c: c}
}

func (e *Engine) snapshot() []*entry {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*entry, 0, len(e.defs))
	for _, d := range e.defs {
		out = append(out, d)
	}
	return out
}
