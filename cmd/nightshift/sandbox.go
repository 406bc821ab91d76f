package main

import (
	"context"
	"errors"
)

// runSandbox is replaced by the sandbox commands.
func runSandbox(ctx context.Context, a *app, args []string) error {
	return errors.New("sandbox: not built yet")
}
