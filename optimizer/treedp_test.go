package optimizer

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestReparentMatchesFullSolve: the incremental update of the DP tables after
// a re-parent gives the same optimum as solving the new tree from scratch.
func TestReparentMatchesFullSolve(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for trial := 0; trial < 200; trial++ {
		p := randomProblem(rng, 3+rng.IntN(15), 1+rng.IntN(4))
		in := compile(p)
		tr := newTree(in)
		tr.setParents(attachAll(in, noParents(in.n)))
		fresh := newTree(in)
		for step := 0; step < 30; step++ {
			v := rng.IntN(in.n)
			if tr.parent[v] < 0 {
				continue
			}
			hf := in.adj[v][rng.IntN(len(in.adj[v]))]
			if tr.inSubtree(hf.to, v) {
				continue
			}
			tr.reparent(v, hf.to, in.edges[hf.e].cost)
			fresh.setParents(tr.parent)
			if a, b := tr.objective(), fresh.objective(); math.Abs(a-b) > 1e-9*(1+math.Abs(b)) {
				t.Fatalf("trial %d step %d: incremental optimum %v, full solve %v", trial, step, a, b)
			}
		}
	}
}

// randomProblem is a connected random problem (the sim package cannot be
// imported from inside the package).
func randomProblem(rng *rand.Rand, n, L int) *Problem {
	p := &Problem{Root: "v0"}
	kbps := 5000.0
	for l := 0; l < L; l++ {
		p.Levels = append(p.Levels, Level{Name: string(rune('a' + l)), Kbps: kbps})
		kbps *= 0.3 + 0.5*rng.Float64()
	}
	id := func(i int) string { return "v" + string(rune('A'+i)) }
	p.Root = id(0)
	for i := 0; i < n; i++ {
		nd := Node{ID: id(i), TranscodeCost: 0.2 * rng.Float64()}
		if rng.IntN(2) == 0 {
			nd.TranscodeSlots = Slots(rng.IntN(3))
		}
		p.Nodes = append(p.Nodes, nd)
	}
	seen := map[[2]int]bool{}
	for i := 1; i < n; i++ {
		j := rng.IntN(i)
		seen[[2]int{j, i}] = true
		p.Links = append(p.Links, Link{A: id(j), B: id(i), CostPerMbps: 0.1 * rng.Float64()})
	}
	for k := 0; k < n; k++ {
		a, b := rng.IntN(n), rng.IntN(n)
		if a > b {
			a, b = b, a
		}
		if a != b && !seen[[2]int{a, b}] {
			seen[[2]int{a, b}] = true
			p.Links = append(p.Links, Link{A: id(a), B: id(b), CostPerMbps: 0.1 * rng.Float64()})
		}
	}
	for i := 0; i < n; i++ {
		d := Demand{Node: id(i), Viewers: rng.IntN(20), LastMileCostPerMbps: 0.02 * rng.Float64(), Utility: map[string]float64{}}
		for _, l := range p.Levels {
			d.Utility[l.Name] = 0.2 * rng.Float64()
		}
		p.Demands = append(p.Demands, d)
	}
	if err := p.Validate(); err != nil {
		panic(err)
	}
	return p
}
