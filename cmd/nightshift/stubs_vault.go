package main

import (
	"context"
	"errors"
)

// runVault is replaced by the vault commands.
func runVault(ctx context.Context, a *app, args []string) error {
	return errors.New("vault: not built yet")
}
