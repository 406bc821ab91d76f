package identity

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Provider is the driver interface an identity backend implements. The
// Service calls Provision once per identity (once more, with Displace set,
// after an *AddressTakenError named a holder found dead) and Release once
// when it ends;
// a provider keeps whatever it needs to find the account again in
// Account.Ref. Every provider runs the conformance suite in
// identity/identitytest.
type Provider interface {
	// Name is the provider's configuration name ("local", "ravi").
	Name() string
	// Provision creates the account for a new identity. Provisioning a
	// name that was released before must succeed.
	Provision(ctx context.Context, req ProvisionRequest) (Account, error)
	// Release returns the account's resources (phone lease, remote
	// identity). Releasing twice is not an error.
	Release(ctx context.Context, acct Account) error
	// Messages returns the account's messages matching q, newest first.
	Messages(ctx context.Context, acct Account, q MessageQuery) ([]Message, error)
	// Watch returns a channel that is closed when a message for acct may
	// have arrived after the call, and a function to stop watching. Callers
	// watch first and then read Messages, so no arrival is missed.
	Watch(acct Account) (<-chan struct{}, func())
}

// ProvisionRequest says which identity a Provider should create an account for.
type ProvisionRequest struct {
	IdentityID string
	Name       string // local part of the address and display name
	// Displace names a dead identity whose hold on the name's address
	// may be taken over: the Service sets it only for an owner it found
	// without a record and tombstoned, so that no record of it can ever be
	// stored (a creator killed between Provision and storing the
	// identity). A provider gives the address to IdentityID only while
	// exactly that identity holds it, and returns the dead identity's
	// other resources (phone lease); a hold by anyone else is refused as
	// without Displace.
	Displace string
}

// AddressTakenError is what Provision returns when the name's address is
// held by another identity: Owner is that identity's id, so the Service can
// tell a live owner from a dead one. errors.Is(err, Err) holds (Err is the
// provider's sentinel, e.g. local.ErrAddressTaken).
type AddressTakenError struct {
	Address string
	Owner   string
	Err     error
}

func (e *AddressTakenError) Error() string {
	return fmt.Sprintf("%v: %s (held by identity %s)", e.Err, e.Address, e.Owner)
}

func (e *AddressTakenError) Unwrap() error { return e.Err }

// Account is a provider's view of one identity.
type Account struct {
	IdentityID string
	Name       string
	Email      string
	Phone      string
	Ref        string // provider-specific handle (e.g. the Ravi identity uuid)
}

// MessageKind tells mail and SMS apart.
type MessageKind string

// Message kinds.
const (
	KindEmail MessageKind = "email"
	KindSMS   MessageKind = "sms"
)

// Message is one received email or SMS.
type Message struct {
	ID         string      `json:"id"`
	Kind       MessageKind `json:"kind"`
	From       string      `json:"from"`
	To         string      `json:"to"`
	Subject    string      `json:"subject,omitempty"`
	Body       string      `json:"body"`
	ReceivedAt time.Time   `json:"received_at"`
}

// LogValue keeps message contents (which carry one-time codes) out of logs.
func (m Message) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", m.ID), slog.String("kind", string(m.Kind)), slog.String("body", "REDACTED"))
}

// MessageQuery filters messages. The zero value matches every message.
type MessageQuery struct {
	Kind  MessageKind // empty: both kinds
	Since time.Time   // only messages received strictly after Since
	Limit int         // 0: no limit
}

// Filter applies q to msgs (already newest first) and returns the matches.
// Providers that cannot filter remotely use it.
func (q MessageQuery) Filter(msgs []Message) []Message {
	out := make([]Message, 0, len(msgs))
	for _, m := range msgs {
		if q.Kind != "" && m.Kind != q.Kind {
			continue
		}
		if !q.Since.IsZero() && !m.ReceivedAt.After(q.Since) {
			continue
		}
		out = append(out, m)
		if q.Limit > 0 && len(out) == q.Limit {
			break
		}
	}
	return out
}
