package overlay

import "time"

// RTT returns the estimated round-trip time between nodes a and b: the mean
// of a's estimate of b and b's estimate of a, whichever are known (each is
// the minimum of its recent memberlist probe RTTs, gossiped every
// MembershipConfig.RTTInterval).
func (m *Membership) RTT(a, b string) (time.Duration, bool) {
	return rttBetween(m.RTTs(), a, b)
}

func rttBetween(rtts map[string]map[string]float64, a, b string) (time.Duration, bool) {
	var sum float64
	n := 0
	if v, ok := rtts[a][b]; ok {
		sum += v
		n++
	}
	if v, ok := rtts[b][a]; ok {
		sum += v
		n++
	}
	if n == 0 {
		return 0, false
	}
	return time.Duration(sum / float64(n) * float64(time.Millisecond)), true
}

// LinkCost is the cost per Mbps of relaying between a and b:
//
//	cost_per_mbps(a, b) = (price(a) + price(b)) / 2 × (1 + RTT(a, b) / RTTScale)
//
// The price term is what the two ends charge for the traffic (each node's
// NodeMeta.Price per Mbps, the mean because a relay is egress at one end
// and ingress at the other). The RTT factor makes a long link dearer than a
// short one of the same price: RTT stands for distance, and distance for
// transit cost, loss and the delay a viewer sees. A link of RTTScale
// (default 50 ms) costs twice its price; a loopback or LAN link (< 1 ms)
// costs its price. An unmeasured pair counts MembershipConfig.DefaultRTT (50 ms), so
// a node with no samples yet is not preferred over measured ones.
func LinkCost(priceA, priceB float64, rtt, scale time.Duration) float64 {
	return (priceA + priceB) / 2 * (1 + float64(rtt)/float64(scale))
}

// LinkCost is the cost per Mbps of a link between members a and b by this
// node's view of their RTT: LinkCost with MembershipConfig.RTTScale, and
// MembershipConfig.DefaultRTT for an unmeasured pair. The planner prices
// the delivery tree's links by it, and edge choice (CheapestEdge) the
// viewer's redirect.
func (m *Membership) LinkCost(a, b Member) float64 {
	return m.linkCost(m.RTTs(), a, b)
}

// linkCost applies LinkCost to two members with a given view of RTTs.
func (m *Membership) linkCost(rtts map[string]map[string]float64, a, b Member) float64 {
	rtt, ok := rttBetween(rtts, a.Name, b.Name)
	if !ok {
		rtt = m.cfg.DefaultRTT
	}
	return LinkCost(a.Meta.Price, b.Meta.Price, rtt, m.cfg.RTTScale)
}
