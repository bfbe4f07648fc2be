package overlay

// EdgeSelector chooses the node a viewer is sent to when this one does
// not serve it itself (livekit's routing selector habit: the policy is its
// own type, not a branch in the handler). ok is false when there is no
// other node to send the viewer to.
type EdgeSelector interface {
	SelectEdge(self string) (edge Member, ok bool)
}

// CheapestLink sends a viewer to the alive member, other than this node
// and with an HTTP address, reached from this node over the cheapest link:
// the link cost the planner prices the delivery tree with
// (Membership.LinkCost), so that an unmeasured RTT counts the same here as
// in plans.
type CheapestLink struct {
	M *Membership
}

// SelectEdge implements EdgeSelector.
func (c CheapestLink) SelectEdge(self string) (Member, bool) {
	me, ok := c.M.Member(self)
	if !ok {
		return Member{}, false
	}
	return cheapestEdge(me, c.M.Alive(), c.M.LinkCost)
}

// cheapestEdge returns the member of candidates, other than self and with
// an HTTP address, whose link from self costs least (the first by name on
// a tie, candidates being sorted by name).
func cheapestEdge(self Member, candidates []Member, cost func(a, b Member) float64) (Member, bool) {
	var best Member
	bestCost := -1.0
	for _, x := range candidates {
		if x.Name == self.Name || x.Meta.HTTP == "" {
			continue
		}
		if c := cost(self, x); bestCost < 0 || c < bestCost {
			best, bestCost = x, c
		}
	}
	return best, bestCost >= 0
}
