package orchestrator

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The agent's HOME persists across a task's runs and the agent writes to it
// freely, so everything in it is hostile to the host: the worker never
// follows a link the agent left there. The home directory itself must be a
// real directory, and adapter files are written through an os.Root opened
// on it (no path leads out of it) by creating a fresh file and renaming it
// over the target, which replaces a link instead of writing through it.

// prepareHome makes home a real directory of its own, emptied first for a
// fresh run. os.RemoveAll removes links rather than following them.
func prepareHome(home string, fresh bool) error {
	if fresh {
		if err := os.RemoveAll(home); err != nil {
			return fmt.Errorf("empty the agent home: %w", err)
		}
	}
	if err := os.Mkdir(home, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create the agent home: %w", err)
	}
	fi, err := os.Lstat(home)
	if err != nil {
		return fmt.Errorf("agent home: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("agent home %s is a %s, not a directory", home, fi.Mode().Type())
	}
	return nil
}

// writeHomeFiles writes files (paths relative to home) inside home, 0600,
// creating their directories inside it.
func writeHomeFiles(home string, files map[string][]byte) error {
	if len(files) == 0 {
		return nil
	}
	root, err := os.OpenRoot(home)
	if err != nil {
		return fmt.Errorf("open the agent home: %w", err)
	}
	defer root.Close()
	for rel, content := range files {
		if err := writeInRoot(root, rel, content); err != nil {
			return fmt.Errorf("write %s in the agent home: %w", rel, err)
		}
	}
	return nil
}

func writeInRoot(root *os.Root, rel string, content []byte) error {
	name := filepath.Clean("/" + rel)[1:]
	if name == "" || !filepath.IsLocal(name) {
		return fmt.Errorf("%q is not a path inside the home", rel)
	}
	if dir := filepath.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := name + ".nightshift-" + hex.EncodeToString(rnd[:])
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write(content)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = root.Rename(tmp, name)
	}
	if werr != nil {
		root.Remove(tmp)
		return werr
	}
	return nil
}
