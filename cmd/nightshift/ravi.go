package main

import (
	"context"
	"errors"
)

// runRavi is replaced by the ravi commands.
func runRavi(ctx context.Context, a *app, args []string) error {
	return errors.New("ravi: not built yet")
}
