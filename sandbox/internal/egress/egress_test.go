package egress

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestMatch(t *testing.T) {
	allow := []string{"proxy.golang.org", "*.github.com", "registry.test:5000", "*.mirror.test:8443"}
	for _, c := range []struct {
		host string
		port int
		want bool
	}{
		{"proxy.golang.org", 443, true},
		{"proxy.golang.org", 80, true},
		{"PROXY.golang.org.", 443, true},
		{"proxy.golang.org", 22, false},   // no port: 443 and 80 only
		{"proxy.golang.org", 8443, false}, // no port: 443 and 80 only
		{"api.github.com", 443, true},
		{"a.b.github.com", 80, true},
		{"api.github.com", 6379, false},
		{"github.com", 443, false},
		{"evilgithub.com", 443, false},
		{"github.com.evil.test", 443, false},
		{"proxy.golang.org.evil", 443, false},
		{"sub.proxy.golang.org", 443, false},
		{"", 443, false},
		{"registry.test", 5000, true},
		{"registry.test", 443, false}, // an explicit port allows only that port
		{"registry.test", 80, false},
		{"registry.test", 5001, false},
		{"a.mirror.test", 8443, true},
		{"a.mirror.test", 443, false},
		{"mirror.test", 8443, false},
		{"registry.test", 0, true}, // port 0: listed on some port
		{"api.github.com", 0, true},
		{"github.com", 0, false},
	} {
		if got := Match(allow, c.host, c.port); got != c.want {
			t.Errorf("Match(%q, %d) = %v, want %v", c.host, c.port, got, c.want)
		}
	}
}

func TestValidPattern(t *testing.T) {
	for p, ok := range map[string]bool{
		"example.com": true, "*.example.com": true, "127.0.0.1": false, "::1": false,
		"*": false, "*.": false, "a*b.com": false, "http://x": false, "": false,
		"x:80": true, "example.com:8443": true, "*.example.com:22": true, "x:65535": true, "x:1": true,
		"x:0": false, "x:65536": false, "x:": false, ":80": false, "x:08": false, "x:+80": false,
		"x:80:80": false, "x:http": false, "*.:80": false, "*:80": false, "127.0.0.1:80": false,
		"[::1]:80": false, "x:-1": false, "x: 80": false,
	} {
		if err := ValidPattern(p); (err == nil) != ok {
			t.Errorf("ValidPattern(%q) = %v, want ok=%v", p, err, ok)
		}
	}
}

func TestDenied(t *testing.T) {
	p := New(Config{})
	for addr, want := range map[string]bool{
		"127.0.0.1": true, "127.1.2.3": true, "10.1.2.3": true, "172.16.0.1": true, "192.168.1.1": true,
		"169.254.169.254": true, "100.64.0.1": true, "0.0.0.0": true, "224.0.0.1": true,
		"::1": true, "fe80::1": true, "fd00::1": true, "::ffff:127.0.0.1": true, "::ffff:169.254.169.254": true,
		"fd00:ec2::254": true,
		"93.184.216.34": false, "2606:2800:220:1::": false,
	} {
		a := netip.MustParseAddr(addr).Unmap()
		if got := p.denied(a); got != want {
			t.Errorf("denied(%s) = %v, want %v", addr, got, want)
		}
	}
}

// TestProxy drives the proxy over a real listener with both request forms.
func TestProxy(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upstream %s", r.URL.Path)
	}))
	defer up.Close()
	_, port, _ := net.SplitHostPort(up.Listener.Addr().String())
	tlsUp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "tls upstream") }))
	defer tlsUp.Close()
	_, tlsPort, _ := net.SplitHostPort(tlsUp.Listener.Addr().String())
	var mu sync.Mutex
	var logs []string
	p := New(Config{
		// The upstreams listen on random ports: each is allowed explicitly;
		// "noport.test" gets the default ports 443 and 80 only.
		Allow: []string{"ok.test:" + port, "*.ok.test:" + port, "ok.test:" + tlsPort, "*.ok.test", "noport.test"},
		Deny:  []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		LookupIP: func(ctx context.Context, host string) ([]netip.Addr, error) {
			switch host {
			case "ok.test", "noport.test", "other.ok.test":
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			case "internal.ok.test":
				return []netip.Addr{netip.MustParseAddr("10.0.0.5")}, nil
			case "mixed.ok.test": // a denied address first, then a permitted one
				return []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("127.0.0.1")}, nil
			}
			return nil, errors.New("nxdomain")
		},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if h, _, _ := net.SplitHostPort(addr); h != "127.0.0.1" {
				return nil, fmt.Errorf("test guard: refusing %s", addr)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		Log: func(msg string, attrs ...any) {
			mu.Lock()
			logs = append(logs, fmt.Sprint(msg, attrs))
			mu.Unlock()
		},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(ln)
	defer p.Close()
	proxy := ln.Addr().String()

	get := func(url string) (int, string) {
		c, err := net.Dial("tcp", proxy)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", url)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	connect := func(target string) int {
		c, err := net.Dial("tcp", proxy)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	if code, body := get("http://ok.test:" + port + "/p"); code != 200 || body != "upstream /p" {
		t.Errorf("allowed GET: %d %q", code, body)
	}
	if code, _ := get("http://evil.test:" + port + "/"); code != 403 {
		t.Errorf("not allowlisted GET: %d, want 403", code)
	}
	if code, _ := get("http://127.0.0.1:" + port + "/"); code != 403 {
		t.Errorf("IP literal GET: %d, want 403", code)
	}
	if code := connect("mixed.ok.test:" + port); code != 200 {
		t.Errorf("CONNECT to a name with one permitted address: %d, want 200", code)
	}
	for _, target := range []string{"internal.ok.test:" + port, "evil.test:443", "127.0.0.1:" + port, "[::1]:" + port, "nx.ok.test:443"} {
		if code := connect(target); code != 403 {
			t.Errorf("CONNECT %s: %d, want 403", target, code)
		}
	}
	// Ports: an entry without one allows 443 and 80 only; "name:port"
	// exactly that port.
	if code, body := get("http://other.ok.test:" + port + "/q"); code != 200 || body != "upstream /q" {
		t.Errorf("GET on the port of *.ok.test:PORT: %d %q", code, body)
	}
	for _, target := range []string{"noport.test:" + port, "ok.test:" + strconv.Itoa(otherPort(port, tlsPort))} {
		if code := connect(target); code != 403 {
			t.Errorf("CONNECT %s (port not allowlisted): %d, want 403", target, code)
		}
	}
	if code, _ := get("http://noport.test:" + port + "/"); code != 403 {
		t.Errorf("GET noport.test on a port other than 443/80: %d, want 403", code)
	}
	// TLS through the tunnel: the ClientHello's server name must match.
	tlsVia := func(connectHost, sni string) (string, error) {
		c, err := net.Dial("tcp", proxy)
		if err != nil {
			return "", err
		}
		defer c.Close()
		target := net.JoinHostPort(connectHost, tlsPort)
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != 200 {
			return "", fmt.Errorf("CONNECT: %v %v", resp, err)
		}
		tc := tls.Client(&bufConn{Conn: c, r: br}, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", sni)
		r2, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			return "", err
		}
		b, _ := io.ReadAll(r2.Body)
		return string(b), nil
	}
	if body, err := tlsVia("ok.test", "ok.test"); err != nil || body != "tls upstream" {
		t.Errorf("TLS with matching SNI: %q %v", body, err)
	}
	if body, err := tlsVia("ok.test", "evil.test"); err == nil {
		t.Errorf("TLS with a fronted SNI got through: %q", body)
	}

	mu.Lock()
	joined := strings.Join(logs, "\n")
	mu.Unlock()
	for _, s := range []string{"egress allowed", "not_allowlisted", "port_not_allowed", "ip_literal", "internal_address", "dns_failed", "sni_mismatch"} {
		if !strings.Contains(joined, s) {
			t.Errorf("no %q decision logged:\n%s", s, joined)
		}
	}
}

// otherPort returns a port that is neither a nor b nor 443 nor 80.
func otherPort(a, b string) int {
	for n := 1024; ; n++ {
		if s := strconv.Itoa(n); s != a && s != b {
			return n
		}
	}
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }
