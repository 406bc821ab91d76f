// Package seccomp builds the classic-BPF seccomp filter the bwrap driver
// passes to bubblewrap (--seccomp FD). The filter is a deny list on top of
// the namespaces and dropped capabilities: it blocks the syscalls that
// reach across process or kernel boundaries (ptrace, process_vm_*, io_uring,
// kernel keyrings, bpf, perf, module and mount APIs, namespace creation and
// joining), and socket families other than unix, inet and inet6. Foreign
// syscall ABIs (i386 and x32 on amd64) are refused outright.
package seccomp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// ErrUnsupportedArch reports a GOARCH without a syscall table here.
var ErrUnsupportedArch = errors.New("seccomp: unsupported architecture")

// BPF opcodes.
const (
	ldAbs   = 0x20 // BPF_LD|BPF_W|BPF_ABS
	jeq     = 0x15 // BPF_JMP|BPF_JEQ|BPF_K
	jge     = 0x35 // BPF_JMP|BPF_JGE|BPF_K
	jset    = 0x45 // BPF_JMP|BPF_JSET|BPF_K
	ret     = 0x06 // BPF_RET|BPF_K
	offNr   = 0
	offArch = 4
	offArg0 = 16 // low 32 bits of args[0] (little endian)
	offArg1 = 24

	// RetAllow lets the syscall run.
	RetAllow = 0x7fff0000
	// RetKillProcess kills the process.
	RetKillProcess = 0x80000000
	retErrno       = 0x00050000
)

// RetErrno returns the action that fails the syscall with errno.
func RetErrno(errno unix.Errno) uint32 { return retErrno | uint32(errno) }

// Instruction is one classic BPF instruction (struct sock_filter).
type Instruction struct {
	Code uint16
	Jt   uint8
	Jf   uint8
	K    uint32
}

// Program is a seccomp filter.
type Program []Instruction

// Bytes encodes p in the kernel's struct sock_filter layout (native endian).
func (p Program) Bytes() []byte {
	b := make([]byte, 0, 8*len(p))
	for _, in := range p {
		b = binary.NativeEndian.AppendUint16(b, in.Code)
		b = append(b, in.Jt, in.Jf)
		b = binary.NativeEndian.AppendUint32(b, in.K)
	}
	return b
}

type arch struct {
	audit    uint32
	x32      bool // refuse syscall numbers with the x32 bit
	blocked  []uint32
	socket   uint32
	clone    uint32
	unshare  uint32
	clone3   uint32
	ioctl    uint32
	setns    uint32
	ptraceNr uint32
}

func current() (arch, error) {
	a := arch{
		blocked: []uint32{
			unix.SYS_PTRACE, unix.SYS_PROCESS_VM_READV, unix.SYS_PROCESS_VM_WRITEV,
			unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER, unix.SYS_IO_URING_REGISTER,
			unix.SYS_KEYCTL, unix.SYS_ADD_KEY, unix.SYS_REQUEST_KEY,
			unix.SYS_BPF, unix.SYS_PERF_EVENT_OPEN, unix.SYS_USERFAULTFD,
			unix.SYS_KEXEC_LOAD, unix.SYS_KEXEC_FILE_LOAD,
			unix.SYS_INIT_MODULE, unix.SYS_FINIT_MODULE, unix.SYS_DELETE_MODULE,
			unix.SYS_MOUNT, unix.SYS_UMOUNT2, unix.SYS_PIVOT_ROOT, unix.SYS_SETNS,
			unix.SYS_OPEN_TREE, unix.SYS_MOVE_MOUNT, unix.SYS_FSOPEN, unix.SYS_FSCONFIG,
			unix.SYS_FSMOUNT, unix.SYS_FSPICK, unix.SYS_MOUNT_SETATTR,
			unix.SYS_OPEN_BY_HANDLE_AT, unix.SYS_NAME_TO_HANDLE_AT,
			unix.SYS_SWAPON, unix.SYS_SWAPOFF, unix.SYS_REBOOT, unix.SYS_ACCT,
			unix.SYS_FANOTIFY_INIT, unix.SYS_PIDFD_GETFD, unix.SYS_KCMP,
		},
		socket:  unix.SYS_SOCKET,
		clone:   unix.SYS_CLONE,
		unshare: unix.SYS_UNSHARE,
		clone3:  unix.SYS_CLONE3,
		ioctl:   unix.SYS_IOCTL,
	}
	switch runtime.GOARCH {
	case "amd64":
		a.audit, a.x32 = unix.AUDIT_ARCH_X86_64, true
	case "arm64":
		a.audit = unix.AUDIT_ARCH_AARCH64
	default:
		return a, fmt.Errorf("%w: %s", ErrUnsupportedArch, runtime.GOARCH)
	}
	return a, nil
}

// Filter returns the sandbox filter for the running architecture.
func Filter() (Program, error) {
	a, err := current()
	if err != nil {
		return nil, err
	}
	eperm := RetErrno(unix.EPERM)
	p := Program{
		{ldAbs, 0, 0, offArch},
		{jeq, 1, 0, a.audit},
		{ret, 0, 0, RetKillProcess},
		{ldAbs, 0, 0, offNr},
	}
	if a.x32 {
		p = append(p, Instruction{jge, 0, 1, 0x40000000}, Instruction{ret, 0, 0, RetErrno(unix.ENOSYS)})
	}
	for _, nr := range a.blocked {
		p = append(p, Instruction{jeq, 0, 1, nr}, Instruction{ret, 0, 0, eperm})
	}
	// clone3 passes flags in memory the filter cannot read: ENOSYS makes
	// libc fall back to clone, whose flags it can.
	p = append(p, Instruction{jeq, 0, 1, a.clone3}, Instruction{ret, 0, 0, RetErrno(unix.ENOSYS)})
	// socket(family, ...): only AF_UNIX, AF_INET, AF_INET6.
	p = append(p,
		Instruction{jeq, 0, 6, a.socket},
		Instruction{ldAbs, 0, 0, offArg0},
		Instruction{jeq, 3, 0, unix.AF_UNIX},
		Instruction{jeq, 2, 0, unix.AF_INET},
		Instruction{jeq, 1, 0, unix.AF_INET6},
		Instruction{ret, 0, 0, RetErrno(unix.EAFNOSUPPORT)},
		Instruction{ret, 0, 0, RetAllow},
	)
	// clone and unshare: no new user namespace (nested sandboxes would
	// regain capabilities over their own mounts).
	for _, nr := range []uint32{a.clone, a.unshare} {
		p = append(p,
			Instruction{jeq, 0, 4, nr},
			Instruction{ldAbs, 0, 0, offArg0},
			Instruction{jset, 0, 1, unix.CLONE_NEWUSER},
			Instruction{ret, 0, 0, eperm},
			Instruction{ret, 0, 0, RetAllow},
		)
	}
	// ioctl(fd, TIOCSTI/TIOCLINUX): no typing into a terminal outside.
	p = append(p,
		Instruction{jeq, 0, 5, a.ioctl},
		Instruction{ldAbs, 0, 0, offArg1},
		Instruction{jeq, 1, 0, unix.TIOCSTI},
		Instruction{jeq, 0, 1, unix.TIOCLINUX},
		Instruction{ret, 0, 0, eperm},
		Instruction{ret, 0, 0, RetAllow},
	)
	p = append(p, Instruction{ret, 0, 0, RetAllow})
	if len(p) > 4096 {
		return nil, errors.New("seccomp: filter too long")
	}
	return p, nil
}

// Run evaluates p on a syscall, the way the kernel would, and returns the
// action. It exists for tests.
func (p Program) Run(auditArch, nr uint32, args [6]uint64) (uint32, error) {
	data := make([]byte, 64)
	binary.LittleEndian.PutUint32(data[offNr:], nr)
	binary.LittleEndian.PutUint32(data[offArch:], auditArch)
	for i, a := range args {
		binary.LittleEndian.PutUint64(data[16+8*i:], a)
	}
	var acc uint32
	for pc := 0; pc < len(p); pc++ {
		in := p[pc]
		switch in.Code {
		case ldAbs:
			if int(in.K)+4 > len(data) {
				return 0, fmt.Errorf("pc %d: load out of range", pc)
			}
			acc = binary.LittleEndian.Uint32(data[in.K:])
		case jeq, jge, jset:
			var ok bool
			switch in.Code {
			case jeq:
				ok = acc == in.K
			case jge:
				ok = acc >= in.K
			case jset:
				ok = acc&in.K != 0
			}
			if ok {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case ret:
			return in.K, nil
		default:
			return 0, fmt.Errorf("pc %d: unknown opcode %#x", pc, in.Code)
		}
	}
	return 0, errors.New("fell off the end")
}
