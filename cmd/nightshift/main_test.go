package main

import (
	"os"
	"testing"

	"github.com/nightshift/nightshift/sandbox"
)

func TestMain(m *testing.M) {
	if sandbox.Reexec() {
		return
	}
	os.Exit(m.Run())
}
