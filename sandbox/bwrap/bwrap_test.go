package bwrap_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/sandbox"
	"github.com/nightshift/nightshift/sandbox/bwrap"
	"github.com/nightshift/nightshift/sandbox/sandboxtest"
)

func TestMain(m *testing.M) { sandboxtest.Main(m) }

func newDriver(t *testing.T) *bwrap.Driver {
	t.Helper()
	if err := bwrap.Available(context.Background()); err != nil {
		t.Fatalf("bubblewrap unavailable (a CI host must provide it): %v", err)
	}
	return newDriverWith(t, bwrap.Config{})
}

func newDriverWith(t *testing.T, cfg bwrap.Config) *bwrap.Driver {
	t.Helper()
	d, err := bwrap.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestConformance(t *testing.T) {
	d := newDriver(t)
	sandboxtest.Run(t, func(*testing.T) sandbox.Driver { return d }, sandboxtest.Options{Isolated: true})
}

// TestConformancePrlimitHelper covers the fallbacks: no cgroup, and the
// in-sandbox helper bridging loopback ports instead of listeners created
// in the sandbox's network namespace.
func TestConformancePrlimitHelper(t *testing.T) {
	newDriver(t)
	d := newDriverWith(t, bwrap.Config{DisableCgroups: true, UseHelper: true})
	sandboxtest.Run(t, func(*testing.T) sandbox.Driver { return d }, sandboxtest.Options{Isolated: true})
}

func TestEscape(t *testing.T) {
	escape(t, newDriver(t))
}

func TestEscapePrlimit(t *testing.T) {
	newDriver(t)
	escape(t, newDriverWith(t, bwrap.Config{DisableCgroups: true, UseHelper: true}))
}

func escape(t *testing.T, d *bwrap.Driver) {
	opts := sandboxtest.EscapeOptions{}
	if strings.HasPrefix(d.Mode(), "prlimit") && os.Geteuid() == 0 {
		opts.Missing = map[string]string{"fork_bomb": "cgroup pids controller (RLIMIT_NPROC does not bind host uid 0)"}
	}
	if strings.HasPrefix(d.Mode(), "prlimit") {
		opts.MemoryLimit = 600 << 20
	}
	t.Logf("limits via %s", d.Mode())
	sandboxtest.Escape(t, func(*testing.T) sandbox.Driver { return d }, opts)
}
