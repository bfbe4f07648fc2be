package overlay

import (
	"fmt"
	"math"
	"time"

	"github.com/gradient-cdn/gradient/optimizer"
)

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
// Between members, Membership.LinkCost multiplies it by the price of the
// two members' regions (overlay.region_prices).
func LinkCost(priceA, priceB float64, rtt, scale time.Duration) float64 {
	return (priceA + priceB) / 2 * (1 + float64(rtt)/float64(scale))
}

// LinkCost is the cost per Mbps of a link between members a and b by this
// node's view of their RTT, times this node's price of their regions:
//
//	LinkCost(price(a), price(b), RTT(a, b), RTTScale) × RegionPrices.Multiplier(region(a), region(b))
//
// with MembershipConfig.RTTScale, and MembershipConfig.DefaultRTT for an
// unmeasured pair; capped at MaxLinkCost. The planner prices the delivery
// tree's links by it, and edge choice (CheapestLink) the viewer's redirect.
func (m *Membership) LinkCost(a, b Member) float64 {
	return m.linkCost(m.RTTs(), a, b)
}

// linkCost applies LinkCost to two members with a given view of RTTs.
func (m *Membership) linkCost(rtts map[string]map[string]float64, a, b Member) float64 {
	rtt, ok := rttBetween(rtts, a.Name, b.Name)
	if !ok {
		rtt = m.cfg.DefaultRTT
	}
	c := LinkCost(a.Meta.Price, b.Meta.Price, rtt, m.cfg.RTTScale) * m.cfg.RegionPrices.Multiplier(a.Meta.Region, b.Meta.Region)
	return min(c, MaxLinkCost)
}

// MaxLinkCost caps a member link's cost (per Mbps): the optimizer takes no
// number above optimizer.MaxNumber, and the largest price, RTT and region
// multiplier together would exceed it (2.01e8 × 1e3).
const MaxLinkCost = optimizer.MaxNumber

// MaxRegionPrice bounds a region pair's multiplier.
const MaxRegionPrice = 1e3

// MaxRegionLen bounds a region's name.
const MaxRegionLen = 32

// ValidRegion checks a region name: 1 to MaxRegionLen characters of a-z,
// 0-9 and '-'.
func ValidRegion(r string) error {
	if r == "" || len(r) > MaxRegionLen {
		return fmt.Errorf("%q must be 1 to %d characters", r, MaxRegionLen)
	}
	for _, c := range r {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%q may hold only a-z, 0-9 and '-'", r)
		}
	}
	return nil
}

// RegionPrice is one entry of overlay.region_prices: traffic between
// regions A and B (either way) costs Price times the link cost.
type RegionPrice struct {
	A     string  `yaml:"a"`
	B     string  `yaml:"b"`
	Price float64 `yaml:"price"`
}

// RegionPrices is a table of region pair multipliers. A pair not listed
// costs 1×, and so does a link with an end that has no region.
type RegionPrices []RegionPrice

// Multiplier returns the multiplier of the pair (a, b), symmetric: 1 when
// the pair is not listed or either region is "".
func (t RegionPrices) Multiplier(a, b string) float64 {
	if a == "" || b == "" {
		return 1
	}
	for _, p := range t {
		if p.A == a && p.B == b || p.A == b && p.B == a {
			return p.Price
		}
	}
	return 1
}

// Validate checks every entry and names the bad one by its key
// ("region_prices[1].price").
func (t RegionPrices) Validate() error {
	seen := map[[2]string]int{}
	for i, p := range t {
		if err := ValidRegion(p.A); err != nil {
			return fmt.Errorf("region_prices[%d].a: %w", i, err)
		}
		if err := ValidRegion(p.B); err != nil {
			return fmt.Errorf("region_prices[%d].b: %w", i, err)
		}
		if math.IsNaN(p.Price) || p.Price <= 0 || p.Price > MaxRegionPrice {
			return fmt.Errorf("region_prices[%d].price: %v outside (0, %v]", i, p.Price, float64(MaxRegionPrice))
		}
		k := [2]string{min(p.A, p.B), max(p.A, p.B)}
		if j, dup := seen[k]; dup {
			return fmt.Errorf("region_prices[%d]: pair %s, %s listed again (first at [%d])", i, p.A, p.B, j)
		}
		seen[k] = i
	}
	return nil
}
