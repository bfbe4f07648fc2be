package overlay

import (
	"encoding/json"
)

// The VoD catalog travels in the cluster state as two opaque kinds; overlay
// carries their bytes and knows nothing of what a title is.
//
// Unlike the live state, these kinds are persistent: a title outlives its
// origin (the others keep listing it and serve it from their copies), so
// their entries are not dropped when the owner leaves or dies, and they are
// accepted from owners not known alive (a node that joins after the
// origin's death learns the title from a peer). A removal record is never
// garbage-collected: a removal must win over any late copy of the title,
// whenever it arrives. The cost is one small record (≈ 100 bytes) per
// removed title on every node, in memory and in every push/pull exchange.
const (
	kindVoDTitle = "vodtitle" // key: title id; owner: the title's origin node; data: opaque (vod's JSON)
	kindVoDRm    = "vodrm"    // key: title id; owner: the node where it was removed
)

// persistentKind tells the kinds whose entries survive their owner.
func persistentKind(kind string) bool { return kind == kindVoDTitle || kind == kindVoDRm }

// removedLocked tells whether e is a copy of a title that has a removal
// record: such copies are refused, so that a stale copy arriving late (by
// push/pull from a node that missed the removal, or from an origin that
// was down) never brings the title back.
func (s *state) removedLocked(e *entry) bool {
	if e.Kind != kindVoDTitle {
		return false
	}
	rm, ok := s.entries[kindVoDRm+"\x00"+e.Key]
	return ok && !rm.Deleted
}

// acceptedLocked follows up on an entry just stored: a removal record
// drops the title's entry at once, whoever owns it (the removal outranks
// its versions; removedLocked keeps it out from then on).
func (s *state) acceptedLocked(e *entry) {
	if persistentKind(e.Kind) {
		s.vodGen++
	}
	if e.Kind == kindVoDRm && !e.Deleted {
		s.delLocked(kindVoDTitle + "\x00" + e.Key)
	}
}

// VoDGeneration changes (grows) whenever a VoD title entry or removal is
// added, updated or deleted, here or by gossip: a reader of VoDTitles and
// VoDRemovals woken by Subscribe (which fires on every change of the
// cluster state, RTT reports included) reads them again only when it
// moved.
func (m *Membership) VoDGeneration() uint64 {
	m.state.mu.Lock()
	defer m.state.mu.Unlock()
	return m.state.vodGen
}

// VoDEntry is one title's catalog entry as the cluster state carries it.
type VoDEntry struct {
	// ID is the title id.
	ID string
	// Owner is the node that published the entry: the title's origin.
	Owner string
	// Data is the entry as its origin's VoD layer encoded it (JSON).
	Data []byte
}

// SetVoDTitle publishes (or updates) the catalog entry of a title packaged
// on this node; data must be JSON. Keep it small: an entry up to
// maxGossipEntry bytes encoded travels by UDP gossip, a larger one is
// sent to every member over TCP. A title removed in the cluster is not
// published again.
func (m *Membership) SetVoDTitle(id string, data []byte) {
	if id == "" || !json.Valid(data) {
		m.log.Warn("vod title entry not published: empty id or not JSON", "id", id, "bytes", len(data))
		return
	}
	m.setLocal(kindVoDTitle, id, json.RawMessage(data), false)
}

// VoDTitles lists the catalog entries of every title in the cluster, this
// node's included, by id; removed titles are left out.
func (m *Membership) VoDTitles() []VoDEntry {
	es := m.state.live(kindVoDTitle)
	out := make([]VoDEntry, 0, len(es))
	for _, e := range es {
		out = append(out, VoDEntry{ID: e.Key, Owner: e.Owner, Data: append([]byte(nil), e.Data...)})
	}
	return out
}

// RemoveVoDTitle removes a title everywhere: it publishes a removal record
// (which every node keeps, see persistentKind) and, when this node is the
// title's origin, a tombstone of its entry.
func (m *Membership) RemoveVoDTitle(id string) {
	if id == "" {
		return
	}
	if e, ok := m.state.get(kindVoDTitle, id); ok && e.Owner == m.cfg.Name {
		m.setLocal(kindVoDTitle, id, nil, true)
	}
	if _, ok := m.state.get(kindVoDRm, id); ok {
		return // already removed: one record is enough
	}
	m.setLocal(kindVoDRm, id, true, false)
}

// VoDRemovals lists the ids of the titles removed in the cluster, sorted.
func (m *Membership) VoDRemovals() []string {
	es := m.state.live(kindVoDRm)
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Key
	}
	return out
}
