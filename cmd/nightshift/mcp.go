package main

import (
	"context"
	"errors"
)

// runMCP is replaced by the mcp commands.
func runMCP(ctx context.Context, a *app, args []string) error {
	return errors.New("mcp: not built yet")
}
