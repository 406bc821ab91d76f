package bwrap

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Bind sources reach bubblewrap in one of two ways.
//
// As root, bubblewrap runs as an unprivileged uid that cannot traverse the
// directories above most sources (a 0700 data directory, /root). Its
// --bind-fd does not help: bubblewrap 0.8 resolves the descriptor's path
// with realpath(3) as that uid. So the driver keeps a private mount
// namespace (a slave of the host's, made once) with a tmpfs at a staging
// directory; for each run, a thread that entered that namespace opens
// every source (paths beneath Dir with openat2, refusing symlinks), binds
// it from its descriptor under a tmpfs that only the run's uid may enter,
// in a copy of that namespace made for the run, and starts bubblewrap
// from there with the staged paths. The copy and its mounts go away with
// the run; nothing is ever mounted in the host's namespace.
//
// Not root, bubblewrap runs as this process's uid and can resolve what
// this process can: every source is an O_PATH descriptor passed with
// --bind-fd / --ro-bind-fd.

// bindReq is one host bind source.
type bindReq struct {
	dst   string
	path  string // a host path chosen by the operator or the Manager; symlinks followed
	dir   string // with rel: the path rel beneath dir, through no symlink
	rel   string
	mkdir bool   // create rel as a directory when missing
	empty string // bind this host path instead when rel is missing
}

// placeholder marks an option to be replaced by a bind source.
const placeholder = "\x00bind:"

// bindSet collects the bind sources of one run.
type bindSet struct {
	reqs  []bindReq
	files []*os.File // descriptors passed to bubblewrap (not staged)
}

func (bs *bindSet) add(r bindReq) string {
	bs.reqs = append(bs.reqs, r)
	return placeholder + strconv.Itoa(len(bs.reqs)-1)
}

func (bs *bindSet) close() {
	for _, f := range bs.files {
		f.Close()
	}
	bs.files = nil
}

// open opens the source of r as an O_PATH descriptor. Directories it
// creates are given to uid:gid (-1: unchanged).
func (r bindReq) open(dirfds map[string]int, uid, gid int) (int, error) {
	if r.rel == "" {
		fd, err := unix.Open(r.path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: r.path, Err: err}
		}
		return fd, nil
	}
	dirfd, ok := dirfds[r.dir]
	if !ok {
		var err error
		if dirfd, err = unix.Open(r.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
			return -1, &os.PathError{Op: "open", Path: r.dir, Err: err}
		}
		dirfds[r.dir] = dirfd
	}
	flags := 0
	if r.mkdir {
		flags = unix.O_DIRECTORY
	}
	fd, err := beneath(dirfd, r.rel, flags)
	if errors.Is(err, unix.ENOENT) {
		switch {
		case r.mkdir:
			if err = mkdirBeneath(dirfd, r.rel, uid, gid); err == nil || errors.Is(err, unix.EEXIST) {
				fd, err = beneath(dirfd, r.rel, flags)
			}
		case r.empty != "":
			return bindReq{path: r.empty}.open(dirfds, uid, gid)
		}
	}
	if err != nil {
		return -1, fmt.Errorf("read-only path %q: not a path beneath Dir without symlinks: %w", r.rel, err)
	}
	return fd, nil
}

// mkdirBeneath creates the directory rel under the directory open at
// dirfd, in its parent opened with beneath: a sandbox on the same Dir may
// have swapped a symlink in above rel since the parent was checked, and
// mkdirat follows one. The new directory is given to uid:gid (-1:
// unchanged).
func mkdirBeneath(dirfd int, rel string, uid, gid int) error {
	parent, base := filepath.Split(rel)
	if parent != "" {
		pfd, err := beneath(dirfd, parent, unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		defer unix.Close(pfd)
		dirfd = pfd
	}
	if err := unix.Mkdirat(dirfd, base, 0o755); err != nil || uid < 0 {
		return err
	}
	return unix.Fchownat(dirfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
}

// beneath opens rel under the directory open at dirfd as an O_PATH
// descriptor, refusing any symlink on the way, the last component
// included (no O_NOFOLLOW: with it, O_PATH would open the symlink itself),
// and any path leading out.
func beneath(dirfd int, rel string, flags int) (int, error) {
	return unix.Openat2(dirfd, rel, &unix.OpenHow{
		Flags:   uint64(unix.O_PATH | unix.O_CLOEXEC | flags),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// resolve replaces each placeholder in opts with a source given by
// source(i, fd), which owns fd.
func (bs *bindSet) resolve(opts []string, uid, gid int, source func(i, fd int, op *string) (string, error)) error {
	dirfds := map[string]int{}
	defer func() {
		for _, fd := range dirfds {
			unix.Close(fd)
		}
	}()
	for j, o := range opts {
		n, ok := strings.CutPrefix(o, placeholder)
		if !ok {
			continue
		}
		i, _ := strconv.Atoi(n)
		fd, err := bs.reqs[i].open(dirfds, uid, gid)
		if err != nil {
			return err
		}
		if opts[j], err = source(i, fd, &opts[j-1]); err != nil {
			return err
		}
	}
	return nil
}

// byDescriptor resolves opts to --bind-fd options; the descriptors go to
// bs.files, numbered from first in bubblewrap.
func (bs *bindSet) byDescriptor(opts []string, first int) error {
	return bs.resolve(opts, -1, -1, func(i, fd int, op *string) (string, error) {
		bs.files = append(bs.files, os.NewFile(uintptr(fd), bs.reqs[i].dst))
		*op += "-fd"
		return strconv.Itoa(first + len(bs.files) - 1), nil
	})
}

// stager is the private mount namespace where bind sources are staged.
type stager struct {
	nsfd int    // the namespace
	dir  string // a tmpfs inside the namespace; an empty directory on the host
}

// newStager creates the staging namespace with a tmpfs at dir, which must
// be an empty directory.
func newStager(dir string) (*stager, error) {
	st := &stager{nsfd: -1, dir: dir}
	err := onThread(func() error {
		if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		// Host mounts still arrive; nothing goes back.
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
			return fmt.Errorf("make / a slave: %w", err)
		}
		if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0711,size=1m"); err != nil {
			return fmt.Errorf("mount staging tmpfs: %w", err)
		}
		if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("make staging private: %w", err)
		}
		fd, err := unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		st.nsfd = fd
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bwrap: staging namespace: %w", err)
	}
	return st, nil
}

func (st *stager) close() error {
	if st == nil || st.nsfd < 0 {
		return nil
	}
	err := unix.Close(st.nsfd)
	st.nsfd = -1
	return err
}

// onThread runs f on a fresh locked thread that is discarded afterwards,
// because f may leave it in another namespace.
func onThread(f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		ch <- f()
	}()
	return <-ch
}

// start stages the binds of opts for a sandbox of uid:gid and calls launch
// with the resolved options on a thread inside a copy of the staging
// namespace made for this run, so that the process launch starts is in
// it. The copy holds only this run's staged mounts (so bubblewrap does not
// copy every other run's too) and takes them with it when its last
// process is gone: nothing needs unmounting. The thread lives until
// exited is called, because the parent-death signal bubblewrap asks for
// follows the thread that forked it.
func (st *stager) start(bs *bindSet, opts []string, uid, gid int, launch func([]string) error) (exited func(), err error) {
	res := make(chan error, 1)
	exitedC := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread leaves the host's mount namespace
		res <- func() error {
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				return fmt.Errorf("unshare: %w", err)
			}
			if err := unix.Setns(st.nsfd, unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("enter staging namespace: %w", err)
			}
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("unshare staging namespace: %w", err)
			}
			opt := fmt.Sprintf("mode=0700,uid=%d,gid=%d,size=64k", uid, gid)
			if err := unix.Mount("tmpfs", st.dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opt); err != nil {
				return fmt.Errorf("staging tmpfs: %w", err)
			}
			err := bs.resolve(opts, uid, gid, func(i, fd int, _ *string) (string, error) {
				defer unix.Close(fd)
				var stt unix.Stat_t
				if err := unix.Fstat(fd, &stt); err != nil {
					return "", err
				}
				p := filepath.Join(st.dir, strconv.Itoa(i))
				var err error
				if stt.Mode&unix.S_IFMT == unix.S_IFDIR {
					err = unix.Mkdir(p, 0o700)
				} else {
					var f int
					if f, err = unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600); err == nil {
						unix.Close(f)
					}
				}
				if err == nil {
					err = unix.Mount("/proc/self/fd/"+strconv.Itoa(fd), p, "", unix.MS_BIND|unix.MS_REC, "")
				}
				if err != nil {
					return "", fmt.Errorf("stage %s: %w", bs.reqs[i].dst, err)
				}
				return p, nil
			})
			if err != nil {
				return err
			}
			return launch(opts)
		}()
		<-exitedC
	}()
	exited = sync.OnceFunc(func() { close(exitedC) })
	if err := <-res; err != nil {
		exited() // nothing started: let the thread and its namespace go
		return nil, err
	}
	return exited, nil
}

// prlimitAs sets resource limits on pid from a thread running as uid:gid,
// the ids of the target: lowering another process's limits then needs no
// CAP_SYS_RESOURCE, which a root service may lack. The thread is
// discarded.
func prlimitAs(pid, uid, gid int, limits map[int]uint64) error {
	set := func() error {
		for res, v := range limits {
			rl := unix.Rlimit{Cur: v, Max: v}
			if err := unix.Prlimit(pid, res, &rl, nil); err != nil {
				return fmt.Errorf("prlimit: %w", err)
			}
		}
		return nil
	}
	if uid < 0 {
		// On this thread: a discarded thread may be the one that forked
		// bubblewrap, whose parent-death signal would then kill it.
		return set()
	}
	// As root, bubblewrap was forked by a staging thread, never by one
	// that onThread may discard.
	return onThread(func() error {
		// Raw syscalls: the libc-style wrappers change every thread.
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)); e != 0 {
			return fmt.Errorf("setresgid: %w", e)
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
			return fmt.Errorf("setresuid: %w", e)
		}
		return set()
	})
}
