package worktree

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-billy/v5/util"
)

// readCountFS counts the read calls made on the files it opens.
type readCountFS struct {
	billy.Filesystem
	reads *int
}

func (c readCountFS) Open(name string) (billy.File, error) {
	return c.OpenFile(name, os.O_RDONLY, 0)
}

func (c readCountFS) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	f, err := c.Filesystem.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return readCountFile{f, c.reads}, nil
}

type readCountFile struct {
	billy.File
	reads *int
}

func (f readCountFile) Read(p []byte) (int, error) { *f.reads++; return f.File.Read(p) }

// A pack index is read whole in two read calls (the file, then its end),
// whatever its size, and handed over unchanged.
func TestIdxFSReadsAnIndexWhole(t *testing.T) {
	t.Parallel()
	for _, size := range []int{0, 1000, 300_000} {
		mem := memfs.New()
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i * 7)
		}
		if err := util.WriteFile(mem, "pack/pack-1.idx", data, 0o644); err != nil {
			t.Fatal(err)
		}
		reads := 0
		f, err := bufferedIdx(readCountFS{mem, &reads}).Open("pack/pack-1.idx")
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(f)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: read %d bytes back, %v", size, len(got), err)
		}
		if reads > 2 {
			t.Fatalf("%d bytes: %d reads of the file, want at most 2", size, reads)
		}
	}
}
