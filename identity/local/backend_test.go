package local_test

import (
	"context"
	"os"
	"testing"

	"github.com/nightshift/nightshift/identity/identitytest"
	"github.com/nightshift/nightshift/identity/local"
)

// kvBackend is set for the second run of the suite, over the JetStream
// bucket and stream hosts share on a cluster (local.NewKV).
var kvBackend bool

func TestMain(m *testing.M) { os.Exit(identitytest.MainOverBothBackends(m, "local", &kvBackend)) }

func newProvider(t *testing.T, cfg local.Config) (*local.Provider, error) {
	t.Helper()
	if !kvBackend {
		return local.New(openDB(t), cfg)
	}
	return local.NewKV(context.Background(), identitytest.JetStream(t, identitytest.NATS(t)), local.KVConfig{}, cfg)
}
