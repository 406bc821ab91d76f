package ravi_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/identitytest"
	"github.com/nightshift/nightshift/identity/ravi"
	"github.com/nightshift/nightshift/identity/ravi/ravitest"
)

const key = ravitest.Key

func newProvider(t *testing.T, srvURL string) *ravi.Provider {
	p, err := ravi.New(ravi.Config{APIURL: srvURL, Key: key, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConformance(t *testing.T) {
	t.Parallel()
	fakes := map[identity.Provider]*ravitest.Fake{}
	identitytest.Run(t, identitytest.Harness{
		SMS: true,
		New: func(t *testing.T) identity.Provider {
			f := ravitest.New(t)
			p := newProvider(t, f.URL)
			fakes[p] = f
			return p
		},
		Deliver: func(t *testing.T, p identity.Provider, acct identity.Account, kind identity.MessageKind, subject, body string) {
			fakes[p].Deliver(acct.Ref, kind, subject, body)
		},
	})
}

func TestReleaseDeletesAndOTP(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := ravitest.New(t)
	p := newProvider(t, f.URL)
	acct, err := p.Provision(ctx, identity.ProvisionRequest{IdentityID: "I1", Name: "agent-ravi1"})
	if err != nil {
		t.Fatal(err)
	}
	if acct.Email != "agent-ravi1@raviapp.test" || acct.Ref == "" || acct.Phone == "" {
		t.Fatalf("account %+v", acct)
	}
	f.SetSecret(acct.Ref, "API_TOKEN", "s3cret")
	if v, err := p.Secret(ctx, acct, "API_TOKEN"); err != nil || v != "s3cret" {
		t.Fatalf("Secret = %q, %v", v, err)
	}
	if _, err := p.Secret(ctx, acct, "MISSING"); !errors.Is(err, ravi.ErrNotFound) {
		t.Fatalf("missing secret: %v", err)
	}
	f.Deliver(acct.Ref, identity.KindSMS, "", "Your code is 918273")
	msgs, err := p.Messages(ctx, acct, identity.MessageQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if otp, ok := identity.FindOTP(msgs); !ok || otp.Code != "918273" || otp.Kind != identity.KindSMS {
		t.Fatalf("otp %+v %v", otp, ok)
	}
	if err := p.Release(ctx, acct); err != nil {
		t.Fatal(err)
	}
	if err := p.Release(ctx, acct); err != nil {
		t.Fatalf("release of a deleted identity: %v", err)
	}
	deleted := f.Deleted()
	if len(deleted) != 1 || deleted[0] != acct.Ref {
		t.Fatalf("deleted %v", deleted)
	}
}

func TestTakenLocalPart(t *testing.T) {
	t.Parallel()
	f := ravitest.New(t)
	f.Add(ravi.Identity{UUID: "x", Email: "dummy@raviapp.test"})
	p := newProvider(t, f.URL)
	acct, err := p.Provision(context.Background(), identity.ProvisionRequest{IdentityID: "I1", Name: "taken-elsewhere"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(acct.Email, "gen") || acct.Name != "taken-elsewhere" {
		t.Fatalf("account %+v", acct)
	}
}

func TestBadKey(t *testing.T) {
	t.Parallel()
	f := ravitest.New(t)
	p, err := ravi.New(ravi.Config{APIURL: f.URL, Key: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Provision(context.Background(), identity.ProvisionRequest{IdentityID: "I1", Name: "agent-x"})
	var apiErr *ravi.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 401 || !errors.Is(err, ravi.ErrAPI) {
		t.Fatalf("err %v", err)
	}
	if _, err := ravi.New(ravi.Config{APIURL: f.URL}); err == nil || !strings.Contains(err.Error(), "Key") {
		t.Fatalf("missing key: %v", err)
	}
	if s := fmt.Sprint(ravi.Key("abc")); s != "REDACTED" {
		t.Fatalf("key prints as %q", s)
	}
}
