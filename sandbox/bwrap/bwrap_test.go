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

func newDriver(t *testing.T) sandbox.Driver {
	t.Helper()
	if err := bwrap.Available(context.Background()); err != nil {
		t.Fatalf("bubblewrap unavailable (a CI host must provide it): %v", err)
	}
	d, err := bwrap.New(bwrap.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestConformance(t *testing.T) {
	sandboxtest.Run(t, newDriver, sandboxtest.Options{Isolated: true})
}

func TestConformancePrlimit(t *testing.T) {
	sandboxtest.Run(t, func(t *testing.T) sandbox.Driver {
		newDriver(t)
		d, err := bwrap.New(bwrap.Config{DisableCgroups: true})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}, sandboxtest.Options{Isolated: true})
}

func TestEscape(t *testing.T) {
	escape(t, newDriver(t).(*bwrap.Driver))
}

func TestEscapePrlimit(t *testing.T) {
	newDriver(t)
	d, err := bwrap.New(bwrap.Config{DisableCgroups: true})
	if err != nil {
		t.Fatal(err)
	}
	escape(t, d)
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
