// Package overlay joins a node to the Gradient cluster and turns the
// cluster's state into delivery trees that run.
//
// Configuration (Config, config.go) is the "overlay" section of a node's
// YAML file, with DefaultConfig and Validate; it derives the configs of
// the parts below. Every long-running part follows one lifecycle: NewX
// checks its config and builds without I/O, Start joins, listens or
// spawns, Close stops what Start started and waits (safe without Start and
// twice); the logger is the constructor's last argument.
//
// Membership (Membership, membership.go): hashicorp/memberlist with join
// seeds, a cluster encryption key (gossip under another key is dropped)
// and node metadata (NodeMeta: id, advertised HTTP/RTSP/SRT addresses,
// price per Mbps, transcode slots and cost). A peer's RTT estimate is the
// minimum of its last 8 probe RTTs (ping_delegate.go): the path's length
// without the noise of busy nodes. Each node gossips its estimates, so
// that any node knows every pair's RTT. memberlist's callbacks are on
// unexported delegates (delegate.go, event_delegate.go, ping_delegate.go).
//
// Link costs (cost.go): cost_per_mbps(a, b) = (price(a) + price(b)) / 2 ×
// (1 + RTT(a, b) / RTTScale) × region_price(region(a), region(b)),
// RTTScale 50 ms by default, the region multiplier 1 unless the node's
// overlay.region_prices lists the pair; see LinkCost and Membership.LinkCost.
//
// Cluster state (state.go): streams (name, root, ladder), demand (per edge
// node and stream: viewers per device class), plans and RTT reports, each
// entry owned by one node and versioned by a hybrid clock so that the newest
// wins. Updates spread by gossip (each node passes on what is news to it;
// plans are also sent to every member over TCP) and whole-state push/pull,
// which is how a late joiner catches up. A node that dies or leaves has its
// entries forgotten everywhere, except the VoD kinds (vod.go): opaque
// catalog entries of titles and removal records, which outlive their owner
// (a title stays listed after its origin's death) and whose removal
// records are never forgotten (a removal wins over any late copy).
//
// Demand (DemandTracker, demand.go): the viewers of this node per stream
// and device class, from session opens and closes, viewers counted by
// their requests (HLS), and /watch leases, reported as gossiped demand.
//
// Viewers (Watch, watch.go): GET /watch/<stream>?device= leases the viewer
// as demand and redirects it to the player at the rendition the plan
// serves its class here, or to another edge chosen by an EdgeSelector
// (CheapestLink, edge.go, by the planner's link cost) when this node is
// full. Announcer (announce.go) registers the streams published here;
// Renditions (renditions.go) waits for a rendition a relay brings before
// a local serverlet makes it.
//
// Planning (Planner, planner.go): on the stream's root, membership, link
// costs, demand and the device classes' utilities become an
// optimizer.Problem solved by "primal-dual" (debounced on change, and
// periodically); the plan is published when its tree changes and the change
// is worth it (hysteresis against RTT jitter).
//
// Running the plan (Reconciler, reconcile.go; Relay, relay.go): on every
// node the reconcile loop relays the levels of the plan's arc into the node
// from its parent over RTSP (TCP interleaved, RTSP Digest as user
// "gradient.<node>" with a password derived from the cluster secret for
// that node and path: RelayPassword), with the parent's ancestors as
// fallbacks, and holds a
// reader on each rendition the plan transcodes here (which starts the
// serverlet). A relay keeps its local stream across upstream changes
// (make-before-break, continuous timestamps), so plan changes and parent
// deaths only pause viewers; what a plan drops stops once what it wants
// runs.
package overlay
