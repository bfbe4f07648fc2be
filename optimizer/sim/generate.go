// Package sim generates delivery problems for the optimizer and runs the
// GRADIENT paper's experiments on them: Figure 1 (total cost against system
// size for primal-dual and the baselines) and the approximation-ratio study.
// It is pure computation; plotting, files and progress display live in the
// command that calls it.
package sim

import (
	"fmt"
	"math/rand/v2"
	"sort"

	"gonum.org/v1/gonum/graph/graphs/gen"
	"gonum.org/v1/gonum/graph/simple"

	"github.com/gradient-cdn/gradient/optimizer"
)

// DeviceClass is a kind of viewer device with its per-viewer utility per
// level and its last-mile cost.
type DeviceClass struct {
	Name                string
	Utility             map[string]float64
	LastMileCostPerMbps float64
}

// Config describes the generated problems.
type Config struct {
	// Levels is the ladder, best first.
	Levels []optimizer.Level
	// Classes are the viewer device classes.
	Classes []DeviceClass
	// AttachEdges is m of the preferential-attachment model: every new node
	// links to m existing nodes chosen with probability proportional to their
	// degree (Barabási–Albert), giving the power-law degrees of AS graphs.
	AttachEdges int
	// LinkCostMin and LinkCostMax bound the uniform cost per Mbps of a link.
	LinkCostMin, LinkCostMax float64
	// DemandFraction is the chance that a non-root node has viewers; such a
	// node has a group for each class with chance ClassChance.
	DemandFraction, ClassChance float64
	// MaxViewers bounds a group's viewers (uniform in 1..MaxViewers).
	MaxViewers int
	// TranscodeCostMax bounds the uniform transcode cost of a node.
	TranscodeCostMax float64
	// SlotChoices are the transcode slot counts drawn uniformly per node; a
	// negative entry means no cap.
	SlotChoices []int
}

// DefaultConfig is the setting of `gradient sim`: a four-rung ladder, phones
// (small screens: little gain above 480p, costly mobile last mile), laptops
// and TVs (large gain from 1080p), AS-like topologies with m = 2.
func DefaultConfig() Config {
	return Config{
		Levels: []optimizer.Level{
			{Name: "1080p", Kbps: 4500}, {Name: "720p", Kbps: 2500},
			{Name: "480p", Kbps: 1200}, {Name: "360p", Kbps: 800},
		},
		Classes: []DeviceClass{
			{Name: "phone", LastMileCostPerMbps: 0.004,
				Utility: map[string]float64{"1080p": 0.030, "720p": 0.029, "480p": 0.025, "360p": 0.020}},
			{Name: "laptop", LastMileCostPerMbps: 0.002,
				Utility: map[string]float64{"1080p": 0.050, "720p": 0.046, "480p": 0.036, "360p": 0.026}},
			{Name: "tv", LastMileCostPerMbps: 0.001,
				Utility: map[string]float64{"1080p": 0.090, "720p": 0.065, "480p": 0.040, "360p": 0.025}},
		},
		AttachEdges:      2,
		LinkCostMin:      0.005,
		LinkCostMax:      0.04,
		DemandFraction:   0.6,
		ClassChance:      0.6,
		MaxViewers:       20,
		TranscodeCostMax: 0.05,
		SlotChoices:      []int{-1, 0, 1, 2},
	}
}

// nodeID names node i.
func nodeID(i int) string { return fmt.Sprintf("n%d", i) }

// Internet generates an n-node problem on a preferential-attachment topology
// (gonum's gen.PreferentialAttachment) rooted at node n0, one of the initial,
// best-connected nodes.
func Internet(rng *rand.Rand, n int, cfg Config) (*optimizer.Problem, error) {
	m := cfg.AttachEdges
	if n <= m {
		m = n - 1
	}
	p := skeleton(rng, n, cfg)
	if n > 1 {
		g := simple.NewUndirectedGraph()
		if err := gen.PreferentialAttachment(g, n, m, rng); err != nil {
			return nil, fmt.Errorf("topology: %w", err)
		}
		// gonum iterates edges in map order: sort them before drawing costs.
		var pairs [][2]int
		edges := g.Edges()
		for edges.Next() {
			e := edges.Edge()
			a, b := int(e.From().ID()), int(e.To().ID())
			pairs = append(pairs, [2]int{min(a, b), max(a, b)})
		}
		sort.Slice(pairs, func(i, j int) bool {
			return pairs[i][0] < pairs[j][0] || (pairs[i][0] == pairs[j][0] && pairs[i][1] < pairs[j][1])
		})
		for _, pr := range pairs {
			p.Links = append(p.Links, optimizer.Link{A: nodeID(pr[0]), B: nodeID(pr[1]),
				CostPerMbps: uniform(rng, cfg.LinkCostMin, cfg.LinkCostMax)})
		}
	}
	addDemands(rng, p, cfg)
	return p, nil
}

// Complete generates an n-node problem on the complete graph with exactly
// groups demand groups spread uniformly over the non-root nodes.
func Complete(rng *rand.Rand, n, groups int, cfg Config) *optimizer.Problem {
	p := skeleton(rng, n, cfg)
	for a := 0; a < n; a++ {
		for b := a + 1; b < n; b++ {
			p.Links = append(p.Links, optimizer.Link{A: nodeID(a), B: nodeID(b),
				CostPerMbps: uniform(rng, cfg.LinkCostMin, cfg.LinkCostMax)})
		}
	}
	for i := 0; i < groups; i++ {
		c := cfg.Classes[rng.IntN(len(cfg.Classes))]
		p.Demands = append(p.Demands, demand(rng, nodeID(1+rng.IntN(n-1)), c, cfg))
	}
	return p
}

func skeleton(rng *rand.Rand, n int, cfg Config) *optimizer.Problem {
	p := &optimizer.Problem{Root: nodeID(0), Levels: append([]optimizer.Level(nil), cfg.Levels...)}
	for i := 0; i < n; i++ {
		nd := optimizer.Node{ID: nodeID(i), TranscodeCost: round6(uniform(rng, 0, cfg.TranscodeCostMax))}
		if len(cfg.SlotChoices) > 0 {
			if s := cfg.SlotChoices[rng.IntN(len(cfg.SlotChoices))]; s >= 0 {
				nd.TranscodeSlots = optimizer.Slots(s)
			}
		}
		p.Nodes = append(p.Nodes, nd)
	}
	return p
}

func addDemands(rng *rand.Rand, p *optimizer.Problem, cfg Config) {
	for i := 1; i < len(p.Nodes); i++ {
		if rng.Float64() >= cfg.DemandFraction {
			continue
		}
		for _, c := range cfg.Classes {
			if rng.Float64() < cfg.ClassChance {
				p.Demands = append(p.Demands, demand(rng, nodeID(i), c, cfg))
			}
		}
	}
}

func demand(rng *rand.Rand, node string, c DeviceClass, cfg Config) optimizer.Demand {
	u := make(map[string]float64, len(c.Utility))
	for k, v := range c.Utility {
		u[k] = v
	}
	return optimizer.Demand{Node: node, Viewers: 1 + rng.IntN(cfg.MaxViewers),
		LastMileCostPerMbps: c.LastMileCostPerMbps, Utility: u}
}

func uniform(rng *rand.Rand, lo, hi float64) float64 { return round6(lo + (hi-lo)*rng.Float64()) }

// round6 keeps generated numbers short in JSON.
func round6(x float64) float64 { return float64(int64(x*1e6+0.5)) / 1e6 }
