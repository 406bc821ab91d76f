package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestSandboxExecRefusesDirsItMustNotReown: sandbox exec hands --dir to
// the sandbox uid (as root: every entry re-owned, set-id bits cleared), so
// it refuses, in one sentence and with exit 2, /, system directories and
// their ancestors, anything under a system tree, a user's home directory,
// the data directory and its ancestors (however the data dir is given),
// a symlink to any of those, and a tree holding a setuid file, whose bits
// and owner stay as they were. The process driver runs the command: on
// code without the checks each case would run (and exit 0).
func TestSandboxExecRefusesDirsItMustNotReown(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	data := filepath.Join(tmp, "state", "data")
	suid := filepath.Join(tmp, "suid")
	if err := os.MkdirAll(filepath.Join(suid, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	suidFile := filepath.Join(suid, "bin", "helper")
	if err := os.WriteFile(suidFile, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(suidFile, 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(tmp, "shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/usr", filepath.Join(tmp, "usr-link")); err != nil {
		t.Fatal(err)
	}
	type refusal struct {
		args []string
		env  []string
		why  string
	}
	cases := []refusal{
		{args: []string{"--dir", "/"}, why: "root directory"},
		{args: []string{"--dir", "/usr"}, why: "system directory"},
		{args: []string{"--dir", "/etc/"}, why: "system directory"},
		{args: []string{"--dir", "/tmp"}, why: "system directory"},
		{args: []string{"--dir", "/var"}, why: "system directory"},
		{args: []string{"--dir", "/root"}, why: "system directory"},
		{args: []string{"--dir", "/usr/local/bin"}, why: "inside the system directory /usr"},
		{args: []string{"--dir", filepath.Join(tmp, "usr-link")}, why: "system directory"},
		{args: []string{"--dir", data, "--data-dir", data}, why: "data directory"},
		{args: []string{"--dir", tmp, "--data-dir", data}, why: "data directory"},
		{args: []string{"--dir", filepath.Join(tmp, "state")}, env: []string{"NIGHTSHIFT_DATA_DIR=" + data}, why: "data directory"},
		{args: []string{"--dir", suid}, why: suidFile + " is setuid or setgid"},
		{args: []string{"--dir", "/var/tmp"}, why: "inside the system directory /var"},
		{args: []string{"--dir", shared}, why: "shared directory"},
	}
	if home := someHome(); home != "" {
		t.Logf("home directory case: %s", home)
		cases = append(cases, refusal{args: []string{"--dir", home}, why: "home directory"})
	} else {
		t.Log("no existing home directory outside the system directories in /etc/passwd; that case is not checked")
	}
	for _, c := range cases {
		args := append(append([]string{"nightshift", "sandbox", "exec", "--driver", "process"}, c.args...), "--", "true")
		_, errOut, code := cliRunEnv(t, c.env, args...)
		if code != 2 || !strings.Contains(errOut, c.why) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%q: exit %d, stderr %q; want 2 and one sentence naming %q", c.args, code, errOut, c.why)
		}
	}
	// The global --data-dir before the command counts too.
	_, errOut, code := cliRunEnv(t, nil, "nightshift", "--data-dir", data, "sandbox", "exec", "--driver", "process", "--dir", data, "--", "true")
	if code != 2 || !strings.Contains(errOut, "data directory") {
		t.Errorf("global --data-dir: exit %d, stderr %q", code, errOut)
	}
	if fi, err := os.Stat(suidFile); err != nil || fi.Mode()&os.ModeSetuid == 0 {
		t.Errorf("the setuid file lost its bit: %v %v", fi.Mode(), err)
	}

	// An ordinary directory is accepted; a root nightshift says which uid
	// it hands the directory to.
	work := filepath.Join(tmp, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := cliRunEnv(t, nil, "nightshift", "sandbox", "exec", "--driver", "process", "--dir", work, "--", "true"); code != 0 {
		t.Fatalf("ordinary dir: exit %d %q", code, errOut)
	}
	if _, err := exec.LookPath("bwrap"); err == nil && os.Geteuid() == 0 {
		_, errOut, code := cliRunEnv(t, nil, "nightshift", "sandbox", "exec", "--dir", work, "--", "true")
		if code != 0 || !strings.Contains(errOut, work+" is handed to uid 1900000000") {
			t.Errorf("bwrap as root: exit %d, stderr %q; want a note that the dir is handed to uid 1900000000", code, errOut)
		}
	}
}

// cliRunEnv is cliRun with extra environment; args include argv[0].
func cliRunEnv(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, append(baseEnv(t), env...), strings.NewReader(""), &out, &errb)
	code = exitCode(err, &errb)
	return out.String(), errb.String(), code
}

// someHome returns an existing home directory from /etc/passwd that no
// other rule refuses (not a system directory, not under a system tree
// once symlinks are resolved), or "".
func someHome() string {
	b, _ := os.ReadFile("/etc/passwd")
homes:
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 7 {
			continue
		}
		h, err := filepath.EvalSymlinks(f[5])
		if err != nil || h == "/" || slices.Contains(systemDirs, h) {
			continue
		}
		for _, sys := range systemTrees {
			if strings.HasPrefix(h, sys+"/") {
				continue homes
			}
		}
		for _, sys := range systemDirs {
			if strings.HasPrefix(sys, h+"/") {
				continue homes
			}
		}
		if fi, err := os.Stat(h); err == nil && fi.IsDir() {
			return f[5]
		}
	}
	return ""
}
