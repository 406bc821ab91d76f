package redact

// automaton is an Aho-Corasick matcher over bytes. Node 0 is the root; the
// root's transitions are dense, the rest sparse with failure links.
type automaton struct {
	root  [256]int32
	edges []edges
	fail  []int32
	out   []int32 // pattern ending at this node, or -1
	dict  []int32 // next node on the failure chain that ends a pattern, or 0
	pats  []pattern
}

type pattern struct {
	length int
	owner  int // secret index, or -1 when several secrets share the pattern
}

type builder struct {
	child []map[byte]int32
	out   []int32
	pats  []pattern
}

func newBuilder() *builder {
	return &builder{child: []map[byte]int32{{}}, out: []int32{-1}}
}

func (b *builder) add(s string, owner int) {
	n := int32(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		next, ok := b.child[n][c]
		if !ok {
			next = int32(len(b.child))
			b.child = append(b.child, map[byte]int32{})
			b.out = append(b.out, -1)
			b.child[n][c] = next
		}
		n = next
	}
	if pid := b.out[n]; pid >= 0 {
		if b.pats[pid].owner != owner {
			b.pats[pid].owner = -1
		}
		return
	}
	b.out[n] = int32(len(b.pats))
	b.pats = append(b.pats, pattern{length: len(s), owner: owner})
}

// edges are a node's transitions: most trie nodes of long patterns have
// exactly one child, kept out of the map.
// A few nodes near the root have many children: a dense table for those,
// short lists for the rest.
type edges struct {
	one   byte
	next  int32 // child for one, 0 if none
	keys  []byte
	nexts []int32
	dense *[256]int32
}

func (e *edges) get(c byte) (int32, bool) {
	if e.next != 0 {
		if e.one == c {
			return e.next, true
		}
		return 0, false
	}
	if e.dense != nil {
		n := e.dense[c]
		return n, n != 0
	}
	for i, k := range e.keys {
		if k == c {
			return e.nexts[i], true
		}
	}
	return 0, false
}

func (b *builder) build() *automaton {
	a := &automaton{
		edges: make([]edges, len(b.child)),
		fail:  make([]int32, len(b.child)),
		out:   b.out,
		dict:  make([]int32, len(b.child)),
		pats:  b.pats,
	}
	for n, ch := range b.child {
		if len(ch) == 1 {
			for c, m := range ch {
				a.edges[n] = edges{one: c, next: m}
			}
		} else if len(ch) > 8 {
			d := new([256]int32)
			for c, m := range ch {
				d[c] = m
			}
			a.edges[n] = edges{dense: d}
		} else if len(ch) > 1 {
			for c, m := range ch {
				a.edges[n].keys = append(a.edges[n].keys, c)
				a.edges[n].nexts = append(a.edges[n].nexts, m)
			}
		}
	}
	queue := make([]int32, 0, len(b.child))
	for c, n := range b.child[0] {
		a.root[c] = n
		queue = append(queue, n)
	}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for c, m := range b.child[n] {
			f := a.fail[n]
			for {
				if f == 0 {
					a.fail[m] = a.root[c]
					break
				}
				if x, ok := a.edges[f].get(c); ok {
					a.fail[m] = x
					break
				}
				f = a.fail[f]
			}
			if a.fail[m] == m {
				a.fail[m] = 0
			}
			queue = append(queue, m)
		}
	}
	// dict links in BFS order: a fail target is shallower, so its link is final.
	order := make([]int32, 0, len(b.child))
	order = append(order, 0)
	for i := 0; i < len(order); i++ {
		for _, m := range b.child[order[i]] {
			order = append(order, m)
		}
	}
	for _, n := range order[1:] {
		f := a.fail[n]
		if a.out[f] >= 0 {
			a.dict[n] = f
		} else {
			a.dict[n] = a.dict[f]
		}
	}
	return a
}

// step returns the state after reading c in state n.
func (a *automaton) step(n int32, c byte) int32 {
	for n != 0 {
		if m, ok := a.edges[n].get(c); ok {
			return m
		}
		n = a.fail[n]
	}
	return a.root[c]
}
