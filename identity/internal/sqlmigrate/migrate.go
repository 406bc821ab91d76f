// Package sqlmigrate applies the identity packages' embedded SQL migrations
// to a caller-supplied database. Each component (the identity service, the
// local provider) keeps its own numbered files; applied versions are
// recorded in identity_migrations so a component can be opened repeatedly
// and several components can share one database.
package sqlmigrate

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
)

// Apply runs, in order and each in its own transaction, every file
// "NNN_name.sql" in fsys that component has not applied yet.
func Apply(ctx context.Context, db *sql.DB, component string, fsys fs.FS) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS identity_migrations (
		component TEXT NOT NULL,
		version INTEGER NOT NULL,
		PRIMARY KEY (component, version))`); err != nil {
		return fmt.Errorf("create identity_migrations: %w", err)
	}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return fmt.Errorf("read %s migrations: %w", component, err)
	}
	type file struct {
		version int
		name    string
	}
	var files []file
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return fmt.Errorf("migration %s: name must start with a number and an underscore", e.Name())
		}
		files = append(files, file{v, e.Name()})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].version < files[j].version })
	for _, f := range files {
		body, err := fs.ReadFile(fsys, f.name)
		if err != nil {
			return err
		}
		if err := applyOne(ctx, db, component, f.version, string(body)); err != nil {
			return fmt.Errorf("migration %s %s: %w", component, f.name, err)
		}
	}
	return nil
}

func applyOne(ctx context.Context, db *sql.DB, component string, version int, body string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM identity_migrations WHERE component = ? AND version = ?`, component, version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, body); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO identity_migrations (component, version) VALUES (?, ?)`, component, version); err != nil {
		return err
	}
	return tx.Commit()
}
