package identitytest

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/orchestrator/natsserver"
)

// MainOverBothBackends runs a package's tests twice, the second time with
// *kv set: over the replicated JetStream records hosts share on a cluster
// instead of one process's SQLite. It returns the exit code for os.Exit;
// a failing first run ends it.
func MainOverBothBackends(m *testing.M, pkg string, kv *bool) int {
	if code := m.Run(); code != 0 {
		return code
	}
	fmt.Println(pkg + ": the same suite over JetStream")
	*kv = true
	return m.Run()
}

// NATS starts an embedded NATS server with JetStream for t, shut down when
// t ends.
func NATS(t testing.TB) *server.Server {
	t.Helper()
	ns, err := natsserver.Start(natsserver.Config{StoreDir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// JetStream returns a JetStream client on a new connection to ns (one
// host's connection, when several share ns).
func JetStream(t testing.TB, ns *server.Server) jetstream.JetStream {
	t.Helper()
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
