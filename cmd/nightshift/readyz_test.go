package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/bench/cluster"
)

// haFreezeDir makes dir refuse new entries, for root too: chattr +i as
// root (CAP_DAC_OVERRIDE ignores modes), mode 0500 otherwise. It returns
// the undo, or skips the test when neither is available here.
func haFreezeDir(t *testing.T, dir string) (undo func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		undo = func() { os.Chmod(dir, 0o700) }
		t.Cleanup(undo)
		return undo
	}
	if _, err := exec.LookPath("chattr"); err != nil {
		t.Skip("running as root without chattr: no way to make the data dir unwritable")
	}
	if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
		t.Skipf("chattr +i %s (the file system may not support it): %v %s", dir, err, out)
	}
	undo = func() { exec.Command("chattr", "-i", dir).Run() }
	t.Cleanup(undo)
	return undo
}

// TestReadyzSaysWhenTheDataDirTakesNoWrites makes a serving process's data
// dir refuse writes: /readyz turns 503 and names the disk check (NATS and
// SQLite stay ok), and turns ready again once the dir takes writes.
func TestReadyzSaysWhenTheDataDirTakesNoWrites(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, processConfig)
	checks := haWaitReady(t, s.URL, 200, 10*time.Second, "fresh server")
	if checks["disk"] != "ok" || checks["nats"] != "ok" {
		t.Fatalf("a ready server checks the disk and NATS: %v", checks)
	}
	undo := haFreezeDir(t, s.DataDir)
	checks = haWaitReady(t, s.URL, 503, 10*time.Second, "data dir refusing writes")
	if !strings.Contains(checks["disk"], "cannot write the data dir") || checks["nats"] != "ok" {
		t.Fatalf("checks with the data dir refusing writes: %v", checks)
	}
	undo()
	haWaitReady(t, s.URL, 200, 10*time.Second, "data dir writable again")
}

// TestReadyzSaysWhenTheDiskIsFull serves from a data dir on a small tmpfs,
// fills it, and sees /readyz turn 503 on the disk check (no space left),
// then ready again once the space is freed. Root only (it mounts).
func TestReadyzSaysWhenTheDiskIsFull(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// Unmounted when the test ends, after the server stops.
	data, why := cluster.MountSmall(t, filepath.Join(dir, "data"), 48)
	if data == "" {
		t.Skip(why + "; TestReadyzSaysWhenTheDataDirTakesNoWrites covers the probe")
	}
	s := startTestServerIn(t, dir, processConfig)
	haWaitReady(t, s.URL, 200, 10*time.Second, "fresh server on tmpfs")

	filler := filepath.Join(data, "filler")
	if _, err := cluster.FillDisk(filler); err != nil {
		t.Fatal(err)
	}
	checks := haWaitReady(t, s.URL, 503, 10*time.Second, "full data dir")
	if !strings.Contains(checks["disk"], "no space left on device") {
		t.Fatalf("checks with the data dir full: %v", checks)
	}
	os.Remove(filler)
	haWaitReady(t, s.URL, 200, 10*time.Second, "space freed")
}
