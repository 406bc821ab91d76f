package agent_test

import (
	"os"
	"testing"

	"github.com/nightshift/nightshift/sandbox"
)

func TestMain(m *testing.M) {
	// The sandbox binds this test binary into the sandbox as its loopback
	// forwarding helper.
	sandbox.Reexec()
	os.Exit(m.Run())
}
