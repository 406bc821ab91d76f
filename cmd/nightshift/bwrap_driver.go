package main

import (
	"context"

	"github.com/nightshift/nightshift/sandbox"
	"github.com/nightshift/nightshift/sandbox/bwrap"
)

// newBwrapDriver returns the bubblewrap driver, or why it cannot run here.
func newBwrapDriver(ctx context.Context) (sandbox.Driver, error) {
	cfg := bwrap.Config{}
	if err := bwrap.AvailableWith(ctx, cfg); err != nil {
		return nil, err
	}
	return bwrap.New(cfg)
}
