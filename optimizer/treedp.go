package optimizer

import (
	"math"
	"math/bits"
	"sort"
)

// tree is a tree of the overlay rooted at the problem's root, with the dynamic
// programme that chooses, exactly and for this tree only, the levels every arc
// carries, the transcodes every node runs (within its slots) and the level
// every demand is served at — pruning subtrees that are not worth serving.
//
// For a node v and a level set H (a bit mask):
//
//	f(v,H) = serve(v,H) + Σ children w of v: h(w,H)               v has exactly H
//	g(v,R) = min over P (levels worse than v's best received level, |P| ≤ slots):
//	         tcost(v)·|P| + f(v, R∪P)                              v receives R
//	h(v,H) = min(0, min over ∅≠R⊆H: cost(parent arc)·mbps(R) + g(v,R))
//	                                                      parent has H (0: prune v)
//
// and the optimum for the tree is g(root, {levels[0]}). The table h is a
// subset-minimum, computed in L·2^L steps; g enumerates P in at most 4^L/3.
// Every table is kept so that re-parenting one node updates only the two
// paths to the root (local search) instead of the whole tree.
type tree struct {
	in     *instance
	parent []int     // -1: the root, or not in the tree
	pc     []float64 // cost per Mbps of the arc from the parent
	sub    []float64 // Σ children h(w,H), per node and level set
	f, g   []float64
	h      []float64
	gArg   []uint8 // the produced set P achieving g(v,R)
	hArg   []uint8 // the received set R achieving h(v,H), 0 for pruned
	tmp    []float64
}

func newTree(in *instance) *tree {
	size := in.n * in.M
	t := &tree{
		in:     in,
		parent: make([]int, in.n),
		pc:     make([]float64, in.n),
		sub:    make([]float64, size),
		f:      make([]float64, size),
		g:      make([]float64, size),
		h:      make([]float64, size),
		gArg:   make([]uint8, size),
		hArg:   make([]uint8, size),
		tmp:    make([]float64, in.M),
	}
	for i := range t.parent {
		t.parent[i] = -1
	}
	return t
}

// setParents installs a tree given as a parent array (-1 for the root and
// for nodes outside the tree) and solves it from scratch.
func (t *tree) setParents(parent []int) {
	copy(t.parent, rooted(t.in, parent))
	for v, p := range t.parent {
		if p >= 0 {
			t.pc[v] = t.in.linkCost(v, p)
		}
	}
	t.solve()
}

// order returns the tree's nodes in BFS order from the root.
func (t *tree) order() (order []int, children [][]int) {
	children = make([][]int, t.in.n)
	for v, p := range t.parent {
		if p >= 0 {
			children[p] = append(children[p], v)
		}
	}
	order = append(make([]int, 0, t.in.n), t.in.root)
	for k := 0; k < len(order); k++ {
		order = append(order, children[order[k]]...)
	}
	return order, children
}

// solve runs the dynamic programme bottom-up over the whole tree.
func (t *tree) solve() {
	order, _ := t.order()
	M := t.in.M
	for _, v := range order {
		clear(t.sub[v*M : (v+1)*M])
	}
	for k := len(order) - 1; k >= 0; k-- {
		v := order[k]
		t.compute(v)
		if p := t.parent[v]; p >= 0 {
			hv, sp := t.h[v*M:(v+1)*M], t.sub[p*M:(p+1)*M]
			for H := 1; H < M; H++ {
				sp[H] += hv[H]
			}
		}
	}
}

// objective is the optimal total cost of plans on this tree.
func (t *tree) objective() float64 { return t.g[t.in.root*t.in.M+1] }

// compute fills f, g and (for a non-root node) h of v from sub.
func (t *tree) compute(v int) {
	in := t.in
	M := in.M
	base := v * M
	f, g, ga := t.f[base:base+M], t.g[base:base+M], t.gArg[base:base+M]
	serve, sub := in.serve[base:base+M], t.sub[base:base+M]
	for H := 1; H < M; H++ {
		f[H] = serve[H] + sub[H]
	}
	slots, tc := in.slots[v], in.tcost[v]
	for R := 1; R < M; R++ {
		best, arg := f[R], 0
		if slots > 0 {
			b := bits.TrailingZeros(uint(R))
			W := (M - 1) &^ (1<<(b+1) - 1) &^ R
			for P := W; P > 0; P = (P - 1) & W {
				k := bits.OnesCount(uint(P))
				if k > slots {
					continue
				}
				if val := tc*float64(k) + f[R|P]; val < best {
					best, arg = val, P
				}
			}
		}
		g[R], ga[R] = best, uint8(arg)
	}
	if v != in.root && t.parent[v] >= 0 {
		t.computeH(v)
	}
}

// computeH fills h(v,·) from g(v,·) and the cost of v's parent arc.
func (t *tree) computeH(v int) {
	in := t.in
	M := in.M
	base := v * M
	g, h, ha := t.g[base:base+M], t.h[base:base+M], t.hArg[base:base+M]
	c := t.pc[v]
	h[0], ha[0] = 0, 0
	for R := 1; R < M; R++ {
		h[R], ha[R] = c*in.setMb[R]+g[R], uint8(R)
	}
	for i := 0; i < in.L; i++ {
		bit := 1 << i
		for H := 1; H < M; H++ {
			if H&bit != 0 && H != bit {
				if o := H ^ bit; h[o] < h[H] {
					h[H], ha[H] = h[o], ha[o]
				}
			}
		}
	}
	for H := 1; H < M; H++ {
		if !(h[H] < 0) {
			h[H], ha[H] = 0, 0
		}
	}
}

// propagate recomputes v after its sub changed and carries the change of
// h(v,·) up to the root, stopping early where nothing changes.
func (t *tree) propagate(v int) {
	M := t.in.M
	for {
		if t.parent[v] < 0 {
			t.compute(v)
			return
		}
		base := v * M
		copy(t.tmp, t.h[base:base+M])
		t.compute(v)
		p := t.parent[v]
		sp, hv := t.sub[p*M:(p+1)*M], t.h[base:base+M]
		changed := false
		for H := 1; H < M; H++ {
			if d := hv[H] - t.tmp[H]; d != 0 {
				sp[H] += d
				changed = true
			}
		}
		if !changed {
			return
		}
		v = p
	}
}

// reparent moves v (with its subtree) under u, over a link of cost c per Mbps;
// u = -1 detaches v. v must not be the root, u not in v's subtree.
func (t *tree) reparent(v, u int, c float64) {
	M := t.in.M
	base := v * M
	if p := t.parent[v]; p >= 0 {
		sp, hv := t.sub[p*M:(p+1)*M], t.h[base:base+M]
		for H := 1; H < M; H++ {
			sp[H] -= hv[H]
		}
		t.parent[v] = -1
		t.propagate(p)
	}
	if u < 0 {
		return
	}
	t.parent[v], t.pc[v] = u, c
	t.computeH(v)
	su, hv := t.sub[u*M:(u+1)*M], t.h[base:base+M]
	for H := 1; H < M; H++ {
		su[H] += hv[H]
	}
	t.propagate(u)
}

// inSubtree reports whether u is v or a descendant of v.
func (t *tree) inSubtree(u, v int) bool {
	for x := u; x >= 0; x = t.parent[x] {
		if x == v {
			return true
		}
	}
	return false
}

// plan reads the optimal plan for the tree out of the solved tables.
func (t *tree) plan(name string) *Plan {
	in := t.in
	M := in.M
	p := in.p
	plan := &Plan{Algorithm: name, Arcs: []Arc{}, Transcodes: []Transcode{}, Served: []Service{}}
	_, children := t.order()
	has := make([]int, in.n)
	root := in.root
	has[root] = 1 | int(t.gArg[root*M+1])
	t.addTranscodes(plan, root, 1, has[root])
	queue := []int{root}
	for k := 0; k < len(queue); k++ {
		v := queue[k]
		for _, w := range children[v] {
			R := int(t.hArg[w*M+has[v]])
			if R == 0 {
				continue
			}
			arc := Arc{From: p.Nodes[v].ID, To: p.Nodes[w].ID}
			for l := 0; l < in.L; l++ {
				if R&(1<<l) != 0 {
					arc.Levels = append(arc.Levels, p.Levels[l].Name)
				}
			}
			plan.Arcs = append(plan.Arcs, arc)
			has[w] = R | int(t.gArg[w*M+R])
			t.addTranscodes(plan, w, R, has[w])
			queue = append(queue, w)
		}
	}
	for _, v := range queue {
		for _, di := range in.demandsAt[v] {
			best, bl := 0.0, -1
			for l := 0; l < in.L; l++ {
				if has[v]&(1<<l) != 0 {
					if c := in.demandCost(di, l); c < best {
						best, bl = c, l
					}
				}
			}
			if bl >= 0 {
				plan.Served = append(plan.Served, Service{Demand: di, Level: p.Levels[bl].Name})
			}
		}
	}
	sort.Slice(plan.Served, func(i, j int) bool { return plan.Served[i].Demand < plan.Served[j].Demand })
	return plan
}

func (t *tree) addTranscodes(plan *Plan, v, received, has int) {
	from := bits.TrailingZeros(uint(received))
	for l := 0; l < t.in.L; l++ {
		if (has&^received)&(1<<l) != 0 {
			plan.Transcodes = append(plan.Transcodes, Transcode{
				Node: t.in.p.Nodes[v].ID, From: t.in.p.Levels[from].Name, To: t.in.p.Levels[l].Name,
			})
		}
	}
}

// linkCost returns the cost per Mbps of the link between a and b (+Inf if none).
func (in *instance) linkCost(a, b int) float64 {
	if len(in.adj[a]) > len(in.adj[b]) {
		a, b = b, a
	}
	for _, h := range in.adj[a] {
		if h.to == b {
			return in.edges[h.e].cost
		}
	}
	return math.Inf(1)
}
