package local_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/identity/local"
	"github.com/nightshift/nightshift/orchestrator/natsserver"
)

// kvBackend is set for the second run of the suite, over the JetStream
// bucket and stream hosts share on a cluster (local.NewKV).
var kvBackend bool

func TestMain(m *testing.M) {
	if code := m.Run(); code != 0 {
		os.Exit(code)
	}
	fmt.Println("local: the same suite over JetStream")
	kvBackend = true
	os.Exit(m.Run())
}

func newProvider(t *testing.T, cfg local.Config) (*local.Provider, error) {
	t.Helper()
	if !kvBackend {
		return local.New(openDB(t), cfg)
	}
	return local.NewKV(context.Background(), jsFor(t), local.KVConfig{}, cfg)
}

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
