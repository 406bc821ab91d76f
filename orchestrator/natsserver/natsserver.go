// Package natsserver runs Nightshift's embedded NATS server: JetStream with
// file storage and fsync on every write (sync_interval: always), so an event
// acknowledged to a webhook sender survives a crash. By default it opens no
// TCP port; clients connect in-process.
package natsserver

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Config configures the embedded server.
type Config struct {
	// StoreDir is the JetStream store directory. Required.
	StoreDir string
	// Listen is host:port to accept TCP clients on; empty: in-process only.
	Listen string
	// NoSync turns off fsync on every write (tests and benchmarks only).
	NoSync bool
	// ServerName defaults to "nightshift".
	ServerName string
}

// Start runs an embedded server and waits until it accepts connections.
func Start(cfg Config) (*server.Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("natsserver: StoreDir is required")
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "nightshift"
	}
	opts := &server.Options{
		ServerName: cfg.ServerName,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 8 << 20,
		SyncAlways: !cfg.NoSync,
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("natsserver: listen %q: %w", cfg.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("natsserver: listen port %q: %w", port, err)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsserver: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("natsserver: not ready after 30s")
	}
	return ns, nil
}

// Connect opens an in-process client connection to ns.
func Connect(ns *server.Server, name string) (*nats.Conn, error) {
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("natsserver: connect: %w", err)
	}
	return nc, nil
}
