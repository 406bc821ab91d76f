package vault

import "context"

// SetLegacyGlobal stores value the way a vault written before the server
// scope existed did: scope column "global", seals naming "global".
func (v *Vault) SetLegacyGlobal(ctx context.Context, actor Actor, name string, value []byte) (int, error) {
	return v.set(ctx, actor, name, ScopeGlobal, value)
}
