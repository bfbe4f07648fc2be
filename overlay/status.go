package overlay

import "github.com/gradient-cdn/gradient/optimizer"

// ClusterStatus is a node's view of the cluster, the body of
// GET /api/v1/cluster.
type ClusterStatus struct {
	Self           string                        `json:"self"`
	Members        []Member                      `json:"members"`
	RTTMillis      map[string]map[string]float64 `json:"rtt_ms"`
	Streams        []StreamInfo                  `json:"streams"`
	Demand         []Demand                      `json:"demand"`
	Plans          []PlanSummary                 `json:"plans"`
	Relays         []RelayStatus                 `json:"relays"`
	Transcodes     []string                      `json:"transcodes"`
	GossipBytesIn  uint64                        `json:"gossip_bytes_in"`
	GossipBytesOut uint64                        `json:"gossip_bytes_out"`
}

// PlanSummary is a plan in the cluster status.
type PlanSummary struct {
	Stream     string                `json:"stream"`
	Root       string                `json:"root"`
	Version    uint64                `json:"version"`
	Arcs       []optimizer.Arc       `json:"arcs"`
	Transcodes []optimizer.Transcode `json:"transcodes"`
	Cost       *optimizer.Cost       `json:"cost,omitempty"`
}

// Status returns the cluster as node self sees it through m and rec (nil
// with gossip off: only Self is set).
func Status(self string, m *Membership, rec *Reconciler) ClusterStatus {
	st := ClusterStatus{Self: self}
	if m == nil {
		return st
	}
	st.Members = m.Members()
	st.RTTMillis = m.RTTs()
	st.Streams = m.Streams()
	st.Demand = m.Demands("")
	for _, p := range m.Plans() {
		st.Plans = append(st.Plans, PlanSummary{Stream: p.Stream, Root: p.Root, Version: p.Version, Arcs: p.Plan.Arcs,
			Transcodes: p.Plan.Transcodes, Cost: p.Plan.Cost})
	}
	if rec != nil {
		st.Relays = rec.Relays()
		st.Transcodes = rec.Transcodes()
	}
	st.GossipBytesIn, st.GossipBytesOut = m.GossipBytes()
	return st
}
