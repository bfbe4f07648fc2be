package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/gradient-cdn/gradient/vod"
)

// VoD across the cluster: the VoD service announces its titles and
// removals through its hooks, which the node hands to the gossip; a
// goroutine of the node gives the service what the gossip carries. vod
// and overlay decide; the node only carries.

// maxManifestBytes bounds a manifest fetched from a peer (a manifest is a
// few hundred bytes per minute of a rendition).
const maxManifestBytes = 16 << 20

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
	n.VoD.FetchManifest = n.fetchManifest
}

// fetchManifest gets a manifest chunk from the title's origin by the
// public content-addressed chunk route; the service verifies the bytes
// against d. (To be replaced by the cluster's chunk fetcher, which also
// reaches replicas when the origin is gone.)
func (n *Node) fetchManifest(ctx context.Context, d vod.Digest, origin string) ([]byte, error) {
	mem, ok := n.Members.Member(origin)
	if !ok || mem.Meta.HTTP == "" {
		return nil, fmt.Errorf("origin %s is not alive or advertises no HTTP address", origin)
	}
	url := "http://" + mem.Meta.HTTP + vod.ChunkURL(d, false)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("manifest %s from %s: %w", d, origin, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("manifest %s from %s: %w", d, origin, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("manifest %s from %s: GET %s: %s", d, origin, url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestBytes+1))
	if err != nil {
		return nil, fmt.Errorf("manifest %s from %s: %w", d, origin, err)
	}
	if len(b) > maxManifestBytes {
		return nil, fmt.Errorf("manifest %s from %s: over %d bytes", d, origin, maxManifestBytes)
	}
	return b, nil
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
		n.mergeVoD()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-ch:
				// Most changes of the cluster state are not VoD's.
				if n.Members.VoDGeneration() == merged {
					continue
				}
			}
			merged = n.Members.VoDGeneration()
			n.mergeVoD()
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
