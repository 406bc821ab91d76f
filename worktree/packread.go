package worktree

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/klauspost/compress/flate"
)

// packSet reads objects straight out of a repository's memory-mapped
// packfiles. It exists because checkout is dominated by inflating blobs,
// and go-git's packfile reader (stdlib zlib, a seek and buffer per object)
// is several times slower than this. The mapped data is read-only and
// shared; each goroutine uses its own objectReader.
type packSet struct {
	packs []*mappedPack
}

type mappedPack struct {
	data      []byte // the .pack, mmapped
	fanout    [256]uint32
	hashes    []byte // n*20, sorted
	offsets   []byte // n*4, big endian
	offsets64 []byte // 8 each, for offsets with the high bit set
}

// openPackSet maps every pack under objectsDir/pack that has a v2 index.
func openPackSet(objectsDir string) (*packSet, error) {
	idxs, err := filepath.Glob(filepath.Join(objectsDir, "pack", "*.idx"))
	if err != nil {
		return nil, err
	}
	ps := &packSet{}
	for _, idx := range idxs {
		p, err := mapPack(idx, strings.TrimSuffix(idx, ".idx")+".pack")
		if errors.Is(err, os.ErrNotExist) {
			continue // a pack being written or removed
		}
		if err != nil {
			ps.Close()
			return nil, fmt.Errorf("open pack %s: %w", filepath.Base(idx), err)
		}
		ps.packs = append(ps.packs, p)
	}
	// Most objects live in the biggest pack: search it first.
	sort.Slice(ps.packs, func(i, j int) bool { return ps.packs[i].fanout[255] > ps.packs[j].fanout[255] })
	return ps, nil
}

// mapPack maps the pack at packPath with its index at idxPath. The pack is
// opened first: go-git's fetch writes the index in place and only then
// renames the finished pack next to it (git renames the pack first and
// the index last), so an index read once its pack is there is whole, and
// one without its pack may still be half written.
func mapPack(idxPath, packPath string) (*mappedPack, error) {
	f, err := os.Open(packPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	idx, err := os.ReadFile(idxPath)
	if err != nil {
		return nil, err
	}
	if len(idx) < 8+256*4 || !bytes.Equal(idx[:4], []byte{0xff, 't', 'O', 'c'}) || binary.BigEndian.Uint32(idx[4:]) != 2 {
		return nil, errors.New("unsupported index format")
	}
	p := &mappedPack{}
	for i := range 256 {
		p.fanout[i] = binary.BigEndian.Uint32(idx[8+i*4:])
	}
	n := int(p.fanout[255])
	pos := 8 + 256*4
	if len(idx) < pos+n*(20+4+4)+40 {
		return nil, errors.New("truncated index")
	}
	p.hashes = idx[pos : pos+n*20]
	pos += n * 20
	pos += n * 4 // crc32
	p.offsets = idx[pos : pos+n*4]
	pos += n * 4
	p.offsets64 = idx[pos : len(idx)-40]
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() < 32 {
		return nil, errors.New("truncated pack")
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(fi.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	p.data = data
	return p, nil
}

func (ps *packSet) Close() {
	for _, p := range ps.packs {
		_ = syscall.Munmap(p.data)
	}
	ps.packs = nil
}

// find returns the offset of h in the pack.
func (p *mappedPack) find(h plumbing.Hash) (int64, bool) {
	lo := 0
	if h[0] > 0 {
		lo = int(p.fanout[h[0]-1])
	}
	hi := int(p.fanout[h[0]])
	for lo < hi {
		mid := (lo + hi) / 2
		c := bytes.Compare(p.hashes[mid*20:mid*20+20], h[:])
		switch {
		case c == 0:
			off := binary.BigEndian.Uint32(p.offsets[mid*4:])
			if off&0x80000000 != 0 {
				i := int(off & 0x7fffffff)
				if (i+1)*8 > len(p.offsets64) {
					return 0, false
				}
				return int64(binary.BigEndian.Uint64(p.offsets64[i*8:])), true
			}
			return int64(off), true
		case c < 0:
			lo = mid + 1
		default:
			hi = mid
		}
	}
	return 0, false
}

// objectReader reads objects for one goroutine: packs first, then the
// fallback store (loose objects).
type objectReader struct {
	ps       *packSet
	fallback storer.EncodedObjectStorer
	fr       io.ReadCloser
	br       *bytes.Reader
	cache    map[cacheKey][]byte // delta bases
	cached   int
}

type cacheKey struct {
	p   *mappedPack
	off int64
}

const baseCacheBytes = 32 << 20

func newObjectReader(ps *packSet, fallback storer.EncodedObjectStorer) *objectReader {
	return &objectReader{ps: ps, fallback: fallback, br: bytes.NewReader(nil), cache: map[cacheKey][]byte{}}
}

// read returns an object's type and content. The content may be shared
// with the cache: callers must not modify it.
func (r *objectReader) read(h plumbing.Hash) (plumbing.ObjectType, []byte, error) {
	for _, p := range r.ps.packs {
		if off, ok := p.find(h); ok {
			return r.readAt(p, off, 0)
		}
	}
	if r.fallback == nil {
		return 0, nil, plumbing.ErrObjectNotFound
	}
	o, err := r.fallback.EncodedObject(plumbing.AnyObject, h)
	if err != nil {
		return 0, nil, err
	}
	rd, err := o.Reader()
	if err != nil {
		return 0, nil, err
	}
	defer rd.Close()
	b, err := io.ReadAll(rd)
	return o.Type(), b, err
}

var errCorruptPack = errors.New("corrupt pack")

func (r *objectReader) readAt(p *mappedPack, off int64, depth int) (plumbing.ObjectType, []byte, error) {
	if depth > 64 {
		return 0, nil, fmt.Errorf("%w: delta chain too deep", errCorruptPack)
	}
	d := p.data
	if off < 12 || off >= int64(len(d)) {
		return 0, nil, fmt.Errorf("%w: offset %d", errCorruptPack, off)
	}
	pos := off
	c := d[pos]
	pos++
	typ := plumbing.ObjectType((c >> 4) & 7)
	size := int64(c & 0x0f)
	shift := uint(4)
	for c&0x80 != 0 {
		if pos >= int64(len(d)) || shift > 56 {
			return 0, nil, errCorruptPack
		}
		c = d[pos]
		pos++
		size |= int64(c&0x7f) << shift
		shift += 7
	}
	switch typ {
	case plumbing.CommitObject, plumbing.TreeObject, plumbing.BlobObject, plumbing.TagObject:
		b, err := r.inflate(d[pos:], size)
		return typ, b, err
	case plumbing.OFSDeltaObject:
		if pos >= int64(len(d)) {
			return 0, nil, errCorruptPack
		}
		c = d[pos]
		pos++
		rel := int64(c & 0x7f)
		for c&0x80 != 0 {
			if pos >= int64(len(d)) {
				return 0, nil, errCorruptPack
			}
			c = d[pos]
			pos++
			rel = ((rel + 1) << 7) | int64(c&0x7f)
		}
		baseOff := off - rel
		btyp, base, err := r.base(p, baseOff, depth)
		if err != nil {
			return 0, nil, err
		}
		delta, err := r.inflate(d[pos:], size)
		if err != nil {
			return 0, nil, err
		}
		out, err := applyDelta(base, delta)
		return btyp, out, err
	case plumbing.REFDeltaObject:
		if pos+20 > int64(len(d)) {
			return 0, nil, errCorruptPack
		}
		var bh plumbing.Hash
		copy(bh[:], d[pos:pos+20])
		pos += 20
		delta, err := r.inflate(d[pos:], size)
		if err != nil {
			return 0, nil, err
		}
		var btyp plumbing.ObjectType
		var base []byte
		if boff, ok := p.find(bh); ok {
			btyp, base, err = r.base(p, boff, depth)
		} else {
			btyp, base, err = r.read(bh)
		}
		if err != nil {
			return 0, nil, err
		}
		out, err := applyDelta(base, delta)
		return btyp, out, err
	}
	return 0, nil, fmt.Errorf("%w: object type %d at %d", errCorruptPack, typ, off)
}

// base reads a delta base through the cache.
func (r *objectReader) base(p *mappedPack, off int64, depth int) (plumbing.ObjectType, []byte, error) {
	k := cacheKey{p, off}
	if b, ok := r.cache[k]; ok {
		return plumbing.ObjectType(b[0]), b[1:], nil
	}
	typ, b, err := r.readAt(p, off, depth+1)
	if err != nil {
		return 0, nil, err
	}
	if len(b) < baseCacheBytes/8 {
		if r.cached+len(b) > baseCacheBytes {
			clear(r.cache)
			r.cached = 0
		}
		e := make([]byte, len(b)+1)
		e[0] = byte(typ)
		copy(e[1:], b)
		r.cache[k] = e
		r.cached += len(e)
	}
	return typ, b, nil
}

// inflate decompresses a zlib stream of a known size.
func (r *objectReader) inflate(z []byte, size int64) ([]byte, error) {
	if len(z) < 2 || z[0]&0x0f != 8 || z[1]&0x20 != 0 {
		return nil, fmt.Errorf("%w: bad zlib header", errCorruptPack)
	}
	r.br.Reset(z[2:])
	if r.fr == nil {
		r.fr = flate.NewReader(r.br)
	} else if err := r.fr.(flate.Resetter).Reset(r.br, nil); err != nil {
		return nil, err
	}
	out := make([]byte, size)
	if _, err := io.ReadFull(r.fr, out); err != nil {
		return nil, fmt.Errorf("%w: inflate: %v", errCorruptPack, err)
	}
	return out, nil
}

// applyDelta applies a git delta to base.
func applyDelta(base, delta []byte) ([]byte, error) {
	pos := 0
	varint := func() (int, bool) {
		v, shift := 0, uint(0)
		for pos < len(delta) {
			c := delta[pos]
			pos++
			v |= int(c&0x7f) << shift
			shift += 7
			if c&0x80 == 0 {
				return v, true
			}
		}
		return 0, false
	}
	srcSize, ok1 := varint()
	dstSize, ok2 := varint()
	if !ok1 || !ok2 || srcSize != len(base) {
		return nil, fmt.Errorf("%w: delta header", errCorruptPack)
	}
	out := make([]byte, 0, dstSize)
	for pos < len(delta) {
		op := delta[pos]
		pos++
		if op&0x80 != 0 {
			var off, n int
			for i := range 4 {
				if op&(1<<i) != 0 {
					if pos >= len(delta) {
						return nil, errCorruptPack
					}
					off |= int(delta[pos]) << (8 * i)
					pos++
				}
			}
			for i := range 3 {
				if op&(0x10<<i) != 0 {
					if pos >= len(delta) {
						return nil, errCorruptPack
					}
					n |= int(delta[pos]) << (8 * i)
					pos++
				}
			}
			if n == 0 {
				n = 0x10000
			}
			if off+n > len(base) || off < 0 {
				return nil, fmt.Errorf("%w: delta copy out of range", errCorruptPack)
			}
			out = append(out, base[off:off+n]...)
		} else if op != 0 {
			n := int(op)
			if pos+n > len(delta) {
				return nil, errCorruptPack
			}
			out = append(out, delta[pos:pos+n]...)
			pos += n
		} else {
			return nil, fmt.Errorf("%w: delta opcode 0", errCorruptPack)
		}
	}
	if len(out) != dstSize {
		return nil, fmt.Errorf("%w: delta size", errCorruptPack)
	}
	return out, nil
}
