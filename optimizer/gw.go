package optimizer

// Goemans–Williamson growth for the rooted prize-collecting Steiner tree.
//
// Every vertex starts as a cluster whose dual variable y grows at rate 1 while
// the cluster is active; a cluster is active until the duals grown inside it
// use up its prize (the sum of its vertices' prizes), and the root's cluster
// never grows. An edge goes tight when the duals of the clusters it crosses
// sum to its cost; the two clusters then merge. The tight edges form a forest
// whose root component is the tree returned; Σ y is a lower bound on the
// optimum of the prize-collecting problem.
//
// The implementation follows the edge-splitting scheme of Hegde, Indyk and
// Schmidt ("A fast, adaptive variant of the Goemans-Williamson scheme", ICML
// 2015): each edge is split in two parts, one per endpoint, with targets that
// sum to its cost; a part's event is due when its endpoint's dual load reaches
// its target, and the remaining slack is re-split when it fires. Instead of
// per-cluster pairing heaps, events sit in one binary heap with lazy keys:
// a key computed while a cluster was active is never later than the true
// event (loads grow at rate at most 1), so a popped event is checked and, if
// early, re-pushed; parts of inactive clusters are parked with their cluster
// and re-pushed when it merges into an active one. Vertex loads are kept in a
// weighted union-find (a cluster's finished dual is added to all its members
// in O(1)).

type gwCluster struct {
	active, hasRoot bool
	start, end      float64 // the cluster's own growth period
	budget          float64 // prize left to grow into at start
	parked          []int32 // edge parts waiting for the cluster to grow again
}

type gwEvent struct {
	key  float64
	id   int32 // edge part, or cluster for a deactivation (kind true)
	ver  int32
	deac bool
}

type gw struct {
	edges  []edge
	cost   []float64
	uf     []int32
	size   []int32
	w      []float64 // additive potentials: a vertex's finished dual load
	cl     []gwCluster
	cver   []int32
	target []float64 // per edge part
	pver   []int32
	heap   []gwEvent
	now    float64
	active int
	dual   float64
	forest []int
}

// growForest runs the growth phase on the graph of in with the given edge
// costs and vertex prizes, rooted at in.root. It returns the tree of tight
// edges containing the root as a parent array (-1 outside it and at the root)
// and the dual sum Σ y.
func growForest(in *instance, cost, prize []float64) (parent []int, dual float64) {
	n := in.n
	s := &gw{
		edges:  in.edges,
		cost:   cost,
		uf:     make([]int32, n),
		size:   make([]int32, n),
		w:      make([]float64, n),
		cl:     make([]gwCluster, n),
		cver:   make([]int32, n),
		target: make([]float64, 2*len(in.edges)),
		pver:   make([]int32, 2*len(in.edges)),
		heap:   make([]gwEvent, 0, 2*len(in.edges)+n),
	}
	for v := 0; v < n; v++ {
		s.uf[v], s.size[v] = int32(v), 1
		c := &s.cl[v]
		switch {
		case v == in.root:
			c.hasRoot = true
		case prize[v] > 0:
			c.active, c.budget = true, prize[v]
			s.active++
			s.push(gwEvent{key: prize[v], id: int32(v), deac: true})
		}
	}
	for e, ed := range in.edges {
		for side, x := range [2]int{ed.a, ed.b} {
			p := int32(2*e + side)
			s.target[p] = cost[e] / 2
			if s.cl[x].active {
				s.pver[p]++
				s.heap = append(s.heap, gwEvent{key: s.target[p], id: p, ver: s.pver[p]})
			} else if !s.cl[x].hasRoot {
				s.cl[x].parked = append(s.cl[x].parked, p)
			}
		}
	}
	for i := len(s.heap)/2 - 1; i >= 0; i-- {
		s.down(i)
	}
	for s.active > 0 && len(s.heap) > 0 {
		ev := s.pop()
		if ev.key > s.now {
			s.now = ev.key
		}
		if ev.deac {
			r := ev.id
			if s.uf[r] != r || s.cver[r] != ev.ver || !s.cl[r].active {
				continue
			}
			s.cl[r].active, s.cl[r].end = false, s.now
			s.active--
			continue
		}
		s.fire(ev)
	}
	for v := 0; v < n; v++ {
		if s.uf[v] == int32(v) {
			s.dual += s.growth(int32(v))
		}
	}
	return forestTree(in, s.forest), s.dual
}

func (s *gw) fire(ev gwEvent) {
	p := ev.id
	if s.pver[p] != ev.ver {
		return
	}
	e := int(p >> 1)
	x, y := s.edges[e].a, s.edges[e].b
	if p&1 == 1 {
		x, y = y, x
	}
	rx := s.find(int32(x))
	c := &s.cl[rx]
	if !c.active {
		if !c.hasRoot {
			c.parked = append(c.parked, p)
		}
		return
	}
	// Loads are differences of clock readings: compare them with a tolerance
	// relative to the clock, or rounding can re-fire an event forever.
	tol := 1e-10 * (1 + s.now + s.cost[e])
	dx := s.load(int32(x), rx)
	if dx < s.target[p]-tol {
		s.pushPart(p, s.now+s.target[p]-dx) // key was early: the cluster paused
		return
	}
	ry := s.find(int32(y))
	if rx == ry {
		return
	}
	dy := s.load(int32(y), ry)
	q := p ^ 1
	rem := s.cost[e] - dx - dy
	switch {
	case rem <= tol:
		s.merge(rx, ry, e)
	case s.cl[ry].active:
		s.target[p], s.target[q] = dx+rem/2, dy+rem/2
		s.pushPart(p, s.now+rem/2)
		s.pushPart(q, s.now+rem/2)
	default:
		s.target[p], s.target[q] = dx+rem, dy
		s.pushPart(p, s.now+rem)
		s.pver[q]++ // q is due as soon as y's cluster grows again
		if !s.cl[ry].hasRoot {
			s.cl[ry].parked = append(s.cl[ry].parked, q)
		}
	}
}

// growth is the dual y grown by cluster r itself so far.
func (s *gw) growth(r int32) float64 {
	c := &s.cl[r]
	if c.active {
		return s.now - c.start
	}
	return c.end - c.start
}

// load is d(x): the total dual of all clusters containing x, r = find(x).
func (s *gw) load(x, r int32) float64 {
	base := s.w[r]
	if x != r {
		base += s.w[x]
	}
	return base + s.growth(r)
}

func (s *gw) find(x int32) int32 {
	p := s.uf[x]
	if p == x {
		return x
	}
	r := s.find(p)
	if p != r {
		s.w[x] += s.w[p]
		s.uf[x] = r
	}
	return r
}

func (s *gw) merge(a, b int32, e int) {
	ya, yb := s.growth(a), s.growth(b)
	budget := max(s.cl[a].budget-ya, 0) + max(s.cl[b].budget-yb, 0)
	for _, r := range [2]int32{a, b} {
		if s.cl[r].active {
			s.active--
		}
	}
	s.dual += ya + yb
	s.forest = append(s.forest, e)
	hasRoot := s.cl[a].hasRoot || s.cl[b].hasRoot
	parked := append(s.cl[a].parked, s.cl[b].parked...)
	s.w[a] += ya
	s.w[b] += yb
	if s.size[a] < s.size[b] {
		a, b = b, a
	}
	s.uf[b] = a
	s.w[b] -= s.w[a]
	s.size[a] += s.size[b]
	s.cl[b] = gwCluster{}
	s.cver[a]++
	s.cl[a] = gwCluster{active: !hasRoot, hasRoot: hasRoot, start: s.now, end: s.now, budget: budget}
	if hasRoot {
		return
	}
	s.active++
	s.push(gwEvent{key: s.now + budget, id: a, ver: s.cver[a], deac: true})
	for _, p := range parked {
		x := s.edges[p>>1].a
		if p&1 == 1 {
			x = s.edges[p>>1].b
		}
		d := s.load(x32(x), s.find(x32(x)))
		s.pushPart(p, s.now+max(s.target[p]-d, 0))
	}
}

func x32(x int) int32 { return int32(x) }

func (s *gw) pushPart(p int32, key float64) {
	s.pver[p]++
	s.push(gwEvent{key: key, id: p, ver: s.pver[p]})
}

func (s *gw) push(ev gwEvent) {
	h := append(s.heap, ev)
	i := len(h) - 1
	for i > 0 {
		j := (i - 1) / 2
		if h[j].key <= h[i].key {
			break
		}
		h[i], h[j] = h[j], h[i]
		i = j
	}
	s.heap = h
}

func (s *gw) pop() gwEvent {
	h := s.heap
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	s.heap = h[:last]
	s.down(0)
	return top
}

func (s *gw) down(i int) {
	h := s.heap
	for {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		m := l
		if r := l + 1; r < len(h) && h[r].key < h[l].key {
			m = r
		}
		if h[i].key <= h[m].key {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

// forestTree returns the component of the root in the forest as a parent array.
func forestTree(in *instance, forest []int) []int {
	adj := make(map[int][]int, 2*len(forest))
	for _, e := range forest {
		a, b := in.edges[e].a, in.edges[e].b
		adj[a] = append(adj[a], b)
		adj[b] = append(adj[b], a)
	}
	parent := make([]int, in.n)
	for i := range parent {
		parent[i] = -1
	}
	seen := map[int]bool{in.root: true}
	queue := []int{in.root}
	for k := 0; k < len(queue); k++ {
		v := queue[k]
		for _, w := range adj[v] {
			if !seen[w] {
				seen[w] = true
				parent[w] = v
				queue = append(queue, w)
			}
		}
	}
	return parent
}
