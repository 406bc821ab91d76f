package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	if os.Geteuid() != 0 {
		t.Skip("mounting a size-capped tmpfs needs root; TestReadyzSaysWhenTheDataDirTakesNoWrites covers the probe")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", data).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", data).Run() }) // after the server stops
	s := startTestServerIn(t, dir, processConfig)
	haWaitReady(t, s.URL, 200, 10*time.Second, "fresh server on tmpfs")

	filler := filepath.Join(data, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for {
		if _, err := f.Write(chunk); err != nil {
			break // full
		}
	}
	f.Close()
	checks := haWaitReady(t, s.URL, 503, 10*time.Second, "full data dir")
	if !strings.Contains(checks["disk"], "no space left on device") {
		t.Fatalf("checks with the data dir full: %v", checks)
	}
	os.Remove(filler)
	haWaitReady(t, s.URL, 200, 10*time.Second, "space freed")
}
