package orchestrator

import (
	"os"
	"path/filepath"
	"testing"
)

// TestAgentHomeIsNeverALink: a home that is a link (to a host directory) is
// refused for a follow-up and replaced, not followed, for a fresh run; files
// are written inside the home only.
func TestAgentHomeIsNeverALink(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	host := filepath.Join(dir, "host")
	os.Mkdir(host, 0o700)
	os.WriteFile(filepath.Join(host, "keep"), []byte("host"), 0o600)
	home := filepath.Join(dir, "home")
	if err := os.Symlink(host, home); err != nil {
		t.Fatal(err)
	}
	if err := prepareHome(home, false); err == nil {
		t.Fatal("a follow-up accepted a home that is a link")
	}
	if err := prepareHome(home, true); err != nil {
		t.Fatalf("fresh run: %v", err)
	}
	if fi, err := os.Lstat(home); err != nil || !fi.IsDir() {
		t.Fatalf("home after a fresh run: %v %v", fi, err)
	}
	if b, err := os.ReadFile(filepath.Join(host, "keep")); err != nil || string(b) != "host" {
		t.Fatalf("emptying the home touched the link's target: %q %v", b, err)
	}
	// Inside the home: a link at a parent leading out is refused; a link at
	// the file itself is replaced by the file.
	os.Symlink(host, filepath.Join(home, "out"))
	if err := writeHomeFiles(home, map[string][]byte{"out/x.json": []byte("{}")}); err == nil {
		t.Error("wrote through a linked directory")
	}
	os.Symlink(filepath.Join(host, "keep"), filepath.Join(home, "f.json"))
	if err := writeHomeFiles(home, map[string][]byte{"f.json": []byte("{}"), "../escape.json": []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(host, "keep")); string(b) != "host" {
		t.Errorf("wrote through a linked file: %q", b)
	}
	if fi, err := os.Lstat(filepath.Join(home, "f.json")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("f.json: %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "escape.json")); err == nil {
		t.Error("a ../ name left the home")
	}
	if _, err := os.Stat(filepath.Join(home, "escape.json")); err != nil {
		t.Errorf("a ../ name is cleaned into the home: %v", err)
	}
	entries, _ := os.ReadDir(host)
	if len(entries) != 1 {
		t.Errorf("host dir now has %d entries", len(entries))
	}
}
