package identitytest

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// NATS starts an in-process NATS server with JetStream for t (no TCP
// port), shut down when t ends. It is the nats-server module itself, not
// the orchestrator's embedded server: a leaf's tests do not import the
// orchestrator.
func NATS(t testing.TB) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{JetStream: true, StoreDir: t.TempDir(), DontListen: true, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		t.Fatal("nats-server not ready after 30s")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// JetStream returns a JetStream client on a new connection to ns (one
// host's connection, when several share ns).
func JetStream(t testing.TB, ns *server.Server) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.Name("test"), nats.MaxReconnects(-1))
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
