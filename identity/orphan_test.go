package identity_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/local"
)

// A worker killed between provisioning a task's address and storing its
// identity leaves a live address claim whose owner identity does not
// exist. The run is redelivered: ForTask on the next worker takes the
// orphaned claim over (and the orphan's phone lease with it) instead of
// failing the task with "address in use by another identity".
func TestForTaskTakesOverOrphanedClaim(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, p := newService(t, "+15550000001")
	shortClaimWait(s)
	const task = "01JQORPHAN00000000000000AA"
	name := identity.NameForTask(task)
	// The killed worker's half-made identity.
	orphan := claimOnly(t, p, "01JQORPHANIDENTITY00000001", name)
	id, err := s.ForTask(ctx, task)
	if err != nil {
		t.Fatalf("ForTask after an orphaned claim: %v", err)
	}
	if id.Name != name || id.Email != orphan.Email || id.ID == orphan.IdentityID || id.TaskID != task {
		t.Fatalf("identity %+v, want name %s email %s", id, name, orphan.Email)
	}
	if id.Phone != "+15550000001" {
		t.Fatalf("the orphan's phone lease was not given back: identity phone %q", id.Phone)
	}
	leases, err := p.PhoneLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 1 || leases["+15550000001"] != id.ID {
		t.Fatalf("leases %v, want the number leased to %s", leases, id.ID)
	}
	if again, err := s.ForTask(ctx, task); err != nil || again.ID != id.ID {
		t.Fatalf("ForTask again = %+v, %v; want %s", again, err, id.ID)
	}
	// A follow-up run after release gets a fresh identity with the name.
	if err := s.Release(ctx, task); err != nil {
		t.Fatal(err)
	}
	next, err := s.ForTask(ctx, task)
	if err != nil {
		t.Fatalf("ForTask after release: %v", err)
	}
	if next.ID == id.ID || next.Name != name || next.Email != id.Email || next.Phone != id.Phone {
		t.Fatalf("follow-up identity %+v (was %+v)", next, id)
	}
}

func shortClaimWait(s *identity.Service) { identity.SetClaimWait(s, 200*time.Millisecond) }

// claimOnly provisions name's address for identityID and stores nothing,
// as a creator killed (or stalled) right after Provision leaves it.
func claimOnly(t *testing.T, p *local.Provider, identityID, name string) identity.Account {
	t.Helper()
	acct, err := p.Provision(context.Background(), identity.ProvisionRequest{IdentityID: identityID, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return acct
}

// addressHeldBy fails t unless name's address is held by identity owner:
// provisioning it for another identity is refused, naming owner.
func addressHeldBy(t *testing.T, p *local.Provider, name, owner, what string) {
	t.Helper()
	_, err := p.Provision(context.Background(), identity.ProvisionRequest{IdentityID: "01JQINTRUDER00000000000001", Name: name})
	var taken *identity.AddressTakenError
	if !errors.As(err, &taken) || taken.Owner != owner {
		t.Fatalf("%s: %v, want held by %s", what, err, owner)
	}
}

// An address held by a live identity is never taken over: not by a
// provision naming another identity to displace, not by a task whose name
// collides while the holder is still being stored, and not by this task
// while another worker is still storing the task's identity.
func TestLiveClaimIsNeverDisplaced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, p := newService(t, "+15550000001", "+15550000002")
	identity.SetClaimWait(s, 10*time.Second)

	a, err := s.ForTask(ctx, "01JQAAAA00000000000000000A")
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Provision(ctx, identity.ProvisionRequest{IdentityID: "01JQINTRUDER00000000000001", Name: a.Name, Displace: "01JQNOTTHEOWNER00000000001"})
	var taken *identity.AddressTakenError
	if !errors.Is(err, local.ErrAddressTaken) || !errors.As(err, &taken) || taken.Owner != a.ID {
		t.Fatalf("provision displacing the wrong owner: %v (owner %+v), want ErrAddressTaken held by %s", err, taken, a.ID)
	}

	// Another worker is creating task B's identity (address claimed,
	// record not stored yet) when task C, whose name collides, and task B
	// itself ask for theirs.
	const taskB, taskC = "01JQBBBB00000000000000000B", "01JQBBBB00000000000000000C"
	name := identity.NameForTask(taskB)
	inflight := claimOnly(t, p, "01JQINFLIGHT00000000000001", name)
	type result struct {
		id  identity.Identity
		err error
	}
	cres, bres := make(chan result, 1), make(chan result, 1)
	go func() { id, err := s.ForTask(ctx, taskC); cres <- result{id, err} }()
	go func() { id, err := s.ForTask(ctx, taskB); bres <- result{id, err} }()
	time.Sleep(300 * time.Millisecond)
	stored, err := identity.StoreProvisioned(ctx, s, taskB, inflight)
	if err != nil {
		t.Fatalf("the in-flight identity could not be stored: %v", err)
	}
	b, c := <-bres, <-cres
	if b.err != nil || b.id.ID != stored.ID || b.id.Email != inflight.Email {
		t.Fatalf("task B got %+v, %v; want the in-flight identity %s", b.id, b.err, stored.ID)
	}
	if c.err != nil || c.id.Name != name+"-2" || c.id.Email == inflight.Email {
		t.Fatalf("task C got %+v, %v; want name %s-2", c.id, c.err, name)
	}
	addressHeldBy(t, p, name, stored.ID, "address of task B")
}

// A worker that stalled between provisioning and storing resumes after its
// claim was taken over: its identity is refused, and giving back what it
// provisioned frees neither the address nor the number the new identity
// holds now.
func TestStalledCreatorResumesAfterTakeover(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, p := newService(t, "+15550000001")
	shortClaimWait(s)
	const task = "01JQSTALL000000000000000AA"
	stalled := claimOnly(t, p, "01JQSTALLED000000000000001", identity.NameForTask(task))
	id, err := s.ForTask(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := identity.StoreProvisioned(ctx, s, task, stalled); !errors.Is(err, identity.ErrDisplaced) {
		t.Fatalf("storing the displaced identity: %v, want ErrDisplaced", err)
	}
	if _, err := s.Get(ctx, stalled.IdentityID); !errors.Is(err, identity.ErrNotFound) {
		t.Fatalf("Get(displaced) = %v, want ErrNotFound", err)
	}
	all, err := s.List(ctx, identity.ListOptions{IncludeReleased: true})
	if err != nil || len(all) != 1 || all[0].ID != id.ID {
		t.Fatalf("List = %+v, %v; want only %s", all, err, id.ID)
	}
	if got, err := s.ForTask(ctx, task); err != nil || got.ID != id.ID {
		t.Fatalf("ForTask = %+v, %v; want %s", got, err, id.ID)
	}
	addressHeldBy(t, p, id.Name, id.ID, "address after the stalled worker gave back")
	leases, err := p.PhoneLeases(ctx)
	if err != nil || leases["+15550000001"] != id.ID {
		t.Fatalf("leases %v, %v; want the number leased to %s", leases, err, id.ID)
	}
}

// On the shared records a creator can also die between storing the
// identity and claiming its task for it: the next ForTask finishes the
// job and returns that identity instead of making another.
func TestForTaskAdoptsStoredIdentityWithoutTaskClaim(t *testing.T) {
	if !kvBackend {
		t.Skip("the SQLite store writes the record and the task in one row")
	}
	t.Parallel()
	ctx := context.Background()
	s, p := newService(t, "+15550000001")
	shortClaimWait(s)
	const task = "01JQADOPT000000000000000AA"
	acct := claimOnly(t, p, "01JQHALFSTORED000000000001", identity.NameForTask(task))
	if err := identity.StoreRecordOnly(ctx, s, task, acct); err != nil {
		t.Fatal(err)
	}
	id, err := s.ForTask(ctx, task)
	if err != nil || id.ID != acct.IdentityID || id.Email != acct.Email {
		t.Fatalf("ForTask = %+v, %v; want the stored identity %s", id, err, acct.IdentityID)
	}
	// The creator coming back to claim the task keeps it and its address.
	if got, err := identity.StoreProvisioned(ctx, s, task, acct); err != nil || got.ID != acct.IdentityID {
		t.Fatalf("the creator storing again = %+v, %v", got, err)
	}
	if got, err := s.ForTask(ctx, task); err != nil || got.ID != acct.IdentityID {
		t.Fatalf("ForTask again = %+v, %v", got, err)
	}
	addressHeldBy(t, p, acct.Name, acct.IdentityID, "address")
}

// Two hosts redelivered the same task find its orphaned claim at once:
// both end up with the one identity that took the claim over.
func TestOrphanedClaimTakenOverOnceAcrossHosts(t *testing.T) {
	ns := crossHostCluster(t)
	ctx := context.Background()
	s1, p1 := hostOn(t, ns, "+15550000001")
	s2, _ := hostOn(t, ns, "+15550000001")
	shortClaimWait(s1)
	shortClaimWait(s2)
	const task = "01JQTWOHOSTS0000000000000A"
	orphan := claimOnly(t, p1, "01JQORPHANIDENTITY00000002", identity.NameForTask(task))
	var got [2]identity.Identity
	var errs [2]error
	var wg sync.WaitGroup
	for i, s := range []*identity.Service{s1, s2} {
		wg.Add(1)
		go func() { defer wg.Done(); got[i], errs[i] = s.ForTask(ctx, task) }()
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("ForTask: %v / %v", errs[0], errs[1])
	}
	if got[0].ID != got[1].ID || got[0].Email != orphan.Email || got[0].Phone != "+15550000001" {
		t.Fatalf("hosts got %+v and %+v; want one identity with %s", got[0], got[1], orphan.Email)
	}
	addressHeldBy(t, p1, got[0].Name, got[0].ID, "address")
	live, err := s2.List(ctx, identity.ListOptions{IncludeReleased: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range live {
		if id.ID != got[0].ID && id.Live() {
			t.Fatalf("a second live identity was left: %+v", id)
		}
	}
}
