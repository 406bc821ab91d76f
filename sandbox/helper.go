package sandbox

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

// HelperArg is argv[1] of a process started as the sandbox helper.
const HelperArg = "__nightshift-sandbox-helper"

// Reexec runs the sandbox helper when the process was started as one
// (argv[1] == HelperArg) and exits; otherwise it returns false at once.
// Call it first thing in main, and in TestMain of tests that start
// sandboxes, because the Manager binds the current executable into the
// sandbox as the helper (Config.HelperBinary).
//
// The helper listens on loopback ports inside the sandbox, bridges each
// connection to a host unix socket bound into the sandbox (the egress proxy,
// forwards), runs the command as its child, forwards termination signals to
// it and exits with its status.
func Reexec() bool {
	if len(os.Args) < 2 || os.Args[1] != HelperArg {
		return false
	}
	code, err := runHelper(os.Args[2:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "nightshift-sandbox-helper:", err)
	}
	os.Exit(code)
	return false
}

func runHelper(args []string) (int, error) {
	var command []string
	type bridge struct{ port, sock string }
	var bridges []bridge
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "--":
			command = args[i+1:]
			i = len(args)
		case a == "-l" && i+1 < len(args):
			port, sock, ok := strings.Cut(args[i+1], "=")
			if _, err := strconv.Atoi(port); !ok || err != nil {
				return 125, fmt.Errorf("bad listener %q", args[i+1])
			}
			bridges = append(bridges, bridge{port, sock})
			i++
		default:
			return 125, fmt.Errorf("bad argument %q", a)
		}
	}
	if len(command) == 0 {
		return 125, errors.New("no command")
	}
	for _, b := range bridges {
		ln, err := net.Listen("tcp", "127.0.0.1:"+b.port)
		if err != nil {
			return 125, err
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					u, err := net.Dial("unix", b.sock)
					if err != nil {
						return
					}
					defer u.Close()
					splice(c, u)
				}()
			}
		}()
	}
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if errors.Is(cmd.Err, exec.ErrDot) {
		cmd.Err = nil
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	if err := cmd.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return 127, err
		}
		return 126, err
	}
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ExitFromWaitStatus(ws).Code, nil
}

// splice copies both ways until either side ends.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
}
