package sim

import (
	"fmt"
	"math/rand/v2"

	"github.com/gradient-cdn/gradient/optimizer"
)

// Small generates a random problem of 2..maxNodes nodes and 1..maxLevels
// levels, small enough for the exact solver: a random spanning tree plus
// random extra links (density itself random), random ladders and utilities
// (not necessarily monotone in quality), random transcode costs and slots,
// demand groups with random viewers and last-mile costs. Costs are scaled so
// that serving, not serving, downscaling early or late all happen.
func Small(rng *rand.Rand, maxNodes, maxLevels int) *optimizer.Problem {
	n := 2 + rng.IntN(max(maxNodes-1, 1))
	L := 1 + rng.IntN(maxLevels)
	p := &optimizer.Problem{Root: nodeID(0)}
	kbps := 1000 + float64(rng.IntN(4000))
	for l := 0; l < L; l++ {
		p.Levels = append(p.Levels, optimizer.Level{Name: fmt.Sprintf("q%d", l), Kbps: kbps})
		kbps = float64(int(kbps * (0.3 + 0.5*rng.Float64())))
	}
	slotChoices := []int{-1, 0, 1, 2}
	for i := 0; i < n; i++ {
		nd := optimizer.Node{ID: nodeID(i), TranscodeCost: uniform(rng, 0, 0.3)}
		if s := slotChoices[rng.IntN(len(slotChoices))]; s >= 0 {
			nd.TranscodeSlots = optimizer.Slots(s)
		}
		p.Nodes = append(p.Nodes, nd)
	}
	density := 0.6 * rng.Float64()
	linked := map[[2]int]bool{}
	link := func(a, b int) {
		if a > b {
			a, b = b, a
		}
		if a == b || linked[[2]int{a, b}] {
			return
		}
		linked[[2]int{a, b}] = true
		p.Links = append(p.Links, optimizer.Link{A: nodeID(a), B: nodeID(b), CostPerMbps: uniform(rng, 0, 0.1)})
	}
	for i := 1; i < n; i++ {
		link(rng.IntN(i), i)
	}
	for a := 0; a < n; a++ {
		for b := a + 1; b < n; b++ {
			if rng.Float64() < density {
				link(a, b)
			}
		}
	}
	for i := 0; i < n; i++ {
		if rng.Float64() < 0.3 {
			continue
		}
		for g := 1 + rng.IntN(3); g > 0; g-- {
			d := optimizer.Demand{Node: nodeID(i), Viewers: rng.IntN(11),
				LastMileCostPerMbps: uniform(rng, 0, 0.02), Utility: map[string]float64{}}
			for _, l := range p.Levels {
				if rng.Float64() < 0.9 {
					d.Utility[l.Name] = uniform(rng, 0, 0.2)
				}
			}
			p.Demands = append(p.Demands, d)
		}
	}
	return p
}
