package optimizer

import (
	"fmt"
	"math"
)

// Limits of the exact solver.
const (
	ExactMaxNodes  = 8
	ExactMaxLevels = 3
)

// exact enumerates every spanning tree of the root's component (each node
// picks a parent among its neighbours, refusing cycles) and solves each with
// the tree DP. Any optimal plan's tree extends to a spanning tree whose extra
// nodes hang below it, and the DP prunes them, so the best of these is the
// optimum.
func exact(in *instance) (*Plan, error) {
	if in.n > ExactMaxNodes {
		return nil, fmt.Errorf("exact: %d nodes, the exhaustive search handles at most %d", in.n, ExactMaxNodes)
	}
	if in.L > ExactMaxLevels {
		return nil, fmt.Errorf("exact: %d levels, the exhaustive search handles at most %d", in.L, ExactMaxLevels)
	}
	_, sp := shortestPaths(in)
	var nodes []int
	for v := 0; v < in.n; v++ {
		if v != in.root && sp[v] >= 0 {
			nodes = append(nodes, v)
		}
	}
	t := newTree(in)
	parent := noParents(in.n)
	best, bestParent := math.Inf(1), []int(nil)
	var search func(i int)
	search = func(i int) {
		if i == len(nodes) {
			copy(t.parent, parent)
			t.solve()
			if obj := t.objective(); obj < best {
				best, bestParent = obj, append([]int(nil), parent...)
			}
			return
		}
		v := nodes[i]
		for _, hf := range in.adj[v] {
			u := hf.to
			cycle := false
			for x := u; x >= 0; x = parent[x] {
				if x == v {
					cycle = true
					break
				}
			}
			if cycle {
				continue
			}
			parent[v], t.pc[v] = u, in.edges[hf.e].cost
			search(i + 1)
		}
		parent[v] = -1
	}
	search(0)
	if bestParent == nil {
		bestParent = parent
	}
	t.setParents(bestParent)
	return t.plan("exact"), nil
}
