package main

import (
	"context"

	"github.com/nightshift/nightshift/sandbox"
)

// newBwrapDriver returns the bubblewrap driver, or why it cannot run here.
func newBwrapDriver(ctx context.Context) (sandbox.Driver, error) {
	return nil, errNoBwrap
}

var errNoBwrap = errorString("bwrap driver not built yet")

type errorString string

func (e errorString) Error() string { return string(e) }
