package vault_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/nightshift/nightshift/vault"
)

// Two handles on one file stand in for the server and the CLI.
func TestConcurrentWritersShareOneFile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	other := openDB(t, f.dbPath)
	v2, err := vault.Open(ctx, other, f.keys, vault.Config{})
	if err != nil {
		t.Fatal(err)
	}
	const workers, rounds = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			v := f.v
			if w%2 == 1 {
				v = v2
			}
			name := fmt.Sprintf("WORKER_%d", w)
			for i := 0; i < rounds; i++ {
				want := fmt.Sprintf("value-%d-%d", w, i)
				if _, err := v.Set(ctx, op, name, "global", []byte(want)); err != nil {
					errs <- err
					return
				}
				got, err := v.Get(ctx, op, name, "global")
				if err != nil || string(got) != want {
					errs <- fmt.Errorf("%s: %q %v", name, got, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	rep, err := v2.VerifyAudit(ctx, op)
	if err != nil || !rep.OK() || rep.Rows != workers*rounds*2 {
		t.Fatalf("audit: %+v %v", rep, err)
	}
}
