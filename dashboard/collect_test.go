package dashboard

import (
	"math"
	"testing"

	"github.com/gradient-cdn/gradient/optimizer"
	"github.com/gradient-cdn/gradient/overlay"
)

// problem is a small delivery problem: a dear root, two cheap relays and
// two edges with phones and TVs.
func problem(viewers map[string]int) (*optimizer.Problem, []overlay.Group) {
	prob := &optimizer.Problem{Root: "r", Levels: []optimizer.Level{{Name: "source", Kbps: 2500}, {Name: "360p", Kbps: 800}}}
	for _, n := range []string{"r", "a", "b", "e1", "e2"} {
		prob.Nodes = append(prob.Nodes, optimizer.Node{ID: n, TranscodeCost: 0.1, TranscodeSlots: optimizer.Slots(2)})
	}
	cost := map[string]float64{"r": 1, "a": 0.01, "b": 0.01, "e1": 0.5, "e2": 0.5}
	for i, x := range prob.Nodes {
		for _, y := range prob.Nodes[i+1:] {
			prob.Links = append(prob.Links, optimizer.Link{A: x.ID, B: y.ID, CostPerMbps: (cost[x.ID] + cost[y.ID]) / 2})
		}
	}
	util := map[string]map[string]float64{"phone": {"source": 2.91, "360p": 2.9}, "tv": {"source": 10, "360p": 2}}
	var groups []overlay.Group
	for _, g := range []overlay.Group{{Node: "e1", Class: "phone"}, {Node: "e2", Class: "tv"}, {Node: "e2", Class: "phone"}} {
		n := viewers[g.Node+"/"+g.Class]
		if n == 0 {
			continue
		}
		g.Viewers = n
		prob.Demands = append(prob.Demands, optimizer.Demand{Node: g.Node, Viewers: n, Utility: util[g.Class]})
		groups = append(groups, g)
	}
	return prob, groups
}

func TestBaselinesCompareThePlanWithMSTAndNaiveOnTheSameProblem(t *testing.T) {
	prob, groups := problem(map[string]int{"e1/phone": 3, "e2/tv": 2})
	sol, err := optimizer.Solve("primal-dual", prob)
	if err != nil {
		t.Fatal(err)
	}
	plan := &overlay.Plan{Stream: "live/x", Root: "r", Version: 7, Levels: prob.Levels, Groups: groups, Plan: *sol}
	pc := Baselines(plan, prob, groups)
	if !pc.SameDemand || pc.Plan == nil || pc.MST == nil || pc.Naive == nil || pc.SavesVsMST == nil || pc.SavesVsNaive == nil {
		t.Fatalf("incomplete: %+v", pc)
	}
	if math.Abs(pc.Plan.Total-sol.Cost.Total) > 1e-9 {
		t.Errorf("plan evaluated at %v, solved at %v", pc.Plan.Total, sol.Cost.Total)
	}
	want := (pc.MST.Total - pc.Plan.Total) / math.Abs(pc.MST.Total) * 100
	if math.Abs(*pc.SavesVsMST-want) > 0.06 {
		t.Errorf("saves vs MST %v %%, want %v", *pc.SavesVsMST, want)
	}
	if pc.Plan.Total > pc.Naive.Total+1e-9 {
		t.Errorf("primal-dual (%v) costs more than naive (%v)", pc.Plan.Total, pc.Naive.Total)
	}

	// The demand moves: the plan's services are matched to the new groups
	// by node and class, the new group is unserved, all on today's problem.
	prob2, groups2 := problem(map[string]int{"e1/phone": 3, "e2/tv": 2, "e2/phone": 5})
	pc2 := Baselines(plan, prob2, groups2)
	if pc2.SameDemand || pc2.Plan == nil || pc2.SavesVsMST == nil || pc2.Error != "" {
		t.Fatalf("moved demand: %+v", pc2)
	}
	c, err := prob2.Evaluate(&optimizer.Plan{Arcs: sol.Arcs, Transcodes: sol.Transcodes, Served: sol.Served})
	if err != nil || math.Abs(c.Total-pc2.Plan.Total) > 1e-9 {
		t.Errorf("moved demand: plan %v, want %v (%v)", pc2.Plan.Total, c.Total, err)
	}

	ev := PlanView(plan)
	if len(ev.Arcs) != len(sol.Arcs) {
		t.Fatalf("arcs %v, want %v", ev.Arcs, sol.Arcs)
	}
	kbps := map[string]float64{"source": 2500, "360p": 800}
	for i, a := range ev.Arcs {
		want := 0.0
		for _, l := range sol.Arcs[i].Levels {
			want += kbps[l]
		}
		if a.From != sol.Arcs[i].From || a.To != sol.Arcs[i].To || a.Kbps != want {
			t.Errorf("arc %+v, want %+v at %v kbps", a, sol.Arcs[i], want)
		}
	}
	if ev.Viewers["e1"]["phone"] != 3 || ev.Viewers["e2"]["tv"] != 2 {
		t.Errorf("viewers %v", ev.Viewers)
	}
	if len(ev.Transcodes) != 0 {
		for _, x := range sol.Transcodes {
			found := false
			for _, s := range ev.Transcodes[x.Node] {
				found = found || s == x.From+">"+x.To
			}
			if !found {
				t.Errorf("transcode %+v missing from %v", x, ev.Transcodes)
			}
		}
	}
}
