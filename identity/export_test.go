package identity

import (
	"context"
	"time"
)

// SetClaimWait shortens how long create waits for the owner of a taken
// address to store its identity.
func SetClaimWait(s *Service, d time.Duration) { s.claimWait = d }

// ErrDisplaced is returned by StoreProvisioned for an identity judged dead.
var ErrDisplaced = errDisplaced

// StoreProvisioned is the second half of create for an account provisioned
// by a creator that stopped in between: it stores the identity.
func StoreProvisioned(ctx context.Context, s *Service, taskID string, acct Account) (Identity, error) {
	return s.store(ctx, taskID, acct.IdentityID, acct.Name, acct)
}

// StoreRecordOnly stores the identity record of a provisioned account
// without claiming its task, as a creator killed in between leaves it
// (shared-records backend only).
func StoreRecordOnly(ctx context.Context, s *Service, taskID string, acct Account) error {
	return s.kvStoreRecord(ctx, s.newIdentity(taskID, acct.IdentityID, acct.Name, acct))
}
