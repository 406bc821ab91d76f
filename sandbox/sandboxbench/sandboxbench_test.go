package sandboxbench

import (
	"bytes"
	"context"
	"flag"
	"os"
	"regexp"
	"testing"

	"github.com/nightshift/nightshift/sandbox/sandboxtest"
)

var full = flag.Bool("sandboxbench.full", false, "run the full benchmark (Run) and print it")

func TestMain(m *testing.M) { sandboxtest.Main(m) }

func TestRunPrintsRatio(t *testing.T) {
	if *full {
		if err := Run(context.Background(), os.Stdout); err != nil {
			t.Fatal(err)
		}
		return
	}
	var out bytes.Buffer
	if err := run(context.Background(), &out, 2, 4); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !regexp.MustCompile(`\nratio=[0-9.]+\n$`).Match(out.Bytes()) {
		t.Errorf("last line is not ratio=: %q", out.String())
	}
}
