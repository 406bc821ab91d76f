package identity_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/local"
	"github.com/nightshift/nightshift/orchestrator/natsserver"
)

// kvBackend is set for the second run of the suite: every test then runs
// over the replicated JetStream records (NewKVService, local.NewKV) that
// hosts share on a cluster, instead of one process's SQLite.
var kvBackend bool

func TestMain(m *testing.M) {
	if code := m.Run(); code != 0 {
		os.Exit(code)
	}
	fmt.Println("identity: the same suite over JetStream")
	kvBackend = true
	os.Exit(m.Run())
}

// jsFor starts an embedded NATS server for t and returns a JetStream
// client on a new connection.
func jsFor(t testing.TB) jetstream.JetStream {
	t.Helper()
	ns, err := natsserver.Start(natsserver.Config{StoreDir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := natsserver.Connect(ns, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// newBackend returns a provider and a service over one fresh store of the
// backend under test.
func newBackend(t testing.TB, pcfg local.Config, scfg identity.Config) (*identity.Service, *local.Provider) {
	t.Helper()
	ctx := context.Background()
	if kvBackend {
		js := jsFor(t)
		p, err := local.NewKV(ctx, js, local.KVConfig{}, pcfg)
		if err != nil {
			t.Fatal(err)
		}
		s, err := identity.NewKVService(ctx, js, p, identity.KVConfig{}, scfg)
		if err != nil {
			t.Fatal(err)
		}
		return s, p
	}
	db := openDB(t)
	p, err := local.New(db, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := identity.NewService(ctx, db, p, scfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, p
}
