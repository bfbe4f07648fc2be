package optimizer

import "math"

// minHeap is a binary heap of (key, node) pairs for Dijkstra and Prim.
type minHeap struct {
	key  []float64
	node []int
}

func (h *minHeap) len() int { return len(h.key) }

func (h *minHeap) push(k float64, v int) {
	h.key, h.node = append(h.key, k), append(h.node, v)
	i := len(h.key) - 1
	for i > 0 {
		j := (i - 1) / 2
		if h.key[j] <= h.key[i] {
			break
		}
		h.swap(i, j)
		i = j
	}
}

func (h *minHeap) pop() (float64, int) {
	k, v := h.key[0], h.node[0]
	last := len(h.key) - 1
	h.swap(0, last)
	h.key, h.node = h.key[:last], h.node[:last]
	i := 0
	for {
		l := 2*i + 1
		if l >= last {
			break
		}
		m := l
		if r := l + 1; r < last && h.key[r] < h.key[l] {
			m = r
		}
		if h.key[i] <= h.key[m] {
			break
		}
		h.swap(i, m)
		i = m
	}
	return k, v
}

func (h *minHeap) swap(i, j int) {
	h.key[i], h.key[j] = h.key[j], h.key[i]
	h.node[i], h.node[j] = h.node[j], h.node[i]
}

func noParents(n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = -1
	}
	return p
}

// shortestPaths runs Dijkstra from the root over link costs per Mbps and
// returns each reachable node's distance and parent (-1 for the root and
// for unreachable nodes, whose distance is +Inf).
func shortestPaths(in *instance) (dist []float64, parent []int) {
	dist = make([]float64, in.n)
	for i := range dist {
		dist[i] = math.Inf(1)
	}
	parent = noParents(in.n)
	dist[in.root] = 0
	var h minHeap
	h.push(0, in.root)
	for h.len() > 0 {
		d, v := h.pop()
		if d > dist[v] {
			continue
		}
		for _, hf := range in.adj[v] {
			if nd := d + in.edges[hf.e].cost; nd < dist[hf.to] {
				dist[hf.to], parent[hf.to] = nd, v
				h.push(nd, hf.to)
			}
		}
	}
	return dist, parent
}

// attachAll extends a tree (parent array; the root and nodes with a parent
// are in it) to every node reachable from the root, Prim-style: each new node
// hangs off the tree by the cheapest link. The DP prunes what is not worth
// serving, so extra leaves cost nothing and give local search room to move.
func attachAll(in *instance, parent []int) []int {
	out := rooted(in, parent)
	inTree := make([]bool, in.n)
	best := make([]float64, in.n)
	for i := range best {
		best[i] = math.Inf(1)
	}
	var h minHeap
	for v := 0; v < in.n; v++ {
		if v == in.root || out[v] >= 0 {
			inTree[v] = true
		}
	}
	relax := func(v int) {
		for _, hf := range in.adj[v] {
			if c := in.edges[hf.e].cost; !inTree[hf.to] && c < best[hf.to] {
				best[hf.to], out[hf.to] = c, v
				h.push(c, hf.to)
			}
		}
	}
	for v := 0; v < in.n; v++ {
		if inTree[v] {
			relax(v)
		}
	}
	for h.len() > 0 {
		c, v := h.pop()
		if inTree[v] || c > best[v] {
			continue
		}
		inTree[v] = true
		relax(v)
	}
	return out
}

// spanningTree returns a minimum spanning tree of the root's component (Prim
// from the root) as a parent array.
func spanningTree(in *instance) []int {
	return attachAll(in, noParents(in.n))
}

// rooted returns a copy of parent keeping only the nodes whose parent chain
// reaches the root.
func rooted(in *instance, parent []int) []int {
	order, _ := treeOrder(in, parent)
	out := noParents(in.n)
	for _, v := range order[1:] {
		out[v] = parent[v]
	}
	return out
}
