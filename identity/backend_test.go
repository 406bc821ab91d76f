package identity_test

import (
	"context"
	"os"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/identitytest"
	"github.com/nightshift/nightshift/identity/local"
)

// kvBackend is set for the second run of the suite: every test then runs
// over the replicated JetStream records (NewKVService, local.NewKV) that
// hosts share on a cluster, instead of one process's SQLite.
var kvBackend bool

func TestMain(m *testing.M) { os.Exit(identitytest.MainOverBothBackends(m, "identity", &kvBackend)) }

// newBackend returns a provider and a service over one fresh store of the
// backend under test.
func newBackend(t testing.TB, pcfg local.Config, scfg identity.Config) (*identity.Service, *local.Provider) {
	t.Helper()
	ctx := context.Background()
	if kvBackend {
		return kvHost(t, identitytest.NATS(t), pcfg, scfg)
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

// kvHost is one host over the records shared on ns: its own NATS
// connection, its own provider and service.
func kvHost(t testing.TB, ns *server.Server, pcfg local.Config, scfg identity.Config) (*identity.Service, *local.Provider) {
	t.Helper()
	ctx := context.Background()
	js := identitytest.JetStream(t, ns)
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
