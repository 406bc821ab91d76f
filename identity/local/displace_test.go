package local_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/local"
)

// A live address is refused with the holder named; it is handed over only
// to a provision displacing exactly that holder, whose number goes back to
// the pool; releasing the displaced account afterwards frees nothing the
// new holder has.
func TestProvisionDisplacesOnlyTheNamedHolder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := start(t, local.Config{PhonePool: []string{"+15550000001"}})
	dead, err := e.p.Provision(ctx, identity.ProvisionRequest{IdentityID: "ID1", Name: "agent-orphan"})
	if err != nil {
		t.Fatal(err)
	}
	if dead.Phone != "+15550000001" {
		t.Fatalf("phone %q", dead.Phone)
	}
	for _, displace := range []string{"", "ID9"} {
		_, err := e.p.Provision(ctx, identity.ProvisionRequest{IdentityID: "ID2", Name: "agent-orphan", Displace: displace})
		var taken *identity.AddressTakenError
		if !errors.Is(err, local.ErrAddressTaken) || !errors.As(err, &taken) || taken.Owner != "ID1" || taken.Address != dead.Email {
			t.Fatalf("Displace %q: %v, want ErrAddressTaken held by ID1", displace, err)
		}
	}
	acct, err := e.p.Provision(ctx, identity.ProvisionRequest{IdentityID: "ID2", Name: "agent-orphan", Displace: "ID1"})
	if err != nil {
		t.Fatal(err)
	}
	if acct.Email != dead.Email || acct.Phone != "+15550000001" {
		t.Fatalf("after displacing: %+v", acct)
	}
	if err := e.p.Release(ctx, dead); err != nil {
		t.Fatal(err)
	}
	_, err = e.p.Provision(ctx, identity.ProvisionRequest{IdentityID: "ID3", Name: "agent-orphan"})
	var taken *identity.AddressTakenError
	if !errors.As(err, &taken) || taken.Owner != "ID2" {
		t.Fatalf("after the displaced account was released: %v, want held by ID2", err)
	}
	leases, err := e.p.PhoneLeases(ctx)
	if err != nil || len(leases) != 1 || leases["+15550000001"] != "ID2" {
		t.Fatalf("leases %v %v", leases, err)
	}
	if err := sendMail(e.p.SMTPAddr(), "x@example.com", []string{acct.Email}, "Subject: hi\n\nhello\n"); err != nil {
		t.Fatalf("mail to the new holder: %v", err)
	}
	msgs, err := e.p.Messages(ctx, acct, identity.MessageQuery{})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("new holder's messages: %d %v", len(msgs), err)
	}
}
