package optimizer

// Problem is one live stream's delivery problem: the overlay, the rendition
// ladder and the viewers, as described in optimizer/problem-and-plan.md.
type Problem struct {
	// Root is the id of the node that has the source rendition, Levels[0].
	Root string `json:"root"`
	// Levels is the rendition ladder, best first, with strictly decreasing Kbps.
	Levels []Level `json:"levels"`
	// Nodes lists every node of the overlay.
	Nodes []Node `json:"nodes"`
	// Links are the undirected node pairs that can talk directly.
	Links []Link `json:"links"`
	// Demands are groups of viewers attached to a node.
	Demands []Demand `json:"demands"`
}

// Level is one rung of the rendition ladder.
type Level struct {
	Name string  `json:"name"`
	Kbps float64 `json:"kbps"`
}

// Node is one overlay node.
type Node struct {
	ID string `json:"id"`
	// TranscodeCost is paid once for every level the node produces by transcoding.
	TranscodeCost float64 `json:"transcode_cost,omitempty"`
	// TranscodeSlots caps how many levels the node may produce: nil means no
	// cap, 0 means the node cannot transcode.
	TranscodeSlots *int `json:"transcode_slots,omitempty"`
}

// Link is an undirected link; a stream crossing it in either direction costs
// CostPerMbps × kbps / 1000.
type Link struct {
	A           string  `json:"a"`
	B           string  `json:"b"`
	CostPerMbps float64 `json:"cost_per_mbps"`
}

// Demand is a group of viewers at one node.
type Demand struct {
	Node    string `json:"node"`
	Viewers int    `json:"viewers"`
	// LastMileCostPerMbps is what delivering one viewer's stream from its node
	// costs per Mbps.
	LastMileCostPerMbps float64 `json:"last_mile_cost_per_mbps,omitempty"`
	// Utility is the value of one viewer watching at a level, by level name;
	// a level not listed is worth 0.
	Utility map[string]float64 `json:"utility"`
}

// Slots returns a transcode slot count for Node.TranscodeSlots.
func Slots(n int) *int { return &n }

// MaxUtility is Σ over all demands of viewers × the best utility on the
// ladder: what the viewers would gain if everyone watched at their best level
// for free. Regret = Total + MaxUtility.
func (p *Problem) MaxUtility() float64 {
	var sum float64
	for _, d := range p.Demands {
		best := 0.0
		for _, l := range p.Levels {
			if u := d.Utility[l.Name]; u > best {
				best = u
			}
		}
		sum += float64(d.Viewers) * best
	}
	return sum
}
