package main

import (
	"context"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/sandbox/bwrap"
)

// sandboxPath is PATH inside the sandbox: our tools, the Go toolchain when
// installed, then the system's.
const sandboxPath = "/run/nightshift/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// newBwrapDriver returns the bubblewrap driver configured by the sandbox
// section, or why it cannot run here.
func newBwrapDriver(ctx context.Context, sc config.Sandbox) (*bwrap.Driver, error) {
	cfg := bwrap.Config{Path: sandboxPath, Bwrap: sc.Bwrap, UID: sc.UID, GID: sc.GID, UIDs: sc.UIDs}
	if err := bwrap.AvailableWith(ctx, cfg); err != nil {
		return nil, err
	}
	return bwrap.New(cfg)
}
