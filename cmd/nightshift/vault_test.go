package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/vault"
)

func vaultRun(t *testing.T, env []string, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), append([]string{"nightshift", "vault"}, args...), env, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), err
}

func TestVaultCLIRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := []string{"NIGHTSHIFT_DATA_DIR=" + dir, "USER=tester"}

	out, stderr, err := vaultRun(t, env, "s3cr3t-value-one\n", "set", "API_TOKEN", "--scope", "repo:github.com/acme/*")
	if err != nil || !strings.Contains(out, "version 1") {
		t.Fatalf("set: %q %q %v", out, stderr, err)
	}
	if !strings.Contains(stderr, "VAULT ROOT KEY CREATED") {
		t.Fatalf("no key file warning: %q", stderr)
	}
	fi, err := os.Stat(filepath.Join(dir, "vault.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	if _, _, err := vaultRun(t, env, "s3cr3t-value-two", "set", "API_TOKEN", "--scope=repo:github.com/acme/*"); err != nil {
		t.Fatal(err)
	}
	out, _, err = vaultRun(t, env, "", "get", "API_TOKEN", "--scope", "repo:github.com/acme/*")
	if err != nil || out != "s3cr3t-value-two\n" {
		t.Fatalf("get: %q %v", out, err)
	}
	out, _, err = vaultRun(t, env, "", "get", "--json", "API_TOKEN", "--scope", "repo:github.com/acme/*", "--version", "1")
	var got struct{ Value string }
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || got.Value != "s3cr3t-value-one" {
		t.Fatalf("get --json v1: %q %v", out, err)
	}
	out, _, err = vaultRun(t, env, "", "ls", "--json")
	var list []vault.Info
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].Latest != 2 {
		t.Fatalf("ls: %q %v", out, err)
	}
	if strings.Contains(out, "s3cr3t") {
		t.Fatalf("ls leaked a value: %q", out)
	}
	if out, _, err = vaultRun(t, env, "", "rotate-key"); err != nil || !strings.Contains(out, "2 data key") {
		t.Fatalf("rotate-key: %q %v", out, err)
	}
	if out, _, err = vaultRun(t, env, "", "rotate-key", "--root"); err != nil {
		t.Fatalf("rotate-key --root: %q %v", out, err)
	}
	out, _, err = vaultRun(t, env, "", "get", "API_TOKEN", "--scope", "repo:github.com/acme/*", "--version", "1")
	if err != nil || out != "s3cr3t-value-one\n" {
		t.Fatalf("get after rotations: %q %v", out, err)
	}
	if out, _, err = vaultRun(t, env, "", "rm", "API_TOKEN", "--scope", "repo:github.com/acme/*", "--version", "2"); err != nil {
		t.Fatalf("rm: %q %v", out, err)
	}
	out, _, err = vaultRun(t, env, "", "audit", "--json")
	var entries []vault.AuditEntry
	if err != nil || json.Unmarshal([]byte(out), &entries) != nil || len(entries) < 8 {
		t.Fatalf("audit: %q %v", out, err)
	}
	if entries[0].ActorID != "tester" || entries[0].Action != "set" {
		t.Fatalf("first audit entry: %+v", entries[0])
	}
	if out, _, err = vaultRun(t, env, "", "audit", "--verify"); err != nil || !strings.Contains(out, "intact") {
		t.Fatalf("audit --verify: %q %v", out, err)
	}
}

func TestVaultCLIErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := []string{"NIGHTSHIFT_DATA_DIR=" + dir}
	var u *usageError
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"set", "lower_case"},
		{"set", "OK_NAME", "--scope", "planet:x"},
		{"get"},
		{"get", "A", "B"},
	} {
		_, _, err := vaultRun(t, env, "value-value", args...)
		if !asUsage(err, &u) {
			t.Errorf("%v: want usage error, got %v", args, err)
		}
	}
	if _, _, err := vaultRun(t, env, "", "set", "EMPTY"); !asUsage(err, &u) {
		t.Errorf("empty stdin: %v", err)
	}
	if _, _, err := vaultRun(t, env, "", "get", "NOPE"); err == nil || asUsage(err, &u) {
		t.Errorf("get without a vault: %v", err)
	}
	if _, _, err := vaultRun(t, env, "value-value", "set", "A"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := vaultRun(t, env, "", "get", "NOPE"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("get missing: %v", err)
	}
	bad := append(env, "NIGHTSHIFT_VAULT_KEY=0000000000000000000000000000000000000000000000000000000000000000")
	if _, _, err := vaultRun(t, bad, "", "get", "A"); err == nil || !strings.Contains(err.Error(), "root key does not open") {
		t.Errorf("wrong key: %v", err)
	}
}

func asUsage(err error, u **usageError) bool {
	if err == nil {
		return false
	}
	e, ok := err.(*usageError)
	*u = e
	return ok
}

func TestVaultCLIEnvKeyRootRotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	oldKey := "NIGHTSHIFT_VAULT_KEY=" + strings.Repeat("0a", 32)
	newKey := strings.Repeat("0b", 32)
	env := []string{"NIGHTSHIFT_DATA_DIR=" + dir, oldKey}
	if out, _, err := vaultRun(t, env, "env-keyed-value", "set", "--json", "K"); err != nil || !strings.Contains(out, `"version": 1`) {
		t.Fatalf("set: %q %v", out, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "vault.key")); err == nil {
		t.Fatal("key file created although NIGHTSHIFT_VAULT_KEY is set")
	}
	if _, _, err := vaultRun(t, env, "", "rotate-key", "--root"); err == nil {
		t.Fatal("root rotation without a new key")
	}
	if _, _, err := vaultRun(t, append(env, "NIGHTSHIFT_VAULT_NEW_KEY="+newKey), "", "rotate-key", "--root"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := vaultRun(t, env, "", "get", "K"); err == nil || !strings.Contains(err.Error(), "root key does not open") {
		t.Fatalf("old key after rotation: %v", err)
	}
	out, _, err := vaultRun(t, []string{"NIGHTSHIFT_DATA_DIR=" + dir, "NIGHTSHIFT_VAULT_KEY=" + newKey}, "", "get", "K")
	if err != nil || out != "env-keyed-value\n" {
		t.Fatalf("new key: %q %v", out, err)
	}
}

// TestVaultCLIScopes: vault set stores server secrets by default, takes
// "global" as the old name of server, and grants agents with --scope.
func TestVaultCLIScopes(t *testing.T) {
	t.Parallel()
	env := []string{"NIGHTSHIFT_DATA_DIR=" + t.TempDir()}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"set", "MODEL_KEY"}, "MODEL_KEY (server) version 1\n"},
		{[]string{"set", "MODEL_KEY", "--scope", "global"}, "MODEL_KEY (server) version 2\n"},
		{[]string{"set", "MODEL_KEY", "--scope", "server"}, "MODEL_KEY (server) version 3\n"},
		{[]string{"set", "NPM_TOKEN", "--scope", "agents"}, "NPM_TOKEN (agents) version 1\n"},
		{[]string{"set", "DEPLOY_KEY", "--scope", "repo:github.com/acme/*"}, "DEPLOY_KEY (repo:github.com/acme/*) version 1\n"},
	} {
		out, stderr, err := vaultRun(t, env, "value-for-"+tc.args[1], tc.args...)
		if err != nil || out != tc.want {
			t.Fatalf("%v: %q %q %v, want %q", tc.args, out, stderr, err, tc.want)
		}
	}
	out, _, err := vaultRun(t, env, "", "ls", "--json")
	var list []vault.Info
	if err != nil || json.Unmarshal([]byte(out), &list) != nil {
		t.Fatalf("ls: %q %v", out, err)
	}
	var got []string
	for _, in := range list {
		got = append(got, in.Name+"@"+in.Scope)
	}
	if strings.Join(got, " ") != "DEPLOY_KEY@repo:github.com/acme/* MODEL_KEY@server NPM_TOKEN@agents" {
		t.Fatalf("ls = %v", got)
	}
	if out, _, err := vaultRun(t, env, "", "get", "MODEL_KEY"); err != nil || out != "value-for-MODEL_KEY\n" {
		t.Fatalf("get server secret: %q %v", out, err)
	}
	if _, _, err := vaultRun(t, env, "", "get", "NPM_TOKEN"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("get without --scope read an agents secret: %v", err)
	}
	var u *usageError
	if _, _, err := vaultRun(t, env, "v-value", "set", "X", "--scope", "everyone"); !asUsage(err, &u) || !strings.Contains(err.Error(), "agents") {
		t.Fatalf("bad scope: %v", err)
	}
}
