package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// clientFlags are shared by every command that talks to a server.
type clientFlags struct {
	server string
	token  string
	json   bool
}

func (c *clientFlags) register(fs *flag.FlagSet, a *app) {
	def := a.getenv("NIGHTSHIFT_SERVER")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	fs.StringVar(&c.server, "server", def, "server URL (env NIGHTSHIFT_SERVER)")
	fs.StringVar(&c.token, "token", a.getenv("NIGHTSHIFT_TOKEN"), "API token (env NIGHTSHIFT_TOKEN)")
	fs.BoolVar(&c.json, "json", false, "print machine-readable JSON")
}

// client talks to the REST API.
type client struct {
	base  string
	token string
	hc    *http.Client
}

func (c *clientFlags) client() *client {
	return &client{base: strings.TrimRight(c.server, "/"), token: c.token, hc: &http.Client{}}
}

// apiError is an error answer from the server.
type apiError struct {
	Status int
	Msg    string
}

func (e *apiError) Error() string { return e.Msg }

func (c *client) do(ctx context.Context, method, path string, body any, out any) error {
	resp, err := c.send(ctx, method, path, body, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if w, ok := out.(io.Writer); ok {
		_, err := io.Copy(w, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("bad answer from %s: %w", c.base, err)
	}
	return nil
}

func (c *client) send(ctx context.Context, method, path string, body any, accept string) (*http.Response, error) {
	return c.sendHeader(ctx, method, path, body, accept, nil)
}

func (c *client) sendHeader(ctx context.Context, method, path string, body any, accept string, h http.Header) (*http.Response, error) {
	var data []byte
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		data = b
	}
	// A server still starting did nothing with the request: send it again
	// until it is up (a minute at most).
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := c.sendOnce(ctx, method, path, body != nil, data, accept, h)
		if !errors.Is(err, errStarting) {
			return resp, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the nightshift server at %s is still starting after a minute (see its log for what it waits for)", c.base)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// errStarting is a request a starting server did not look at.
var errStarting = errors.New("the server is starting")

func (c *client) sendOnce(ctx context.Context, method, path string, hasBody bool, data []byte, accept string, h http.Header) (*http.Response, error) {
	var rd io.Reader
	body := any(nil)
	if hasBody {
		rd = bytes.NewReader(data)
		body = data
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("bad server URL %q: %w", c.base, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Accept", accept)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err() // interrupted, not unreachable
		}
		var ne *net.OpError
		var ue *url.Error
		if errors.As(err, &ne) || errors.As(err, &ue) {
			return nil, fmt.Errorf("cannot reach the nightshift server at %s (is `nightshift serve` running? set --server or NIGHTSHIFT_SERVER)", c.base)
		}
		return nil, err
	}
	if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(startingHeader) != "" {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil, errStarting
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		var eb struct {
			Error string `json:"error"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		json.Unmarshal(b, &eb)
		msg := eb.Error
		if msg == "" {
			msg = strings.TrimSpace(string(b))
		}
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			msg = "the server refused the token (set --token or NIGHTSHIFT_TOKEN to an API token from api.tokens)"
		case http.StatusForbidden:
			// The server says why (a read-only token, a local repository
			// no repos[].match names, ...); only a bare 403 is guessed at.
			if msg == "" {
				msg = "the server refused this (HTTP 403): this token may not do that"
			}
		case http.StatusRequestEntityTooLarge:
			if msg == "" {
				msg = "the server refused the request as too large (HTTP 413)"
			} else {
				msg = "the server refused the request as too large: " + msg
			}
		case http.StatusTooManyRequests:
			if ra := resp.Header.Get("Retry-After"); ra != "" && !strings.Contains(msg, "retry") {
				msg = fmt.Sprintf("%s; retry after %ss", msg, ra)
			}
		}
		return nil, &apiError{Status: resp.StatusCode, Msg: msg}
	}
	return resp, nil
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	ID, Event string
	Data      []byte
}

// stream reads Server-Sent Events from path until fn returns false, the
// stream ends or ctx is done. lastEventID, when set, is sent as
// Last-Event-ID (the server may resume after it; callers still skip what
// they saw). It returns nil when fn or ctx ended the stream, an error when
// the stream could not be opened or ended on its own.
func (c *client) stream(ctx context.Context, path, lastEventID string, fn func(sseEvent) bool) error {
	var h http.Header
	if lastEventID != "" {
		h = http.Header{"Last-Event-ID": {lastEventID}}
	}
	resp, err := c.sendHeader(ctx, http.MethodGet, path, nil, "text/event-stream", h)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var ev sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.Event != "" || len(ev.Data) > 0 {
				if !fn(ev) {
					return nil
				}
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id: "):
			ev.ID = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.Event = line[7:]
		case strings.HasPrefix(line, "data: "):
			if len(ev.Data) > 0 {
				ev.Data = append(ev.Data, '\n')
			}
			ev.Data = append(ev.Data, line[6:]...)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("event stream broke: %w", err)
	}
	return errors.New("the server closed the event stream")
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func since(t time.Time, now time.Time) string {
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String()
}
