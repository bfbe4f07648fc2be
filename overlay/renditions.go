package overlay

import (
	"context"
	"time"

	"github.com/gradient-cdn/gradient/media"
)

// Renditions is the hub's media.RenditionProvider on a node of the
// overlay: a rendition that a relay is bringing from the plan's parent is
// waited for rather than made again here, so that a viewer arriving while
// the relay connects does not start a local serverlet that then holds the
// path (and, fed by the fast-start source, ends with it); anything else
// Local makes (the serverlets).
//
// The hub needs its provider when it is built, and the serverlets and the
// reconciler need the hub: build a Renditions with NewRenditions, give it
// to the hub, and Bind the serverlets and the reconciler before anything
// can read from the hub (before any listener opens or the reconciler
// starts). Bind is not synchronised: by that order nothing calls Ensure
// yet.
type Renditions struct {
	local media.RenditionProvider
	hub   *media.Hub
	rec   *Reconciler
}

// relayWait bounds how long a reader waits for a starting relay before a
// local serverlet makes the rendition instead.
const relayWait = 5 * time.Second

// NewRenditions returns a provider that is unusable until Bind.
func NewRenditions() *Renditions {
	return &Renditions{}
}

// Bind gives the provider the hub, local (what makes the renditions no
// relay brings: the serverlets) and the reconciler (nil with gossip off).
// See Renditions for when.
func (p *Renditions) Bind(hub *media.Hub, local media.RenditionProvider, rec *Reconciler) {
	p.hub, p.local, p.rec = hub, local, rec
}

// Ensure implements media.RenditionProvider.
func (p *Renditions) Ensure(ctx context.Context, path string) error {
	if p.rec != nil && p.rec.Relaying(path) {
		wctx, cancel := context.WithTimeout(ctx, relayWait)
		_, err := p.hub.Wait(wctx, path)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return p.local.Ensure(ctx, path)
}
