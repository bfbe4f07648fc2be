package overlay

import (
	"encoding/json"

	"github.com/hashicorp/memberlist"
)

// delegate is memberlist's Delegate for a Membership: node metadata, and
// the cluster state carried by user messages and push/pull.
type delegate struct{ m *Membership }

var _ memberlist.Delegate = (*delegate)(nil)

// NodeMeta implements memberlist.Delegate.
func (d *delegate) NodeMeta(limit int) []byte {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.metaB
}

// NotifyMsg implements memberlist.Delegate: a gossiped or directly sent
// batch of state entries.
func (d *delegate) NotifyMsg(b []byte) {
	m := d.m
	m.mu.Lock()
	m.bytesIn += uint64(len(b))
	m.mu.Unlock()
	m.merge(b)
}

// GetBroadcasts implements memberlist.Delegate.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	m := d.m
	out := m.queue.GetBroadcasts(overhead, limit)
	n := 0
	for _, b := range out {
		n += len(b)
	}
	m.mu.Lock()
	m.bytesOut += uint64(n)
	m.mu.Unlock()
	return out
}

// LocalState implements memberlist.Delegate: the whole state for a
// push/pull exchange, so that a joining node catches up at once.
func (d *delegate) LocalState(join bool) []byte {
	m := d.m
	b, _ := json.Marshal(m.state.all())
	m.mu.Lock()
	m.bytesOut += uint64(len(b))
	m.mu.Unlock()
	return b
}

// MergeRemoteState implements memberlist.Delegate.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	m := d.m
	m.mu.Lock()
	m.bytesIn += uint64(len(buf))
	m.mu.Unlock()
	m.merge(buf)
}

func (m *Membership) merge(b []byte) {
	var es []*entry
	if err := json.Unmarshal(b, &es); err != nil {
		var e entry
		if err2 := json.Unmarshal(b, &e); err2 != nil {
			m.log.Info("dropped malformed gossip message", "bytes", len(b), "err", err)
			return
		}
		es = []*entry{&e}
	}
	changed := false
	for _, e := range es {
		if e == nil || e.Kind == "" {
			continue
		}
		accepted, refute := m.state.merge(e)
		changed = changed || accepted
		if accepted && e.Kind != kindRTT && e.Kind != kindLoad {
			// Epidemic spread: what is news to us is passed on, so that an
			// update reaches every node even if its origin's few gossip
			// rounds missed some. RTT and load reports are not urgent and
			// are the bulk of the state: they travel by their origin's
			// gossip and push/pull only.
			if b, err := json.Marshal(e); err == nil && len(b) <= maxGossipEntry {
				m.queue.QueueBroadcast(&broadcastMsg{id: e.id(), msg: b})
			}
		}
		if refute != nil {
			m.broadcast(refute)
		}
	}
	if changed {
		m.changed()
	}
}

// GossipBytes returns the state-gossip payload bytes this node received and
// sent (user messages and push/pull state; memberlist's own probes and
// membership gossip are not counted).
func (m *Membership) GossipBytes() (in, out uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bytesIn, m.bytesOut
}
