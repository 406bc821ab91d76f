package bwrap

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Default host ids of sandboxes started by a root process: 64 uids and gids
// from 1900000000, in the range 0x70000000-0x7FFDFFFF that systemd and the
// usual /etc/subuid allocations leave unused.
const (
	DefaultUID  = 1900000000
	DefaultGID  = 1900000000
	DefaultUIDs = 64
)

// idPool hands out host uid/gid pairs, one per concurrent sandbox.
type idPool struct {
	uid, gid, n int
	mu          sync.Mutex
	busy        []int          // sandboxes running per slot
	live        map[string]int // sandboxes running per Dir
	next        int
}

func newIDPool(uid, gid, n int) *idPool {
	return &idPool{uid: uid, gid: gid, n: n, busy: make([]int, n), live: map[string]int{}}
}

// acquire returns the slot for a sandbox on dir: the slot of the uid that
// owns dir when there is one (sandboxes sharing a Dir share its uid, so
// that none locks the other out), else a free slot, whose ids then own
// dir at once; when every slot is busy, the least busy one is shared.
// alone reports whether no other sandbox on dir is running: only then may
// the host walk dir (another sandbox's processes could swap its entries
// under the walk, and dir is already owned by the uid they share).
func (p *idPool) acquire(dir string) (slot int, alone bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.live[dir]++
	alone = p.live[dir] == 1
	if i := ownerOf(dir) - p.uid; i >= 0 && i < p.n {
		p.busy[i]++
		return i, alone
	}
	best := -1
	for k := range p.n {
		i := (p.next + k) % p.n
		if best < 0 || p.busy[i] < p.busy[best] {
			best = i
		}
		if p.busy[i] == 0 {
			break
		}
	}
	p.next = (best + 1) % p.n
	p.busy[best]++
	uid, gid := p.ids(best)
	os.Lchown(dir, uid, gid) // own walks the rest; an error shows there
	return best, alone
}

func (p *idPool) release(i int, dir string) {
	p.mu.Lock()
	p.busy[i]--
	if p.live[dir]--; p.live[dir] <= 0 {
		delete(p.live, dir)
	}
	p.mu.Unlock()
}

func (p *idPool) ids(slot int) (uid, gid int) { return p.uid + slot, p.gid + slot }

// validIDs checks a host uid or gid range for sandboxes.
func validIDs(field string, first, n, self int) error {
	switch {
	case first <= 0:
		return fmt.Errorf("bwrap: config %s %d: must be positive (never root)", field, first)
	case first+n-1 > 0x7FFFFFFE:
		return fmt.Errorf("bwrap: config %s %d + UIDs %d exceeds 2147483646", field, first, n)
	case self >= first && self < first+n:
		return fmt.Errorf("bwrap: config %s range %d-%d contains this process's own id %d", field, first, first+n-1, self)
	}
	return nil
}

// ownerOf returns the host uid owning path, or -1.
func ownerOf(path string) int {
	var st unix.Stat_t
	if unix.Lstat(path, &st) != nil {
		return -1
	}
	return int(st.Uid)
}

// own makes dir and every entry under it owned by uid:gid, so that the
// sandbox can write what the host wrote there as root between runs (the
// git index, objects, refs). It never follows a symlink: directories are
// opened with O_NOFOLLOW relative to their parent's descriptor and
// symlinks themselves are re-owned through an O_PATH descriptor (see
// chownAt). Entries already owned are left alone, so a second run costs
// one fstatat per entry. Regular files with other hard links are skipped when not owned
// yet (their other names may lie outside dir; the sandbox can still read
// them when their mode allows). A change of owner clears set-id bits; no
// mode is changed otherwise (fchmodat follows symlinks, and a sandbox
// sharing dir could swap one in).
func own(dir string, uid, gid int) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("own %s: %w", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return fmt.Errorf("own %s: %w", dir, err)
	}
	if int(st.Uid) != uid || int(st.Gid) != gid {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			unix.Close(fd)
			return fmt.Errorf("own %s: %w", dir, err)
		}
	}
	if err := ownTree(fd, uid, gid, 0); err != nil {
		return fmt.Errorf("own %s: %w", dir, err)
	}
	return nil
}

// maxOwnDepth bounds how deep own walks: the walk keeps one descriptor
// open per level, and an agent can nest directories as deep as it likes.
const maxOwnDepth = 256

// errTooDeep is own's error for a tree deeper than maxOwnDepth; it names
// no path (one that deep is tens of kilobytes).
var errTooDeep = fmt.Errorf("directories nest more than %d levels deep", maxOwnDepth)

// ownTree re-owns the entries of the directory open at fd, depth levels
// below own's directory, and closes fd.
func ownTree(fd, uid, gid, depth int) error {
	f := os.NewFile(uintptr(fd), "dir")
	defer f.Close()
	for {
		names, rerr := f.Readdirnames(1024)
		for _, name := range names {
			var st unix.Stat_t
			if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue
				}
				return err
			}
			if int(st.Uid) != uid || int(st.Gid) != gid {
				if err := chownAt(fd, name, &st, uid, gid); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				if depth == maxOwnDepth {
					return errTooDeep
				}
				cfd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
					continue // gone, or swapped for a file or a symlink since fstatat
				}
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				if err := ownTree(cfd, uid, gid, depth+1); err != nil {
					if errors.Is(err, errTooDeep) {
						return err
					}
					return fmt.Errorf("%s/%w", name, err)
				}
			}
		}
		if rerr == io.EOF || len(names) == 0 {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// chownAt re-owns the entry name of the directory open at dirfd, which
// fstatat found as st, unless it is a regular file with other hard links.
// A sandbox on the same Dir may rename another inode over the name
// meanwhile, such as a hard link to a file whose other name lies outside
// Dir (an object git cloned from a mirror), and unlink its own name after
// the check. So the inode re-owned is the one checked: opened as an
// O_PATH descriptor (the symlink itself for a symlink) and re-owned
// through it only when it is still st's inode; an entry that is gone or
// was replaced is left alone. The link count is only sound with no
// sandbox of Dir alive: it is read after a rename may already have
// dropped the name that was looked up.
func chownAt(dirfd int, name string, st *unix.Stat_t, uid, gid int) error {
	if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink > 1 {
		return nil
	}
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var now unix.Stat_t
	if err := unix.Fstat(fd, &now); err != nil {
		return err
	}
	if now.Dev != st.Dev || now.Ino != st.Ino {
		return nil
	}
	return unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
}
