package automation

import (
	"context"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/natsserver"
)

// startNATS starts an embedded server with the Nightshift streams.
func startNATS(t *testing.T) *server.Server {
	t.Helper()
	ns, err := natsserver.Start(natsserver.Config{StoreDir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc := connect(t, ns, "setup")
	if _, err := orchestrator.NewBus(context.Background(), nc, orchestrator.BusConfig{}); err != nil {
		t.Fatal(err)
	}
	return ns
}

// connect opens a connection of its own, as a separate process would.
func connect(t *testing.T, ns *server.Server, name string) *nats.Conn {
	t.Helper()
	nc, err := natsserver.Connect(ns, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func jsOf(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
