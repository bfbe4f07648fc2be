package overlay

import (
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/optimizer"
)

// testClasses are device-class utilities under which a TV wants the source
// and a phone is as happy with 360p.
var testClasses = map[string]map[string]float64{
	"phone": {"720p": 2.91, "360p": 2.9},
	"tv":    {"720p": 10, "360p": 2},
}

var testLadder = []optimizer.Level{{Name: "720p", Kbps: 2500}, {Name: "360p", Kbps: 800}}

// pricedCluster starts 5 nodes where the root n0 is expensive to leave and
// the edges n3 and n4 dear too, so that the cheapest tree crosses n0's links
// once and fans out from an interior node (n1 or n2, both cheap).
func pricedCluster(t *testing.T) []*Membership {
	ms := startCluster(t, 5, func(i int, c *MembershipConfig) {
		switch i {
		case 0:
			c.Meta.Price = 1
		case 3, 4:
			c.Meta.Price = 0.5
		}
		c.Meta.TranscodeCost = 0.001
	})
	testutil.Eventually(t, 10*time.Second, "5 nodes agree on membership", func() bool {
		for _, m := range ms {
			if len(m.Alive()) != 5 {
				return false
			}
		}
		return true
	})
	// Link costs count an unmeasured pair at DefaultRTT: wait for every
	// pair's RTT, so that the plan is the one for the real costs.
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
	return ms
}

func waitPlanEverywhere(t *testing.T, ms []*Membership, msg string, ok func(p *Plan) bool) *Plan {
	t.Helper()
	var last *Plan
	testutil.Eventually(t, 15*time.Second, msg, func() bool {
		var v uint64
		for i, m := range ms {
			p, found := m.Plan("live/cam1")
			if !found || !ok(p) || (i > 0 && p.Version != v) {
				return false
			}
			v, last = p.Version, p
		}
		return true
	})
	return last
}

func TestPlannerBuildsATreeThroughAnInteriorNodeAndReplansWhenItDies(t *testing.T) {
	ms := pricedCluster(t)
	pl := newTestPlanner(t, PlannerConfig{DeviceClasses: testClasses, Debounce: 100 * time.Millisecond, Interval: time.Second}, ms[0])
	pl.Start()
	t.Cleanup(func() { pl.Close() })
	ms[0].SetStream(StreamInfo{Name: "live/cam1", Ladder: testLadder})
	ms[3].SetDemand("live/cam1", map[string]int{"phone": 3})
	ms[4].SetDemand("live/cam1", map[string]int{"tv": 1})

	p := waitPlanEverywhere(t, ms, "every node holds the same plan serving n3 and n4", func(p *Plan) bool {
		return p.Covers("n3") && p.Covers("n4") && len(p.Plan.Served) == 2
	})
	if lv, _ := p.Served("n4", "tv"); lv != "720p" {
		t.Errorf("TV viewers at n4 served %q, want 720p", lv)
	}
	if lv, _ := p.Served("n3", "phone"); lv != "360p" {
		t.Errorf("phone viewers at n3 served %q, want 360p", lv)
	}
	if _, lv, _ := p.Parent("n3"); len(lv) != 1 || lv[0] != "360p" {
		t.Errorf("n3's arc carries %v, want the downscaled [360p] made upstream", lv)
	}
	interior := interiorNode(p)
	if interior == "" {
		t.Fatalf("plan %+v has no interior node: n0's links are dear, the tree should cross them once", p.Plan.Arcs)
	}
	t.Logf("plan v%d: arcs %+v transcodes %+v cost %+v", p.Version, p.Plan.Arcs, p.Plan.Transcodes, *p.Plan.Cost)

	// Compare with the baselines on the same problem.
	s, _ := ms[0].Stream("live/cam1")
	prob, _ := pl.Problem(s)
	for _, alg := range []string{"mst", "naive"} {
		b, err := optimizer.Solve(alg, prob)
		if err != nil {
			t.Fatal(err)
		}
		if b.Cost.Total < p.Plan.Cost.Total-1e-9 {
			t.Errorf("%s total %.4f beats primal-dual %.4f", alg, b.Cost.Total, p.Plan.Cost.Total)
		}
		t.Logf("cost total: primal-dual %.4f, %s %.4f", p.Plan.Cost.Total, alg, b.Cost.Total)
	}

	// The interior node crashes: the root replans around it.
	var rest []*Membership
	for _, m := range ms {
		if m.Name() == interior {
			m.Shutdown()
		} else {
			rest = append(rest, m)
		}
	}
	start := time.Now()
	p2 := waitPlanEverywhere(t, rest, "a new plan without the dead node still serves the live demand", func(p *Plan) bool {
		for _, n := range p.Nodes {
			if n == interior {
				return false
			}
		}
		for _, n := range []string{"n3", "n4"} {
			if n != interior && !p.Covers(n) {
				return false
			}
		}
		return true
	})
	t.Logf("replanned without %s in %v: arcs %+v", interior, time.Since(start), p2.Plan.Arcs)
}

func TestPlanPropagatesToEveryNode(t *testing.T) {
	ms := pricedCluster(t)
	pl := newTestPlanner(t, PlannerConfig{DeviceClasses: testClasses, Debounce: 50 * time.Millisecond}, ms[0])
	ms[0].SetStream(StreamInfo{Name: "live/cam1", Ladder: testLadder})
	ms[3].SetDemand("live/cam1", map[string]int{"phone": 3})
	testutil.Eventually(t, 5*time.Second, "n0 knows n3's demand", func() bool { return len(ms[0].Demands("live/cam1")) == 1 })
	start := time.Now()
	pl.PlanAll()
	waitPlanEverywhere(t, ms, "the plan reached every node", func(p *Plan) bool { return p.Covers("n3") })
	t.Logf("plan propagation to 5 nodes: %v", time.Since(start))
}

// interiorNode returns a node other than the root that has children.
func interiorNode(p *Plan) string {
	for _, a := range p.Plan.Arcs {
		if a.From != p.Root {
			return a.From
		}
	}
	return ""
}

func TestANodeThatJoinsWithViewersIsInTheNextPlan(t *testing.T) {
	ms := startCluster(t, 3, nil)
	pl := newTestPlanner(t, PlannerConfig{DeviceClasses: testClasses, Debounce: 50 * time.Millisecond, Interval: time.Second}, ms[0])
	pl.Start()
	t.Cleanup(func() { pl.Close() })
	ms[0].SetStream(StreamInfo{Name: "live/cam1", Ladder: testLadder})
	ms[2].SetDemand("live/cam1", map[string]int{"tv": 1})
	waitPlanEverywhere(t, ms, "a plan serving n2", func(p *Plan) bool { return p.Covers("n2") })

	c := fastConfig(t, "newcomer", 0.01)
	c.Join = []string{ms[1].Addr()}
	nc := startMembership(t, c)
	t.Cleanup(func() { nc.Close() })
	joined := time.Now()
	nc.SetDemand("live/cam1", map[string]int{"phone": 2})
	waitPlanEverywhere(t, append(ms, nc), "the next plan serves the newcomer's phones too", func(p *Plan) bool {
		lv, ok := p.Served("newcomer", "phone")
		return p.Covers("n2") && p.Covers("newcomer") && ok && lv != ""
	})
	t.Logf("newcomer served %v after joining", time.Since(joined))
}

// delayedTransport delays the UDP packets (probes and acks) a node sends,
// per destination, as a long network path would.
type delayedTransport struct {
	*memberlist.NetTransport
	delay func(addr string) time.Duration
}

func (d *delayedTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return d.WriteTo(b, a.Addr)
}

func (d *delayedTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	wait := d.delay(addr)
	if wait == 0 {
		return d.NetTransport.WriteTo(b, addr)
	}
	cp := append([]byte(nil), b...)
	time.AfterFunc(wait, func() { d.NetTransport.WriteTo(cp, addr) })
	return time.Now(), nil
}

func TestRTTEstimatesOrderDelayedLinksAndThePlanTakesTheCheapPath(t *testing.T) {
	// One-way delays: A–C 60 ms, A–B and B–C 2 ms. Equal prices, so the
	// relay A→B→C (2 × RTT 4 ms) is cheaper than A→C (RTT 120 ms).
	cfgs := []MembershipConfig{fastConfig(t, "A", 0.01), fastConfig(t, "B", 0.01), fastConfig(t, "C", 0.01)}
	oneWay := map[[2]string]time.Duration{}
	set := func(a, b int, d time.Duration) {
		oneWay[[2]string{cfgs[a].Name, cfgs[b].BindAddr}] = d
		oneWay[[2]string{cfgs[b].Name, cfgs[a].BindAddr}] = d
	}
	set(0, 1, 2*time.Millisecond)
	set(1, 2, 2*time.Millisecond)
	set(0, 2, 60*time.Millisecond)
	var ms []*Membership
	for i := range cfgs {
		c := cfgs[i]
		c.ProbeInterval, c.ProbeTimeout = 300*time.Millisecond, 250*time.Millisecond
		c.wrapTransport = func(nt *memberlist.NetTransport) memberlist.Transport {
			return &delayedTransport{NetTransport: nt, delay: func(addr string) time.Duration { return oneWay[[2]string{c.Name, addr}] }}
		}
		if i > 0 {
			c.Join = []string{ms[0].Addr()}
		}
		m := startMembership(t, c)
		t.Cleanup(func() { m.Close() })
		ms = append(ms, m)
	}
	rtt := func(a, b string) time.Duration { d, _ := ms[0].RTT(a, b); return d }
	testutil.Eventually(t, 20*time.Second, "A has RTT estimates of every pair", func() bool {
		return rtt("A", "B") > 0 && rtt("B", "C") > 0 && rtt("A", "C") > 0
	})
	testutil.Eventually(t, 20*time.Second, "the estimates settle to the delays' order", func() bool {
		return rtt("A", "C") > 100*time.Millisecond && rtt("A", "B") < 40*time.Millisecond && rtt("B", "C") < 40*time.Millisecond
	})
	t.Logf("RTT estimates (delays 4, 4, 120 ms): A–B %v, B–C %v, A–C %v", rtt("A", "B"), rtt("B", "C"), rtt("A", "C"))

	pl := newTestPlanner(t, PlannerConfig{DeviceClasses: testClasses, Debounce: 50 * time.Millisecond, Interval: 500 * time.Millisecond}, ms[0])
	pl.Start()
	t.Cleanup(func() { pl.Close() })
	ms[0].SetStream(StreamInfo{Name: "live/cam1", Ladder: testLadder})
	ms[2].SetDemand("live/cam1", map[string]int{"tv": 1})
	testutil.Eventually(t, 10*time.Second, "the plan relays A→B→C rather than over the long A–C link", func() bool {
		p, ok := ms[0].Plan("live/cam1")
		if !ok {
			return false
		}
		par, _, ok := p.Parent("C")
		return ok && par == "B"
	})
}

func TestPlannerLeavesSlotsOtherStreamsUseOutOfThePlan(t *testing.T) {
	ms := startCluster(t, 3, func(i int, c *MembershipConfig) {
		c.Meta.Price = 1
		c.Meta.TranscodeCost = 0.001
	})
	// Phones like 360p as much as the source: a rendition made in the tree
	// saves 1.7 Mbps on every arc after it, whatever the RTTs, so only a
	// lack of slots keeps it out.
	classes := map[string]map[string]float64{"phone": {"720p": 2.9, "360p": 2.9}}
	pl := newTestPlanner(t, PlannerConfig{DeviceClasses: classes, Debounce: 50 * time.Millisecond, Interval: 500 * time.Millisecond}, ms[0])
	pl.Start()
	t.Cleanup(func() { pl.Close() })
	ms[0].SetStream(StreamInfo{Name: "live/cam1", Ladder: testLadder})
	ms[2].SetDemand("live/cam1", map[string]int{"phone": 3})
	waitPlanEverywhere(t, ms, "phones served a 360p made in the tree", func(p *Plan) bool {
		lv, ok := p.Served("n2", "phone")
		return ok && lv == "360p" && len(p.Plan.Transcodes) == 1
	})
	// Every node's two slots are taken by renditions of another stream.
	for _, m := range ms {
		m.SetTranscodeUse(map[string]int{"live/other": 2})
	}
	p := waitPlanEverywhere(t, ms, "no transcode where the slots are taken", func(p *Plan) bool {
		return len(p.Plan.Transcodes) == 0 && p.Covers("n2")
	})
	if lv, _ := p.Served("n2", "phone"); lv != "720p" {
		t.Errorf("phones served %q with no slot free, want the source 720p", lv)
	}
	// The stream's own renditions do not count against it.
	for _, m := range ms {
		m.SetTranscodeUse(map[string]int{"live/cam1": 2})
	}
	waitPlanEverywhere(t, ms, "the 360p back once the other stream's renditions stopped", func(p *Plan) bool {
		lv, ok := p.Served("n2", "phone")
		return ok && lv == "360p" && len(p.Plan.Transcodes) == 1
	})
}

func TestStillFeasibleIgnoresTheOldCostBlockButNotTheSlots(t *testing.T) {
	prob := &optimizer.Problem{Root: "a", Levels: testLadder,
		Nodes:   []optimizer.Node{{ID: "a", TranscodeSlots: optimizer.Slots(1)}, {ID: "b", TranscodeSlots: optimizer.Slots(1)}},
		Links:   []optimizer.Link{{A: "a", B: "b", CostPerMbps: 0.01}},
		Demands: []optimizer.Demand{{Node: "b", Viewers: 3, Utility: map[string]float64{"720p": 2.9, "360p": 2.9}}}}
	plan, err := optimizer.Solve("primal-dual", prob)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Transcodes) != 1 || plan.Cost == nil {
		t.Fatalf("plan %+v: want one transcode and a cost block", plan)
	}
	prob.Links[0].CostPerMbps = 0.012 // the RTT moved
	if prob.Check(plan) == nil {
		t.Fatal("Check accepted a cost block made for other link costs; the test needs it to refuse")
	}
	if !stillFeasible(prob, plan) {
		t.Error("a plan whose only change is its link costs counts as infeasible: the hysteresis would never hold")
	}
	prob.Nodes[0].TranscodeSlots = optimizer.Slots(0)
	prob.Nodes[1].TranscodeSlots = optimizer.Slots(0)
	if stillFeasible(prob, plan) {
		t.Error("a plan transcoding where no slot is left counts as feasible")
	}
}
