package optimizer

import "fmt"

// Check reports whether plan is feasible for p by the five rules of
// optimizer/problem-and-plan.md; the error names the entry and the rule it
// breaks. When the plan carries a cost block, Check also verifies it
// against Evaluate.
func (p *Problem) Check(plan *Plan) error {
	if plan == nil {
		return fmt.Errorf("plan: nil")
	}
	nodeIdx := make(map[string]int, len(p.Nodes))
	for i, n := range p.Nodes {
		nodeIdx[n.ID] = i
	}
	levelIdx := make(map[string]int, len(p.Levels))
	for i, l := range p.Levels {
		levelIdx[l.Name] = i
	}
	links := linkIndex(p)
	root := nodeIdx[p.Root]

	// Rule 1: a tree directed away from the root.
	parentArc := make(map[int]int) // node -> index of its incoming arc
	children := make(map[int][]int)
	inArcs := make(map[int]bool)
	for i, a := range plan.Arcs {
		f, ok := nodeIdx[a.From]
		if !ok {
			return fmt.Errorf("arcs[%d].from: unknown node %q", i, a.From)
		}
		t, ok := nodeIdx[a.To]
		if !ok {
			return fmt.Errorf("arcs[%d].to: unknown node %q", i, a.To)
		}
		if _, ok := links[pairKey(a.From, a.To)]; !ok || f == t {
			return fmt.Errorf("arcs[%d]: rule 1: no link between %q and %q", i, a.From, a.To)
		}
		if t == root {
			return fmt.Errorf("arcs[%d]: rule 1: the root %q has an incoming arc", i, a.To)
		}
		if j, dup := parentArc[t]; dup {
			return fmt.Errorf("arcs[%d]: rule 1: node %q has a second incoming arc (the first is arcs[%d])", i, a.To, j)
		}
		parentArc[t] = i
		children[f] = append(children[f], t)
		inArcs[f], inArcs[t] = true, true
		if len(a.Levels) == 0 {
			return fmt.Errorf("arcs[%d]: rule 1: carries no level", i)
		}
		seen := make(map[string]bool, len(a.Levels))
		for j, l := range a.Levels {
			if _, ok := levelIdx[l]; !ok {
				return fmt.Errorf("arcs[%d].levels[%d]: unknown level %q", i, j, l)
			}
			if seen[l] {
				return fmt.Errorf("arcs[%d].levels[%d]: rule 1: level %q carried twice", i, j, l)
			}
			seen[l] = true
		}
	}
	// Reachability from the root, in BFS order (parents before children).
	order := []int{root}
	reached := map[int]bool{root: true}
	for k := 0; k < len(order); k++ {
		for _, c := range children[order[k]] {
			if !reached[c] {
				reached[c] = true
				order = append(order, c)
			}
		}
	}
	for i, a := range plan.Arcs {
		if !reached[nodeIdx[a.From]] {
			return fmt.Errorf("arcs[%d]: rule 1: node %q is not reachable from the root %q", i, a.From, p.Root)
		}
	}

	// Rules 2–4: what each node has, in BFS order.
	produced := make(map[int][]int) // node -> levels it produces
	for i, t := range plan.Transcodes {
		n, ok := nodeIdx[t.Node]
		if !ok {
			return fmt.Errorf("transcodes[%d].node: unknown node %q", i, t.Node)
		}
		from, ok := levelIdx[t.From]
		if !ok {
			return fmt.Errorf("transcodes[%d].from: unknown level %q", i, t.From)
		}
		to, ok := levelIdx[t.To]
		if !ok {
			return fmt.Errorf("transcodes[%d].to: unknown level %q", i, t.To)
		}
		if to <= from {
			return fmt.Errorf("transcodes[%d]: rule 4: %q is not worse than %q", i, t.To, t.From)
		}
		for _, l := range produced[n] {
			if l == to {
				return fmt.Errorf("transcodes[%d]: rule 4: node %q produces %q twice", i, t.Node, t.To)
			}
		}
		produced[n] = append(produced[n], to)
		if s := p.Nodes[n].TranscodeSlots; s != nil && len(produced[n]) > *s {
			return fmt.Errorf("transcodes[%d]: rule 4: node %q produces more than its transcode_slots %d", i, t.Node, *s)
		}
	}
	has := make(map[int]map[int]bool, len(reached))
	for _, n := range order {
		h := map[int]bool{}
		if n == root {
			h[0] = true
		} else {
			a := plan.Arcs[parentArc[n]]
			for _, l := range a.Levels {
				h[levelIdx[l]] = true
			}
		}
		// Rule 4: a transcode's source is a level the node has, possibly one
		// it produces itself from a better one; resolve best-first.
		pending := map[int]bool{}
		for _, l := range produced[n] {
			pending[l] = true
		}
		for l := 0; l < len(p.Levels); l++ {
			if pending[l] {
				h[l] = true
			}
		}
		has[n] = h
	}
	for i, t := range plan.Transcodes {
		n := nodeIdx[t.Node]
		if !reached[n] {
			return fmt.Errorf("transcodes[%d]: rule 4: node %q has no level to transcode from (not in the tree)", i, t.Node)
		}
		if !has[n][levelIdx[t.From]] {
			return fmt.Errorf("transcodes[%d]: rule 4: node %q does not have %q", i, t.Node, t.From)
		}
	}
	// Rule 4 (sources): every produced level's source must itself be received
	// or produced from something received; since sources are strictly better,
	// following sources must end at a received level.
	for n, levels := range produced {
		if !reached[n] {
			continue
		}
		recv := map[int]bool{}
		if n == root {
			recv[0] = true
		} else {
			for _, l := range plan.Arcs[parentArc[n]].Levels {
				recv[levelIdx[l]] = true
			}
		}
		src := map[int]int{}
		for _, t := range plan.Transcodes {
			if nodeIdx[t.Node] == n {
				src[levelIdx[t.To]] = levelIdx[t.From]
			}
		}
		for _, l := range levels {
			cur := l
			for !recv[cur] {
				s, ok := src[cur]
				if !ok {
					return fmt.Errorf("rule 4: node %q produces %q from a level it neither receives nor produces", p.Nodes[n].ID, p.Levels[l].Name)
				}
				cur = s
			}
		}
	}
	// Rule 3: an arc carries only levels its from node has.
	for i, a := range plan.Arcs {
		f := nodeIdx[a.From]
		for _, l := range a.Levels {
			if !has[f][levelIdx[l]] {
				return fmt.Errorf("arcs[%d]: rule 3: %q does not have %q", i, a.From, l)
			}
		}
	}
	// Rule 5: service.
	servedOnce := make(map[int]int, len(plan.Served))
	for i, s := range plan.Served {
		if s.Demand < 0 || s.Demand >= len(p.Demands) {
			return fmt.Errorf("served[%d].demand: %d out of range [0,%d)", i, s.Demand, len(p.Demands))
		}
		if j, dup := servedOnce[s.Demand]; dup {
			return fmt.Errorf("served[%d]: rule 5: demand %d already served by served[%d]", i, s.Demand, j)
		}
		servedOnce[s.Demand] = i
		l, ok := levelIdx[s.Level]
		if !ok {
			return fmt.Errorf("served[%d].level: unknown level %q", i, s.Level)
		}
		n := nodeIdx[p.Demands[s.Demand].Node]
		if !has[n][l] {
			return fmt.Errorf("served[%d]: rule 5: node %q does not have %q", i, p.Demands[s.Demand].Node, s.Level)
		}
	}
	if plan.Cost != nil {
		want, err := p.Evaluate(plan)
		if err != nil {
			return err
		}
		if err := CostsMatch(*plan.Cost, want); err != nil {
			return err
		}
	}
	return nil
}
