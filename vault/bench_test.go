package vault_test

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkSetGet measures one audited write and one audited read through
// a real SQLite file (WAL).
func BenchmarkSetGet(b *testing.B) {
	ctx := context.Background()
	f := &fixture{dir: b.TempDir()}
	f.dbPath = f.dir + "/nightshift.db"
	f.db = openDB(b, f.dbPath)
	v := mustOpen(b, f)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("KEY_%d", i%50)
		if _, err := v.Set(ctx, op, name, "global", []byte("benchmark-value-0123456789")); err != nil {
			b.Fatal(err)
		}
		if _, err := v.Get(ctx, op, name, "global"); err != nil {
			b.Fatal(err)
		}
	}
}
