package redact

// automaton is an Aho-Corasick matcher over bytes. Node 0 is the root; the
// root's transitions are dense, the rest sparse with failure links.
type automaton struct {
	root  [256]int32
	child []map[byte]int32
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

func (b *builder) build() *automaton {
	a := &automaton{
		child: b.child,
		fail:  make([]int32, len(b.child)),
		out:   b.out,
		dict:  make([]int32, len(b.child)),
		pats:  b.pats,
	}
	queue := make([]int32, 0, len(b.child))
	for c, n := range b.child[0] {
		a.root[c] = n
		queue = append(queue, n)
	}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for c, m := range a.child[n] {
			f := a.fail[n]
			for {
				if f == 0 {
					a.fail[m] = a.root[c]
					break
				}
				if x, ok := a.child[f][c]; ok {
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
		for _, m := range a.child[order[i]] {
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
		if m, ok := a.child[n][c]; ok {
			return m
		}
		n = a.fail[n]
	}
	return a.root[c]
}
