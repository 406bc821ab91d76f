package worktree

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/memory"
	"github.com/klauspost/compress/zlib"
)

// ErrSecretFound is matched (errors.Is) by *SecretFoundError.
var ErrSecretFound = errors.New("worktree: secret found in what a push would send")

// SecretFoundError is returned by Push when PushRequest.Scan refused part
// of what the push would send; nothing was sent.
type SecretFoundError struct {
	// What names the part: "file a/b.bin", "commit message and identities
	// of <sha>", "file names in dir/", "file paths".
	What string
	// Err is what Scan returned.
	Err error
}

func (e *SecretFoundError) Error() string {
	return fmt.Sprintf("worktree: secret in %s: %v", e.What, e.Err)
}

func (e *SecretFoundError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrSecretFound) true.
func (e *SecretFoundError) Is(target error) bool { return target == ErrSecretFound }

// ScanFunc inspects one part of what a push sends (the whole content of a
// blob, a raw commit, the entry names of a tree); a non-nil error stops the
// push before anything is sent.
type ScanFunc func(what string, data []byte) error

// pushItem is one object a push sends, with the path it was found at.
type pushItem struct {
	hash plumbing.Hash
	path string // for blobs and trees; "" for the root tree and commits
}

// packObjects reads every object of items from st, checks each one's
// content matches its hash (the clone's object files are the agent's to
// change), runs scan over all of it, and returns an in-memory store
// holding exactly the objects to encode into the pack. What is scanned is
// what is sent.
func packObjects(ctx context.Context, st storer.EncodedObjectStorer, items []pushItem, scan ScanFunc) (storer.EncodedObjectStorer, []plumbing.Hash, error) {
	mem := memory.NewStorage()
	hashes := make([]plumbing.Hash, 0, len(items))
	var paths []string
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		o, err := st.EncodedObject(plumbing.AnyObject, it.hash)
		if err != nil {
			return nil, nil, fmt.Errorf("read object %s: %w", it.hash, err)
		}
		r, err := o.Reader()
		if err != nil {
			return nil, nil, fmt.Errorf("read object %s: %w", it.hash, err)
		}
		data, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("read object %s: %w", it.hash, err)
		}
		if plumbing.ComputeHash(o.Type(), data) != it.hash {
			return nil, nil, fmt.Errorf("%w: object %s does not match its content", ErrUnsafeRepository, it.hash)
		}
		if scan != nil {
			var what string
			var part []byte
			switch o.Type() {
			case plumbing.BlobObject:
				what, part = "file "+it.path, data
				if it.path != "" {
					paths = append(paths, it.path)
				}
			case plumbing.CommitObject:
				what, part = "commit message and identities of "+it.hash.String(), data
			case plumbing.TreeObject:
				var names []string
				if err := parseTree(data, func(name string, _ filemode.FileMode, _ plumbing.Hash) error {
					names = append(names, name)
					return nil
				}); err != nil {
					return nil, nil, fmt.Errorf("read tree %s: %w", it.hash, err)
				}
				what, part = "file names in "+orRoot(it.path), []byte(strings.Join(names, "\n"))
			default:
				what, part = o.Type().String()+" "+it.hash.String(), data
			}
			if err := scan(what, part); err != nil {
				return nil, nil, &SecretFoundError{What: what, Err: err}
			}
		}
		mo := mem.NewEncodedObject()
		mo.SetType(o.Type())
		mo.SetSize(int64(len(data)))
		w, _ := mo.Writer()
		_, _ = w.Write(data)
		_ = w.Close()
		if _, err := mem.SetEncodedObject(mo); err != nil {
			return nil, nil, err
		}
		hashes = append(hashes, it.hash)
	}
	if scan != nil && len(paths) > 0 {
		// A value split across directory names is only whole in the path.
		sort.Strings(paths)
		if err := scan("file paths", []byte(strings.Join(paths, "\n"))); err != nil {
			return nil, nil, &SecretFoundError{What: "file paths", Err: err}
		}
	}
	return mem, hashes, nil
}

func orRoot(p string) string {
	if p == "" {
		return "the top directory"
	}
	return p
}

// encodePack writes a version 2 pack of hashes from st to w: whole
// objects, no deltas, compressed for speed (go-git's encoder compresses at
// zlib's default level, most of the time of a large local fetch).
func encodePack(w io.Writer, st storer.EncodedObjectStorer, hashes []plumbing.Hash) error {
	sum := sha1.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, sum), 256<<10)
	var hdr [12]byte
	copy(hdr[:], "PACK")
	binary.BigEndian.PutUint32(hdr[4:], 2)
	binary.BigEndian.PutUint32(hdr[8:], uint32(len(hashes)))
	if _, err := bw.Write(hdr[:]); err != nil {
		return err
	}
	zw, err := zlib.NewWriterLevel(bw, zlib.BestSpeed)
	if err != nil {
		return err
	}
	for _, h := range hashes {
		o, err := st.EncodedObject(plumbing.AnyObject, h)
		if err != nil {
			return fmt.Errorf("read object %s: %w", h, err)
		}
		if _, err := bw.Write(packObjectHeader(o.Type(), o.Size())); err != nil {
			return err
		}
		r, err := o.Reader()
		if err != nil {
			return err
		}
		zw.Reset(bw)
		_, err = io.Copy(zw, r)
		r.Close()
		if err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err = w.Write(sum.Sum(nil))
	return err
}

// packObjectHeader is a pack entry's type and size header.
func packObjectHeader(t plumbing.ObjectType, size int64) []byte {
	b := []byte{byte(t)<<4 | byte(size&0x0f)}
	size >>= 4
	for size > 0 {
		b[len(b)-1] |= 0x80
		b = append(b, byte(size&0x7f))
		size >>= 7
	}
	return b
}
