package main

import (
	"context"
	"errors"
)

// runIdentity is replaced by the identity commands.
func runIdentity(ctx context.Context, a *app, args []string) error {
	return errors.New("identity: not built yet")
}
