package worktree

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Auth holds the credentials for one remote. For GitHub tokens use
// Username "x-access-token" and the token as Password. Auth implements
// slog.LogValuer and fmt.Stringer and never prints its contents.
type Auth struct {
	// Username and Password are sent as HTTP basic auth.
	Username, Password string
	// SSHKeyPEM is a PEM private key for ssh:// remotes.
	SSHKeyPEM []byte
	// SSHKeyPassphrase decrypts SSHKeyPEM when it is encrypted.
	SSHKeyPassphrase string
	// SSHUser is the SSH login; empty means the URL's user, else "git".
	SSHUser string
	// SSHKnownHosts is known_hosts content used to verify the server key;
	// empty means Config.SSHHostKeyCallback. One of them is required.
	SSHKnownHosts []byte
}

// LogValue implements slog.LogValuer.
func (a Auth) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// String implements fmt.Stringer.
func (a Auth) String() string { return "REDACTED" }

// GoString implements fmt.GoStringer.
func (a Auth) GoString() string { return "worktree.Auth{REDACTED}" }

// IsZero reports whether no credential is set.
func (a Auth) IsZero() bool {
	return a.Username == "" && a.Password == "" && len(a.SSHKeyPEM) == 0
}

// knownHostsCallback verifies host keys against known_hosts content.
// Hashed host entries are not supported; plain hosts and [host]:port are.
func knownHostsCallback(data []byte) (ssh.HostKeyCallback, error) {
	type entry struct {
		hosts []string
		key   ssh.PublicKey
	}
	var entries []entry
	rest := data
	for len(bytes.TrimSpace(rest)) > 0 {
		marker, hosts, key, _, r, err := ssh.ParseKnownHosts(rest)
		if err != nil {
			return nil, fmt.Errorf("parse known hosts: %w", err)
		}
		rest = r
		if marker != "" {
			continue
		}
		entries = append(entries, entry{hosts, key})
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("parse known hosts: no host keys")
	}
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		want := knownhosts.Normalize(hostname)
		for _, e := range entries {
			for _, h := range e.hosts {
				if knownhosts.Normalize(h) == want && bytes.Equal(e.key.Marshal(), key.Marshal()) {
					return nil
				}
			}
		}
		return fmt.Errorf("ssh: host key for %s not in known hosts", hostname)
	}, nil
}

// redactURL strips credentials from a URL for logs and errors.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil || u.Scheme == "" {
		if i := strings.Index(raw, "@"); i > 0 && strings.Contains(raw[:i], ":") && strings.Contains(raw, "://") {
			return raw[:strings.Index(raw, "://")+3] + raw[i+1:]
		}
		return raw
	}
	u.User = nil
	return u.String()
}
