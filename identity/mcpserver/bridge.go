package mcpserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// ServeStdio serves MCP on stdin/stdout for an agent inside a sandbox,
// forwarding every tool call to the HTTP endpoint behind remote (which
// holds the database and the vault). It lists the remote's tools once at
// start and returns when stdin ends or ctx is cancelled.
func ServeStdio(ctx context.Context, remote *Client, stdin io.Reader, stdout io.Writer, stderr io.Writer) error {
	tools, err := remote.c.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil {
		return fmt.Errorf("mcpserver: list remote tools: %w", err)
	}
	s := server.NewMCPServer("nightshift-identity", "bridge", server.WithToolCapabilities(false), server.WithRecovery())
	for _, t := range tools.Tools {
		name := t.Name
		s.AddTool(t, func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			res, err := remote.Call(ctx, name, req.GetArguments())
			var te *ToolError
			if errors.As(err, &te) {
				out := mcp.NewToolResultError(te.Message)
				if te.NotFound {
					out.Meta = mcp.NewMetaFromMap(map[string]any{"nightshift/outcome": "not_found"})
				}
				return out, nil
			}
			return res, err
		})
	}
	ss := server.NewStdioServer(s)
	ss.SetErrorLogger(log.New(stderr, "nightshift mcp: ", 0))
	err = ss.Listen(ctx, stdin, stdout)
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
