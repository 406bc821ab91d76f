// Package egress is the host side of sandbox networking: an HTTP CONNECT
// and plain-HTTP proxy that allows only allowlisted names, resolves them
// itself and refuses internal addresses, and a relay from a unix socket to
// an orchestrator-owned address.
package egress

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultDeny returns the ranges the proxy never connects to.
func DefaultDeny() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
		"172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15",
		"224.0.0.0/4", "240.0.0.0/4",
		"::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8", "64:ff9b::/96", "fd00:ec2::254/128",
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// ValidPattern checks an allowlist entry: a host name or "*.suffix",
// optionally followed by ":port" (1-65535, decimal). An entry without a
// port allows ports 443 and 80 only.
func ValidPattern(p string) error {
	name, port, hasPort := strings.Cut(p, ":")
	if hasPort {
		if _, ok := parsePort(port); !ok {
			return fmt.Errorf("bad port in host pattern %q (want NAME, *.SUFFIX, NAME:PORT or *.SUFFIX:PORT)", p)
		}
	}
	name = strings.TrimPrefix(name, "*.")
	if name == "" || strings.ContainsAny(name, "*/:@[] ") || strings.HasPrefix(name, ".") {
		return fmt.Errorf("bad host pattern %q", p)
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return fmt.Errorf("host pattern %q is an IP address; only names are allowed", p)
	}
	return nil
}

// parsePort parses a decimal port 1-65535 (no sign, no leading zeros).
func parsePort(s string) (int, bool) {
	if s == "" || len(s) > 5 || s[0] == '0' {
		return 0, false
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n >= 1 && n <= 65535
}

// Match reports whether host:port matches one of the allowlist patterns.
// "*.example.com" matches sub.example.com and a.b.example.com, not
// example.com; a pattern without a port matches ports 443 and 80 only,
// "name:port" exactly that port. Port 0 matches any port: whether host is
// listed at all.
func Match(patterns []string, host string, port int) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, p := range patterns {
		name, ps, hasPort := strings.Cut(strings.ToLower(p), ":")
		switch {
		case port == 0:
		case hasPort:
			if n, ok := parsePort(ps); !ok || n != port {
				continue
			}
		case port != 443 && port != 80:
			continue
		}
		if suf, ok := strings.CutPrefix(name, "*."); ok {
			if strings.HasSuffix(host, "."+suf) {
				return true
			}
		} else if host == name {
			return true
		}
	}
	return false
}

// Config configures a Proxy.
type Config struct {
	Allow    []string                                                          // allowlist patterns
	Deny     []netip.Prefix                                                    // refused ranges; nil: DefaultDeny
	LookupIP func(ctx context.Context, host string) ([]netip.Addr, error)      // nil: net.DefaultResolver
	Dial     func(ctx context.Context, network, addr string) (net.Conn, error) // nil: net.Dialer
	Log      func(msg string, attrs ...any)                                    // every decision; nil: none
}

// Proxy is an allowlisting HTTP proxy for one sandbox.
type Proxy struct {
	cfg  Config
	srv  *http.Server
	mu   sync.Mutex
	open map[net.Conn]struct{}
	tr   *http.Transport
}

// New returns a Proxy.
func New(cfg Config) *Proxy {
	if cfg.Deny == nil {
		cfg.Deny = DefaultDeny()
	}
	if cfg.LookupIP == nil {
		cfg.LookupIP = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if cfg.Dial == nil {
		d := &net.Dialer{Timeout: 30 * time.Second}
		cfg.Dial = d.DialContext
	}
	if cfg.Log == nil {
		cfg.Log = func(string, ...any) {}
	}
	p := &Proxy{cfg: cfg, open: map[net.Conn]struct{}{}}
	p.tr = &http.Transport{
		Proxy:               nil,
		DialContext:         func(ctx context.Context, _, addr string) (net.Conn, error) { return p.dial(ctx, addr) },
		MaxIdleConns:        4,
		IdleConnTimeout:     30 * time.Second,
		TLSHandshakeTimeout: 30 * time.Second,
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second}
	return p
}

// Serve serves proxy connections from ln until Close.
func (p *Proxy) Serve(ln net.Listener) error {
	err := p.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the proxy and cuts every tunnel.
func (p *Proxy) Close() error {
	err := p.srv.Close()
	p.mu.Lock()
	for c := range p.open {
		c.Close()
	}
	p.mu.Unlock()
	p.tr.CloseIdleConnections()
	return err
}

// refusal is a decision not to connect, shown to the client.
type refusal struct{ reason string }

func (r *refusal) Error() string { return "egress refused: " + r.reason }

// dial checks addr ("host:port") against the allowlist and deny list and
// connects to the first permitted address.
func (p *Proxy) dial(ctx context.Context, hostport string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, &refusal{"malformed target"}
	}
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		p.cfg.Log("egress denied", "host", host, "port", port, "reason", "ip_literal")
		return nil, &refusal{"IP literal"}
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return nil, &refusal{"malformed target"}
	}
	port = strconv.Itoa(n)
	if !Match(p.cfg.Allow, host, n) {
		reason, msg := "not_allowlisted", "host not allowlisted"
		if Match(p.cfg.Allow, host, 0) {
			reason, msg = "port_not_allowed", "port not allowlisted for this host"
		}
		p.cfg.Log("egress denied", "host", host, "port", port, "reason", reason)
		return nil, &refusal{msg}
	}
	addrs, err := p.cfg.LookupIP(ctx, host)
	if err != nil || len(addrs) == 0 {
		p.cfg.Log("egress denied", "host", host, "port", port, "reason", "dns_failed")
		return nil, &refusal{"name did not resolve"}
	}
	var lastErr error
	for _, a := range addrs {
		a = a.Unmap()
		if p.denied(a) {
			p.cfg.Log("egress denied", "host", host, "port", port, "ip", a.String(), "reason", "internal_address")
			lastErr = &refusal{"name resolves to an internal address"}
			continue
		}
		c, err := p.cfg.Dial(ctx, "tcp", net.JoinHostPort(a.String(), port))
		if err != nil {
			p.cfg.Log("egress failed", "host", host, "port", port, "ip", a.String(), "err", err.Error())
			lastErr = err
			continue
		}
		p.cfg.Log("egress allowed", "host", host, "port", port, "ip", a.String())
		return c, nil
	}
	return nil, lastErr
}

func (p *Proxy) denied(a netip.Addr) bool {
	if !a.IsValid() || a.IsUnspecified() || a.Zone() != "" {
		return true
	}
	for _, pr := range p.cfg.Deny {
		if pr.Contains(a) {
			return true
		}
	}
	return false
}

func (p *Proxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	if on {
		p.open[c] = struct{}{}
	} else {
		delete(p.open, c)
	}
	p.mu.Unlock()
}

// ServeHTTP handles CONNECT tunnels and absolute-form HTTP requests.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		p.connect(w, r)
		return
	}
	if r.URL.Scheme != "http" || r.URL.Host == "" {
		http.Error(w, "egress proxy: absolute http:// URL or CONNECT required", http.StatusBadRequest)
		return
	}
	hostport := r.URL.Host
	if r.URL.Port() == "" {
		hostport = net.JoinHostPort(r.URL.Hostname(), "80")
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.Header.Del("Proxy-Connection")
	out.Header.Del("Proxy-Authorization")
	out.URL.Host = hostport
	out.Host = "" // the Host header is the checked name: no fronting through an allowed upstream
	resp, err := p.tr.RoundTrip(out)
	if err != nil {
		p.fail(w, err)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

func (p *Proxy) fail(w http.ResponseWriter, err error) {
	var rf *refusal
	if errors.As(err, &rf) {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	http.Error(w, "egress proxy: upstream unreachable", http.StatusBadGateway)
}

func (p *Proxy) connect(w http.ResponseWriter, r *http.Request) {
	up, err := p.dial(r.Context(), r.Host)
	if err != nil {
		p.fail(w, err)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "egress proxy: hijack unsupported", http.StatusInternalServerError)
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	p.track(c, true)
	p.track(up, true)
	defer func() {
		p.track(c, false)
		p.track(up, false)
		c.Close()
		up.Close()
	}()
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	// A TLS client names its server again in the ClientHello (SNI); it
	// must be the name that was checked, or an allowed CDN address could
	// front for any site it hosts.
	host, port, _ := net.SplitHostPort(r.Host)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	first, err := brw.Reader.Peek(1)
	if err != nil {
		return
	}
	var hello []byte
	if first[0] == 0x16 { // TLS handshake record
		sni, consumed := clientHelloSNI(brw.Reader)
		if sni != "" && !strings.EqualFold(strings.TrimSuffix(sni, "."), strings.TrimSuffix(host, ".")) {
			p.cfg.Log("egress denied", "host", host, "port", port, "sni", sni, "reason", "sni_mismatch")
			return
		}
		hello = consumed
	}
	c.SetReadDeadline(time.Time{})
	if len(hello) > 0 {
		if _, err := up.Write(hello); err != nil {
			return
		}
	}
	tunnel(c, brw.Reader, up)
}

// clientHelloSNI reads a TLS ClientHello from r and returns its server
// name and the bytes read, which the caller forwards upstream.
func clientHelloSNI(r io.Reader) (string, []byte) {
	hc := &helloConn{r: r}
	var sni string
	errSeen := errors.New("client hello seen")
	tls.Server(hc, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		sni = h.ServerName
		return nil, errSeen
	}}).Handshake()
	return sni, hc.buf.Bytes()
}

// helloConn records what is read and discards what is written (the TLS
// server's alert), so that the ClientHello can be parsed and replayed.
type helloConn struct {
	r   io.Reader
	buf bytes.Buffer
}

func (h *helloConn) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.buf.Write(p[:n])
	return n, err
}
func (h *helloConn) Write(p []byte) (int, error)      { return len(p), nil }
func (h *helloConn) Close() error                     { return nil }
func (h *helloConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (h *helloConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (h *helloConn) SetDeadline(time.Time) error      { return nil }
func (h *helloConn) SetReadDeadline(time.Time) error  { return nil }
func (h *helloConn) SetWriteDeadline(time.Time) error { return nil }

// tunnel copies both ways; client bytes already buffered in br go first.
func tunnel(client net.Conn, br *bufio.Reader, up net.Conn) {
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(up, br)
		if cw, ok := up.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		io.Copy(client, up)
		if cw, ok := client.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		done <- struct{}{}
	}()
	<-done
	<-done
}

// Relay connects each client accepted on its listeners to a fixed
// orchestrator-owned address.
type Relay struct {
	network string
	addr    string
	mu      sync.Mutex
	lns     map[net.Listener]struct{}
	open    map[net.Conn]struct{}
	closed  bool
}

// NewRelay returns a Relay to network/addr; Serve starts it on a listener.
func NewRelay(network, addr string) *Relay {
	return &Relay{network: network, addr: addr, lns: map[net.Listener]struct{}{}, open: map[net.Conn]struct{}{}}
}

// Serve relays connections accepted on ln until ln or the Relay is closed.
func (r *Relay) Serve(ln net.Listener) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		ln.Close()
		return
	}
	r.lns[ln] = struct{}{}
	r.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go r.handle(c)
	}
}

func (r *Relay) add(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.open[c] = struct{}{}
	return true
}

func (r *Relay) remove(c net.Conn) {
	r.mu.Lock()
	delete(r.open, c)
	r.mu.Unlock()
	c.Close()
}

func (r *Relay) handle(c net.Conn) {
	if !r.add(c) {
		c.Close()
		return
	}
	defer r.remove(c)
	d := net.Dialer{Timeout: 10 * time.Second}
	up, err := d.Dial(r.network, r.addr)
	if err != nil {
		return
	}
	if !r.add(up) {
		up.Close()
		return
	}
	defer r.remove(up)
	tunnel(c, bufio.NewReader(c), up)
}

// Close stops accepting and cuts open connections.
func (r *Relay) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for ln := range r.lns {
		ln.Close()
	}
	for c := range r.open {
		c.Close()
	}
	return nil
}
