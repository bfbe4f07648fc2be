package optimizer

import (
	"math"
	"sort"
)

// sptTree is the union of the cheapest paths from the root to the nodes with
// demand.
func sptTree(in *instance) []int {
	_, sp := shortestPaths(in)
	parent := noParents(in.n)
	for v := 0; v < in.n; v++ {
		if len(in.demandsAt[v]) == 0 {
			continue
		}
		for x := v; sp[x] >= 0 && parent[x] < 0; x = sp[x] {
			parent[x] = sp[x]
		}
	}
	return parent
}

// spt: the shortest-path tree to the demand nodes, then the tree DP.
func spt(in *instance) *Plan {
	t := newTree(in)
	t.setParents(sptTree(in))
	return t.plan("spt")
}

// mst: a minimum spanning tree of the root's component carries levels[0]
// everywhere; every demand there is served at levels[0]; no transcodes.
func mst(in *instance) *Plan {
	p := in.p
	plan := &Plan{Algorithm: "mst", Arcs: []Arc{}, Transcodes: []Transcode{}, Served: []Service{}}
	parent := spanningTree(in)
	order, _ := treeOrder(in, parent)
	reached := make([]bool, in.n)
	for _, v := range order {
		reached[v] = true
		if v != in.root {
			plan.Arcs = append(plan.Arcs, Arc{From: p.Nodes[parent[v]].ID, To: p.Nodes[v].ID, Levels: []string{p.Levels[0].Name}})
		}
	}
	for di, d := range p.Demands {
		if reached[in.index[d.Node]] {
			plan.Served = append(plan.Served, Service{Demand: di, Level: p.Levels[0].Name})
		}
	}
	return plan
}

// naive: every demand group is served by its own stream from the root along
// the cheapest path, at the level best for its viewers alone: the one that
// maximises a viewer's utility minus its last mile and its own unicast path
// at that bitrate (no service if nothing is positive). The root produces the
// levels needed (within its transcode slots: the levels of most value are
// kept and viewers re-choose among them); arcs carry, once each, the levels
// needed below them; no other node transcodes.
func naive(in *instance) *Plan {
	p := in.p
	dist, sp := shortestPaths(in)
	choose := func(di int, allowed int) int {
		d := &p.Demands[di]
		v := in.index[d.Node]
		best, bl := 0.0, -1
		if d.Viewers == 0 || math.IsInf(dist[v], 1) {
			return -1
		}
		for l := 0; l < in.L; l++ {
			if allowed&(1<<l) == 0 {
				continue
			}
			net := d.Utility[p.Levels[l].Name] - (d.LastMileCostPerMbps+dist[v])*in.mbps[l]
			if net > best {
				best, bl = net, l
			}
		}
		return bl
	}
	level := make([]int, len(p.Demands))
	worth := make([]float64, in.L)
	for di := range p.Demands {
		level[di] = choose(di, in.M-1)
		if l := level[di]; l >= 0 {
			worth[l] -= in.demandCost(di, l)
		}
	}
	needed := []int{}
	for l := 1; l < in.L; l++ {
		if worth[l] > 0 {
			needed = append(needed, l)
		}
	}
	if s := in.slots[in.root]; len(needed) > s {
		sort.Slice(needed, func(i, j int) bool { return worth[needed[i]] > worth[needed[j]] })
		needed = needed[:s]
		allowed := 1
		for _, l := range needed {
			allowed |= 1 << l
		}
		for di := range p.Demands {
			level[di] = choose(di, allowed)
		}
	}
	plan := &Plan{Algorithm: "naive", Arcs: []Arc{}, Transcodes: []Transcode{}, Served: []Service{}}
	carry := make([]int, in.n) // level set each node must receive
	produced := 0
	for di, l := range level {
		if l < 0 {
			continue
		}
		plan.Served = append(plan.Served, Service{Demand: di, Level: p.Levels[l].Name})
		if l > 0 {
			produced |= 1 << l
		}
		for x := in.index[p.Demands[di].Node]; x != in.root; x = sp[x] {
			carry[x] |= 1 << l
		}
	}
	for l := 1; l < in.L; l++ {
		if produced&(1<<l) != 0 {
			plan.Transcodes = append(plan.Transcodes, Transcode{Node: p.Root, From: p.Levels[0].Name, To: p.Levels[l].Name})
		}
	}
	order, _ := treeOrder(in, sp)
	for _, v := range order {
		if v == in.root || carry[v] == 0 {
			continue
		}
		arc := Arc{From: p.Nodes[sp[v]].ID, To: p.Nodes[v].ID}
		for l := 0; l < in.L; l++ {
			if carry[v]&(1<<l) != 0 {
				arc.Levels = append(arc.Levels, p.Levels[l].Name)
			}
		}
		plan.Arcs = append(plan.Arcs, arc)
	}
	return plan
}
