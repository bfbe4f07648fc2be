package overlay

import (
	"time"

	"github.com/gradient-cdn/gradient/optimizer"
)

// Plan is a stream's delivery plan as published by its root: the
// optimizer's plan for the problem the root built from membership, link
// costs and demand, and what its demand indices mean.
type Plan struct {
	Stream string `json:"stream"`
	Root   string `json:"root"`
	// Version orders the plans of a stream; the newest wins.
	Version uint64    `json:"version"`
	Made    time.Time `json:"made"`
	// Levels is the stream's ladder; Levels[0] is the bare stream path.
	Levels []optimizer.Level `json:"levels"`
	// Groups[i] is the node and device class of the problem's demand i
	// (optimizer.Service.Demand indexes it).
	Groups []Group `json:"groups"`
	// Nodes lists the nodes the problem had.
	Nodes []string       `json:"nodes"`
	Plan  optimizer.Plan `json:"plan"`
}

// Group is a demand group: the viewers of one device class at one node.
type Group struct {
	Node    string `json:"node"`
	Class   string `json:"class"`
	Viewers int    `json:"viewers"`
}

// Path is the hub path of a level: the bare stream for Levels[0],
// "stream@level" for the others.
func (p *Plan) Path(level string) string {
	if len(p.Levels) > 0 && p.Levels[0].Name == level {
		return p.Stream
	}
	return p.Stream + "@" + level
}

// Parent returns the node's parent in the tree and the levels the arc
// carries; ok is false for the root and nodes outside the tree.
func (p *Plan) Parent(node string) (parent string, levels []string, ok bool) {
	for _, a := range p.Plan.Arcs {
		if a.To == node {
			return a.From, a.Levels, true
		}
	}
	return "", nil, false
}

// Ancestors lists the node's parent, its parent's parent … up to the root.
func (p *Plan) Ancestors(node string) []string {
	var out []string
	seen := map[string]bool{node: true}
	for {
		par, _, ok := p.Parent(node)
		if !ok || seen[par] {
			return out
		}
		out = append(out, par)
		seen[par] = true
		node = par
	}
}

// Transcodes returns the transcodes the plan runs at node.
func (p *Plan) Transcodes(node string) []optimizer.Transcode {
	var out []optimizer.Transcode
	for _, t := range p.Plan.Transcodes {
		if t.Node == node {
			out = append(out, t)
		}
	}
	return out
}

// Has lists the levels node has in the plan: the root's source, the levels
// it receives and those it produces.
func (p *Plan) Has(node string) []string {
	var out []string
	if node == p.Root && len(p.Levels) > 0 {
		out = append(out, p.Levels[0].Name)
	}
	if _, lv, ok := p.Parent(node); ok {
		out = append(out, lv...)
	}
	for _, t := range p.Transcodes(node) {
		out = append(out, t.To)
	}
	return out
}

// Served returns the level the plan serves the class's viewers at node.
func (p *Plan) Served(node, class string) (string, bool) {
	for _, s := range p.Plan.Served {
		if s.Demand >= 0 && s.Demand < len(p.Groups) && p.Groups[s.Demand].Node == node && p.Groups[s.Demand].Class == class {
			return s.Level, true
		}
	}
	return "", false
}

// Covers reports whether node is part of the tree (the root or a node with
// an incoming arc).
func (p *Plan) Covers(node string) bool {
	if node == p.Root {
		return true
	}
	_, _, ok := p.Parent(node)
	return ok
}

// sameTree reports whether two plans run the same relays, transcodes and
// service, so that republishing would change nothing.
func sameTree(a, b *Plan) bool {
	if a == nil || b == nil {
		return false
	}
	key := func(p *Plan) string {
		s := ""
		for _, x := range p.Plan.Arcs {
			s += x.From + ">" + x.To + ":"
			for _, l := range x.Levels {
				s += l + ","
			}
			s += ";"
		}
		s += "|"
		for _, t := range p.Plan.Transcodes {
			s += t.Node + ":" + t.From + ">" + t.To + ";"
		}
		s += "|"
		for _, v := range p.Plan.Served {
			if v.Demand >= 0 && v.Demand < len(p.Groups) {
				g := p.Groups[v.Demand]
				s += g.Node + "/" + g.Class + "=" + v.Level + ";"
			}
		}
		return s
	}
	return key(a) == key(b)
}
