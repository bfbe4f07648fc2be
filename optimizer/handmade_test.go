package optimizer_test

import (
	"math"
	"slices"
	"testing"

	"github.com/gradient-cdn/gradient/optimizer"
)

// chain: r — m — x. TVs at m want 1080p; phones at x are happy at 360p and
// the m–x link is expensive, so the best plan sends 1080p to m and downscales
// there. slots is m's transcode_slots (nil: unlimited).
func chain(slots *int) *optimizer.Problem {
	return &optimizer.Problem{
		Root:   "r",
		Levels: []optimizer.Level{{Name: "1080p", Kbps: 4500}, {Name: "360p", Kbps: 800}},
		Nodes: []optimizer.Node{
			{ID: "r", TranscodeCost: 0.01},
			{ID: "m", TranscodeCost: 0.01, TranscodeSlots: slots},
			{ID: "x"},
		},
		Links: []optimizer.Link{{A: "r", B: "m", CostPerMbps: 0.1}, {A: "m", B: "x", CostPerMbps: 0.1}},
		Demands: []optimizer.Demand{
			{Node: "m", Viewers: 10, Utility: map[string]float64{"1080p": 0.2, "360p": 0.05}},
			{Node: "x", Viewers: 10, Utility: map[string]float64{"1080p": 0.06, "360p": 0.05}},
		},
	}
}

func solveAll(t *testing.T, p *optimizer.Problem, algs ...string) map[string]*optimizer.Plan {
	t.Helper()
	out := map[string]*optimizer.Plan{}
	for _, a := range algs {
		plan, err := optimizer.Solve(a, p)
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		if err := p.Check(plan); err != nil {
			t.Fatalf("%s: infeasible: %v", a, err)
		}
		out[a] = plan
	}
	return out
}

func arcLevels(plan *optimizer.Plan, from, to string) []string {
	for _, a := range plan.Arcs {
		if a.From == from && a.To == to {
			return a.Levels
		}
	}
	return nil
}

func TestChainDownscalesAtTheMiddleNode(t *testing.T) {
	// 1080p r→m: 0.45; transcode at m: 0.01; 360p m→x: 0.08; utility 2 + 0.5.
	const want = 0.45 + 0.01 + 0.08 - 2.5
	for alg, plan := range solveAll(t, chain(nil), "primal-dual", "exact") {
		if math.Abs(plan.Cost.Total-want) > 1e-9 {
			t.Errorf("%s: total %v, want %v", alg, plan.Cost.Total, want)
		}
		if got := arcLevels(plan, "m", "x"); !slices.Equal(got, []string{"360p"}) {
			t.Errorf("%s: m→x carries %v, want [360p]", alg, got)
		}
		if got := arcLevels(plan, "r", "m"); !slices.Equal(got, []string{"1080p"}) {
			t.Errorf("%s: r→m carries %v, want [1080p] only", alg, got)
		}
		if len(plan.Transcodes) != 1 || plan.Transcodes[0] != (optimizer.Transcode{Node: "m", From: "1080p", To: "360p"}) {
			t.Errorf("%s: transcodes %v, want m 1080p→360p", alg, plan.Transcodes)
		}
	}
}

func TestNodeWithoutTranscodeSlotsCannotDownscale(t *testing.T) {
	// m cannot transcode: the root produces 360p and r→m carries both levels
	// (0.45 + 0.08 + 0.01 + 0.08 − 2.5), better than 1080p to x (−1.70).
	const want = 0.45 + 0.08 + 0.01 + 0.08 - 2.5
	for alg, plan := range solveAll(t, chain(optimizer.Slots(0)), "primal-dual", "exact", "spt") {
		if math.Abs(plan.Cost.Total-want) > 1e-9 {
			t.Errorf("%s: total %v, want %v", alg, plan.Cost.Total, want)
		}
		for _, tc := range plan.Transcodes {
			if tc.Node == "m" {
				t.Errorf("%s: m transcodes %v with transcode_slots 0", alg, tc)
			}
		}
	}
}

func TestStarDoesNotServePhonesNotWorthTheirCost(t *testing.T) {
	// Centre r; a TV leaf worth serving, a phone leaf whose link costs more
	// than its viewers gain at any level.
	p := &optimizer.Problem{
		Root:   "r",
		Levels: []optimizer.Level{{Name: "1080p", Kbps: 4500}, {Name: "360p", Kbps: 800}},
		Nodes:  []optimizer.Node{{ID: "r"}, {ID: "tv"}, {ID: "phone"}},
		Links:  []optimizer.Link{{A: "r", B: "tv", CostPerMbps: 0.01}, {A: "r", B: "phone", CostPerMbps: 0.5}},
		Demands: []optimizer.Demand{
			{Node: "tv", Viewers: 5, LastMileCostPerMbps: 0.001, Utility: map[string]float64{"1080p": 0.1, "360p": 0.03}},
			{Node: "phone", Viewers: 4, LastMileCostPerMbps: 0.01, Utility: map[string]float64{"1080p": 0.05, "360p": 0.08}},
		},
	}
	// tv at 1080p: 0.045 link + 0.0225 last mile − 0.5. Phones at 360p would
	// cost 0.4 + 0.032 for 0.32 of utility.
	const want = 0.045 + 0.0225 - 0.5
	for alg, plan := range solveAll(t, p, "primal-dual", "exact", "spt") {
		if math.Abs(plan.Cost.Total-want) > 1e-9 {
			t.Errorf("%s: total %v, want %v", alg, plan.Cost.Total, want)
		}
		if arcLevels(plan, "r", "phone") != nil || len(plan.Served) != 1 || plan.Served[0].Demand != 0 {
			t.Errorf("%s: arcs %v served %v, want only the TVs served", alg, plan.Arcs, plan.Served)
		}
	}
}

func TestBestPlanServesNobody(t *testing.T) {
	p := &optimizer.Problem{
		Root:   "r",
		Levels: []optimizer.Level{{Name: "hd", Kbps: 3000}, {Name: "sd", Kbps: 1000}},
		Nodes:  []optimizer.Node{{ID: "r"}, {ID: "a"}, {ID: "b"}},
		Links:  []optimizer.Link{{A: "r", B: "a", CostPerMbps: 2}, {A: "a", B: "b", CostPerMbps: 2}},
		Demands: []optimizer.Demand{
			{Node: "r", Viewers: 3, LastMileCostPerMbps: 1, Utility: map[string]float64{"hd": 0.5, "sd": 0.2}},
			{Node: "a", Viewers: 3, Utility: map[string]float64{"hd": 0.5, "sd": 0.2}},
			{Node: "b", Viewers: 9, Utility: map[string]float64{"sd": 0.3}},
		},
	}
	maxUtil := 3*0.5 + 3*0.5 + 9*0.3
	for alg, plan := range solveAll(t, p, "primal-dual", "exact", "spt") {
		if plan.Cost.Total != 0 || len(plan.Arcs)+len(plan.Served)+len(plan.Transcodes) != 0 {
			t.Errorf("%s: total %v with %d arcs, %d served; want the empty plan", alg, plan.Cost.Total, len(plan.Arcs), len(plan.Served))
		}
		if math.Abs(plan.Cost.Regret-maxUtil) > 1e-9 {
			t.Errorf("%s: regret %v, want all utility forgone %v", alg, plan.Cost.Regret, maxUtil)
		}
	}
}
