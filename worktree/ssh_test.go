package worktree

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

// sshGitServer serves git-upload-pack and git-receive-pack for bare
// repositories under root to clients holding the authorized key.
func sshGitServer(t *testing.T, root string, authorized ssh.PublicKey) (addr string, hostKey ssh.PublicKey) {
	t.Helper()
	_, hk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(hk)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(k.Marshal(), authorized.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unauthorized key")
		},
	}
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				serveSSH(c, cfg, root)
			}()
		}
	}()
	return ln.Addr().String(), signer.PublicKey()
}

func serveSSH(c net.Conn, cfg *ssh.ServerConfig, root string) {
	defer c.Close()
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "session only")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			return
		}
		go func() {
			defer ch.Close()
			for req := range creqs {
				if req.Type != "exec" || len(req.Payload) < 4 {
					req.Reply(req.Type == "env", nil)
					continue
				}
				n := binary.BigEndian.Uint32(req.Payload)
				line := string(req.Payload[4 : 4+n])
				svc, arg, _ := strings.Cut(line, " ")
				if svc != "git-upload-pack" && svc != "git-receive-pack" {
					req.Reply(false, nil)
					return
				}
				req.Reply(true, nil)
				repo := filepath.Join(root, filepath.Base(strings.Trim(arg, "'\"")))
				cmd := exec.Command("git", strings.TrimPrefix(svc, "git-"), repo)
				cmd.Stdin, cmd.Stdout, cmd.Stderr = ch, ch, ch.Stderr()
				status := uint32(0)
				if err := cmd.Run(); err != nil {
					status = 1
				}
				ch.CloseWrite()
				ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, status))
				return
			}
		}()
	}
}

func TestSSHFetchAndPush(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(block)
	sshPub, _ := ssh.NewPublicKey(pub)
	addr, hostKey := sshGitServer(t, filepath.Dir(origin), sshPub)
	host, port, _ := net.SplitHostPort(addr)
	knownHosts := fmt.Sprintf("[%s]:%s %s", host, port, ssh.MarshalAuthorizedKey(hostKey))
	url := fmt.Sprintf("ssh://git@%s/%s", addr, filepath.Base(origin))

	m := newManager(t)
	ctx := context.Background()
	auth := Auth{SSHKeyPEM: keyPEM, SSHKnownHosts: []byte(knownHosts)}
	wt, err := m.Provision(ctx, Ref{TaskID: "t1", Repo: url, Auth: auth}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, wt.Dir, map[string]string{"b.txt": "b\n"})
	c, err := m.Commit(ctx, wt, CommitRequest{Author: agent})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Push(ctx, wt, PushRequest{Auth: auth}); err != nil {
		t.Fatal(err)
	}
	if got := git(t, origin, "rev-parse", "refs/heads/nightshift/t1"); got != c.SHA {
		t.Fatalf("origin has %s, want %s", got, c.SHA)
	}

	// A host key that does not match is refused before anything is sent.
	_, otherHost, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := ssh.NewSignerFromKey(otherHost)
	bad := fmt.Sprintf("[%s]:%s %s", host, port, ssh.MarshalAuthorizedKey(other.PublicKey()))
	_, err = m.Push(ctx, wt, PushRequest{Auth: Auth{SSHKeyPEM: keyPEM, SSHKnownHosts: []byte(bad)}, Branch: "x"})
	var pe *PushError
	if !errors.As(err, &pe) || pe.Reason != PushHostKey {
		t.Fatalf("push with a wrong host key err = %v", err)
	}
	// A key the server does not know is an auth failure.
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	sb, _ := ssh.MarshalPrivateKey(stranger, "")
	_, err = m.Push(ctx, wt, PushRequest{Auth: Auth{SSHKeyPEM: pem.EncodeToMemory(sb), SSHKnownHosts: []byte(knownHosts)}, Branch: "y"})
	if !errors.As(err, &pe) || pe.Reason != PushAuth {
		t.Fatalf("push with unknown key err = %v", err)
	}
}
