package optimizer

import (
	"fmt"
	"math"
)

// Evaluate computes the cost block of plan by the formula of
// optimizer/problem-and-plan.md. It does not check feasibility (see Check); it
// fails only when the plan names something the problem lacks (a node, a
// link, a level, a demand).
func (p *Problem) Evaluate(plan *Plan) (Cost, error) {
	var c Cost
	kbps := make(map[string]float64, len(p.Levels))
	for _, l := range p.Levels {
		kbps[l.Name] = l.Kbps
	}
	nodes := make(map[string]*Node, len(p.Nodes))
	for i := range p.Nodes {
		nodes[p.Nodes[i].ID] = &p.Nodes[i]
	}
	links := linkIndex(p)
	for i, a := range plan.Arcs {
		cost, ok := links[pairKey(a.From, a.To)]
		if !ok {
			return Cost{}, fmt.Errorf("arcs[%d]: no link between %q and %q", i, a.From, a.To)
		}
		for j, name := range a.Levels {
			k, ok := kbps[name]
			if !ok {
				return Cost{}, fmt.Errorf("arcs[%d].levels[%d]: unknown level %q", i, j, name)
			}
			c.Links += cost * k / 1000
		}
	}
	for i, t := range plan.Transcodes {
		n, ok := nodes[t.Node]
		if !ok {
			return Cost{}, fmt.Errorf("transcodes[%d].node: unknown node %q", i, t.Node)
		}
		c.Transcodes += n.TranscodeCost
	}
	for i, s := range plan.Served {
		if s.Demand < 0 || s.Demand >= len(p.Demands) {
			return Cost{}, fmt.Errorf("served[%d].demand: %d out of range [0,%d)", i, s.Demand, len(p.Demands))
		}
		k, ok := kbps[s.Level]
		if !ok {
			return Cost{}, fmt.Errorf("served[%d].level: unknown level %q", i, s.Level)
		}
		d := p.Demands[s.Demand]
		v := float64(d.Viewers)
		c.LastMile += v * d.LastMileCostPerMbps * k / 1000
		c.Utility += v * d.Utility[s.Level]
	}
	c.Total = c.Links + c.Transcodes + c.LastMile - c.Utility
	c.Regret = c.Total + p.MaxUtility()
	return c, nil
}

// CostsMatch reports whether two cost blocks agree within the relative 1e-6
// that optimizer/problem-and-plan.md allows, naming the first field that does not.
func CostsMatch(got, want Cost) error {
	fields := []struct {
		name string
		g, w float64
	}{
		{"links", got.Links, want.Links},
		{"transcodes", got.Transcodes, want.Transcodes},
		{"last_mile", got.LastMile, want.LastMile},
		{"utility", got.Utility, want.Utility},
		{"total", got.Total, want.Total},
		{"regret", got.Regret, want.Regret},
	}
	for _, f := range fields {
		if !close6(f.g, f.w) {
			return fmt.Errorf("cost.%s: %v, the formula gives %v", f.name, f.g, f.w)
		}
	}
	return nil
}

// close6 compares within a relative 1e-6, with an absolute floor for values
// near zero (a total can cancel to 0 from large terms).
func close6(a, b float64) bool {
	return math.Abs(a-b) <= 1e-6*math.Max(math.Max(math.Abs(a), math.Abs(b)), 1e-3)
}

func pairKey(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

func linkIndex(p *Problem) map[[2]string]float64 {
	m := make(map[[2]string]float64, len(p.Links))
	for _, l := range p.Links {
		m[pairKey(l.A, l.B)] = l.CostPerMbps
	}
	return m
}
