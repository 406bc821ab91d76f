package main

import (
	"context"
	"flag"
	"net/http"

	"github.com/nightshift/nightshift/identity/mcpserver"
)

// runMCP is "nightshift mcp": MCP over stdio for an agent inside a
// sandbox, bridged to the server's /mcp endpoint (the sandbox has no
// database or vault) with the task token.
func runMCP(ctx context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("mcp", flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	mcpURL := fs.String("url", a.getenv("NIGHTSHIFT_MCP_URL"), "MCP endpoint of the server (env NIGHTSHIFT_MCP_URL)")
	token := fs.String("token", a.getenv("NIGHTSHIFT_MCP_TOKEN"), "task token (env NIGHTSHIFT_MCP_TOKEN)")
	if err := fs.Parse(args); err != nil {
		return usageErrorf("mcp: %v", err)
	}
	if fs.NArg() > 0 {
		return usageErrorf("mcp: unexpected argument %q", fs.Arg(0))
	}
	if *mcpURL == "" || *token == "" {
		return usageErrorf("mcp: set NIGHTSHIFT_MCP_URL and NIGHTSHIFT_MCP_TOKEN (or --url and --token)")
	}
	remote, err := mcpserver.Dial(ctx, *mcpURL, *token, mcpserver.ClientConfig{HTTPClient: &http.Client{}, Name: "nightshift-mcp-bridge"})
	if err != nil {
		return err
	}
	defer remote.Close()
	return mcpserver.ServeStdio(ctx, remote, a.stdin, a.stdout, a.stderr)
}
