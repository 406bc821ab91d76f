package bwrap_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nightshift/nightshift/sandbox"
)

// nest makes depth directories, each named name, below dir (the path is
// far longer than PATH_MAX, so it works through descriptors) and returns
// the owner uid of the deepest one.
func nest(t *testing.T, dir, name string, depth int) (deepestUID func() int) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	fds := []int{fd}
	for range depth {
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
		fds = append(fds, fd)
	}
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	return func() int {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		return int(st.Uid)
	}
}

// TestOwnIsBoundedInDepth: handing a Dir to the sandbox uid walks it with
// one descriptor per level, so a tree an agent nested deeper than 256
// levels is refused with a short error (no 60 KB path) instead of taking
// one descriptor per level; a 250-level tree whose path is far longer
// than PATH_MAX is still handed over whole.
func TestOwnIsBoundedInDepth(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the driver re-owns Dir only when nightshift runs as root")
	}
	d := newDriver(t)
	m, err := sandbox.NewManager(d, sandbox.Config{StateDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("d", 200)

	ok := t.TempDir()
	deepest := nest(t, ok, long, 250)
	res, err := m.Run(context.Background(), sandbox.Spec{ID: "deep-ok", Dir: ok, Command: []string{"true"}})
	if err != nil || !res.OK() {
		t.Fatalf("250 levels: %+v %v", res, err)
	}
	if uid := deepest(); uid == 0 {
		t.Errorf("the deepest directory is still owned by root")
	}

	tooDeep := t.TempDir()
	nest(t, tooDeep, long, 300)
	res, err = m.Run(context.Background(), sandbox.Spec{ID: "deep", Dir: tooDeep, Command: []string{"true"}})
	if err == nil || !strings.Contains(err.Error(), "more than 256 levels deep") {
		t.Fatalf("300 levels: ran (%+v) or failed for another reason: %.300v", res, err)
	}
	if len(err.Error()) > 400 {
		t.Errorf("the error is %d bytes long: %.300s...", len(err.Error()), err)
	}
}

// TestNoWalkWhileASandboxOnDirLives: a sandbox started on a Dir where
// another sandbox still runs does not walk Dir (that sandbox's processes
// could rename a hard link to a file outside Dir onto a name the walk just
// checked); a root-owned file planted meanwhile stays root's, and the
// next sandbox started alone hands it over.
func TestNoWalkWhileASandboxOnDirLives(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the driver re-owns Dir only when nightshift runs as root")
	}
	d := newDriver(t)
	m, err := sandbox.NewManager(d, sandbox.Config{StateDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := make(chan error, 1)
	go func() {
		_, err := m.Run(ctx, sandbox.Spec{ID: "long", Dir: dir, Command: []string{"sh", "-c", "touch started; sleep 60"}})
		first <- err
	}()
	started := filepath.Join(dir, "started")
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first sandbox did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	planted := filepath.Join(dir, "planted")
	if err := os.WriteFile(planted, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	owner := func() uint32 {
		fi, err := os.Lstat(planted)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Uid
	}
	if res, err := m.Run(context.Background(), sandbox.Spec{ID: "second", Dir: dir, Command: []string{"true"}}); err != nil || !res.OK() {
		t.Fatalf("second sandbox: %+v %v", res, err)
	}
	if uid := owner(); uid != 0 {
		t.Fatalf("a sandbox started beside a live one walked Dir: planted file now owned by %d", uid)
	}
	cancel()
	<-first
	if res, err := m.Run(context.Background(), sandbox.Spec{ID: "alone", Dir: dir, Command: []string{"true"}}); err != nil || !res.OK() {
		t.Fatalf("sandbox alone: %+v %v", res, err)
	}
	if uid := owner(); uid == 0 {
		t.Fatal("a sandbox alone on Dir did not hand it over")
	}
}
