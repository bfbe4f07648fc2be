package overlay

import (
	"math"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

func TestCheapestEdgeSkipsSelfAndMembersWithoutHTTP(t *testing.T) {
	self := Member{Name: "a", Meta: NodeMeta{HTTP: "a:80", Price: 1}}
	cands := []Member{self,
		{Name: "b", Meta: NodeMeta{Price: 0.1}},
		{Name: "c", Meta: NodeMeta{HTTP: "c:80", Price: 3}},
		{Name: "d", Meta: NodeMeta{HTTP: "d:80", Price: 2}},
	}
	price := func(a, b Member) float64 { return a.Meta.Price + b.Meta.Price }
	got, ok := cheapestEdge(self, cands, price)
	if !ok || got.Name != "d" {
		t.Errorf("chose %q (ok %v), want d: b has no HTTP address, c costs more", got.Name, ok)
	}
	if _, ok := cheapestEdge(self, []Member{self}, price); ok {
		t.Error("a node alone chose an edge")
	}
}

// TestCheapestLinkUsesThePlannersLinkCost: the edge a full node sends a
// viewer to is the one over the link the planner prices cheapest.
func TestCheapestLinkUsesThePlannersLinkCost(t *testing.T) {
	prices := []float64{0.01, 0.05, 0.02}
	ms := startCluster(t, 3, func(i int, c *MembershipConfig) {
		c.Meta.Price = prices[i]
		c.DefaultRTT = 400 * time.Millisecond
		c.RTTScale = 10 * time.Millisecond
	})
	testutil.Eventually(t, 10*time.Second, "n0 sees 3 alive members", func() bool { return len(ms[0].Alive()) == 3 })
	pl := newTestPlanner(t, PlannerConfig{DeviceClasses: testClasses}, ms[0])
	prob, _ := pl.Problem(StreamInfo{Name: "live/cam1", Root: "n0", Ladder: testLadder})
	planned := map[string]float64{}
	for _, l := range prob.Links {
		if l.A == "n0" {
			planned[l.B] = l.CostPerMbps
		}
	}
	edge, ok := CheapestLink{M: ms[0]}.SelectEdge("n0")
	if !ok {
		t.Fatal("no edge chosen among 3 alive nodes")
	}
	for name, c := range planned {
		if c < planned[edge.Name] {
			t.Errorf("chose %s (planned link cost %v), but the planner prices the link to %s at %v", edge.Name, planned[edge.Name], name, c)
		}
	}
	// A link with no RTT sample costs what the planner puts on it:
	// DefaultRTT at RTTScale, (0.01+0.05)/2 × (1 + 400/10).
	me, _ := ms[0].Member("n0")
	if got, want := ms[0].LinkCost(me, Member{Name: "unmeasured", Meta: NodeMeta{Price: 0.05}}), 0.03*41; math.Abs(got-want) > 1e-9 {
		t.Errorf("LinkCost of an unmeasured link = %v, want %v", got, want)
	}
}
