package identity_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/identitytest"
	"github.com/nightshift/nightshift/identity/local"
)

// hostOn is one host of a cluster over ns.
func hostOn(t *testing.T, ns *server.Server, pool ...string) (*identity.Service, *local.Provider) {
	t.Helper()
	return kvHost(t, ns, local.Config{Domain: "agents.test", SMTPListen: "127.0.0.1:0", PhonePool: pool, AllowUnsignedSMS: true}, identity.Config{})
}

// crossHostCluster starts the NATS server the hosts of a cross-host test
// share. The test runs once, in parallel: its hosts use the shared records
// whichever backend the suite runs over.
func crossHostCluster(t *testing.T) *server.Server {
	t.Helper()
	if kvBackend {
		t.Skip("runs once")
	}
	t.Parallel()
	return identitytest.NATS(t)
}

// An identity a worker creates on host A is listed by the ingress on host
// B; a token A issued is refused on A the moment B revokes it (by token,
// by task, by releasing the identity).
func TestIdentityAndTokensAcrossHosts(t *testing.T) {
	ns := crossHostCluster(t)
	ctx := context.Background()
	worker, _ := hostOn(t, ns, "+15550000001")
	ingress, _ := hostOn(t, ns, "+15550000001")
	id, err := worker.ForTask(ctx, "TASKX001")
	if err != nil {
		t.Fatal(err)
	}
	list, err := ingress.List(ctx, identity.ListOptions{})
	if err != nil || len(list) != 1 || list[0].ID != id.ID || list[0].Email != id.Email || list[0].Phone != "+15550000001" {
		t.Fatalf("ingress lists %+v %v, want %+v", list, err, id)
	}
	if again, err := ingress.ForTask(ctx, "TASKX001"); err != nil || again.ID != id.ID {
		t.Fatalf("ForTask on the other host = %+v %v", again, err)
	}
	tok := func() string {
		tk, err := worker.IssueToken(ctx, id.ID, identity.Scope{Repo: "acme/app", Agent: "claude"})
		if err != nil {
			t.Fatal(err)
		}
		if _, sc, err := worker.Authenticate(ctx, tk); err != nil || sc.TaskID != "TASKX001" {
			t.Fatalf("fresh token: %+v %v", sc, err)
		}
		if _, _, err := ingress.Authenticate(ctx, tk); err != nil {
			t.Fatalf("fresh token on the other host: %v", err)
		}
		return tk
	}
	t1 := tok()
	if err := ingress.RevokeToken(ctx, t1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := worker.Authenticate(ctx, t1); !errors.Is(err, identity.ErrUnauthorized) {
		t.Fatalf("token revoked on B accepted on A: %v", err)
	}
	t2 := tok()
	if err := ingress.RevokeTaskTokens(ctx, "TASKX001"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := worker.Authenticate(ctx, t2); !errors.Is(err, identity.ErrUnauthorized) {
		t.Fatalf("task tokens revoked on B, one accepted on A: %v", err)
	}
	t3 := tok()
	if err := ingress.ReleaseIdentity(ctx, id.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := worker.Authenticate(ctx, t3); !errors.Is(err, identity.ErrUnauthorized) {
		t.Fatalf("identity released on B, its token accepted on A: %v", err)
	}
	if got, err := worker.Get(ctx, id.ID); err != nil || got.Live() {
		t.Fatalf("A sees %+v %v after B released it", got, err)
	}
}

// Two hosts creating the same task's identity at once end with one; a
// one-number pool is leased to one identity across hosts.
func TestOneIdentityPerTaskAcrossHosts(t *testing.T) {
	ns := crossHostCluster(t)
	ctx := context.Background()
	a, _ := hostOn(t, ns, "+15550000009")
	b, pb := hostOn(t, ns, "+15550000009")
	var wg sync.WaitGroup
	ids := make([]identity.Identity, 2)
	errs := make([]error, 2)
	for i, s := range []*identity.Service{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); ids[i], errs[i] = s.ForTask(ctx, "TASKRACE1") }()
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil || ids[0].ID != ids[1].ID {
		t.Fatalf("two hosts got %+v / %+v (%v %v)", ids[0], ids[1], errs[0], errs[1])
	}
	other, err := a.ForTask(ctx, "TASKRACE2")
	if err != nil {
		t.Fatal(err)
	}
	if other.Phone != "" && ids[0].Phone != "" {
		t.Fatalf("one pool number leased twice: %q and %q", ids[0].Phone, other.Phone)
	}
	leases, err := pb.PhoneLeases(ctx)
	if err != nil || len(leases) != 1 {
		t.Fatalf("leases = %v %v", leases, err)
	}
	live, _ := b.List(ctx, identity.ListOptions{})
	if len(live) != 2 {
		t.Fatalf("live identities = %d, want 2", len(live))
	}
}

// An SMS posted to the ingress on host B wakes the worker on host A that
// waits for a code.
func TestSMSOnIngressWakesWorkerOnAnotherHost(t *testing.T) {
	ns := crossHostCluster(t)
	ctx := context.Background()
	worker, _ := hostOn(t, ns, "+15550000002")
	ingress, ip := hostOn(t, ns, "+15550000002")
	srv := httptest.NewServer(ip.SMSHandler())
	t.Cleanup(srv.Close)
	id, err := worker.ForTask(ctx, "TASKSMS01")
	if err != nil {
		t.Fatal(err)
	}
	type res struct {
		otp   identity.OTP
		found bool
		err   error
	}
	done := make(chan res, 1)
	waiting := make(chan struct{})
	go func() {
		close(waiting)
		o, f, err := worker.OTP(ctx, id.ID, identity.MessageQuery{Kind: identity.KindSMS}, 20*time.Second)
		done <- res{o, f, err}
	}()
	<-waiting
	resp, err := http.PostForm(srv.URL, url.Values{"To": {id.Phone}, "From": {"+15551234567"}, "Body": {"Your code is 482913"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("sms hook: %s", resp.Status)
	}
	select {
	case r := <-done:
		if r.err != nil || !r.found || r.otp.Code != "482913" {
			t.Fatalf("worker OTP = %+v", r)
		}
	case <-time.After(15 * time.Second):
		msgs, err := worker.Messages(ctx, id.ID, identity.MessageQuery{})
		t.Fatalf("the worker on host A was not woken by an SMS stored on host B (it reads %d messages now, %v)", len(msgs), err)
	}
	msgs, err := ingress.Messages(ctx, id.ID, identity.MessageQuery{})
	if err != nil || len(msgs) != 1 || !strings.Contains(msgs[0].Body, "482913") {
		t.Fatalf("ingress inbox = %+v %v", msgs, err)
	}
}
