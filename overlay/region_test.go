package overlay

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

var euUS = RegionPrices{{A: "eu-west", B: "us-east", Price: 4}, {A: "eu-west", B: "eu-west", Price: 1.5}}

// TestRegionPricesMultiplyTheLinkCost: a link between members of a listed
// pair of regions costs the pair's multiplier times LinkCost, either way
// round; an unlisted pair, or an end with no region, costs 1×; the
// product is capped at MaxLinkCost.
func TestRegionPricesMultiplyTheLinkCost(t *testing.T) {
	m := &Membership{cfg: MembershipConfig{RTTScale: 50 * time.Millisecond, DefaultRTT: 50 * time.Millisecond, RegionPrices: euUS}}
	mem := func(name, region string) Member {
		return Member{Name: name, Meta: NodeMeta{Price: 0.01, Region: region}}
	}
	base := LinkCost(0.01, 0.01, 50*time.Millisecond, 50*time.Millisecond) // unmeasured: DefaultRTT
	for _, c := range []struct {
		a, b string
		mult float64
	}{
		{"eu-west", "us-east", 4},
		{"us-east", "eu-west", 4},   // symmetric
		{"eu-west", "eu-west", 1.5}, // a listed same-region pair
		{"us-east", "us-east", 1},   // not listed
		{"eu-west", "ap-south", 1},  // not listed
		{"", "us-east", 1},          // an end without region
		{"", "", 1},
	} {
		if got := m.linkCost(nil, mem("a", c.a), mem("b", c.b)); math.Abs(got-base*c.mult) > 1e-12 {
			t.Errorf("LinkCost(%q, %q) = %v, want %v × %v", c.a, c.b, got, base, c.mult)
		}
	}
	// A measured RTT enters the same way.
	rtts := map[string]map[string]float64{"a": {"b": 10}}
	want := LinkCost(0.01, 0.01, 10*time.Millisecond, 50*time.Millisecond) * 4
	if got := m.linkCost(rtts, mem("a", "eu-west"), mem("b", "us-east")); math.Abs(got-want) > 1e-12 {
		t.Errorf("measured cross-region link = %v, want %v", got, want)
	}
	// The largest price, RTT and multiplier stay within the optimizer's bounds.
	m.cfg.RegionPrices = RegionPrices{{A: "x", B: "y", Price: MaxRegionPrice}}
	dear := func(n, r string) Member { return Member{Name: n, Meta: NodeMeta{Price: MaxPrice, Region: r}} }
	big := map[string]map[string]float64{"a": {"b": MaxRTTMillis}}
	if got := m.linkCost(big, dear("a", "x"), dear("b", "y")); got != MaxLinkCost {
		t.Errorf("the dearest link costs %v, want the cap %v", got, float64(MaxLinkCost))
	}
}

// TestCheapestLinkAvoidsAnExpensiveRegion: edge choice prices links with
// the region multiplier: a cheaper node across a dear region pair loses to
// a dearer one in this node's region.
func TestCheapestLinkAvoidsAnExpensiveRegion(t *testing.T) {
	m := &Membership{cfg: MembershipConfig{RTTScale: 50 * time.Millisecond, DefaultRTT: 50 * time.Millisecond,
		RegionPrices: RegionPrices{{A: "eu", B: "us", Price: 10}}}}
	self := Member{Name: "a", Meta: NodeMeta{HTTP: "a:80", Price: 0.01, Region: "eu"}}
	cands := []Member{self,
		{Name: "b", Meta: NodeMeta{HTTP: "b:80", Price: 0.01, Region: "us"}},
		{Name: "c", Meta: NodeMeta{HTTP: "c:80", Price: 0.03, Region: "eu"}},
	}
	cost := func(a, b Member) float64 { return m.linkCost(nil, a, b) }
	if got, _ := cheapestEdge(self, cands, cost); got.Name != "c" {
		t.Errorf("chose %s, want c: b is cheaper per Mbps but across eu–us at 10×", got.Name)
	}
	m.cfg.RegionPrices = nil
	if got, _ := cheapestEdge(self, cands, cost); got.Name != "b" {
		t.Errorf("with no region prices chose %s, want the cheaper b", got.Name)
	}
}

func TestRegionConfigValidation(t *testing.T) {
	ok := DefaultConfig()
	ok.Region, ok.RegionPrices = "eu-west", euUS
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid region config: %v", err)
	}
	if m := ok.Membership(); m.Meta.Region != "eu-west" || len(m.RegionPrices) != 2 {
		t.Errorf("Membership() carries region %q and %d prices, want eu-west and 2", m.Meta.Region, len(m.RegionPrices))
	}
	for _, c := range []struct {
		region string
		prices RegionPrices
		want   string
	}{
		{"EU", nil, "region:"},
		{"eu west", nil, "region:"},
		{strings.Repeat("x", MaxRegionLen+1), nil, "region:"},
		{"", RegionPrices{{A: "eu", B: "", Price: 2}}, "region_prices[0].b"},
		{"", RegionPrices{{A: "eu_1", B: "us", Price: 2}}, "region_prices[0].a"},
		{"", RegionPrices{{A: "eu", B: "us", Price: 0}}, "region_prices[0].price"},
		{"", RegionPrices{{A: "eu", B: "us", Price: -1}}, "region_prices[0].price"},
		{"", RegionPrices{{A: "eu", B: "us", Price: 1001}}, "region_prices[0].price"},
		{"", RegionPrices{{A: "eu", B: "us", Price: math.NaN()}}, "region_prices[0].price"},
		{"", RegionPrices{{A: "eu", B: "us", Price: 2}, {A: "us", B: "eu", Price: 3}}, "region_prices[1]: pair"},
	} {
		cfg := DefaultConfig()
		cfg.Region, cfg.RegionPrices = c.region, c.prices
		err := cfg.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("region %q prices %+v: error %v, want one starting %q", c.region, c.prices, err, c.want)
		}
	}
}

// TestNodeMetaWithRegionFitsMemberlist: a node's metadata with the longest
// region, a key and long addresses stays under memberlist's 512 bytes, and
// a member gossiping an invalid region is ignored.
func TestNodeMetaWithRegionFitsMemberlist(t *testing.T) {
	addr := "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
	meta := NodeMeta{ID: strings.Repeat("n", 64), HTTP: addr, RTSP: addr, SRT: addr, Price: 123456.789012,
		TranscodeSlots: MaxTranscodeSlots, TranscodeCost: 123456.789012, Leaving: true,
		Key: strings.Repeat("A", 43) + "=", Region: strings.Repeat("r", MaxRegionLen)}
	b, err := json.Marshal(meta)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) >= 512 {
		t.Errorf("metadata %d bytes, want < 512: %s", len(b), b)
	}
	if p := metaProblem(NodeMeta{Region: "Not/A region"}); !strings.Contains(p, "region") {
		t.Errorf("metaProblem of a bad region = %q, want it named", p)
	}
	if p := metaProblem(NodeMeta{Region: "eu-west"}); p != "" {
		t.Errorf("metaProblem of a good region = %q", p)
	}
}

// TestPlannerCrossesADearRegionPairOnce: n0 and n1 in eu, n2 and n3 in
// us, viewers at n2 and n3. The problem's link costs hold the eu–us
// multiplier, and at 10× the plan crosses from eu to us by one arc only
// and serves the other us node from inside us.
func TestPlannerCrossesADearRegionPairOnce(t *testing.T) {
	regions := []string{"eu", "eu", "us", "us"}
	ms := startCluster(t, 4, func(i int, c *MembershipConfig) {
		c.Meta.Region = regions[i]
		c.Meta.TranscodeCost = 0.001
		c.RegionPrices = RegionPrices{{A: "eu", B: "us", Price: 10}}
		// Loopback RTTs of a loaded machine (several ms under -race) must
		// not blur the prices: RTT adds 1 % per 100 ms.
		c.RTTScale = 10 * time.Second
	})
	testutil.Eventually(t, 10*time.Second, "4 nodes agree on membership", func() bool {
		for _, m := range ms {
			if len(m.Alive()) != 4 {
				return false
			}
		}
		return true
	})
	testutil.Eventually(t, 10*time.Second, "n0 knows every pair's RTT", func() bool {
		for _, a := range ms {
			for _, b := range ms {
				if _, ok := ms[0].RTT(a.Name(), b.Name()); a != b && !ok {
					return false
				}
			}
		}
		return true
	})
	region := map[string]string{"n0": "eu", "n1": "eu", "n2": "us", "n3": "us"}
	pl := newTestPlanner(t, PlannerConfig{DeviceClasses: testClasses, Debounce: 50 * time.Millisecond, Interval: 500 * time.Millisecond}, ms[0])

	// Every link of the problem: price 0.01 × (1 + loopback RTT / 10 s)
	// within 10 %, times 10 across eu–us.
	prob, _ := pl.Problem(StreamInfo{Name: "live/cam1", Root: "n0", Ladder: testLadder})
	if len(prob.Links) != 6 {
		t.Fatalf("problem has %d links, want 6", len(prob.Links))
	}
	for _, l := range prob.Links {
		want := 0.01
		if region[l.A] != region[l.B] {
			want *= 10
		}
		if l.CostPerMbps < want || l.CostPerMbps > want*1.1 {
			t.Errorf("link %s–%s costs %v, want %v (+ RTT ≤ 10 %%)", l.A, l.B, l.CostPerMbps, want)
		}
	}

	pl.Start()
	ms[0].SetStream(StreamInfo{Name: "live/cam1", Ladder: testLadder})
	ms[2].SetDemand("live/cam1", map[string]int{"tv": 5})
	ms[3].SetDemand("live/cam1", map[string]int{"tv": 5})
	p := waitPlanEverywhere(t, ms, "every node holds a plan serving n2 and n3", func(p *Plan) bool {
		return p.Covers("n2") && p.Covers("n3")
	})
	cross := 0
	for _, a := range p.Plan.Arcs {
		if region[a.From] != region[a.To] {
			cross++
		}
	}
	if cross != 1 {
		t.Errorf("plan crosses eu–us %d times, want once: arcs %+v", cross, p.Plan.Arcs)
	}
	t.Logf("plan arcs %+v cost %+v", p.Plan.Arcs, *p.Plan.Cost)
}
