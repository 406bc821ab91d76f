package sandboxtest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/sandbox"
)

// ProbeTool is the name under which the suite binds the test binary into
// the sandbox (Spec.Tools) to act as a small client: argv[0] selects it.
const ProbeTool = "nsprobe"

// Main is TestMain for packages that start sandboxes: it runs the sandbox
// helper or the probe when the test binary was re-executed as one, and
// otherwise runs the tests.
func Main(m *testing.M) {
	sandbox.Reexec()
	switch filepath.Base(os.Args[0]) {
	case ProbeTool:
		os.Exit(probe(os.Args[1:]))
	case EscapeTool:
		os.Exit(escapeProbe(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// probe implements the client verbs the suite runs inside sandboxes:
//
//	nsprobe echo WORDS...        print WORDS
//	nsprobe get URL              GET URL (honouring HTTP_PROXY), print status and body
//	nsprobe connect HOST:PORT    CONNECT through $HTTPS_PROXY, GET / over the tunnel, print status line and body
//	nsprobe dial ADDR            plain TCP dial, print "connected"
func probe(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "nsprobe: missing verb")
		return 2
	}
	switch args[0] {
	case "echo":
		fmt.Println(strings.Join(args[1:], " "))
		return 0
	case "get":
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyFromEnvironment}}
		resp, err := c.Get(args[1])
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		fmt.Printf("%d %s", resp.StatusCode, b)
		return 0
	case "connect":
		status, body, err := ConnectVia(os.Getenv("HTTPS_PROXY"), args[1])
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		fmt.Printf("%s|%s", status, body)
		return 0
	case "dial":
		c, err := net.DialTimeout("tcp", args[1], 5*time.Second)
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		c.Close()
		fmt.Println("connected")
		return 0
	}
	fmt.Fprintln(os.Stderr, "nsprobe: unknown verb", args[0])
	return 2
}

// ConnectVia sends "CONNECT target" to the HTTP proxy at proxyURL, and when
// it answers 200, a GET / through the tunnel. It returns the proxy's status
// line and the tunnelled response body.
func ConnectVia(proxyURL, target string) (status, body string, err error) {
	u, err := url.Parse(proxyURL)
	if err != nil || u.Host == "" {
		return "", "", fmt.Errorf("bad proxy %q", proxyURL)
	}
	c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return "", "", err
	}
	status = resp.Status
	if resp.StatusCode != http.StatusOK {
		return status, "", nil
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target)
	r2, err := http.ReadResponse(br, nil)
	if err != nil {
		return status, "", err
	}
	defer r2.Body.Close()
	b, _ := io.ReadAll(r2.Body)
	return status, string(b), nil
}
