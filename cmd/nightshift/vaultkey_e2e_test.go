package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFailedStartsKeepOneVaultKey: a start that fails on a port in use
// creates no key; a start that fails after the key was created leaves that
// one key, and the next, successful start uses it: the secret stored in
// between is readable and no other key file appears.
func TestFailedStartsKeepOneVaultKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "USER=tester"} // the key file, not NIGHTSHIFT_VAULT_KEY
	writeCfg := func(name, yaml string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := writeCfg("good.yaml", "sandbox: {driver: process}\nidentity: {smtp_listen: \"127.0.0.1:0\"}\n")
	noSandbox := writeCfg("bad.yaml", "sandbox: {bwrap: /nonexistent/bwrap}\nidentity: {smtp_listen: \"127.0.0.1:0\"}\n")
	keyFiles := func() []string {
		entries, _ := os.ReadDir(data)
		var names []string
		for _, e := range entries {
			if strings.Contains(e.Name(), "key") || strings.Contains(e.Name(), "tmp") {
				names = append(names, e.Name())
			}
		}
		return names
	}
	serve := func(ctx context.Context, cfg, listen string) error {
		var out, errb bytes.Buffer
		return run(ctx, []string{"nightshift", "serve", "--config", cfg, "--data-dir", data, "--listen", listen},
			env, strings.NewReader(""), &out, &errb)
	}

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if err := serve(context.Background(), good, busy.Addr().String()); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("start on a port in use: %v", err)
	}
	if names := keyFiles(); len(names) != 0 {
		t.Fatalf("a start that failed on its port left %v behind", names)
	}

	if err := serve(context.Background(), noSandbox, "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "bubblewrap is not usable") {
		t.Fatalf("start without a sandbox: %v", err)
	}
	key, err := os.ReadFile(filepath.Join(data, "vault.key"))
	if err != nil {
		t.Fatalf("the failed start created no key: %v", err)
	}
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"nightshift", "vault", "set", "DEPLOY_TOKEN", "--data-dir", data}, env,
		strings.NewReader("tok-123\n"), &out, &errb); err != nil {
		t.Fatalf("vault set after the failed start: %v\n%s", err, errb.String())
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, good, "127.0.0.1:0") }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(filepath.Join(data, "serve.addr")); err == nil && len(b) > 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("serve exited: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("serve did not start")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	after, err := os.ReadFile(filepath.Join(data, "vault.key"))
	if err != nil || !bytes.Equal(after, key) {
		t.Fatalf("the successful start changed the key file: %v", err)
	}
	if names := keyFiles(); len(names) != 1 || names[0] != "vault.key" {
		t.Fatalf("data dir holds %v, want only vault.key", names)
	}
	out.Reset()
	errb.Reset()
	if err := run(context.Background(), []string{"nightshift", "vault", "get", "DEPLOY_TOKEN", "--data-dir", data}, env,
		strings.NewReader(""), &out, &errb); err != nil || strings.TrimSpace(out.String()) != "tok-123" {
		t.Fatalf("vault get after the restarts: %q %v\n%s", out.String(), err, errb.String())
	}
}
