package seccomp

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFilter(t *testing.T) {
	p, err := Filter()
	if err != nil {
		t.Skipf("missing capability: %v", err)
	}
	a, _ := current()
	eperm := RetErrno(unix.EPERM)
	type args = [6]uint64
	cases := []struct {
		name string
		arch uint32
		nr   uint32
		args args
		want uint32
	}{
		{"read allowed", a.audit, unix.SYS_READ, args{}, RetAllow},
		{"write allowed", a.audit, unix.SYS_WRITE, args{}, RetAllow},
		{"ptrace", a.audit, unix.SYS_PTRACE, args{}, eperm},
		{"process_vm_readv", a.audit, unix.SYS_PROCESS_VM_READV, args{}, eperm},
		{"process_vm_writev", a.audit, unix.SYS_PROCESS_VM_WRITEV, args{}, eperm},
		{"io_uring_setup", a.audit, unix.SYS_IO_URING_SETUP, args{}, eperm},
		{"bpf", a.audit, unix.SYS_BPF, args{}, eperm},
		{"setns", a.audit, unix.SYS_SETNS, args{}, eperm},
		{"socket unix", a.audit, unix.SYS_SOCKET, args{unix.AF_UNIX}, RetAllow},
		{"socket inet", a.audit, unix.SYS_SOCKET, args{unix.AF_INET}, RetAllow},
		{"socket inet6", a.audit, unix.SYS_SOCKET, args{unix.AF_INET6}, RetAllow},
		{"socket netlink", a.audit, unix.SYS_SOCKET, args{unix.AF_NETLINK}, RetErrno(unix.EAFNOSUPPORT)},
		{"socket packet", a.audit, unix.SYS_SOCKET, args{unix.AF_PACKET}, RetErrno(unix.EAFNOSUPPORT)},
		{"socket vsock", a.audit, unix.SYS_SOCKET, args{unix.AF_VSOCK}, RetErrno(unix.EAFNOSUPPORT)},
		{"socket inet high bits", a.audit, unix.SYS_SOCKET, args{1<<32 | unix.AF_INET}, RetAllow},
		{"clone thread", a.audit, unix.SYS_CLONE, args{unix.CLONE_VM | unix.CLONE_THREAD}, RetAllow},
		{"clone newuser", a.audit, unix.SYS_CLONE, args{unix.CLONE_NEWUSER}, eperm},
		{"unshare newuser", a.audit, unix.SYS_UNSHARE, args{unix.CLONE_NEWUSER | unix.CLONE_NEWNS}, eperm},
		{"unshare newns", a.audit, unix.SYS_UNSHARE, args{unix.CLONE_NEWNS}, RetAllow},
		{"clone3", a.audit, unix.SYS_CLONE3, args{}, RetErrno(unix.ENOSYS)},
		{"ioctl tiocsti", a.audit, unix.SYS_IOCTL, args{0, unix.TIOCSTI}, eperm},
		{"ioctl fionread", a.audit, unix.SYS_IOCTL, args{0, unix.TIOCGWINSZ}, RetAllow},
		{"foreign arch", unix.AUDIT_ARCH_I386, unix.SYS_READ, args{}, RetKillProcess},
	}
	if runtime.GOARCH == "amd64" {
		cases = append(cases, struct {
			name string
			arch uint32
			nr   uint32
			args args
			want uint32
		}{"x32 abi", a.audit, 0x40000000 | unix.SYS_PTRACE, args{}, RetErrno(unix.ENOSYS)})
	}
	for _, c := range cases {
		got, err := p.Run(c.arch, c.nr, c.args)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s: action %#x, want %#x", c.name, got, c.want)
		}
	}
	if n := len(p.Bytes()); n != 8*len(p) {
		t.Errorf("encoded %d bytes for %d instructions", n, len(p))
	}
}
