package webhook

import (
	"context"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/orchestrator"
)

// Publisher stores an event durably. Publish returns only after JetStream
// acknowledged the message (PubAck); it publishes with Nats-Msg-Id set to
// ev.DeliveryID and returns orchestrator.ErrDuplicate when the stream already
// holds that delivery (the events stream remembers ids for 72 hours: see
// orchestrator.EventsStreamConfig).
type Publisher interface {
	Publish(ctx context.Context, ev *orchestrator.Event) error
}

// JetStreamPublisher is the plain Publisher: it publishes the JSON event on
// orchestrator.EventSubject(ev.Source, ev.Kind) and waits for the PubAck.
// The stream covering those subjects must exist.
type JetStreamPublisher struct {
	js jetstream.JetStream
}

var _ Publisher = (*JetStreamPublisher)(nil)

// NewJetStreamPublisher returns a Publisher over js.
func NewJetStreamPublisher(js jetstream.JetStream) *JetStreamPublisher {
	return &JetStreamPublisher{js: js}
}

// Publish implements Publisher. A delivery the events stream already holds
// returns orchestrator.ErrDuplicate.
func (p *JetStreamPublisher) Publish(ctx context.Context, ev *orchestrator.Event) error {
	return orchestrator.PublishEvent(ctx, p.js, ev)
}

// EncodeEvent is json.Marshal(ev) without re-validating ev.Raw (see
// orchestrator.Event.Encode).
func EncodeEvent(ev *orchestrator.Event) ([]byte, error) { return ev.Encode() }
