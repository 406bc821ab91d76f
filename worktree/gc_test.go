package worktree

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestGC(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	other := newOrigin(t, map[string]string{"b.txt": "b\n"})
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := newManager(t, func(c *Config) {
		c.Retention = time.Hour
		c.MirrorRetention = 24 * time.Hour
		c.Now = clk.Now
	})
	ctx := context.Background()
	for _, id := range []string{"live", "done", "recent"} {
		if _, err := m.Provision(ctx, Ref{TaskID: id, Repo: origin}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Provision(ctx, Ref{TaskID: "gone", Repo: other}, nil); err != nil {
		t.Fatal(err)
	}
	// A half-provisioned leftover of a dead process.
	if err := os.MkdirAll(filepath.Join(m.cfg.TaskDir, stagingPref+"crashed-abcd", "work"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A task dir without metadata (orphan from an older layout or a crash).
	if err := os.MkdirAll(filepath.Join(m.cfg.TaskDir, "orphan", "work"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Read-only directories an agent left behind must not stop removal.
	ro := filepath.Join(m.taskRoot("done"), "work", "ro")
	if err := os.MkdirAll(filepath.Join(ro, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(ro, 0o555); err != nil {
		t.Fatal(err)
	}

	clk.Add(2 * time.Hour)
	m.touch("recent")
	live := func(id string) bool { return id == "live" }
	if err := m.GC(ctx, live); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{"live": true, "recent": true, "done": false, "gone": false, "orphan": false} {
		_, err := os.Stat(m.taskRoot(id))
		if got := err == nil; got != want {
			t.Errorf("task %s kept = %v, want %v", id, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(m.cfg.TaskDir, stagingPref+"crashed-abcd")); !os.IsNotExist(err) {
		t.Errorf("staging leftover kept: %v", err)
	}
	mirrors, _ := filepath.Glob(filepath.Join(m.cfg.MirrorDir, "*.git"))
	if len(mirrors) != 2 {
		t.Fatalf("mirrors after first gc = %v", mirrors)
	}

	// A day later, the unused mirror goes; the one in use stays.
	clk.Add(25 * time.Hour)
	if err := m.GC(ctx, func(id string) bool { return id == "live" }); err != nil {
		t.Fatal(err)
	}
	mirrors, _ = filepath.Glob(filepath.Join(m.cfg.MirrorDir, "*.git"))
	if len(mirrors) != 1 {
		t.Fatalf("mirrors after second gc = %v", mirrors)
	}
	if _, err := m.Open("live"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Open("recent"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("recent after retention = %v", err)
	}
}

func TestGCRepacksMirror(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	src := filepath.Join(filepath.Dir(origin), "src")
	git(t, src, "remote", "add", "origin", origin)
	m := newManager(t, func(c *Config) { c.MaxMirrorPacks = 2 })
	ctx := context.Background()
	first := provision(t, m, Ref{TaskID: "t0", Repo: origin})
	for i := 1; i <= 3; i++ {
		writeFiles(t, src, map[string]string{"a.txt": strings.Repeat("x", i) + "\n"})
		git(t, src, "commit", "-q", "-am", "more")
		git(t, src, "push", "-q", "origin", "main")
		if _, err := m.Provision(ctx, Ref{TaskID: fmt.Sprintf("t%d", i), Repo: origin}, nil); err != nil {
			t.Fatal(err)
		}
	}
	mirror := filepath.Dir(first.ReadOnlyPaths[0])
	packs, _ := filepath.Glob(filepath.Join(mirror, "objects", "pack", "*.pack"))
	if len(packs) != 4 {
		t.Fatalf("packs before gc = %d, want 4", len(packs))
	}
	if err := m.GC(ctx, func(string) bool { return true }); err != nil {
		t.Fatal(err)
	}
	packs, _ = filepath.Glob(filepath.Join(mirror, "objects", "pack", "*.pack"))
	if len(packs) != 1 {
		t.Fatalf("packs after gc = %d, want 1", len(packs))
	}
	git(t, first.Dir, "fsck", "--no-progress")
	wt := provision(t, m, Ref{TaskID: "t9", Repo: origin, Base: first.BaseCommit})
	if got := git(t, wt.Dir, "status", "--porcelain"); got != "" {
		t.Fatalf("status after repack = %q", got)
	}
}
