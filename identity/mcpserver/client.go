package mcpserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// ErrToolNotFound is returned by Client calls when the tool reported the
// thing asked for as missing (a secret, a phone number).
var ErrToolNotFound = errors.New("mcpserver: not found")

// ToolError is an error result from a tool; Message is the tool's text.
type ToolError struct {
	Tool     string
	Message  string
	NotFound bool
}

func (e *ToolError) Error() string { return e.Message }

// Unwrap lets errors.Is match ErrToolNotFound.
func (e *ToolError) Unwrap() error {
	if e.NotFound {
		return ErrToolNotFound
	}
	return nil
}

// ClientConfig configures Dial.
type ClientConfig struct {
	// HTTPClient makes the requests. Default: a new http.Client.
	HTTPClient *http.Client
	// Name and Version identify the client to the server.
	Name, Version string
}

// Client calls the identity MCP tools over streamable HTTP with a task token.
type Client struct {
	c *client.Client
}

// Dial connects to the MCP endpoint at url with a bearer token and
// completes the MCP handshake.
func Dial(ctx context.Context, url, token string, cfg ClientConfig) (*Client, error) {
	if url == "" || token == "" {
		return nil, errors.New("mcpserver: MCP URL and token are required")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if cfg.Name == "" {
		cfg.Name = "nightshift"
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	c, err := client.NewStreamableHttpClient(url,
		transport.WithHTTPBasicClient(cfg.HTTPClient),
		transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + token}))
	if err != nil {
		return nil, fmt.Errorf("mcpserver: %w", err)
	}
	if err := c.Start(ctx); err != nil {
		return nil, fmt.Errorf("mcpserver: connect %s: %w", url, err)
	}
	var init mcp.InitializeRequest
	init.Params.ClientInfo = mcp.Implementation{Name: cfg.Name, Version: cfg.Version}
	if _, err := c.Initialize(ctx, init); err != nil {
		c.Close()
		return nil, fmt.Errorf("mcpserver: initialize %s: %w", url, err)
	}
	return &Client{c: c}, nil
}

// Close ends the session.
func (c *Client) Close() error { return c.c.Close() }

// MCP returns the underlying mcp-go client.
func (c *Client) MCP() *client.Client { return c.c }

// Call calls a tool and returns its raw result. A tool error result is
// returned as a *ToolError.
func (c *Client) Call(ctx context.Context, tool string, args map[string]any) (*mcp.CallToolResult, error) {
	var req mcp.CallToolRequest
	req.Params.Name = tool
	req.Params.Arguments = args
	res, err := c.c.CallTool(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("mcpserver: call %s: %w", tool, err)
	}
	if res.IsError {
		te := &ToolError{Tool: tool, Message: resultText(res)}
		if res.Meta != nil && res.Meta.AdditionalFields["nightshift/outcome"] == "not_found" {
			te.NotFound = true
		}
		return nil, te
	}
	return res, nil
}

// Text calls a tool and returns its text content.
func (c *Client) Text(ctx context.Context, tool string, args map[string]any) (string, error) {
	res, err := c.Call(ctx, tool, args)
	if err != nil {
		return "", err
	}
	return resultText(res), nil
}

// JSON calls a tool and decodes its structured (or JSON text) content into out.
func (c *Client) JSON(ctx context.Context, tool string, args map[string]any, out any) error {
	res, err := c.Call(ctx, tool, args)
	if err != nil {
		return err
	}
	var b []byte
	if res.StructuredContent != nil {
		if b, err = json.Marshal(res.StructuredContent); err != nil {
			return err
		}
	} else {
		b = []byte(resultText(res))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("mcpserver: decode %s result: %w", tool, err)
	}
	return nil
}

func resultText(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if t, ok := mcp.AsTextContent(c); ok {
			parts = append(parts, t.Text)
		}
	}
	return strings.Join(parts, "\n")
}
