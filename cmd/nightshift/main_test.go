package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/nightshift/nightshift/sandbox"
)

func TestMain(m *testing.M) {
	if sandbox.Reexec() {
		return
	}
	// Inside a sandbox the test binary stands in for the nightshift binary
	// (the worker puts os.Executable() on the PATH as ravi and nightshift).
	switch filepath.Base(os.Args[0]) {
	case "ravi", "nightshift":
		os.Exit(exitCode(run(context.Background(), os.Args, os.Environ(), os.Stdin, os.Stdout, os.Stderr), os.Stderr))
	}
	os.Exit(m.Run())
}
