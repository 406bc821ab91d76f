package worktree

import (
	"errors"
	"fmt"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
)

// transport returns the client and auth method for an endpoint. HTTP
// clients come from Config, never from a global.
func (m *Manager) transport(ep *transport.Endpoint, a Auth) (transport.Transport, transport.AuthMethod, error) {
	switch ep.Protocol {
	case "http", "https":
		var am transport.AuthMethod
		if a.Username != "" || a.Password != "" {
			am = &githttp.BasicAuth{Username: a.Username, Password: a.Password}
		} else if ep.User != "" || ep.Password != "" {
			am = &githttp.BasicAuth{Username: ep.User, Password: ep.Password}
		}
		return githttp.NewClient(m.cfg.HTTPClient), am, nil
	case "ssh":
		if len(a.SSHKeyPEM) == 0 {
			return nil, nil, errors.New("worktree: ssh remote needs Auth.SSHKeyPEM")
		}
		user := a.SSHUser
		if user == "" {
			user = ep.User
		}
		if user == "" {
			user = "git"
		}
		pk, err := gitssh.NewPublicKeys(user, a.SSHKeyPEM, a.SSHKeyPassphrase)
		if err != nil {
			return nil, nil, fmt.Errorf("worktree: ssh key: %w", err)
		}
		var cb ssh.HostKeyCallback
		if len(a.SSHKnownHosts) > 0 {
			cb, err = knownHostsCallback(a.SSHKnownHosts)
			if err != nil {
				return nil, nil, fmt.Errorf("worktree: %w", err)
			}
		} else if m.cfg.SSHHostKeyCallback != nil {
			cb = m.cfg.SSHHostKeyCallback
		} else {
			return nil, nil, errors.New("worktree: ssh remote needs Auth.SSHKnownHosts or Config.SSHHostKeyCallback")
		}
		pk.HostKeyCallback = cb
		return gitssh.NewClient(nil), pk, nil
	case "file":
		// Never reached with a file endpoint: local repositories are served
		// in process (localTransport, openLocal), never by native git.
		return nil, nil, errors.New("worktree: local repositories have no network transport")
	default:
		return nil, nil, fmt.Errorf("worktree: unsupported transport %q", ep.Protocol)
	}
}
