package optimizer

import (
	"math"
	"math/bits"
)

// instance is a validated Problem compiled to indices: nodes 0..n-1, levels
// 0..L-1 (best first), level sets as bit masks (bit l = level l), demand groups
// aggregated per node into one table over level sets.
type instance struct {
	p     *Problem
	n, L  int
	M     int // 1 << L, the number of level sets
	root  int
	index map[string]int
	mbps  []float64 // per level
	setMb []float64 // per level set: Σ mbps of its levels
	edges []edge
	adj   [][]half
	tcost []float64
	slots []int // capped at L-1
	// serve[v*M+H] is the best (lowest, ≤ 0) cost of serving node v's demand
	// groups when v has the level set H: Σ groups min(0, min over H of
	// viewers × (last mile × mbps − utility)).
	serve []float64
	// demandsAt lists the demand indices at each node.
	demandsAt [][]int
	maxUtil   float64
}

type edge struct {
	a, b int
	cost float64 // per Mbps
}

type half struct {
	to, e int
}

func compile(p *Problem) *instance {
	in := &instance{p: p, n: len(p.Nodes), L: len(p.Levels)}
	in.M = 1 << in.L
	in.index = make(map[string]int, in.n)
	for i, nd := range p.Nodes {
		in.index[nd.ID] = i
	}
	in.root = in.index[p.Root]
	in.mbps = make([]float64, in.L)
	for i, l := range p.Levels {
		in.mbps[i] = l.Kbps / 1000
	}
	in.setMb = make([]float64, in.M)
	for H := 1; H < in.M; H++ {
		low := bits.TrailingZeros(uint(H))
		in.setMb[H] = in.setMb[H&(H-1)] + in.mbps[low]
	}
	in.adj = make([][]half, in.n)
	for _, l := range p.Links {
		a, b := in.index[l.A], in.index[l.B]
		e := len(in.edges)
		in.edges = append(in.edges, edge{a, b, l.CostPerMbps})
		in.adj[a] = append(in.adj[a], half{b, e})
		in.adj[b] = append(in.adj[b], half{a, e})
	}
	in.tcost = make([]float64, in.n)
	in.slots = make([]int, in.n)
	for i, nd := range p.Nodes {
		in.tcost[i] = nd.TranscodeCost
		in.slots[i] = in.L - 1
		if nd.TranscodeSlots != nil && *nd.TranscodeSlots < in.L-1 {
			in.slots[i] = *nd.TranscodeSlots
		}
	}
	in.serve = make([]float64, in.n*in.M)
	in.demandsAt = make([][]int, in.n)
	per := make([]float64, in.M)
	for di, d := range p.Demands {
		v := in.index[d.Node]
		in.demandsAt[v] = append(in.demandsAt[v], di)
		per[0] = 0
		for H := 1; H < in.M; H++ {
			low := bits.TrailingZeros(uint(H))
			per[H] = math.Min(per[H&(H-1)], in.demandCost(di, low))
		}
		row := in.serve[v*in.M : (v+1)*in.M]
		for H := 1; H < in.M; H++ {
			row[H] += per[H]
		}
	}
	in.maxUtil = p.MaxUtility()
	return in
}

// demandCost is the cost of serving demand di at level l (negative when worth it).
func (in *instance) demandCost(di, l int) float64 {
	d := &in.p.Demands[di]
	v := float64(d.Viewers)
	return v*d.LastMileCostPerMbps*in.mbps[l] - v*d.Utility[in.p.Levels[l].Name]
}

// value returns, per node and level k, the value V_v(k) ≥ 0 of having level
// k and every worse level (free transcoding): −serve(v, {k..L-1}).
func (in *instance) value(v, k int) float64 {
	worse := (in.M - 1) &^ (1<<k - 1)
	return -in.serve[v*in.M+worse]
}
