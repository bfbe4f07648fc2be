package vod

import (
	"net/url"
	"slices"
	"strings"
)

// source is one place a flight may read a chunk from: a node, or the
// origin store (store set; peer.Name is then the store's Name).
type source struct {
	peer   Peer
	fill   bool // the peer may fill from the origin (one of the first owners)
	origin bool // the peer is the chunk's origin
	store  bool // the origin store, cfg.Origin
	// below: the peer is a filling owner of the chunk ranked before this
	// node, itself a filling owner (see sources).
	below bool
}

// kind labels the source in the counters: "peer", "origin" (the node)
// or "store" (the origin store).
func (s source) kind() string {
	switch {
	case s.store:
		return "store"
	case s.origin:
		return "origin"
	}
	return "peer"
}

// url asks a filling owner to fill even when the origin node is unknown:
// it may fill from the origin store.
func (s source) url(d Digest, origin string) string {
	u := strings.TrimRight(s.peer.HTTPBase, "/") + peerChunkPath + d.String()
	if s.fill && !s.origin {
		u += "?fill=1"
		if origin != "" {
			u += "&origin=" + url.QueryEscape(origin)
		}
	}
	return u
}

// sources lists where to fetch d, in order. For a viewer (peerHop false):
// the chunk's rendezvous owners among the members other than the origin,
// this node left out — the first
// cfg.Owners of the whole order may fill, and up to as many more are
// asked without filling (they may still hold it from before a membership
// change) — ranked by how fast each has been, then the origin if not
// already listed. The origin comes last whatever its speed, so that its
// upload is spent on the owners, once per chunk. With cfg.Parent set
// (vod.parent), the parent node comes first, asked to fill. For a peer's fill
// (peerHop true): the chunk's pinned replica owners (the first cfg.Pinned
// of that order, not filling: they answer from their store or not at
// all, so no fill loops), then the origin: a chunk already replicated
// costs the origin nothing again. Either way the origin store, when
// there is one, comes last: the origin node may be gone, or may not keep
// the titles it packaged there.
func (f *Fetcher) sources(d Digest, origin string, peerHop bool) []source {
	out, _ := f.sourcesAndRank(d, origin, peerHop)
	return out
}

// sourcesAndRank is sources, and this node's rank among the chunk's
// filling owners (-1: not one of them).
func (f *Fetcher) sourcesAndRank(d Digest, origin string, peerHop bool) ([]source, int) {
	self := f.peers.Self()
	alive := f.peers.Alive()
	byName := make(map[string]Peer, len(alive))
	names := make([]string, 0, len(alive))
	for _, p := range alive {
		if _, dup := byName[p.Name]; dup || p.Name == "" {
			continue
		}
		byName[p.Name] = p
		names = append(names, p.Name)
	}
	var out []source
	// The owners are ranked among the members other than the origin (as
	// the pinner ranks them): the origin, an owner of some chunks
	// otherwise and often the fastest, would be asked first and upload
	// each chunk once per edge rather than once per owner.
	others := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == origin })
	owners := Owners(d, others)
	selfRank := slices.Index(owners[:min(len(owners), f.cfg.Owners)], self)
	if peerHop && f.cfg.Pinned > 0 {
		for _, n := range owners[:min(len(owners), f.cfg.Pinned)] {
			if n != self {
				out = append(out, source{peer: byName[n]})
			}
		}
	}
	if !peerHop {
		// A node that is itself one of the filling owners asks only the
		// owners ranked before it to fill (the first owner asks nobody),
		// the others only for what they hold. Fills then wait only on
		// owners of a lower rank, never in a circle, so another node's
		// fill may join this node's flight (see flight.join) instead of
		// being turned away to the origin.
		for i, n := range owners {
			if len(out) >= 2*f.cfg.Owners {
				break
			}
			if n == self {
				continue
			}
			below := selfRank >= 0 && i < selfRank
			out = append(out, source{peer: byName[n], fill: i < f.cfg.Owners && (selfRank < 0 || below), below: below, origin: n == origin})
		}
		f.rank(out)
		if f.cfg.Parent != "" {
			// vod.parent: every miss goes through the parent first.
			parent := source{peer: Peer{Name: "parent", HTTPBase: f.cfg.Parent}, fill: true}
			out = append([]source{parent}, out...)
		}
	}
	if p, ok := byName[origin]; ok && origin != self &&
		!slices.ContainsFunc(out, func(s source) bool { return s.peer.Name == origin }) {
		out = append(out, source{peer: p, origin: true})
	}
	if f.cfg.Origin != nil {
		out = append(out, source{peer: Peer{Name: f.cfg.Origin.Name()}, store: true})
	}
	return out, selfRank
}
