package worktree

import (
	"bufio"
	"bytes"
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

// ScanFunc inspects one part of what a push sends (a blob's content, a
// raw commit, the entry names of a tree); a non-nil error stops the push
// before anything is sent. A blob up to 4 MiB comes whole, in one call; a
// larger one comes in windows of 4 MiB, each starting with the last 64 KiB
// of the one before, so a value up to 64 KiB long is whole in one window.
// data is only valid during the call.
type ScanFunc func(what string, data []byte) error

// scanWindow is the most of a blob one ScanFunc call sees; scanOverlap is
// how much of the previous window each further window repeats.
const (
	scanWindow  = 4 << 20
	scanOverlap = 64 << 10
)

// pushItem is one object a push sends, with the path it was found at.
type pushItem struct {
	hash plumbing.Hash
	path string // for blobs and trees; "" for the root tree and commits
}

// writePack writes a version 2 pack of items to w (whole objects, no
// deltas), reading each object once, as a stream: its content is checked
// against its hash (the clone's object files are the agent's to change)
// and offered to scan as it is written, so what is scanned is exactly what
// the pack holds. w must be private to the host: nothing of it may be sent
// before writePack returns without error. Memory stays bounded by one scan
// window whatever the objects' sizes.
func writePack(ctx context.Context, st storer.EncodedObjectStorer, items []pushItem, scan ScanFunc, w io.Writer) error {
	sum := sha1.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, sum), 256<<10)
	var hdr [12]byte
	copy(hdr[:], "PACK")
	binary.BigEndian.PutUint32(hdr[4:], 2)
	binary.BigEndian.PutUint32(hdr[8:], uint32(len(items)))
	if _, err := bw.Write(hdr[:]); err != nil {
		return err
	}
	zw, err := zlib.NewWriterLevel(bw, zlib.BestSpeed)
	if err != nil {
		return err
	}
	copyBuf := make([]byte, 64<<10)
	var window []byte
	var paths []string
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return err
		}
		o, err := st.EncodedObject(plumbing.AnyObject, it.hash)
		if err != nil {
			return fmt.Errorf("read object %s: %w", it.hash, err)
		}
		typ, size := o.Type(), o.Size()
		if _, err := bw.Write(packObjectHeader(typ, size)); err != nil {
			return err
		}
		zw.Reset(bw)
		hasher := plumbing.NewHasher(typ, size)
		sink := []io.Writer{zw, hasher}
		var ws *windowScan
		var whole *bytes.Buffer
		if scan != nil {
			if typ == plumbing.BlobObject {
				n := int(min(size, scanWindow))
				if cap(window) < n {
					window = make([]byte, 0, max(n, min(2*cap(window), scanWindow)))
				}
				ws = &windowScan{what: "file " + it.path, scan: scan, buf: window[:0:n]}
				sink = append(sink, ws)
				if it.path != "" {
					paths = append(paths, it.path)
				}
			} else {
				whole = &bytes.Buffer{}
				sink = append(sink, whole)
			}
		}
		r, err := o.Reader()
		if err != nil {
			return fmt.Errorf("read object %s: %w", it.hash, err)
		}
		n, err := io.CopyBuffer(io.MultiWriter(sink...), io.LimitReader(r, size), copyBuf)
		r.Close()
		var sf *SecretFoundError
		if errors.As(err, &sf) {
			return sf
		}
		if err != nil {
			return fmt.Errorf("read object %s: %w", it.hash, err)
		}
		if n != size || hasher.Sum() != it.hash {
			return fmt.Errorf("%w: object %s does not match its content", ErrUnsafeRepository, it.hash)
		}
		if err := zw.Close(); err != nil {
			return err
		}
		if ws != nil {
			if err := ws.finish(); err != nil {
				return err
			}
		}
		if whole != nil {
			if err := scanWhole(scan, it, typ, whole.Bytes()); err != nil {
				return err
			}
		}
	}
	if scan != nil && len(paths) > 0 {
		// A value split across directory names is only whole in the path.
		sort.Strings(paths)
		if err := scan("file paths", []byte(strings.Join(paths, "\n"))); err != nil {
			return &SecretFoundError{What: "file paths", Err: err}
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err = w.Write(sum.Sum(nil))
	return err
}

// scanWhole offers a commit, tree or tag to scan.
func scanWhole(scan ScanFunc, it pushItem, typ plumbing.ObjectType, data []byte) error {
	var what string
	part := data
	switch typ {
	case plumbing.CommitObject:
		what = "commit message and identities of " + it.hash.String()
	case plumbing.TreeObject:
		var names []string
		if err := parseTree(data, func(name string, _ filemode.FileMode, _ plumbing.Hash) error {
			names = append(names, name)
			return nil
		}); err != nil {
			return fmt.Errorf("read tree %s: %w", it.hash, err)
		}
		what, part = "file names in "+orRoot(it.path), []byte(strings.Join(names, "\n"))
	default:
		what = typ.String() + " " + it.hash.String()
	}
	if err := scan(what, part); err != nil {
		return &SecretFoundError{What: what, Err: err}
	}
	return nil
}

// windowScan offers a blob streamed through it to a ScanFunc in windows of
// cap(buf) bytes overlapping by scanOverlap.
type windowScan struct {
	what    string
	scan    ScanFunc
	buf     []byte
	fresh   int  // bytes of buf no call has seen
	scanned bool // a call was made
}

func (s *windowScan) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := copy(s.buf[len(s.buf):cap(s.buf)], p)
		s.buf, s.fresh, p = s.buf[:len(s.buf)+k], s.fresh+k, p[k:]
		if len(s.buf) == cap(s.buf) {
			if err := s.flush(); err != nil {
				return 0, err
			}
			keep := min(scanOverlap, len(s.buf))
			copy(s.buf, s.buf[len(s.buf)-keep:])
			s.buf = s.buf[:keep]
		}
	}
	return n, nil
}

func (s *windowScan) flush() error {
	s.scanned, s.fresh = true, 0
	if err := s.scan(s.what, s.buf); err != nil {
		return &SecretFoundError{What: s.what, Err: err}
	}
	return nil
}

// finish scans what no window has shown yet (the whole of an empty blob).
func (s *windowScan) finish() error {
	if s.fresh > 0 || !s.scanned {
		return s.flush()
	}
	return nil
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
