package bwrap_test

import (
	"context"
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
