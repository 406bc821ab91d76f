package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/local"
	"github.com/nightshift/nightshift/orchestrator/notify"
	"github.com/nightshift/nightshift/vault"
	"github.com/nightshift/nightshift/vault/natsstore"
)

// openVault opens the vault where its sealed records live: the data dir's
// SQLite when NATS is embedded (one process; the vault CLI opens the same
// file), the cluster's replicated bucket when js is given (nats.url set:
// every role on every host reads the same secrets). A SQLite vault found in
// the data dir is moved to the cluster on first start (see
// migrateVaultToCluster). The root key never travels: keys is this host's.
func openVault(ctx context.Context, db *sql.DB, js jetstream.JetStream, replicas int, keys vault.KeySource, cfg vault.Config, logger *slog.Logger) (*vault.Vault, error) {
	if js == nil {
		return vault.Open(ctx, db, keys, cfg)
	}
	var st *natsstore.Store
	err := whenJetStreamReady(ctx, logger, "the vault's bucket", func() (err error) {
		st, err = natsstore.New(ctx, js, natsstore.Config{Replicas: replicas})
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := migrateVaultToCluster(ctx, db, st, logger); err != nil {
		return nil, err
	}
	v, err := vault.OpenStore(ctx, st, keys, cfg)
	if errors.Is(err, vault.ErrWrongKey) {
		return nil, fmt.Errorf("%w: the vault is shared by every host on the NATS cluster, and each host must be given the same root key "+
			"(copy vault.key from the host that created it, or set the same NIGHTSHIFT_VAULT_KEY, or the same passphrase with the same vault.salt)", err)
	}
	return v, err
}

// migrateVaultToCluster copies the data dir's SQLite vault, if it has one,
// into the cluster's store, then erases it from SQLite and marks it moved.
// Copying is idempotent, so a crash half-way is finished by the next start.
func migrateVaultToCluster(ctx context.Context, db *sql.DB, to vault.Store, logger *slog.Logger) error {
	src, err := vault.NewSQLiteStore(ctx, db)
	if err != nil {
		return err
	}
	res, err := vault.Migrate(ctx, src, to)
	if errors.Is(err, vault.ErrMoved) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("move the data dir's vault to the NATS cluster: %w", err)
	}
	if res.AuditSkipped != "" {
		logger.Warn("vault audit rows not carried over to the cluster", "reason", res.AuditSkipped)
	}
	if err := src.MarkMoved(ctx, "to the NATS cluster at "+time.Now().UTC().Format(time.RFC3339), res.AuditSkipped != ""); err != nil {
		return err
	}
	// Marked even when there was nothing to move: a vault command run on
	// this data dir without --nats must not start a second, local vault.
	if res.Skipped != "no vault to migrate" {
		logger.Info("vault moved to the NATS cluster", "secrets", res.Secrets, "audit_rows", res.AuditRows, "skipped", res.Skipped)
	}
	return nil
}

// clusterJS returns the JetStream that holds state every host shares (the
// vault, identities) when other processes can reach this NATS: an external
// one (nats.url), or the embedded one opened on a port (nats.listen) for
// roles on other hosts. It is nil for the embedded, in-process-only NATS of
// a single process, where that state stays in the data dir's SQLite (the
// vault CLI opens the same file).
func (s *server) clusterJS(bus interface{ JetStream() jetstream.JetStream }, natsListen string) jetstream.JetStream {
	if s.ns != nil && natsListen == "" {
		return nil
	}
	return bus.JetStream()
}

// openIdentities returns the identity service: over the cluster's
// replicated records when nats.url is set (an identity a worker creates is
// listed by the ingress on another host, a token revoked anywhere is
// refused everywhere), over the data dir's SQLite otherwise.
func (s *server) openIdentities(ctx context.Context, p identity.Provider, cfg identity.Config) (*identity.Service, error) {
	if s.shared == nil {
		return identity.NewService(ctx, s.db, p, cfg)
	}
	var ids *identity.Service
	err := whenJetStreamReady(ctx, s.log, "the identities' bucket", func() (err error) {
		ids, err = identity.NewKVService(ctx, s.shared, p, identity.KVConfig{Replicas: s.replicas}, cfg)
		return err
	})
	return ids, err
}

// openLocalProvider returns the built-in identity provider over the same
// store as openIdentities: mail taken by the SMTP listener or an SMS posted
// to any ingress is read by a worker on any host.
func (s *server) openLocalProvider(cfg local.Config) (*local.Provider, error) {
	if s.shared == nil {
		return local.New(s.db, cfg)
	}
	var p *local.Provider
	err := whenJetStreamReady(context.Background(), s.log, "the local identity provider's bucket", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		p, err = local.NewKV(ctx, s.shared, local.KVConfig{Replicas: s.replicas}, cfg)
		return err
	})
	return p, err
}

// openCLIVault opens the vault the vault commands work on: the data dir's
// SQLite, or with natsURL the cluster's (moving the data dir's vault there
// first, as serve does). Buckets it has to create get NIGHTSHIFT_NATS_REPLICAS
// replicas (default 1); serve raises nothing it finds.
func openCLIVault(ctx context.Context, a *app, db *sql.DB, natsURL string, keys vault.KeySource, logger *slog.Logger) (*vault.Vault, func(), error) {
	if natsURL == "" {
		v, err := vault.Open(ctx, db, keys, vault.Config{Logger: logger})
		return v, func() {}, err
	}
	replicas := 1
	if r := a.getenv("NIGHTSHIFT_NATS_REPLICAS"); r != "" {
		n, err := strconv.Atoi(r)
		if err != nil || n < 1 {
			return nil, nil, fmt.Errorf("NIGHTSHIFT_NATS_REPLICAS=%q is not a positive number", r)
		}
		replicas = n
	}
	nc, err := nats.Connect(natsURL, nats.Name("nightshift-vault"), nats.Timeout(10*time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats %s: %w", natsURL, err)
	}
	js, err := jetstream.New(nc)
	if err == nil {
		var v *vault.Vault
		if v, err = openVault(ctx, db, js, replicas, keys, vault.Config{Logger: logger}, logger); err == nil {
			return v, nc.Close, nil
		}
	}
	nc.Close()
	return nil, nil, err
}

// openReports returns the reporters' memory (which comment or message to
// edit for each task): the replicated bucket every scheduler shares, so a
// scheduler taking over from a dead one edits the comment instead of
// posting a second. What a single-process server kept in its SQLite is
// carried over once.
func (s *server) openReports(ctx context.Context, js jetstream.JetStream, logger *slog.Logger) (*notify.Store, error) {
	var st *notify.Store
	err := whenJetStreamReady(ctx, logger, "the reporters' bucket", func() (err error) {
		st, err = notify.NewKVStore(ctx, js, notify.KVConfig{Replicas: s.replicas})
		return err
	})
	if err != nil {
		return nil, err
	}
	n, err := st.ImportSQL(ctx, s.db)
	if err != nil {
		return nil, fmt.Errorf("carry the report state over to NATS: %w", err)
	}
	if n > 0 {
		logger.Info("report state carried over to NATS", "records", n)
	}
	return st, nil
}

// whenJetStreamReady runs fn (creating a bucket or stream) until it
// succeeds, retrying for up to two minutes while JetStream answers that it
// cannot place it yet (a cluster still electing leaders or with a peer
// offline) or does not answer in time. Other errors return at once.
func whenJetStreamReady(ctx context.Context, logger *slog.Logger, what string, fn func() error) error {
	deadline := time.Now().Add(2 * time.Minute)
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || !transientJetStream(err) || time.Now().After(deadline) {
			return err
		}
		logger.Warn("waiting for NATS JetStream", "for", what, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(min(time.Duration(attempt)*500*time.Millisecond, 5*time.Second)):
		}
	}
}

func transientJetStream(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case 10005, // no suitable peers for placement
			10008, // JetStream cluster not available
			10023: // insufficient resources (a peer catching up)
			return true
		}
		return false
	}
	return natsTimedOut(err)
}
