package overlay

import (
	"strings"
	"sync"

	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/optimizer"
)

// Announcer registers in the cluster the streams published into this
// node, with this node as their root and its ladder, and withdraws them
// when they end. Streams a relay publishes (their source starts with
// RelaySourcePrefix) and renditions are not announced. It is a
// media.HubObserver: observe the hub with it before anything can publish,
// so that no stream is missed.
type Announcer struct {
	m      *Membership
	hub    *media.Hub
	ladder []optimizer.Level

	mu    sync.Mutex
	roots map[string]bool // streams announced as rooted here
}

// NewAnnouncer returns an announcer of hub's streams into m.
func NewAnnouncer(m *Membership, hub *media.Hub, ladder []optimizer.Level) *Announcer {
	return &Announcer{m: m, hub: hub, ladder: ladder, roots: map[string]bool{}}
}

// OnHubEvent implements media.HubObserver.
func (a *Announcer) OnHubEvent(ev media.HubEvent) {
	stream, rendition, err := media.ParsePath(ev.Stream)
	if err != nil || rendition != "" {
		return
	}
	if ev.Published {
		st, ok := a.hub.Lookup(stream)
		if !ok || strings.HasPrefix(st.Info().Source, RelaySourcePrefix) {
			return
		}
		a.mu.Lock()
		a.roots[stream] = true
		a.mu.Unlock()
		a.m.SetStream(StreamInfo{Name: stream, Ladder: a.ladder})
		return
	}
	a.mu.Lock()
	was := a.roots[stream]
	delete(a.roots, stream)
	a.mu.Unlock()
	if was {
		a.m.RemoveStream(stream)
	}
}
