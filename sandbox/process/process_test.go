package process_test

import (
	"testing"

	"github.com/nightshift/nightshift/sandbox"
	"github.com/nightshift/nightshift/sandbox/process"
	"github.com/nightshift/nightshift/sandbox/sandboxtest"
)

func TestMain(m *testing.M) { sandboxtest.Main(m) }

func TestConformance(t *testing.T) {
	sandboxtest.Run(t, func(t *testing.T) sandbox.Driver { return process.New(process.Config{}) }, sandboxtest.Options{})
}
