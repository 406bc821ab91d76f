package main

import (
	"context"
	"errors"
)

// runHooks is replaced by the hooks commands.
func runHooks(ctx context.Context, a *app, args []string) error {
	return errors.New("hooks: not built yet")
}
