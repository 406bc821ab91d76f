package bwrap

import (
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/nightshift/nightshift/sandbox"
)

// listenInNetns creates a TCP listener for each Listener's port inside the
// network namespace at nsPath, from this process: the sandbox then needs
// no helper process to reach the Manager's services. It needs
// CAP_SYS_ADMIN over the namespace (root). The listeners bind the wildcard
// address because the namespace's loopback may not be up yet; the
// namespace has no interface besides loopback.
func listenInNetns(nsPath string, ls []sandbox.Listener) ([]net.Listener, error) {
	type result struct {
		lns []net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread changes namespace; it is never unlocked unless it
		// got back, so a thread stuck in the sandbox's namespace exits
		// with this goroutine instead of running other code.
		runtime.LockOSThread()
		lns, err, back := listenOnThread(nsPath, ls)
		if back {
			runtime.UnlockOSThread()
		}
		ch <- result{lns, err}
	}()
	r := <-ch
	return r.lns, r.err
}

func listenOnThread(nsPath string, ls []sandbox.Listener) (lns []net.Listener, err error, back bool) {
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err, true
	}
	defer unix.Close(orig)
	target, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err, true
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("setns: %w", err), true
	}
	fds := make([]int, 0, len(ls))
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	for _, l := range ls {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err == nil {
			fds = append(fds, fd)
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			err = unix.Bind(fd, &unix.SockaddrInet4{Port: l.Port})
		}
		if err == nil {
			err = unix.Listen(fd, 128)
		}
		if err != nil {
			closeAll()
			err = fmt.Errorf("port %d: %w", l.Port, err)
			return nil, err, unix.Setns(orig, unix.CLONE_NEWNET) == nil
		}
	}
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		closeAll()
		return nil, fmt.Errorf("setns back: %w", err), false
	}
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), fmt.Sprintf("sandbox-port-%d", ls[i].Port))
		ln, err := net.FileListener(f) // dups fd
		f.Close()
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			for _, fd := range fds[i+1:] {
				unix.Close(fd)
			}
			return nil, err, true
		}
		lns = append(lns, ln)
	}
	return lns, nil, true
}
