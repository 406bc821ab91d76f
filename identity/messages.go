package identity

import (
	"context"
	"fmt"
	"time"
)

// Messages returns the identity's messages matching q, newest first.
// Released identities keep their history readable.
func (s *Service) Messages(ctx context.Context, identityID string, q MessageQuery) ([]Message, error) {
	id, err := s.Get(ctx, identityID)
	if err != nil {
		return nil, err
	}
	msgs, err := s.p.Messages(ctx, id.account(), q)
	if err != nil {
		return nil, fmt.Errorf("identity: messages of %s: %w", id.Name, err)
	}
	return msgs, nil
}

// WaitMessages returns the messages matching q as soon as there is at
// least one, waiting up to wait for the first to arrive. With wait <= 0 it
// does not wait. When nothing arrives in time it returns an empty slice
// and no error; a cancelled ctx returns ctx's error.
func (s *Service) WaitMessages(ctx context.Context, identityID string, q MessageQuery, wait time.Duration) ([]Message, error) {
	var out []Message
	err := s.wait(ctx, identityID, wait, func(id Identity) (bool, error) {
		msgs, err := s.p.Messages(ctx, id.account(), q)
		if err != nil {
			return false, fmt.Errorf("identity: messages of %s: %w", id.Name, err)
		}
		out = msgs
		return len(msgs) > 0, nil
	})
	if out == nil {
		out = []Message{}
	}
	return out, err
}

// OTP returns the newest one-time code or verification link among the
// identity's messages matching q, waiting up to wait for one to arrive.
// found is false when none arrived in time.
func (s *Service) OTP(ctx context.Context, identityID string, q MessageQuery, wait time.Duration) (otp OTP, found bool, err error) {
	err = s.wait(ctx, identityID, wait, func(id Identity) (bool, error) {
		msgs, err := s.p.Messages(ctx, id.account(), q)
		if err != nil {
			return false, fmt.Errorf("identity: messages of %s: %w", id.Name, err)
		}
		otp, found = FindOTP(msgs)
		return found, nil
	})
	return otp, found, err
}

// wait calls check until it reports done, re-checking each time the
// provider signals a possible arrival, until wait elapses or ctx ends.
func (s *Service) wait(ctx context.Context, identityID string, wait time.Duration, check func(Identity) (bool, error)) error {
	id, err := s.Get(ctx, identityID)
	if err != nil {
		return err
	}
	var deadline <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	for {
		// Watch before reading so an arrival between the read and the
		// select still wakes us.
		ch, stop := s.p.Watch(id.account())
		done, err := check(id)
		if err != nil || done || wait <= 0 {
			stop()
			return err
		}
		select {
		case <-ch:
			stop()
		case <-deadline:
			stop()
			return nil
		case <-ctx.Done():
			stop()
			return ctx.Err()
		}
	}
}
