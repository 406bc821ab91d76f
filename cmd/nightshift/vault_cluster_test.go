package main

import (
	"strings"
	"testing"

	"github.com/nightshift/nightshift/orchestrator/natsserver"
)

// TestVaultCLIOnACluster: hosts with their own data dirs share the
// cluster's vault. Host A's existing SQLite vault moves to the cluster on
// first use (and its data dir then refuses to serve a stale copy); host B
// reads what A set and verifies one audit chain; a host given another root
// key is told every host needs the same one.
func TestVaultCLIOnACluster(t *testing.T) {
	t.Parallel()
	ns, err := natsserver.Start(natsserver.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	url := ns.ClientURL()
	key := "NIGHTSHIFT_VAULT_KEY=" + strings.Repeat("5a", 32)
	hostA := []string{"NIGHTSHIFT_DATA_DIR=" + t.TempDir(), key, "USER=alice"}
	hostB := []string{"NIGHTSHIFT_DATA_DIR=" + t.TempDir(), key, "USER=bob", "NIGHTSHIFT_NATS_URL=" + url}

	// Before the upgrade: a single-host vault in A's data dir.
	if _, stderr, err := vaultRun(t, hostA, "old-value", "set", "OLD_TOKEN", "--scope", "agents"); err != nil {
		t.Fatalf("set on SQLite: %v %s", err, stderr)
	}
	// A joins the cluster: its vault moves there, then NEW is stored.
	if out, stderr, err := vaultRun(t, hostA, "new-value", "set", "NEW_TOKEN", "--nats", url); err != nil || !strings.Contains(out, "version 1") {
		t.Fatalf("set on the cluster: %q %s %v", out, stderr, err)
	}
	for name, want := range map[string]string{"OLD_TOKEN": "old-value\n", "NEW_TOKEN": "new-value\n"} {
		scope := "server"
		if name == "OLD_TOKEN" {
			scope = "agents"
		}
		out, stderr, err := vaultRun(t, hostB, "", "get", name, "--scope", scope)
		if err != nil || out != want {
			t.Fatalf("host B get %s = %q %v %s", name, out, err, stderr)
		}
	}
	if out, _, err := vaultRun(t, hostB, "", "audit", "--verify"); err != nil || !strings.Contains(out, "audit chain intact") {
		t.Fatalf("audit --verify on B: %q %v", out, err)
	}
	// A's data dir no longer holds the vault.
	if _, _, err := vaultRun(t, hostA, "", "ls"); err == nil || !strings.Contains(err.Error(), "moved to the NATS cluster") {
		t.Fatalf("ls on A's data dir after the move: %v", err)
	}
	// A host with another key cannot open it, and is told why.
	hostC := []string{"NIGHTSHIFT_DATA_DIR=" + t.TempDir(), "NIGHTSHIFT_VAULT_KEY=" + strings.Repeat("5b", 32), "NIGHTSHIFT_NATS_URL=" + url}
	if _, _, err := vaultRun(t, hostC, "", "ls"); err == nil || !strings.Contains(err.Error(), "same root key") {
		t.Fatalf("ls with another key: %v", err)
	}
}
