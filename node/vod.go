package node

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/gradient-cdn/gradient/overlay"
	"github.com/gradient-cdn/gradient/vod"
)

// VoD across the cluster: the VoD service announces its titles and
// removals through its hooks, which the node hands to the gossip; a
// goroutine of the node gives the service what the gossip carries. vod
// and overlay decide; the node only carries.

// wireVoD names the VoD service after the node and, with gossip on,
// connects its hooks to the membership. Called by build, before the
// service starts.
func (n *Node) wireVoD() {
	n.VoD.SetNodeName(n.cfg.Name)
	if n.Members == nil {
		return
	}
	m, log := n.Members, n.log
	n.VoD.OnTitleChange = func(e vod.TitleEntry) {
		b, err := json.Marshal(e)
		if err != nil {
			log.Warn("vod title not gossiped", "id", e.ID, "err", err)
			return
		}
		m.SetVoDTitle(e.ID, b)
	}
	n.VoD.OnTitleRemoved = m.RemoveVoDTitle
	n.VoD.Peers = memberPeers{m: m, self: n.cfg.Name}
	n.VoD.Secret = n.cfg.clusterSecret()
	n.VoD.PeerTLS = n.peerTLS
}

// memberPeers are the alive members as the VoD fetcher sees them.
type memberPeers struct {
	m    *overlay.Membership
	self string
}

func (p memberPeers) Self() string { return p.self }

func (p memberPeers) Alive() []vod.Peer {
	var out []vod.Peer
	for _, mem := range p.m.Alive() {
		if mem.Meta.HTTP != "" {
			out = append(out, vod.Peer{Name: mem.Name, HTTPBase: mem.Meta.HTTPBase()})
		}
	}
	return out
}

// vodRetryInterval is how often the gossiped VoD state is merged again
// without a change, so that a manifest that could not be fetched is tried
// again (merging what is already merged costs the service no I/O).
const vodRetryInterval = 5 * time.Second

// startVoDSync starts the goroutine that merges the gossiped titles and
// removals into the VoD service on every change of the cluster state; it
// is stopped by Close, before the service closes.
func (n *Node) startVoDSync() {
	ch, unsubscribe := n.Members.Subscribe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(vodRetryInterval)
		defer t.Stop()
		merged := n.Members.VoDGeneration()
		members := aliveNames(n.Members)
		n.mergeVoD()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-ch:
				// Most changes of the cluster state are not VoD's.
				if now := aliveNames(n.Members); now != members {
					members = now
					n.VoD.MembersChanged() // replicas move to the new owners
				}
				if n.Members.VoDGeneration() == merged {
					continue
				}
			}
			merged = n.Members.VoDGeneration()
			n.mergeVoD()
			n.VoD.MembersChanged() // a title may have become ready
		}
	}()
	n.closers = append(n.closers, func() error {
		cancel()
		<-done
		unsubscribe()
		return nil
	})
}

// mergeVoD gives the service the cluster's removals, then its titles.
func (n *Node) mergeVoD() {
	for _, id := range n.Members.VoDRemovals() {
		if err := n.VoD.MergeRemoval(id); err != nil {
			n.log.Warn("vod removal not applied", "id", id, "err", err)
		}
	}
	for _, x := range n.Members.VoDTitles() {
		var e vod.TitleEntry
		if err := json.Unmarshal(x.Data, &e); err != nil {
			n.log.Debug("malformed vod title entry ignored", "id", x.ID, "owner", x.Owner, "err", err)
			continue
		}
		// The gossip's key and owner are authoritative: the owner is the
		// only node that can publish the entry.
		e.ID, e.Origin = x.ID, x.Owner
		if err := n.VoD.MergeRemoteTitle(e); err != nil {
			n.log.Debug("vod title not merged", "id", x.ID, "origin", x.Owner, "err", err)
		}
	}
}

// aliveNames is the alive members' names, to tell membership changes.
func aliveNames(m *overlay.Membership) string {
	var b strings.Builder
	for _, mem := range m.Alive() {
		b.WriteString(mem.Name)
		b.WriteByte(0)
	}
	return b.String()
}
