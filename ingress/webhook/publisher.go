package webhook

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/orchestrator"
)

// Publisher stores an event durably. Publish returns only after JetStream
// acknowledged the message (PubAck); it publishes with Nats-Msg-Id set to
// ev.DeliveryID.
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

// Publish implements Publisher.
func (p *JetStreamPublisher) Publish(ctx context.Context, ev *orchestrator.Event) error {
	data, err := EncodeEvent(ev)
	if err != nil {
		return fmt.Errorf("encode event %s: %w", ev.ID, err)
	}
	msg := nats.NewMsg(orchestrator.EventSubject(ev.Source, ev.Kind))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, ev.DeliveryID)
	if _, err := p.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish event %s: %w", ev.ID, err)
	}
	return nil
}

// EncodeEvent is json.Marshal(ev) without re-validating ev.Raw, which must
// be valid JSON (the Handler only sets Raw to a body it decoded, or to a
// JSON string). Large payloads make this the cheaper encoding by far.
func EncodeEvent(ev *orchestrator.Event) ([]byte, error) {
	raw := ev.Raw
	cp := *ev
	cp.Raw = nil
	data, err := json.Marshal(&cp)
	if err != nil || len(raw) == 0 {
		return data, err
	}
	out := make([]byte, 0, len(data)+len(raw)+8)
	out = append(out, data[:len(data)-1]...)
	out = append(out, `,"raw":`...)
	out = append(out, raw...)
	return append(out, '}'), nil
}
