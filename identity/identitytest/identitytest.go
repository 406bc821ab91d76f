// Package identitytest is the conformance suite every identity.Provider
// runs: provisioning, delivery, newest-first listing, filtering, watching
// and release.
package identitytest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/identity"
)

// Harness adapts one provider to the suite.
type Harness struct {
	// New returns a fresh provider with no identities.
	New func(t *testing.T) identity.Provider
	// Deliver sends a message to acct through the provider's real inbound
	// path (SMTP, webhook, remote API). Kind is email or sms; subject is
	// ignored for sms.
	Deliver func(t *testing.T, p identity.Provider, acct identity.Account, kind identity.MessageKind, subject, body string)
	// SMS reports whether provisioned accounts have phone numbers.
	SMS bool
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	ctx := context.Background()
	t.Run("ProvisionDeliverList", func(t *testing.T) {
		p := h.New(t)
		acct, err := p.Provision(ctx, identity.ProvisionRequest{IdentityID: "01TESTIDENTITY0000000000001", Name: "agent-conform1"})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(acct.Email, "agent-conform1@") {
			t.Fatalf("email %q does not start with the name", acct.Email)
		}
		if h.SMS && acct.Phone == "" {
			t.Fatal("no phone")
		}
		msgs, err := p.Messages(ctx, acct, identity.MessageQuery{})
		if err != nil || len(msgs) != 0 {
			t.Fatalf("fresh inbox: %v %v", msgs, err)
		}
		before := time.Now().Add(-time.Second)
		h.Deliver(t, p, acct, identity.KindEmail, "first", "body one")
		h.Deliver(t, p, acct, identity.KindEmail, "second", "body two")
		if h.SMS {
			h.Deliver(t, p, acct, identity.KindSMS, "", "sms body")
		}
		all := waitFor(t, p, acct, identity.MessageQuery{Kind: identity.KindEmail}, 2)
		if all[0].Subject != "second" || all[1].Subject != "first" {
			t.Fatalf("not newest first: %q, %q", all[0].Subject, all[1].Subject)
		}
		if !strings.Contains(all[1].Body, "body one") || all[0].Kind != identity.KindEmail || all[0].ID == "" || all[0].ID == all[1].ID {
			t.Fatalf("bad messages %+v", all)
		}
		if all[0].ReceivedAt.Before(before) {
			t.Fatalf("ReceivedAt %v too early", all[0].ReceivedAt)
		}
		since, err := p.Messages(ctx, acct, identity.MessageQuery{Kind: identity.KindEmail, Since: all[1].ReceivedAt})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range since {
			if !m.ReceivedAt.After(all[1].ReceivedAt) {
				t.Fatalf("Since not honoured: %v", m.ReceivedAt)
			}
		}
		lim, err := p.Messages(ctx, acct, identity.MessageQuery{Kind: identity.KindEmail, Limit: 1})
		if err != nil || len(lim) != 1 || lim[0].ID != all[0].ID {
			t.Fatalf("Limit 1: %v %v", lim, err)
		}
		if h.SMS {
			sms := waitFor(t, p, acct, identity.MessageQuery{Kind: identity.KindSMS}, 1)
			if sms[0].Body != "sms body" || sms[0].Kind != identity.KindSMS {
				t.Fatalf("sms %+v", sms[0])
			}
		}
	})
	t.Run("WatchWakes", func(t *testing.T) {
		p := h.New(t)
		acct, err := p.Provision(ctx, identity.ProvisionRequest{IdentityID: "01TESTIDENTITY0000000000002", Name: "agent-conform2"})
		if err != nil {
			t.Fatal(err)
		}
		kinds := []identity.MessageKind{identity.KindEmail}
		if h.SMS {
			kinds = append(kinds, identity.KindSMS)
		}
		for _, kind := range kinds {
			ch, stop := p.Watch(acct)
			h.Deliver(t, p, acct, kind, "wake", "wake up 123456")
			select {
			case <-ch:
			case <-time.After(10 * time.Second):
				t.Fatalf("Watch channel not closed after %s delivery", kind)
			}
			stop()
		}
	})
	t.Run("ReleaseTwiceAndReprovision", func(t *testing.T) {
		p := h.New(t)
		req := identity.ProvisionRequest{IdentityID: "01TESTIDENTITY0000000000003", Name: "agent-conform3"}
		acct, err := p.Provision(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Release(ctx, acct); err != nil {
			t.Fatal(err)
		}
		if err := p.Release(ctx, acct); err != nil {
			t.Fatalf("second release: %v", err)
		}
		req.IdentityID = "01TESTIDENTITY0000000000004"
		again, err := p.Provision(ctx, req)
		if err != nil {
			t.Fatalf("provision released name again: %v", err)
		}
		if again.Email != acct.Email {
			t.Logf("re-provisioned email %q differs from %q", again.Email, acct.Email)
		}
	})
}

// waitFor reads messages until at least n match q, waking on Watch.
func waitFor(t *testing.T, p identity.Provider, acct identity.Account, q identity.MessageQuery, n int) []identity.Message {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		ch, stop := p.Watch(acct)
		msgs, err := p.Messages(context.Background(), acct, q)
		if err != nil {
			stop()
			t.Fatal(err)
		}
		if len(msgs) >= n {
			stop()
			return msgs
		}
		select {
		case <-ch:
			stop()
		case <-deadline:
			stop()
			t.Fatalf("only %d of %d messages arrived", len(msgs), n)
		}
	}
}
