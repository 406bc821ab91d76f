package vault_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/vault"
)

func TestFileKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "vault.key")
	var logs bytes.Buffer
	ks := vault.FileKey(path, slog.New(slog.NewTextHandler(&logs, nil)))
	k1, err := ks.RootKey(ctx)
	if err != nil || len(k1) != 32 {
		t.Fatalf("create: %d %v", len(k1), err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode: %v %v", fi, err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "VAULT ROOT KEY CREATED") {
		t.Fatalf("no loud warning: %q", logs.String())
	}
	logs.Reset()
	k2, err := vault.FileKey(path, slog.New(slog.NewTextHandler(&logs, nil))).RootKey(ctx)
	if err != nil || !bytes.Equal(k1, k2) || logs.Len() != 0 {
		t.Fatalf("reload: %v, logs %q", err, logs.String())
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.RootKey(ctx); !errors.Is(err, vault.ErrKeySource) || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key accepted: %v", err)
	}
	bad := filepath.Join(dir, "bad.key")
	os.WriteFile(bad, []byte("not a key"), 0o600)
	if _, err := vault.FileKey(bad, nil).RootKey(ctx); !errors.Is(err, vault.ErrKeySource) {
		t.Fatalf("garbage key accepted: %v", err)
	}
}

func TestEnvKey(t *testing.T) {
	t.Parallel()
	raw := bytes.Repeat([]byte{0xfb, 0xff, 0x01}, 11)[:32]
	for _, s := range []string{
		hex.EncodeToString(raw), strings.ToUpper(hex.EncodeToString(raw)),
		base64.StdEncoding.EncodeToString(raw), base64.RawURLEncoding.EncodeToString(raw),
		" " + base64.URLEncoding.EncodeToString(raw) + "\n",
	} {
		k, err := vault.EnvKey(s).RootKey(context.Background())
		if err != nil || !bytes.Equal(k, raw) {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range []string{"", "abc", hex.EncodeToString(raw[:16]), base64.StdEncoding.EncodeToString(append(raw, 1))} {
		if _, err := vault.EnvKey(s).RootKey(context.Background()); !errors.Is(err, vault.ErrKeySource) {
			t.Errorf("%q accepted: %v", s, err)
		}
	}
}

func TestPassphraseKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	salt := filepath.Join(dir, "vault.salt")
	db := openDB(t, filepath.Join(dir, "nightshift.db"))
	right := vault.PassphraseKey([]byte("correct horse battery staple"), salt)
	v, err := vault.Open(ctx, db, right, vault.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Set(ctx, op, "X_SECRET", "global", []byte("value-value")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(salt)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("salt file: %v %v", fi, err)
	}
	if _, err := vault.Open(ctx, db, vault.PassphraseKey([]byte("wrong horse"), salt), vault.Config{}); !errors.Is(err, vault.ErrWrongKey) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	v2, err := vault.Open(ctx, db, vault.PassphraseKey([]byte("correct horse battery staple"), salt), vault.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := v2.Get(ctx, op, "X_SECRET", "global"); err != nil || string(got) != "value-value" {
		t.Fatalf("reopen: %q %v", got, err)
	}
	os.WriteFile(salt, []byte("argon2id v=19 m=0 t=3 p=4 salt=AAAA"), 0o600)
	if _, err := right.RootKey(ctx); !errors.Is(err, vault.ErrKeySource) {
		t.Fatalf("bad salt file: %v", err)
	}
}

func TestSelectKeySource(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		env, pass string
		want      vault.KeyChoice
	}{
		{"k", "p", vault.KeyFromEnv}, {"", "p", vault.KeyFromPassphrase}, {"", "", vault.KeyFromFile},
	} {
		if _, got := vault.SelectKeySource(dir, "", tc.env, tc.pass, nil); got != tc.want {
			t.Errorf("%+v: got %s", tc, got)
		}
	}
}

// Every KeySource: 32 bytes, the same key on every call and from a fresh
// source over the same material, and a vault it created reopens with it.
func TestKeySourceConformance(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		make func(dir string) vault.KeySource
	}{
		{"file", func(dir string) vault.KeySource { return vault.FileKey(filepath.Join(dir, "vault.key"), nil) }},
		{"passphrase", func(dir string) vault.KeySource {
			return vault.PassphraseKey([]byte("pass phrase"), filepath.Join(dir, "vault.salt"))
		}},
		{"env", func(string) vault.KeySource { return vault.EnvKey(strings.Repeat("5a", 32)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dir := t.TempDir()
			k1, err := tc.make(dir).RootKey(ctx)
			if err != nil || len(k1) != vault.KeySize {
				t.Fatalf("first: %d bytes, %v", len(k1), err)
			}
			ks := tc.make(dir)
			k2, err := ks.RootKey(ctx)
			if err != nil || !bytes.Equal(k1, k2) {
				t.Fatalf("second source: %v", err)
			}
			db := openDB(t, filepath.Join(dir, "nightshift.db"))
			v, err := vault.Open(ctx, db, ks, vault.Config{})
			if err != nil {
				t.Fatal(err)
			}
			v.Set(ctx, op, "K", "global", []byte("conformance"))
			v2, err := vault.Open(ctx, db, tc.make(dir), vault.Config{})
			if err != nil {
				t.Fatal(err)
			}
			if got, err := v2.Get(ctx, op, "K", "global"); err != nil || string(got) != "conformance" {
				t.Fatalf("reopen: %q %v", got, err)
			}
			if s := fmt.Sprint(ks); strings.Contains(s, "5a5a") || strings.Contains(s, "pass phrase") {
				t.Fatalf("key source prints its secret: %s", s)
			}
		})
	}
}

func TestSelectKeySourceKeyFile(t *testing.T) {
	t.Parallel()
	dir, other := t.TempDir(), filepath.Join(t.TempDir(), "root.key")
	ks, choice := vault.SelectKeySource(dir, other, "", "", nil)
	if choice != vault.KeyFromFile {
		t.Fatalf("choice %s", choice)
	}
	if _, err := ks.RootKey(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatalf("key file not created at the configured path: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "vault.key")); err == nil {
		t.Fatal("key file created in the data dir instead")
	}
}

// TestFileKeyCreatedOnceByConcurrentStarts: processes starting at once
// (here, key sources with their own locks) agree on one key, none of them
// reads a half-written file, and no temporary file is left behind.
func TestFileKeyCreatedOnceByConcurrentStarts(t *testing.T) {
	t.Parallel()
	for round := range 20 {
		dir := t.TempDir()
		path := filepath.Join(dir, "vault.key")
		const n = 16
		keys := make([][]byte, n)
		errs := make([]error, n)
		start := make(chan struct{})
		done := make(chan int)
		for i := range n {
			go func() {
				<-start
				keys[i], errs[i] = vault.FileKey(path, nil).RootKey(context.Background())
				done <- i
			}()
		}
		close(start)
		for range n {
			<-done
		}
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("round %d: start %d: %v", round, i, errs[i])
			}
			if !bytes.Equal(keys[i], keys[0]) {
				t.Fatalf("round %d: start %d got another key", round, i)
			}
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 || entries[0].Name() != "vault.key" {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Fatalf("round %d: data dir holds %v, want only vault.key", round, names)
		}
	}
}
