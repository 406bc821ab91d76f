package forgetest

import "testing"

// runPolicy runs the cases that go through forge.Publisher and
// forge.Reporter over the harness's driver.
func runPolicy(t *testing.T, newHarness func(t *testing.T) Harness) {}
