package main

import "testing"

// TestSecretInABinaryFileIsNeverPushed: the rendered patch shows a binary
// file only as "Binary files differ", so a secret inside one escaped the
// patch check; the push scan reads every object it would send, so the task
// fails with secret_in_diff and nothing is pushed. Fails on the old code
// (the branch was pushed).
func TestSecretInABinaryFileIsNeverPushed(t *testing.T) {
	t.Parallel()
	assertSecretNeverPushed(t, `printf '\000\001\002' > blob.bin; ravi secrets get DEPLOY_TOKEN >> blob.bin; echo fine > NOTES.md`,
		"a binary file carrying a secret was pushed")
}
