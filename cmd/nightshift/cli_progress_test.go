package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY returns a pseudo-terminal: the master to read what a program
// writes, and the terminal side to give it as stdout.
func openPTY(t *testing.T) (master, term *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 100})
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

// waitOutput waits until out matches re.
func waitOutput(t *testing.T, out *syncBuffer, re *regexp.Regexp, what string) []string {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		ch := out.changed()
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%s: no match for %s in output:\n%q", what, re, out.String())
		}
	}
}

// followOn runs `nightshift dispatch --follow` for a gated task with stdout
// on w, opens the gate once the task runs, and returns the output.
func followOn(t *testing.T, s *testServer, gates, origin string, env []string, out *syncBuffer, stdout *os.File) (string, error) {
	t.Helper()
	done := make(chan error, 1)
	args := []string{"nightshift", "dispatch", "--repo", origin, "--agent", "gated", "--follow", "--server", s.URL, "write hello"}
	var w interface{ Write([]byte) (int, error) } = out
	if stdout != nil {
		w = stdout
	}
	go func() { done <- run(context.Background(), args, env, strings.NewReader(""), w, &syncBuffer{}) }()
	id := waitOutput(t, out, regexp.MustCompile(`task ([0-9a-z]{16}) queued`), "task id")[1]
	waitOutput(t, out, regexp.MustCompile(`waiting for the test to open the gate`), "agent started")
	if stdout != nil {
		// The status line is drawn and redrawn in place while the agent runs.
		waitOutput(t, out, regexp.MustCompile(`\r\x1b\[2K(\x1b\[2m)?. running · agent · 0:\d\d`), "status line")
	}
	openGate(t, gates, id)
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(60 * time.Second):
		t.Fatalf("dispatch --follow did not end:\n%q", out.String())
	}
	return "", nil
}

func TestFollowProgressDisplay(t *testing.T) {
	t.Parallel()
	yaml, gates := gatedYAML(t)
	s := startTestServer(t, yaml)
	origin := newOrigin(t)

	t.Run("terminal", func(t *testing.T) {
		master, term := openPTY(t)
		out := &syncBuffer{}
		go func() {
			buf := make([]byte, 4096)
			for {
				n, err := master.Read(buf)
				out.Write(buf[:n])
				if err != nil {
					return
				}
			}
		}()
		got, err := followOn(t, s, gates, origin, baseEnv(t), out, term)
		if err != nil {
			t.Fatalf("follow: %v\n%q", err, got)
		}
		waitOutput(t, out, regexp.MustCompile(`pull request|review: `), "summary")
		got = out.String()
		for _, want := range []string{"\x1b[1m\x1b[34mrunning", "\x1b[36magent ", "==> \x1b[1m\x1b[32mreview", "writing hello.go"} {
			if !strings.Contains(got, want) {
				t.Errorf("terminal output lacks %q:\n%q", want, got)
			}
		}
	})
	t.Run("terminal NO_COLOR", func(t *testing.T) {
		master, term := openPTY(t)
		out := &syncBuffer{}
		go func() {
			buf := make([]byte, 4096)
			for {
				n, err := master.Read(buf)
				out.Write(buf[:n])
				if err != nil {
					return
				}
			}
		}()
		got, err := followOn(t, s, gates, origin, append(baseEnv(t), "NO_COLOR=1"), out, term)
		if err != nil {
			t.Fatalf("follow: %v\n%q", err, got)
		}
		waitOutput(t, out, regexp.MustCompile(`review: `), "summary")
		got = out.String()
		if regexp.MustCompile(`\x1b\[[0-9;]*m`).MatchString(got) {
			t.Errorf("NO_COLOR output has colors:\n%q", got)
		}
		if !strings.Contains(got, "\r\x1b[2K") || !strings.Contains(got, "==> review") {
			t.Errorf("NO_COLOR output lacks the redrawn status line or states:\n%q", got)
		}
	})
	t.Run("pipe", func(t *testing.T) {
		out := &syncBuffer{}
		got, err := followOn(t, s, gates, origin, baseEnv(t), out, nil)
		if err != nil {
			t.Fatalf("follow: %v\n%s", err, got)
		}
		if strings.ContainsAny(got, "\r\x1b") {
			t.Errorf("plain output has control characters:\n%q", got)
		}
		for _, want := range []string{"==> queued", "==> running (agent gated)", "agent  | writing hello.go", "==> review", "review: "} {
			if !strings.Contains(got, want) {
				t.Errorf("plain output lacks %q:\n%s", want, got)
			}
		}
	})
}
