package automation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/orchestrator"
)

// Observed events: a webhook delivery that starts no built-in work (an
// issue labeled bug, a comment without the trigger word, a pull request
// opened) is still normalized, and when an enabled automation's on + where
// matches it, the webhook publishes it on ObservedSubject. Only the
// automation engines consume that stream; the scheduler never sees it, so
// an observed event starts an automation's run and nothing else.
const (
	// ObservedStream holds the observed events (nightshift.observed.>).
	ObservedStream = "NIGHTSHIFT_OBSERVED"
	observedPrefix = "nightshift.observed."
	// observedMaxAge keeps observed events as long as the events stream
	// remembers delivery ids for transport dedupe.
	observedMaxAge = 7 * 24 * time.Hour
	// observedWindow is the stream's memory of delivery ids: a webhook
	// redelivered within it is stored once (GitHub's redelivery horizon
	// is three days, as for the events stream).
	observedWindow = 72 * time.Hour
)

// ObservedSubject is the subject of an observed event of source and kind.
func ObservedSubject(source orchestrator.Source, kind string) string {
	return observedPrefix + orchestrator.EventSubject(source, kind)[len("nightshift.events."):]
}

func ensureObservedStream(ctx context.Context, js jetstream.JetStream, replicas int) error {
	if replicas < 1 {
		replicas = 1
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: ObservedStream, Subjects: []string{observedPrefix + ">"},
		Description: "Nightshift events no built-in trigger takes that an automation matches (webhook -> automations)",
		Retention:   jetstream.LimitsPolicy, MaxAge: observedMaxAge, Duplicates: observedWindow, Storage: jetstream.FileStorage,
		Replicas: replicas, MaxMsgSize: 4 << 20})
	if err != nil {
		return fmt.Errorf("create stream %s: %w", ObservedStream, err)
	}
	return nil
}

// Observer tells a webhook whether an event no built-in trigger takes is
// wanted by an automation, and stores it for the engines. It follows the
// automations bucket (a switch or a new version is seen at once, on every
// host). Any number of observers and engines may run.
type Observer struct {
	js jetstream.JetStream
	e  *Engine // its definitions only
}

// NewObserver opens the automations bucket and the observed stream
// (creating them), and follows the automations until ctx is done or the
// connection closes.
func NewObserver(ctx context.Context, js jetstream.JetStream, replicas int, logger *slog.Logger) (*Observer, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := ensureObservedStream(ctx, js, replicas); err != nil {
		return nil, err
	}
	defs, err := js.CreateOrUpdateKeyValue(ctx, defsConfig(replicas))
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", DefinitionsBucket, err)
	}
	e := &Engine{kv: kvs{defs: defs}, log: logger.With("component", "automation-observer"), defs: map[string]*entry{}}
	if err := e.watchDefinitions(ctx); err != nil {
		return nil, err
	}
	return &Observer{js: js, e: e}, nil
}

// Observes reports whether an enabled automation matches ev (on + where).
func (o *Observer) Observes(ev *orchestrator.Event) bool {
	for _, d := range o.e.snapshot() {
		if d.rec.Enabled && d.c.Matches(ev) {
			return true
		}
	}
	return false
}

// Watches reports whether an enabled automation takes events of source
// (its on.source glob matches): a webhook skips normalizing what none can
// want.
func (o *Observer) Watches(source orchestrator.Source) bool {
	for _, d := range o.e.snapshot() {
		if d.rec.Enabled && d.c.filter != nil && d.c.filter.matchesSource(source) {
			return true
		}
	}
	return false
}

// Publish stores ev on ObservedSubject with Nats-Msg-Id ev.DeliveryID,
// after the PubAck; a delivery the stream already holds returns
// orchestrator.ErrDuplicate.
func (o *Observer) Publish(ctx context.Context, ev *orchestrator.Event) error {
	return publishObserved(ctx, o.js, ev)
}

func publishObserved(ctx context.Context, js jetstream.JetStream, ev *orchestrator.Event) error {
	if ev.DeliveryID == "" {
		return errors.New("automation: observed event without delivery id")
	}
	data, err := ev.Encode()
	if err != nil {
		return fmt.Errorf("encode event %s: %w", ev.ID, err)
	}
	ack, err := js.Publish(ctx, ObservedSubject(ev.Source, ev.Kind), data, jetstream.WithMsgID(ev.DeliveryID))
	if err != nil {
		return fmt.Errorf("publish observed event %s: %w", ev.DeliveryID, err)
	}
	if ack.Duplicate {
		return orchestrator.ErrDuplicate
	}
	return nil
}
